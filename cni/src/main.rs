//! netd-cni: the CNI plugin of netd (network configuration `"type": "netd"`).
//!
//! A runtime runs it once per operation with `CNI_*` variables in the environment and the
//! network configuration on stdin. It answers on stdout, in the CNI version it was asked:
//! an ADD result, a VERSION document, nothing (DEL, CHECK, STATUS, GC), or a spec error
//! `{cniVersion, code, msg, details}` with a non-zero exit. Every operation is a call or two
//! of netd's API on its Unix socket; see `cni/README.md`.

mod conf;
mod errors;
mod http;
mod inspect;
mod netd;
mod plugin;

use conf::{CniArgs, PluginConf};
use plugin::Invocation;
use rscni_types::error::Error;
use rscni_types::legacy;
use rscni_types::types::{
    CNIResultWithVersion, Cmd, ContainerId, ErrorResult, InterfaceName, NetConf, CNI_ARGS,
    CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS,
};
use rscni_types::version::{PluginInfo, SpecVersion};
use std::io::{Read, Write};
use std::sync::OnceLock;

/// The version errors are reported under: the configuration's, once known.
static ASKED: OnceLock<SpecVersion> = OnceLock::new();

/// Code the reference implementation uses for internal errors.
const INTERNAL: u32 = 999;

fn main() {
    // A bug must still produce a spec error, never a panic message or a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let err = Error::Custom(
            INTERNAL,
            "Internal error".into(),
            format!("netd-cni: {info}"),
        );
        emit_error(&err);
        std::process::exit(1);
    }));
    std::process::exit(run());
}

fn supported() -> PluginInfo {
    PluginInfo::new(
        SpecVersion::CURRENT,
        ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            .iter()
            .filter_map(|v| v.parse().ok())
            .collect(),
    )
}

fn run() -> i32 {
    let cmd = match std::env::var(CNI_COMMAND) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) | Err(std::env::VarError::NotPresent) => {
            // Like the reference plugins: a bare invocation is a request for help.
            eprintln!(
                "netd-cni {}: CNI plugin for netd (network type \"netd\")\n\
                 CNI protocol versions supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
                env!("CARGO_PKG_VERSION")
            );
            return 0;
        }
        Err(e) => {
            emit_error(&Error::InvalidEnvValue(format!("{CNI_COMMAND}: {e}")));
            return 1;
        }
    };
    let stdin = match read_stdin() {
        Ok(s) => s,
        Err(e) => {
            emit_error(&Error::IOFailure(format!("reading stdin: {e}")));
            return 1;
        }
    };
    if let Some(v) = declared_version(&stdin) {
        let _ = ASKED.set(v);
    }
    match handle(&cmd, &stdin) {
        Ok(out) => {
            if out.is_empty() || write_stdout(out.as_bytes()) {
                0
            } else {
                1
            }
        }
        Err(e) => {
            emit_error(&e);
            1
        }
    }
}

/// The configuration on stdin; nothing when stdin is a terminal (a person probing VERSION).
fn read_stdin() -> std::io::Result<Vec<u8>> {
    let mut buf = vec![];
    // SAFETY: isatty on fd 0 has no preconditions.
    if unsafe { libc::isatty(0) } == 1 {
        return Ok(buf);
    }
    std::io::stdin().lock().read_to_end(&mut buf)?;
    Ok(buf)
}

/// The `cniVersion` of whatever is on stdin, read leniently so that even a configuration
/// that fails validation gets its error in the version it asked for.
fn declared_version(stdin: &[u8]) -> Option<SpecVersion> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?
        .as_str()
        .filter(|s| !s.is_empty())?
        .parse()
        .ok()
}

fn write_stdout(bytes: &[u8]) -> bool {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "netd-cni: writing stdout: {e}");
            false
        }
    }
}

fn emit_error(err: &Error) {
    let version = ASKED.get().copied().unwrap_or(SpecVersion::CURRENT);
    let json = serde_json::to_string(&ErrorResult::new(version, err)).unwrap_or_else(|_| {
        format!(
            r#"{{"code":{},"msg":"Internal error","details":""}}"#,
            u32::from(err)
        )
    });
    let _ = write_stdout(json.as_bytes());
    let _ = writeln!(std::io::stderr(), "netd-cni: {err}");
}

