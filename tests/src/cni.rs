//! Driving CNI plugins the way a container runtime does: `CNI_*` variables in the
//! environment, the network configuration on stdin, the answer on stdout. Also a
//! conflist runner that chains plugins like libcni (ADD in order with each result as the
//! next `prevResult`; CHECK in order and DEL in reverse order with the cached result), and
//! a podman wrapper with its own root, runroot and config, run in a node's namespace.

use crate::cluster::Node;
use crate::cmd::CmdOutput;
use serde_json::{json, Value};
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's `containernetworking-plugins` are.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
/// Every CNI version the plugin speaks.
pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The plugin under test: `$NETD_CNI_BIN`, else `netd-cni` in the target directory this
/// test binary was built into (`cargo build --workspace` puts it there), else the
/// workspace's release build.
pub fn plugin_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NETD_CNI_BIN") {
        return PathBuf::from(p);
    }
    let beside_tests = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("netd-cni")));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/netd-cni");
    let bin = beside_tests.filter(|p| p.exists()).unwrap_or(workspace);
    assert!(
        bin.exists(),
        "netd-cni not found at {} (cargo build --release -p netd-cni, or set NETD_CNI_BIN)",
        bin.display()
    );
    bin
}

/// Path of a reference plugin; panics with the fix if it is missing.
pub fn reference_plugin(name: &str) -> PathBuf {
    let p = Path::new(REFERENCE_DIR).join(name);
    assert!(
        p.exists(),
        "{} missing: install containernetworking-plugins (scripts/setup.sh)",
        p.display()
    );
    p
}

/// The per-invocation environment a runtime sets.
#[derive(Debug, Clone, Default)]
pub struct CniEnv {
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl CniEnv {
    /// ADD/DEL/CHECK environment for `container_id` in `netns` (a path) as `ifname`.
    pub fn new(container_id: &str, netns: &Path, ifname: &str) -> Self {
        CniEnv {
            container_id: Some(container_id.to_string()),
            netns: Some(netns.display().to_string()),
            ifname: Some(ifname.to_string()),
            args: None,
            path: Some(REFERENCE_DIR.to_string()),
        }
    }

    pub fn with_args(mut self, args: &str) -> Self {
        self.args = Some(args.to_string());
        self
    }
}

/// What one plugin run produced.
#[derive(Debug, Clone)]
pub struct PluginOutput {
    pub cmdline: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed (Null when empty or not JSON).
    pub json: Value,
}

impl PluginOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics unless the plugin succeeded; returns its JSON output.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(self.success(), "{self}");
        &self.json
    }

    /// Panics unless the plugin failed with a spec error (`cniVersion`, `code`, `msg`,
    /// `details` on stdout, non-zero exit) of `code` reported under `version`, and without
    /// a panic message or a backtrace; returns the error's `details`.
    #[track_caller]
    pub fn error(&self, code: u64, version: &str) -> String {
        assert!(
            !self.success(),
            "expected error {code}, got success: {self}"
        );
        let e = &self.json;
        assert_eq!(e["code"], json!(code), "error code: {self}");
        assert!(
            e["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "error msg: {self}"
        );
        assert!(e["details"].is_string(), "error details: {self}");
        assert_eq!(e["cniVersion"], json!(version), "error cniVersion: {self}");
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "panic output: {self}"
        );
        e["details"].as_str().unwrap_or_default().to_string()
    }
}

impl std::fmt::Display for PluginOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {:?}\nstdout: {}\nstderr: {}",
            self.cmdline, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `bin` with `CNI_COMMAND=command`, `env` and `stdin`, like a runtime; inside the
/// network namespace `host_ns` (a node: what the runtime's "host" is) when given. The
/// test process's own `CNI_*` variables are not passed on.
pub fn invoke(
    bin: &Path,
    command: Option<&str>,
    env: &CniEnv,
    stdin: &[u8],
    host_ns: Option<&str>,
) -> PluginOutput {
    let mut cmd = match host_ns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    let vars = [
        ("CNI_COMMAND", command.map(str::to_string)),
        ("CNI_CONTAINERID", env.container_id.clone()),
        ("CNI_NETNS", env.netns.clone()),
        ("CNI_IFNAME", env.ifname.clone()),
        ("CNI_ARGS", env.args.clone()),
        ("CNI_PATH", env.path.clone()),
    ];
    let mut cmdline = String::new();
    for (k, v) in &vars {
        if let Some(v) = v {
            cmd.env(k, v);
            cmdline.push_str(&format!("{k}={v} "));
        }
    }
    cmdline.push_str(&bin.display().to_string());
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
    {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // A plugin that fails early may close stdin before reading it all.
        let _ = pipe.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait {cmdline}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    PluginOutput {
        cmdline,
        code: out.status.code(),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A netd network configuration (single plugin) for `socket`.
pub fn netd_conf(version: &str, name: &str, network: &str, socket: &Path) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "type": "netd",
        "network": network,
        "socket": socket.display().to_string(),
    })
}

