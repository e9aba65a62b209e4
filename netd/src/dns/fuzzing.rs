//! The query path as one synchronous call, for the fuzz target (`fuzz/`) and tests: raw bytes
//! in, the bytes netd would send back out (or nothing).

use super::forward::Forwarder;
use super::handler::Resolver;
use super::index::{DnsEndpoint, DnsIndex};
use super::DnsShared;
use crate::api::types::{EndpointMode, ServiceSpec};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut buf = Vec::new();
        let mut enc = BinEncoder::new(&mut buf);
        enc.set_max_size(512);
        let info = response
            .destructive_emit(&mut enc)
            .map_err(|e| NetError::from(e.to_string()))?;
        *self.0.lock().expect("capture lock") = Some(buf);
        Ok(info)
    }
}

/// A resolver for a container on network `a` that knows a few names, with no upstreams.
pub struct Harness {
    resolver: Resolver,
    rt: tokio::runtime::Runtime,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Harness {
        let web = ServiceSpec {
            name: "web".into(),
            id: "w".into(),
            vip: Some("10.0.0.100".parse().expect("ip")),
            ports: vec![],
            endpoint_mode: EndpointMode::Vip,
        };
        let eps = [
            DnsEndpoint {
                network: "a",
                ip: "10.0.0.2".parse().expect("ip"),
                name: "c1",
                aliases: &[],
                service: None,
                disabled: false,
            },
            DnsEndpoint {
                network: "a",
                ip: "10.0.0.3".parse().expect("ip"),
                name: "web.1",
                aliases: &[],
                service: Some(&web),
                disabled: false,
            },
        ];
        let netns = PathBuf::from("/fuzz/c1");
        let idx = DnsIndex::from_endpoints(&eps, |_| false).with_attachment(&netns, "a");
        let shared = Arc::new(DnsShared {
            index: RwLock::new(idx),
            forwarder: Forwarder::new(vec![], Duration::from_millis(1), 1),
            ttl: 5,
        });
        Harness {
            resolver: Resolver { netns, shared },
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    /// What netd answers to `query` (None: no answer, as for a packet too short for a header).
    pub fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let req = Request::from_bytes(
            query.to_vec(),
            "127.0.0.1:5353".parse().expect("addr"),
            Protocol::Udp,
        )
        .ok()?;
        let cap = Capture::default();
        self.rt.block_on(
            self.resolver
                .handle_request::<_, TokioTime>(&req, cap.clone()),
        );
        let out = cap.0.lock().expect("capture lock").take();
        out
    }
}
