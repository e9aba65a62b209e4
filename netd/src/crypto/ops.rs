//! The daemon's encryption operations: setting the data-path keys and the encryption view.

use super::keys::{self, DataKey};
use super::view::{self, CryptoView};
use crate::api::error::ApiError;
use crate::api::types::GossipKeys;
use crate::daemon::Daemon;
use crate::reconcile::Scope;

impl Daemon {
    /// `PUT /v1/cluster/encryption-keys`: 1-3 keys, primary first. Receive with all, send with
    /// the primary. Rotate without loss: add the new key as secondary on every node, then make
    /// it primary everywhere, then drop the old one.
    pub async fn set_encryption_keys(&self, body: GossipKeys) -> Result<(), ApiError> {
        let _g = self.ops.lock().await;
        keys::check_list(&body.keys).map_err(|(field, msg)| ApiError::invalid(field, msg))?;
        let mut d = self.desired();
        if d.encryption_keys == body.keys {
            return Ok(());
        }
        let before = d.clone();
        d.encryption_keys = body.keys;
        self.commit(d)?;
        if let Err(e) = self.reconciler.run(Scope::Crypto).await {
            self.commit(before)?;
            let _ = self.reconciler.run(Scope::Crypto).await;
            return Err(ApiError::internal(format!("programming IPsec: {e}")));
        }
        let tags: Vec<String> = self
            .desired()
            .encryption_keys
            .iter()
            .map(|k| DataKey::new(k).tag())
            .collect();
        tracing::info!(?tags, "data-path keys set");
        Ok(())
    }

    pub fn encryption_view(&self) -> Result<CryptoView, ApiError> {
        let d = self.desired();
        let v = self.shared.view.read().expect("view lock").clone();
        let epoch = self.shared.sa_epoch.lock().expect("sa epoch lock").value();
        view::build(&self.shared.cfg, &d, &v, epoch)
            .map_err(|e| ApiError::internal(format!("{e:#}")))
    }
}