/// `conf` with `key` set (a shallow merge helper).
pub fn with(mut conf: Value, key: &str, value: Value) -> Value {
    conf[key] = value;
    conf
}

/// netd-cni with one configuration object, as a runtime calls a single-plugin network.
pub struct Netd {
    pub bin: PathBuf,
}

impl Default for Netd {
    fn default() -> Self {
        Netd { bin: plugin_bin() }
    }
}

impl Netd {
    pub fn call(&self, command: &str, env: &CniEnv, conf: &Value) -> PluginOutput {
        invoke(
            &self.bin,
            Some(command),
            env,
            conf.to_string().as_bytes(),
            None,
        )
    }

    pub fn call_raw(&self, command: Option<&str>, env: &CniEnv, stdin: &[u8]) -> PluginOutput {
        invoke(&self.bin, command, env, stdin, None)
    }

    /// ADD that must succeed; returns the result.
    #[track_caller]
    pub fn add(&self, env: &CniEnv, conf: &Value) -> Value {
        self.call("ADD", env, conf).ok().clone()
    }
}

/// A network configuration list run like libcni does it.
pub struct Chain {
    /// The `.conflist` document.
    pub list: Value,
    /// Capability arguments the runtime offers (`portMappings`, `ips`, ...); each plugin
    /// gets, in `runtimeConfig`, those it declares in `capabilities`.
    pub capability_args: Value,
    /// The runtime's network namespace (a node), where every plugin runs.
    pub host_ns: String,
    /// Directories searched for a plugin by `type`, in order.
    pub plugin_dirs: Vec<PathBuf>,
}

