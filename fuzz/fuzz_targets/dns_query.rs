//! The embedded resolver's query path (hickory-server request parsing, netd's answer logic,
//! response encoding) on arbitrary bytes, as they could arrive on 127.0.0.11:53 over UDP.
//!
//! Besides crashes, hangs and leaks, it checks that whatever netd sends back is a DNS response
//! to that query: it parses, has the query's ID, the QR bit, and fits a plain UDP answer.
//!
//! (A question name compressed into the header used to come back as a pointer to the
//! response's flags: netd now answers FORMERR without the question; see
//! netd/tests/dns_fuzz_regressions.rs.)
#![no_main]

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use netd::dns::fuzzing::Harness;

thread_local! {
    static HARNESS: Harness = Harness::new();
}

fuzz_target!(|data: &[u8]| {
    let out = HARNESS.with(|h| h.answer(data));
    let Some(out) = out else { return };
    assert!(out.len() <= 512, "answer of {} bytes to a UDP query", out.len());
    assert!(out.len() >= 12, "answer shorter than a header: {out:02x?}");
    assert_eq!(&out[..2], &data[..2], "answer ID differs from the query's");
    assert!(out[2] & 0x80 != 0, "QR bit not set");
    match Message::from_vec(&out) {
        Ok(msg) => assert_eq!(msg.metadata.message_type, MessageType::Response),
        Err(e) => panic!("netd sent bytes that do not parse as DNS ({e}): {out:02x?}"),
    }
});
