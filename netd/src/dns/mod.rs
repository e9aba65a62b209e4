//! Embedded DNS at 127.0.0.11 in every container namespace, served by netd's one process
//! (hickory-server). Each container gets its own sockets (inside its namespace) and so its own
//! view: the names of the networks it is attached to.

pub mod forward;
pub mod fuzzing;
mod handler;
pub mod index;

use forward::Forwarder;
use handler::Resolver;
use hickory_server::Server;
use index::DnsIndex;
use std::collections::{BTreeSet, HashMap};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// What every container's resolver shares.
pub struct DnsShared {
    /// Updated in place, change by change (see `index`): readers hold the lock for a lookup.
    index: RwLock<DnsIndex>,
    pub forwarder: Forwarder,
    pub ttl: u32,
}

impl DnsShared {
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, DnsIndex> {
        self.index.read().expect("dns index lock")
    }
}

pub struct DnsService {
    pub shared: Arc<DnsShared>,
    servers: Mutex<HashMap<PathBuf, Server<Resolver>>>,
    rt: tokio::runtime::Handle,
}

/// TCP connections idle longer than this are closed.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

impl DnsService {
    pub fn new(forwarder: Forwarder, ttl: u32, rt: tokio::runtime::Handle) -> DnsService {
        DnsService {
            shared: Arc::new(DnsShared {
                index: RwLock::new(DnsIndex::default()),
                forwarder,
                ttl,
            }),
            servers: Mutex::new(HashMap::new()),
            rt,
        }
    }

    pub fn set_index(&self, idx: DnsIndex) {
        let old = std::mem::replace(
            &mut *self.shared.index.write().expect("dns index lock"),
            idx,
        );
        drop(old); // outside the lock
    }

    /// The index, for changes in place (lookups wait meanwhile: keep it short).
    pub fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, DnsIndex> {
        self.shared.index.write().expect("dns index lock")
    }

    /// Container namespaces currently served.
    pub fn served(&self) -> BTreeSet<PathBuf> {
        self.servers
            .lock()
            .expect("servers lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Starts serving the container whose sockets these are.
    pub fn serve(&self, netns: &Path, udp: UdpSocket, tcp: TcpListener) -> anyhow::Result<()> {
        let _guard = self.rt.enter();
        let mut server = Server::new(Resolver {
            netns: netns.to_path_buf(),
            shared: self.shared.clone(),
        });
        server.register_socket(tokio::net::UdpSocket::from_std(udp)?);
        server.register_listener(tokio::net::TcpListener::from_std(tcp)?, TCP_TIMEOUT, 64);
        self.servers
            .lock()
            .expect("servers lock")
            .insert(netns.to_path_buf(), server);
        Ok(())
    }

    /// Stops serving a container (its sockets close).
    pub fn stop(&self, netns: &Path) {
        let _guard = self.rt.enter();
        self.servers.lock().expect("servers lock").remove(netns);
    }
}
