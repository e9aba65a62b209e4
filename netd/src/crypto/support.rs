//! Whether this kernel can encrypt overlay traffic (ESP + AES-GCM), asked of the kernel itself.

use crate::api::error::ApiError;
use crate::kernel::xfrm;
use std::sync::atomic::{AtomicBool, Ordering};

/// ESP overhead in transport mode with rfc4106(gcm(aes)): ESP header (8) + IV (8) + ICV (16)
/// + trailer (2) + padding to 4 bytes (up to 3), rounded up.
pub const ESP_OVERHEAD: u32 = 40;

static SUPPORTED: AtomicBool = AtomicBool::new(false);

/// Ok when the kernel can do it. A success is remembered; a failure is probed again next time
/// (the modules may have been loaded meanwhile).
pub fn probe() -> Result<(), String> {
    if SUPPORTED.load(Ordering::Relaxed) {
        return Ok(());
    }
    xfrm::probe_esp_gcm()?;
    SUPPORTED.store(true, Ordering::Relaxed);
    Ok(())
}

/// The refusal of an encrypted network on a kernel that cannot encrypt: a network asked to be
/// encrypted must never carry traffic in clear.
pub fn require() -> Result<(), ApiError> {
    probe().map_err(|detail| {
        ApiError::invalid(
            "encrypted",
            format!(
                "encrypted: this kernel cannot encrypt overlay traffic (ESP transport mode with \
                 rfc4106(gcm(aes)) needs CONFIG_INET_ESP, CONFIG_CRYPTO_GCM and CONFIG_XFRM_USER; \
                 see `netd check`, feature esp-gcm); refusing rather than carrying traffic in clear \
                 ({})",
                detail.lines().last().unwrap_or_default()
            ),
        )
    })
}
