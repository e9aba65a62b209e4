//! Plugin-specific CNI error codes (the spec leaves 100 and up to plugins). The well-known
//! codes (1-11, 50, 51) are `rscni_types::error::Error`'s own variants.

use rscni_types::error::Error;

/// netd refused the attachment because something is already in use (HTTP 409: the
/// address, or the interface name in that namespace).
pub const CONFLICT: u32 = 100;
/// netd failed or answered something unexpected (HTTP 500, a body that does not parse).
pub const NETD_FAILED: u32 = 101;
/// CHECK: netd does not know the attachment (or it is not the one this plugin made).
pub const CHECK_UNKNOWN: u32 = 102;
/// CHECK: the container's interface, address or routes differ from what netd set up.
pub const CHECK_MISMATCH: u32 = 103;
/// GC: some stale attachments could not be removed.
pub const GC_INCOMPLETE: u32 = 104;

pub fn conflict(details: String) -> Error {
    Error::Custom(CONFLICT, "Attachment conflict".into(), details)
}

pub fn internal(details: String) -> Error {
    Error::Custom(NETD_FAILED, "netd error".into(), details)
}

pub fn check_unknown(details: String) -> Error {
    Error::Custom(CHECK_UNKNOWN, "Attachment not found".into(), details)
}

pub fn check_mismatch(details: String) -> Error {
    Error::Custom(
        CHECK_MISMATCH,
        "Container networking is not as expected".into(),
        details,
    )
}

pub fn gc_incomplete(details: String) -> Error {
    Error::Custom(
        GC_INCOMPLETE,
        "Garbage collection incomplete".into(),
        details,
    )
}
