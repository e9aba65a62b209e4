//! Inputs the fuzzer (fuzz/, scripts/fuzz-dns.sh) found: each must get a well-formed answer or
//! a drop, never a panic or bytes that do not parse.

use hickory_proto::op::{Message, ResponseCode};
use netd::dns::fuzzing::Harness;

#[test]
fn question_name_compressed_into_the_header_gets_formerr() {
    // question name = a pointer to offset 2 (inside the header), qtype 0x7701, class 0
    let q = [
        0x12, 0x38, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xc0, 0x02, 0x77, 0x01, 0x00, 0x00,
    ];
    let out = Harness::new().answer(&q).expect("an answer");
    let m = Message::from_vec(&out).expect("the answer parses");
    assert_eq!(m.metadata.id, 0x1238);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.queries.is_empty(), "the bad question is not echoed");
}

#[test]
fn plain_query_still_answered() {
    // A web IN
    let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(&[3, b'w', b'e', b'b', 0, 0, 1, 0, 1]);
    let m = Message::from_vec(&Harness::new().answer(&q).expect("an answer")).expect("parses");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
}