/// A `CNI_*` variable; unset and empty are the same (as in the reference implementation).
fn env_opt(name: &str) -> Result<Option<String>, Error> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(e) => Err(Error::InvalidEnvValue(format!("{name}: {e}"))),
    }
}

fn handle(cmd: &str, stdin: &[u8]) -> Result<String, Error> {
    let cmd: Cmd = cmd.parse()?;
    let info = supported();
    if cmd == Cmd::Version {
        let asked = ASKED.get().copied().unwrap_or(SpecVersion::CURRENT);
        let doc = PluginInfo::new(asked, info.supported_versions().to_vec());
        return serde_json::to_string(&doc).map_err(|e| Error::FailedToDecode(e.to_string()));
    }

    // Environment first (error 4 names every missing variable), like the reference skel.
    let container_id = env_opt(CNI_CONTAINERID)?;
    let netns = env_opt(CNI_NETNS)?;
    let ifname = env_opt(CNI_IFNAME)?;
    let cni_args = env_opt(CNI_ARGS)?;
    let per_container = matches!(cmd, Cmd::Add | Cmd::Del | Cmd::Check);
    if per_container {
        let mut missing = vec![];
        if container_id.is_none() {
            missing.push(CNI_CONTAINERID);
        }
        // DEL must work after the namespace is gone, so it may come without one.
        if netns.is_none() && cmd != Cmd::Del {
            missing.push(CNI_NETNS);
        }
        if ifname.is_none() {
            missing.push(CNI_IFNAME);
        }
        if !missing.is_empty() {
            return Err(Error::missing_env(&missing));
        }
    }
    // Checked only where used: STATUS and GC ignore per-container variables, and DEL does
    // not need the namespace.
    let (container_id, ifname) = if per_container {
        let cid = container_id.map(ContainerId::try_from).transpose()?;
        let ifname = ifname.map(InterfaceName::try_from).transpose()?;
        (cid.map(|c| c.to_string()), ifname.map(|i| i.to_string()))
    } else {
        (None, None)
    };
    if let (Some(ns), Cmd::Add | Cmd::Check) = (&netns, cmd) {
        if !ns.starts_with('/') {
            return Err(Error::InvalidEnvValue(format!(
                "{CNI_NETNS}: {ns} is not an absolute path"
            )));
        }
    }

    // Then the configuration.
    let netconf: Option<NetConf> =
        serde_json::from_slice(stdin).map_err(|e| Error::FailedToDecode(e.to_string()))?;
    let netconf = netconf.ok_or_else(|| {
        Error::InvalidNetworkConfig("network configuration is required on stdin".into())
    })?;
    netconf.validate_name()?;
    let version = netconf.version()?;
    version.allows(cmd)?;
    info.validate(version)?;
    let conf = PluginConf::from_netconf(&netconf)?;

    match cmd {
        Cmd::Status => plugin::status(&netconf, &conf).map(|()| String::new()),
        Cmd::Gc => plugin::gc(&netconf, &conf).map(|()| String::new()),
        Cmd::Add | Cmd::Del | Cmd::Check => {
            // DEL must not fail over arguments that only matter to ADD.
            let args = match CniArgs::parse(cni_args.as_deref()) {
                Ok(a) => a,
                Err(_) if cmd == Cmd::Del => CniArgs::default(),
                Err(e) => return Err(e),
            };
            let inv = Invocation {
                netconf,
                conf,
                container_id: container_id.unwrap_or_default(),
                netns,
                ifname: ifname.unwrap_or_default(),
                args,
            };
            match cmd {
                Cmd::Add => {
                    let result = plugin::add(&inv)?;
                    let json = if version.is_legacy() {
                        serde_json::to_string(&legacy::CNIResult::new(version, result))
                    } else {
                        serde_json::to_string(&CNIResultWithVersion::new(version, result))
                    };
                    json.map_err(|e| Error::FailedToDecode(e.to_string()))
                }
                Cmd::Del => plugin::del(&inv).map(|()| String::new()),
                _ => plugin::check(&inv).map(|()| String::new()),
            }
        }
        Cmd::Version => unreachable_version(),
    }
}

/// VERSION is answered before the configuration is read.
fn unreachable_version() -> Result<String, Error> {
    Err(Error::Custom(
        INTERNAL,
        "Internal error".into(),
        "VERSION dispatched twice".into(),
    ))
}
