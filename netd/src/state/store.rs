//! Crash-safe persistence of the desired state: write a temporary file, fsync it, rename it over
//! the old one, fsync the directory. A kill -9 at any point leaves either the old or the new
//! file, both complete.

use super::DesiredState;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Store {
    dir: PathBuf,
}

const FILE: &str = "state.json";

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).with_context(|| format!("creating state dir {}", dir.display()))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn load(&self) -> Result<DesiredState> {
        let path = self.dir.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DesiredState::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self, state: &DesiredState) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(state).context("serializing state")?;
        write_atomic(&self.dir, FILE, &bytes)
    }
}

/// Replaces `dir/name` with `bytes` so that a crash at any point leaves the old or the new
/// content, both complete.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::NetworkSpec;

    #[test]
    fn round_trip_and_leftover_tmp_is_ignored() {
        let dir = std::env::temp_dir().join(format!("netd-store-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), DesiredState::default());
        let mut s = DesiredState::default();
        s.networks.insert(
            "a".into(),
            NetworkSpec {
                subnet: "10.1.0.0/24".parse().unwrap(),
                gateway: None,
                vni: 4097,
                encrypted: false,
                internal: false,
                attachable: true,
                mtu: None,
                labels: Default::default(),
                ingress: false,
            },
        );
        store.save(&s).unwrap();
        // a crash mid-write leaves a partial tmp file: it must not matter
        std::fs::write(dir.join("state.json.tmp"), b"{\"networks\": {").unwrap();
        assert_eq!(store.load().unwrap(), s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
