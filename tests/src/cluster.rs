//! A throw-away cluster on one machine: an underlay bridge in its own namespace, one
//! namespace per node running a real netd, an extra underlay host that is not a node, and
//! container namespaces. Everything carries a random 5-character prefix so several
//! clusters (parallel tests) coexist, and everything is torn down on drop, panics included.

use crate::cmd::{exec_in_ok, run};
use crate::http::{self, Response};
use crate::netns;
use crate::views::{EndpointView, NodeView, RemoteEndpointView};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::hash_map::RandomState;
use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where clusters keep configs, state and logs: `<ROOT>/<prefix>/...`.
const ROOT: &str = "/tmp/netd-tests";
/// Underlay subnet; each cluster has its own underlay bridge, so every cluster reuses it.
pub const UNDERLAY_NET: &str = "192.168.77";
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
pub const DATA_PORT: u16 = 4789;
pub const GOSSIP_PORT: u16 = 7946;
pub const DEFAULT_KEY: &str = "netd-tests-cluster-secret";
const RECONCILE_MS: u64 = 2000;
const API_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The netd binary under test: `$NETD_BIN`, else the workspace's release build.
pub fn netd_bin() -> PathBuf {
    std::env::var_os("NETD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/netd"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Options for [`Cluster`]; `Cluster::new(n)` is `Cluster::builder(n).start()`.
pub struct ClusterBuilder {
    nodes: usize,
    keys: Vec<Vec<String>>,
    extra_config: String,
    reconcile: Duration,
}

impl ClusterBuilder {
    /// Gives node `index` (1-based) its own gossip keys instead of the cluster's.
    pub fn node_keys(mut self, index: usize, keys: &[&str]) -> Self {
        self.keys[index - 1] = keys.iter().map(|k| k.to_string()).collect();
        self
    }

    /// Every node's `reconcile_interval_ms` (drift repair), instead of the suites' default; a
    /// long one shows what converges without the periodic full pass.
    pub fn reconcile_interval(mut self, every: Duration) -> Self {
        self.reconcile = every;
        self
    }

    /// Appends a line of TOML to every node's config (e.g. `dns_upstreams = [...]`).
    pub fn config_line(mut self, line: &str) -> Self {
        self.extra_config.push_str(line);
        self.extra_config.push('\n');
        self
    }

    /// Builds the topology and starts netd on every node. Returns `None` (after printing
    /// `SKIP: ...`) when not root; panics on any other setup failure.
    pub fn start(self) -> Option<Cluster> {
        if !is_root() {
            println!("SKIP: netd integration tests need root (network namespaces)");
            return None;
        }
        reap_stale_runs();
        let cluster = Cluster::create(self).unwrap_or_else(|e| panic!("cluster setup: {e:#}"));
        for node in &cluster.nodes {
            node.start();
        }
        for node in &cluster.nodes {
            node.wait_ready();
        }
        Some(cluster)
    }
}

pub struct Cluster {
    /// 5 characters, e.g. `t3f9a`; every namespace and node name starts with it.
    pub prefix: String,
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    underlay: String,
    client: String,
    next_container: AtomicUsize,
}

impl Cluster {
    /// Skips (returns `None`) only when not root.
    pub fn new(nodes: usize) -> Option<Cluster> {
        Self::builder(nodes).start()
    }

    pub fn builder(nodes: usize) -> ClusterBuilder {
        assert!((1..=9).contains(&nodes), "1 to 9 nodes");
        ClusterBuilder {
            nodes,
            keys: vec![vec![DEFAULT_KEY.to_string()]; nodes],
            extra_config: String::new(),
            reconcile: crate::wait::scaled(Duration::from_millis(RECONCILE_MS)),
        }
    }

    fn create(opts: ClusterBuilder) -> Result<Cluster> {
        fs::create_dir_all(ROOT)?;
        let (prefix, underlay) = claim_prefix()?;
        let dir = PathBuf::from(ROOT).join(&prefix);
        // Built before anything else can fail, so Drop cleans up a half-made topology.
        let mut cluster = Cluster {
            prefix: prefix.clone(),
            dir: dir.clone(),
            nodes: vec![],
            underlay: underlay.clone(),
            client: format!("{prefix}-cl"),
            next_container: AtomicUsize::new(1),
        };
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("owner"),
            owner_tag(std::process::id() as i32).unwrap_or_default(),
        )?;

        netns::ip(&underlay, &["link", "add", "br0", "type", "bridge"]);
        netns::ip(&underlay, &["link", "set", "br0", "up"]);

        let gossip_addrs: Vec<String> = (1..=opts.nodes)
            .map(|i| format!("{UNDERLAY_NET}.{i}:{GOSSIP_PORT}"))
            .collect();
        for i in 1..=opts.nodes {
            let name = format!("{prefix}-n{i}");
            let addr = Ipv4Addr::new(192, 168, 77, i as u8);
            cluster.plug_underlay_host(&name, &format!("n{i}"), addr)?;
            exec_in_ok(&name, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);

            let node_dir = dir.join(format!("n{i}"));
            fs::create_dir_all(node_dir.join("state"))?;
            // Every other node is a seed, so any single node can (re)join the rest.
            let seeds = gossip_addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| j + 1 != i)
                .map(|(_, a)| a.clone())
                .collect();
            let config = NodeConfig {
                node_name: name.clone(),
                addr,
                seeds,
                keys: opts.keys[i - 1].clone(),
                state_dir: node_dir.join("state"),
                api_socket: node_dir.join("netd.sock"),
                reconcile: opts.reconcile,
            };
            let config_path = node_dir.join("netd.toml");
            fs::write(&config_path, config.to_toml() + &opts.extra_config)?;
            cluster.nodes.push(Node {
                index: i,
                name: name.clone(),
                netns: name,
                addr,
                dir: node_dir.clone(),
                config_path,
                socket: config.api_socket,
                log_path: node_dir.join("netd.log"),
                process: Mutex::new(None),
                starts: AtomicUsize::new(0),
            });
        }
        let client = cluster.client.clone();
        cluster.plug_underlay_host(&client, "cl", CLIENT_ADDR)?;
        Ok(cluster)
    }

    /// Creates namespace `ns` with `eth0` (MTU 1500, `addr`/24) on the underlay bridge.
    fn plug_underlay_host(&self, ns: &str, bridge_port: &str, addr: Ipv4Addr) -> Result<()> {
        netns::create(ns)?;
        netns::veth(ns, "eth0", &self.underlay, bridge_port)?;
        netns::ip(
            &self.underlay,
            &["link", "set", bridge_port, "master", "br0", "up"],
        );
        netns::ip(ns, &["link", "set", "eth0", "mtu", "1500", "up"]);
        netns::ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        Ok(())
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index - 1]
    }

    /// The underlay namespace (holds bridge `br0`).
    pub fn underlay_ns(&self) -> &str {
        &self.underlay
    }

    /// An underlay host that is not a node (192.168.77.100): stands for "the outside".
    pub fn client_ns(&self) -> &str {
        &self.client
    }

    /// A new, empty container namespace `<prefix>-c<k>` (lo up).
    pub fn container(&self) -> Container {
        let k = self.next_container.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-c{k}", self.prefix);
        netns::create(&name).unwrap_or_else(|e| panic!("{e:#}"));
        Container { name }
    }

    /// PUTs the network on every node (networks are declared per node, like a manager
    /// pushing config); each must accept it.
    pub fn create_network(&self, name: &str, spec: &Value) {
        for node in &self.nodes {
            let (status, body) = node.api("PUT", &format!("/v1/networks/{name}"), Some(spec));
            assert!(
                status == 200 || status == 201,
                "PUT network {name} on {}: {status} {body}",
                node.name
            );
        }
    }

    /// All named namespaces netd created for this cluster (`nd-<prefix>...`).
    pub fn sandboxes(&self) -> Vec<String> {
        netns::list_with_prefix(&format!("nd-{}", self.prefix))
    }

    fn dump_logs(&self) {
        for node in &self.nodes {
            eprintln!(
                "----- {} log (last 60 lines of {}) -----\n{}",
                node.name,
                node.log_path.display(),
                node.log_tail(60)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for node in &self.nodes {
            node.kill9();
        }
        teardown_prefix(&self.prefix);
        if std::env::var_os("NETD_TESTS_KEEP").is_some() {
            eprintln!("NETD_TESTS_KEEP: leaving {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Deletes every namespace of a run: containers and netd's sandboxes first (they hang off
/// node namespaces), then nodes, client and underlay.
fn teardown_prefix(prefix: &str) {
    let mut names = netns::list_with_prefix(&format!("nd-{prefix}"));
    let mut ours = netns::list_with_prefix(&format!("{prefix}-"));
    ours.sort_by_key(|n| n.ends_with("-ul"));
    names.extend(ours);
    for name in names {
        netns::destroy(&name);
        // per-namespace /etc overrides (resolv.conf) used by `ip netns exec`
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(&name));
    }
}

/// Picks an unused prefix and claims it by creating its underlay namespace (atomic:
/// `ip netns add` fails if the name exists).
fn claim_prefix() -> Result<(String, String)> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    for _ in 0..100 {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_usize(COUNTER.fetch_add(1, Ordering::SeqCst));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let prefix = format!("t{:04x}", h.finish() & 0xffff);
        let underlay = format!("{prefix}-ul");
        let taken = Path::new(ROOT).join(&prefix).exists()
            || !netns::list_with_prefix(&format!("nd-{prefix}")).is_empty();
        if !taken && netns::create(&underlay).is_ok() {
            return Ok((prefix, underlay));
        }
    }
    bail!("could not find a free prefix")
}

/// `"<pid> <starttime>"` identifies a process across pid reuse.
fn owner_tag(pid: i32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime), counted after the `(comm)` field which may contain spaces.
    let after_comm = stat.rsplit_once(')')?.1;
    let start = after_comm.split_whitespace().nth(19)?;
    Some(format!("{pid} {start}"))
}

/// Cleans up after test processes that died without running Drop (SIGKILL, timeout):
/// a run directory whose owner process is gone is torn down.
fn reap_stale_runs() {
    let Ok(entries) = fs::read_dir(ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(owner) = fs::read_to_string(dir.join("owner")) else {
            continue;
        };
        let pid: i32 = owner
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid <= 0 || owner_tag(pid).as_deref() == Some(owner.trim()) {
            continue; // still alive (or unreadable: leave it alone)
        }
        let prefix = entry.file_name().to_string_lossy().into_owned();
        eprintln!("netd-tests: removing stale run {prefix}");
        teardown_prefix(&prefix);
        let _ = fs::remove_dir_all(&dir);
    }
}

struct NodeConfig {
    node_name: String,
    addr: Ipv4Addr,
    seeds: Vec<String>,
    keys: Vec<String>,
    state_dir: PathBuf,
    api_socket: PathBuf,
    reconcile: Duration,
}

impl NodeConfig {
    fn to_toml(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "node_name = {:?}\n\
             advertise_addr = \"{}\"\n\
             data_port = {DATA_PORT}\n\
             gossip_bind = \"{}:{GOSSIP_PORT}\"\n\
             seeds = [{}]\n\
             gossip_keys = [{}]\n\
             state_dir = {:?}\n\
             api_socket = {:?}\n\
             gwbridge_subnet = \"172.18.0.0/16\"\n\
             reconcile_interval_ms = {}\n",
            self.node_name,
            self.addr,
            self.addr,
            list(&self.seeds),
            list(&self.keys),
            self.state_dir.display().to_string(),
            self.api_socket.display().to_string(),
            self.reconcile.as_millis(),
        )
    }
}

/// One node: a namespace with `eth0` on the underlay and (while running) a netd process.
pub struct Node {
    /// 1-based.
    pub index: usize,
    /// netd's `node_name`, equal to the namespace name (`<prefix>-n<i>`).
    pub name: String,
    pub netns: String,
    /// Underlay address = VTEP = gossip address.
    pub addr: Ipv4Addr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub log_path: PathBuf,
    process: Mutex<Option<Child>>,
    starts: AtomicUsize,
}

impl Node {
    /// Spawns netd in the node namespace. `nsenter --net` rather than `ip netns exec`:
    /// the latter gives the process a private mount namespace, and the sandbox namespaces
    /// netd bind-mounts under /run/netns would vanish with it.
    fn start(&self) {
        let mut guard = self.process.lock().unwrap();
        assert!(guard.is_none(), "{}: netd already running", self.name);
        let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open netd log");
        let _ = writeln!(log, "===== netd-tests: start #{n} =====");
        let bin = netd_bin();
        assert!(
            bin.exists(),
            "netd binary not found at {} (build it or set NETD_BIN)",
            bin.display()
        );
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns::path(&self.netns).display()))
            .arg(&bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            // Plain logs: they are read by people and grepped, not shown on a terminal.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn netd for {}: {e}", self.name));
        *guard = Some(child);
    }

    /// Waits until the API answers `GET /v1/node` with 200; panics (with the log) if netd
    /// exits or never answers.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + crate::wait::scaled(START_TIMEOUT);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                panic!(
                    "netd on {} exited during startup ({status})\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
            match self.try_api("GET", "/v1/node", None) {
                Ok(r) if r.status == 200 => return,
                Ok(r) => last = format!("{} {}", r.status, r.body),
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "netd on {} did not answer GET /v1/node within {START_TIMEOUT:?}; last: {last}\n{}",
            self.name,
            self.log_tail(60)
        );
    }

    /// The exit status if netd has exited by itself (None while running or not started).
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.process.lock().unwrap();
        let status = guard.as_mut()?.try_wait().ok().flatten();
        if status.is_some() {
            *guard = None;
        }
        status
    }

    pub fn is_running(&self) -> bool {
        let mut guard = self.process.lock().unwrap();
        match guard.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                *guard = None; // exited (or unwaitable): forget it
                false
            }
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap().as_ref().map(Child::id)
    }

    /// Crash: SIGKILL and reap. No-op if not running.
    pub fn kill9(&self) {
        if let Some(mut child) = self.process.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop: SIGTERM, then SIGKILL after 10 s. Returns true if netd exited by
    /// itself in time.
    pub fn stop(&self) -> bool {
        let Some(mut child) = self.process.lock().unwrap().take() else {
            return true;
        };
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Starts netd again with the same config and state (stopping it first if running)
    /// and waits until its API answers.
    pub fn restart(&self) {
        if self.is_running() {
            self.stop();
        }
        self.start();
        self.wait_ready();
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sandbox namespace netd creates on this node for network `vni`.
    pub fn sandbox(&self, vni: u32) -> String {
        format!("nd-{}-{vni}", self.name)
    }

    /// One API call with a raw body (for deliberately malformed requests).
    pub fn try_api(&self, method: &str, path: &str, body: Option<&str>) -> Result<Response> {
        http::request(
            &self.socket,
            method,
            path,
            body,
            crate::wait::scaled(API_TIMEOUT),
        )
    }

    /// One API call with a JSON body; panics if netd cannot be reached.
    #[track_caller]
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(Value::to_string);
        let r = self.api_raw(method, path, body.as_deref());
        (r.status, r.json)
    }

    #[track_caller]
    pub fn api_raw(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        self.try_api(method, path, body)
            .unwrap_or_else(|e| panic!("{} {method} {path}: {e:#}", self.name))
    }

    /// GET that must return 200, parsed into `T`.
    #[track_caller]
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = self.api("GET", path, None);
        assert_eq!(status, 200, "{} GET {path}: {body}", self.name);
        serde_json::from_value(body.clone())
            .unwrap_or_else(|e| panic!("{} GET {path}: unexpected shape ({e}): {body}", self.name))
    }

    pub fn node_view(&self) -> NodeView {
        self.get("/v1/node")
    }

    pub fn remote_endpoints(&self) -> Vec<RemoteEndpointView> {
        self.get("/v1/remote-endpoints")
    }

    /// Non-panicking variant for polling loops that may hit a restarting node.
    pub fn try_remote_endpoints(&self) -> Result<Vec<RemoteEndpointView>, String> {
        let r = self
            .try_api("GET", "/v1/remote-endpoints", None)
            .map_err(|e| format!("{e:#}"))?;
        if r.status != 200 {
            return Err(format!("status {} {}", r.status, r.body));
        }
        serde_json::from_value(r.json).map_err(|e| e.to_string())
    }

    pub fn endpoints(&self) -> Vec<EndpointView> {
        self.get("/v1/endpoints")
    }

    /// Attaches `container` to `network` as `ifname` (id `<container>-<ifname>`); `extra`
    /// fields (e.g. `ip`) are merged into the spec. Must succeed.
    #[track_caller]
    pub fn attach(
        &self,
        container: &Container,
        network: &str,
        ifname: &str,
        extra: Option<Value>,
    ) -> EndpointView {
        let (status, body) = self.try_attach(container, network, ifname, extra);
        assert!(
            status == 200 || status == 201,
            "{}: attach {} to {network}: {status} {body}",
            self.name,
            container.name
        );
        serde_json::from_value(body.clone())
            .unwrap_or_else(|e| panic!("EndpointView shape ({e}): {body}"))
    }

    /// Like [`Node::attach`] but returns the raw answer.
    pub fn try_attach(
        &self,
        container: &Container,
        network: &str,
        ifname: &str,
        extra: Option<Value>,
    ) -> (u16, Value) {
        let mut spec = json!({
            "network": network,
            "netns": container.path().display().to_string(),
            "ifname": ifname,
            "name": container.name,
        });
        if let Some(Value::Object(extra)) = extra {
            spec.as_object_mut().unwrap().extend(extra);
        }
        let id = container.endpoint_id(ifname);
        self.api("PUT", &format!("/v1/endpoints/{id}"), Some(&spec))
    }
}

/// A container's network namespace (deleted with the cluster).
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
}

impl Container {
    pub fn path(&self) -> PathBuf {
        netns::path(&self.name)
    }

    /// Points the container's libc resolver at the embedded DNS, as a runtime does with the
    /// endpoint's `dns` answer: `ip netns exec` bind-mounts `/etc/netns/<name>/resolv.conf`.
    pub fn use_embedded_dns(&self) {
        let dir = Path::new("/etc/netns").join(&self.name);
        fs::create_dir_all(&dir).expect("creating /etc/netns/<container>");
        fs::write(
            dir.join("resolv.conf"),
            "nameserver 127.0.0.11\noptions ndots:0\n",
        )
        .expect("writing resolv.conf");
    }

    /// The endpoint id [`Node::attach`] uses for this container's `ifname`.
    pub fn endpoint_id(&self, ifname: &str) -> String {
        format!("{}-{ifname}", self.name)
    }
}

/// Runs `cmd` in the node namespace without failing the test (for diagnostics).
pub fn diag(ns: &str, cmd: &[&str]) -> String {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(cmd);
    run("ip", &full)
        .map(|o| format!("{}{}", o.stdout, o.stderr))
        .unwrap_or_else(|e| e.to_string())
}
