//! Answers one container's queries: its own names first, the rest forwarded.

use super::forward::{CacheKey, Outcome};
use super::index::parse_reverse;
use super::DnsShared;
use hickory_proto::op::{Edns, Header, HeaderCounts, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinDecoder;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use rand::seq::SliceRandom;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest UDP answer we send to EDNS clients (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

pub struct Resolver {
    pub netns: PathBuf,
    pub shared: Arc<DnsShared>,
}

fn info(request: &Request, rcode: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = rcode;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Resolver {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut rh: R,
    ) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|_| {
            let mut e = Edns::new();
            e.set_max_payload(EDNS_PAYLOAD);
            e
        });
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(e) = &edns {
                b.edns(e);
            }
            b
        };
        let send_rcode = |rcode: ResponseCode| builder().error_msg(&request.metadata, rcode);
        if request.metadata.op_code != OpCode::Query {
            return rh
                .send_response(send_rcode(ResponseCode::NotImp))
                .await
                .unwrap_or_else(|_| info(request, ResponseCode::NotImp));
        }
        let queries = request.queries.queries();
        if question_is_compressed(request.queries.as_bytes()) {
            // hickory echoes the question bytes as they came: a name compressed with a pointer
            // (only ever into the header, for a question) would point elsewhere in the answer.
            // Answer FORMERR without the question.
            let none = Queries::read(&mut BinDecoder::new(&[]), 0).expect("empty question");
            let resp = MessageResponseBuilder::new(&none, edns.as_ref())
                .error_msg(&request.metadata, ResponseCode::FormErr);
            return rh
                .send_response(resp)
                .await
                .unwrap_or_else(|_| info(request, ResponseCode::FormErr));
        }
        if queries.len() != 1 {
            return rh
                .send_response(send_rcode(ResponseCode::FormErr))
                .await
                .unwrap_or_else(|_| info(request, ResponseCode::FormErr));
        }
        let q = &queries[0];
        let (qtype, qclass) = (q.query_type(), q.query_class());
        if qclass != DNSClass::IN {
            return rh
                .send_response(send_rcode(ResponseCode::NotImp))
                .await
                .unwrap_or_else(|_| info(request, ResponseCode::NotImp));
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return rh
                .send_response(send_rcode(ResponseCode::Refused))
                .await
                .unwrap_or_else(|_| info(request, ResponseCode::Refused));
        }
        let name = q.name().to_string();
        let owner: Name = q.original().name().clone();
        let ttl = self.shared.ttl;
        // Local names, and whether the asker may be forwarded (the index is locked meanwhile:
        // nothing here waits).
        let (local, may_forward) = {
            let index = self.shared.index();
            let nets = index.networks_of(&self.netns);
            let local: Option<Vec<Record>> = if qtype == RecordType::PTR {
                parse_reverse(&name).and_then(|ip| {
                    let names = index.reverse(nets, ip);
                    (!names.is_empty()).then(|| {
                        names
                            .iter()
                            .filter_map(|n| Name::from_ascii(n).ok())
                            .map(|n| Record::from_rdata(owner.clone(), ttl, RData::PTR(PTR(n))))
                            .collect()
                    })
                })
            } else {
                index.lookup(nets, &name).map(|mut a| {
                    if a.shuffle {
                        a.ips.shuffle(&mut rand::thread_rng());
                    }
                    if matches!(qtype, RecordType::A | RecordType::ANY) {
                        a.ips
                            .iter()
                            .map(|ip| Record::from_rdata(owner.clone(), ttl, RData::A(A(*ip))))
                            .collect()
                    } else {
                        Vec::new() // known name, no record of that type: NOERROR, empty
                    }
                })
            };
            (local, index.may_forward(nets))
        };
        if let Some(answers) = local {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.authoritative = true;
            metadata.recursion_available = true;
            let resp = builder().build(metadata, answers.iter(), [], [], []);
            return rh
                .send_response(resp)
                .await
                .unwrap_or_else(|_| info(request, ResponseCode::ServFail));
        }
        if !may_forward || self.shared.forwarder.upstreams().is_empty() {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::NXDomain;
            metadata.recursion_available = true;
            let resp = builder().build(metadata, [], [], [], []);
            return rh
                .send_response(resp)
                .await
                .unwrap_or_else(|_| info(request, ResponseCode::NXDomain));
        }
        let key = CacheKey {
            name,
            qtype: qtype.into(),
            qclass: qclass.into(),
            dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        };
        match self.shared.forwarder.resolve(request.as_slice(), key).await {
            Outcome::Answer(m) => self.relay(request, &mut rh, m).await,
            Outcome::Failed => rh
                .send_response(send_rcode(ResponseCode::ServFail))
                .await
                .unwrap_or_else(|_| info(request, ResponseCode::ServFail)),
            Outcome::Dropped => info(request, ResponseCode::Refused),
        }
    }
}

/// Whether the raw question section's first name uses a compression pointer.
fn question_is_compressed(section: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&len) = section.get(i) {
        match len & 0xC0 {
            0 if len == 0 => return false,
            0 => i += 1 + len as usize,
            _ => return true,
        }
    }
    false
}

impl Resolver {
    /// Sends an upstream answer back under the client's ID, with the upstream's EDNS.
    async fn relay<R: ResponseHandler>(
        &self,
        request: &Request,
        rh: &mut R,
        m: Message,
    ) -> ResponseInfo {
        let mut metadata = m.metadata;
        metadata.id = request.metadata.id;
        // Forwarded data is not ours: we are not authoritative for it.
        metadata.authoritative = false;
        let mut b = MessageResponseBuilder::from_message_request(request);
        let edns;
        if request.edns.is_some() {
            edns = m.edns.clone().unwrap_or_default();
            b.edns(&edns);
        }
        let resp = b.build(
            metadata,
            m.answers.iter(),
            m.authorities.iter(),
            [],
            m.additionals.iter(),
        );
        rh.send_response(resp)
            .await
            .unwrap_or_else(|_| info(request, ResponseCode::ServFail))
    }
}