impl Chain {
    fn plugin_path(&self, kind: &str) -> PathBuf {
        self.plugin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("plugin {kind} not found in {:?}", self.plugin_dirs))
    }

    /// The stdin of plugin `i`: its object plus `name`, `cniVersion`, the runtimeConfig
    /// of its declared capabilities and `prevResult`.
    pub fn plugin_conf(&self, i: usize, prev: Option<&Value>) -> Value {
        let mut conf = self.list["plugins"][i].clone();
        conf["name"] = self.list["name"].clone();
        conf["cniVersion"] = self.list["cniVersion"].clone();
        let mut rc = serde_json::Map::new();
        if let Some(caps) = conf["capabilities"].as_object() {
            for (cap, on) in caps {
                if on == &json!(true) {
                    if let Some(v) = self.capability_args.get(cap) {
                        rc.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !rc.is_empty() {
            conf["runtimeConfig"] = Value::Object(rc);
        }
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    fn plugins(&self) -> usize {
        self.list["plugins"].as_array().map_or(0, Vec::len)
    }

    fn run(&self, i: usize, command: &str, env: &CniEnv, prev: Option<&Value>) -> PluginOutput {
        let conf = self.plugin_conf(i, prev);
        let kind = conf["type"].as_str().unwrap_or_default().to_string();
        let mut env = env.clone();
        env.path = Some(
            self.plugin_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        );
        invoke(
            &self.plugin_path(&kind),
            Some(command),
            &env,
            conf.to_string().as_bytes(),
            Some(&self.host_ns),
        )
    }

    /// ADD through every plugin; the final result, or the failing plugin's output.
    pub fn add(&self, env: &CniEnv) -> Result<Value, PluginOutput> {
        let mut prev: Option<Value> = None;
        for i in 0..self.plugins() {
            let out = self.run(i, "ADD", env, prev.as_ref());
            if !out.success() {
                return Err(out);
            }
            prev = Some(out.json);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// CHECK through every plugin with the cached result, except the plugin types in `skip`.
    pub fn check(&self, env: &CniEnv, result: &Value, skip: &[&str]) -> Result<(), PluginOutput> {
        for i in 0..self.plugins() {
            let kind = self.list["plugins"][i]["type"].as_str().unwrap_or_default();
            if skip.contains(&kind) {
                continue;
            }
            let out = self.run(i, "CHECK", env, Some(result));
            if !out.success() {
                return Err(out);
            }
        }
        Ok(())
    }

    /// DEL through every plugin in reverse order with the cached result.
    pub fn del(&self, env: &CniEnv, result: Option<&Value>) -> Result<(), PluginOutput> {
        for i in (0..self.plugins()).rev() {
            let out = self.run(i, "DEL", env, result);
            if !out.success() {
                return Err(out);
            }
        }
        Ok(())
    }
}

/// A private podman installation (root, runroot, containers.conf, CNI config and plugin
/// directories, a busybox root filesystem) that runs in a node's network namespace, so its
/// containers' sandboxes belong to that node and its netd. Removes its containers on drop.
pub struct Podman {
    pub dir: PathBuf,
    pub node_ns: String,
    pub rootfs: PathBuf,
}

impl Podman {
    /// Sets up under `dir` (created; must not be shared) a podman whose CNI network
    /// `conflist["name"]` is `conflist`.
    pub fn new(dir: &Path, node: &Node, conflist: &Value) -> Podman {
        let _ = fs::remove_dir_all(dir);
        for sub in ["root", "runroot", "tmp", "cni", "bin", "rootfs"] {
            fs::create_dir_all(dir.join(sub)).expect("podman dirs");
        }
        symlink(plugin_bin(), dir.join("bin/netd")).expect("plugin symlink");
        let rootfs = dir.join("rootfs");
        busybox_rootfs(&rootfs);
        let d = dir.display();
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 [engine]\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 events_logfile_path = \"{d}/events.log\"\n\
                 runtime = \"runc\"\n\
                 tmp_dir = \"{d}/tmp\"\n\
                 static_dir = \"{d}/root/libpod\"\n\
                 volume_path = \"{d}/root/volumes\"\n\
                 [network]\n\
                 network_backend = \"cni\"\n\
                 cni_plugin_dirs = [\"{d}/bin\", \"{REFERENCE_DIR}\"]\n\
                 network_config_dir = \"{d}/cni\"\n"
            ),
        )
        .expect("containers.conf");
        let name = conflist["name"].as_str().expect("conflist name");
        fs::write(
            dir.join("cni").join(format!("{name}.conflist")),
            serde_json::to_string_pretty(conflist).expect("conflist"),
        )
        .expect("conflist file");
        Podman {
            dir: dir.to_path_buf(),
            node_ns: node.netns.clone(),
            rootfs,
        }
    }

    /// `podman <args>` in the node's namespace with this installation's storage and config.
    pub fn run(&self, args: &[&str]) -> CmdOutput {
        let d = &self.dir;
        let mut full: Vec<String> = vec![
            format!("--net=/run/netns/{}", self.node_ns),
            "env".into(),
            format!("CONTAINERS_CONF={}", d.join("containers.conf").display()),
            "podman".into(),
            "--root".into(),
            d.join("root").display().to_string(),
            "--runroot".into(),
            d.join("runroot").display().to_string(),
            "--cni-config-dir".into(),
            d.join("cni").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
        ];
        full.extend(args.iter().map(|s| s.to_string()));
        crate::cmd::run("nsenter", &full).unwrap_or_else(|e| panic!("{e:#}"))
    }

    #[track_caller]
    pub fn run_ok(&self, args: &[&str]) -> CmdOutput {
        self.run(args).expect_ok()
    }

    /// `podman run -d` of a long-sleeping busybox container on `network`, with `extra`
    /// options (e.g. `--ip`) before the root filesystem.
    #[track_caller]
    pub fn start(&self, name: &str, network: &str, extra: &[&str]) -> CmdOutput {
        let rootfs = self.rootfs.display().to_string();
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--cap-add",
            "NET_RAW",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", &rootfs, "/bin/sleep", "600"]);
        self.run_ok(&args)
    }

    /// `podman exec <name> <cmd...>`.
    pub fn exec(&self, name: &str, cmd: &[&str]) -> CmdOutput {
        let mut args = vec!["exec", name];
        args.extend_from_slice(cmd);
        self.run(&args)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
        let _ = fs::remove_dir_all(&self.dir);
        // The per-test parent, once its last installation is gone (fails while not empty).
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// A root filesystem of busybox-static: `/bin/busybox` (a copy, not a link) plus applet
/// links, and the directories the runtime mounts over.
pub fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox missing: install busybox-static (scripts/setup.sh)"
    );
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        fs::create_dir_all(dir.join(sub)).expect("rootfs dirs");
    }
    fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "sleep", "ping", "ip", "cat", "hostname", "nslookup", "true", "wget", "nc",
    ] {
        let _ = symlink("busybox", dir.join("bin").join(applet));
    }
}
