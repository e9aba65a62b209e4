//! The API socket: a Unix socket with mode 0600 (0660 with `api_group`), and a credential check
//! (SO_PEERCRED) on every connection: root, netd's own user, or members of `api_group`.

use anyhow::{Context, Result};
use axum::serve::Listener;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::net::{UnixListener, UnixStream};

pub struct CheckedListener {
    inner: UnixListener,
    allowed_gid: Option<u32>,
}

pub fn group_gid(name: &str) -> Result<u32> {
    let c = CString::new(name)?;
    // SAFETY: getgrnam returns a pointer into static storage or null; we copy gr_gid at once.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    if g.is_null() {
        anyhow::bail!("api_group: group {name:?} does not exist");
    }
    Ok(unsafe { (*g).gr_gid })
}

pub fn bind(path: &Path, group: Option<&str>) -> Result<CheckedListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a previous run (kill -9) would make bind fail.
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("api_socket: {} is in use by another netd", path.display());
        }
        std::fs::remove_file(path).ok();
    }
    let allowed_gid = group.map(group_gid).transpose()?;
    // Create with a restrictive umask so there is no window where the socket is world-usable.
    let old = unsafe { libc::umask(0o177) };
    let inner = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let inner = inner.with_context(|| format!("binding API socket {}", path.display()))?;
    if let Some(gid) = allowed_gid {
        let c = CString::new(path.as_os_str().as_encoded_bytes())?;
        if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
            return Err(std::io::Error::last_os_error()).context("chown of API socket");
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(CheckedListener { inner, allowed_gid })
}

impl CheckedListener {
    fn allowed(&self, s: &UnixStream) -> bool {
        let Ok(cred) = s.peer_cred() else {
            return false;
        };
        let me = unsafe { libc::geteuid() };
        cred.uid() == 0 || cred.uid() == me || self.allowed_gid.is_some_and(|g| cred.gid() == g)
    }
}

impl Listener for CheckedListener {
    type Io = UnixStream;
    type Addr = ();

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((s, _)) if self.allowed(&s) => return (s, ()),
                Ok((s, _)) => {
                    let cred = s.peer_cred().ok();
                    tracing::warn!(
                        ?cred,
                        "refusing API connection: peer credentials not allowed"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(())
    }
}
