//! Service load balancing tests: backend servers that say who they are, clients that run in
//! a container namespace *and* (for the eBPF backend) in the node's LB cgroup, and cleanup of
//! the per-node cgroups and bpffs pins.
//!
//! Clients are `python3` processes: a process is moved into the cgroup first (its pid written
//! to `cgroup.procs`), then enters the container's namespace with `nsenter --net` (not
//! `ip netns exec`, which remounts /sys).

use crate::cluster::{Cluster, Node};
use crate::cmd::Background;
use crate::netns::in_netns;
use crate::tcp::listen_in;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup/unified";

/// Which LB data plane a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbKind {
    Ebpf,
    Nftables,
    /// IPVS in each client container's namespace (needs a kernel with IPVS: the VM tier).
    Ipvs,
}

impl LbKind {
    /// Config lines for every node.
    pub fn config_lines(self) -> Vec<String> {
        match self {
            LbKind::Ebpf => vec![
                "lb_backend = \"ebpf\"".into(),
                format!("lb_cgroup = \"{CGROUP_ROOT}/netd-test-{{node}}\""),
            ],
            LbKind::Nftables => vec!["lb_backend = \"nftables\"".into()],
            LbKind::Ipvs => vec!["lb_backend = \"ipvs\"".into()],
        }
    }
}

/// The cgroup netd of `node` attaches to (eBPF), as configured by [`LbKind::config_lines`].
pub fn cgroup_of(node: &Node) -> PathBuf {
    Path::new(CGROUP_ROOT).join(format!("netd-test-{}", node.name))
}

pub fn pin_dir_of(node: &Node) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/netd-{}", node.name))
}

/// Removes the per-node cgroups (killing what is left in them) and bpffs pins on drop.
/// Declare it after the cluster, so it runs first.
pub struct LbCleanup {
    cgroups: Vec<PathBuf>,
    pins: Vec<PathBuf>,
}

impl LbCleanup {
    pub fn new(cluster: &Cluster) -> LbCleanup {
        LbCleanup {
            cgroups: cluster.nodes.iter().map(cgroup_of).collect(),
            pins: cluster.nodes.iter().map(pin_dir_of).collect(),
        }
    }
}

impl Drop for LbCleanup {
    fn drop(&mut self) {
        for cg in &self.cgroups {
            if cg.exists() {
                let _ = std::fs::write(cg.join("cgroup.kill"), "1");
                for _ in 0..50 {
                    if std::fs::remove_dir(cg).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        for p in &self.pins {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// A backend task: TCP (answers `<id>\n`, then echoes) and UDP (answers every datagram with
/// `<id>`) on `port` inside namespace `ns`, until dropped. [`IdServer::start_telling_peer`]
/// adds the peer's address (`<id> <peer ip>`: SNAT vs. client-IP preservation).
pub struct IdServer {
    stop: Arc<AtomicBool>,
}

impl IdServer {
    pub fn start(ns: &str, tcp_port: u16, udp_port: u16, id: &str) -> Result<IdServer> {
        IdServer::spawn(ns, tcp_port, udp_port, id, false)
    }

    pub fn start_telling_peer(
        ns: &str,
        tcp_port: u16,
        udp_port: u16,
        id: &str,
    ) -> Result<IdServer> {
        IdServer::spawn(ns, tcp_port, udp_port, id, true)
    }

    fn spawn(
        ns: &str,
        tcp_port: u16,
        udp_port: u16,
        id: &str,
        tell_peer: bool,
    ) -> Result<IdServer> {
        let answer = move |id: &str, peer: std::net::IpAddr| {
            if tell_peer {
                format!("{id} {peer}")
            } else {
                id.to_string()
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let listener = listen_in(ns, Ipv4Addr::UNSPECIFIED, tcp_port)?;
        listener.set_nonblocking(true)?;
        let udp = in_netns(ns, move || {
            UdpSocket::bind(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                udp_port,
            )))
        })??;
        udp.set_read_timeout(Some(Duration::from_millis(100)))?;
        let (s1, s2) = (stop.clone(), stop.clone());
        let (id1, id2) = (id.to_string(), id.to_string());
        std::thread::spawn(move || {
            while !s1.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let hello = format!("{}\n", answer(&id1, peer.ip()));
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(600)));
                            if conn.write_all(hello.as_bytes()).is_err() {
                                return;
                            }
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = conn.read(&mut buf) {
                                if n == 0 || conn.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s2.load(Ordering::SeqCst) {
                if let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(answer(&id2, from.ip()).as_bytes(), from);
                }
            }
        });
        Ok(IdServer { stop })
    }
}

impl Drop for IdServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The client program (python3): modes `tcp N`, `udp N`, `tcpudp N UDP_PORT M` (both, one
/// python start: it costs seconds in an emulated guest), `refused`, `hold FILE`, `udphold
/// FILE` (a connected UDP socket asking every 50 ms until FILE exists; a line per change of
/// the answering task; reconnects on a socket error, never on a mere timeout).
const CLIENT: &str = r#"
import errno, json, os, socket, sys, time
mode, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
def line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        buf += c
    return buf.decode().strip()
def tcp(n):
    counts, peers, errors = {}, set(), {}
    for _ in range(n):
        try:
            s = socket.create_connection((vip, port), timeout=5)
            peers.add("%s:%d" % s.getpeername())
            ident = line(s)
            counts[ident] = counts.get(ident, 0) + 1
            s.close()
        except OSError as e:
            k = errno.errorcode.get(e.errno, str(e))
            errors[k] = errors.get(k, 0) + 1
    return {"counts": counts, "peers": sorted(peers), "errors": errors}
def udp(port, n):
    counts, froms = {}, set()
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(b"hi", (vip, port))
        data, frm = s.recvfrom(1500)
        froms.add("%s:%d" % frm)
        counts[data.decode()] = counts.get(data.decode(), 0) + 1
        s.close()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect((vip, port))
    s.send(b"hi")
    data, frm = s.recvfrom(1500)
    return {"counts": counts, "froms": sorted(froms),
            "connected_peer": "%s:%d" % s.getpeername(),
            "connected_from": "%s:%d" % frm}
if mode == "tcp":
    print(json.dumps(tcp(int(sys.argv[4]))))
elif mode == "udp":
    print(json.dumps(udp(port, int(sys.argv[4]))))
elif mode == "tcpudp":
    print(json.dumps({"tcp": tcp(int(sys.argv[4])), "udp": udp(int(sys.argv[5]), int(sys.argv[6]))}))
elif mode == "refused":
    t = time.time()
    try:
        socket.create_connection((vip, port), timeout=10)
        r = "connected"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e))
    print(json.dumps({"result": r, "secs": time.time() - t}))
elif mode == "hold":
    s = socket.create_connection((vip, port), timeout=5)
    s.settimeout(60)
    print(json.dumps({"backend": line(s)}), flush=True)
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.05)
    s.sendall(b"still-there\n")
    print(json.dumps({"echo": line(s)}), flush=True)
elif mode == "udphold":
    def conn():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((vip, port))
        s.settimeout(0.5)
        return s
    s, last, reconnects, lost = conn(), None, 0, 0
    while not os.path.exists(sys.argv[4]):
        try:
            s.send(b"hi")
            data = s.recv(1500).decode()
            if data != last:
                print(json.dumps({"backend": data, "reconnects": reconnects, "lost": lost}),
                      flush=True)
                last = data
        except socket.timeout:
            lost += 1
        except OSError as e:
            reconnects += 1
            s.close()
            s = conn()
        time.sleep(0.05)
"#;

/// argv for running the client in `ns` (and in `cgroup` when given).
fn client_argv(ns: &str, cgroup: Option<&Path>, args: &[String]) -> Vec<String> {
    let enter = format!(
        "exec nsenter --net={} python3 -c \"$0\" \"$@\"",
        crate::netns::path(ns).display()
    );
    let script = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && {enter}", cg.display()),
        None => enter,
    };
    let mut argv = vec!["-c".to_string(), script, CLIENT.to_string()];
    argv.extend(args.iter().cloned());
    argv
}

/// Runs the client to completion and parses its JSON line.
pub fn client(ns: &str, cgroup: Option<&Path>, args: &[String]) -> Result<Value> {
    let out = Command::new("sh")
        .args(client_argv(ns, cgroup, args))
        .stdin(Stdio::null())
        .output()
        .context("spawning client")?;
    if !out.status.success() {
        bail!(
            "client {args:?} in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).with_context(|| format!("client output {text:?}"))
}

/// Starts the client in the background (for `hold`).
pub fn client_bg(
    ns: &str,
    cgroup: Option<&Path>,
    args: &[String],
    dir: &Path,
    tag: &str,
) -> Result<Background> {
    Background::spawn("sh", &client_argv(ns, cgroup, args), dir, tag)
}

/// Reads the first JSON line a background client printed, waiting up to `timeout`.
pub fn first_line(bg: &Background, n: usize, timeout: Duration) -> Result<Value> {
    let deadline = std::time::Instant::now() + crate::wait::scaled(timeout);
    loop {
        let f = std::fs::File::open(&bg.stdout_path)?;
        let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
        if lines.len() > n {
            return Ok(serde_json::from_str(&lines[n])?);
        }
        if std::time::Instant::now() > deadline {
            bail!("no line {n} from `{}`; stderr: {}", bg.cmdline, bg.stderr());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ping -c 2` from container `ns` (in `cgroup` when given) to `dst`: the replies' source
/// addresses (empty: no answer).
pub fn ping(ns: &str, cgroup: Option<&Path>, dst: &str) -> Result<Vec<String>> {
    let enter = format!(
        "exec nsenter --net={} ping -n -c 2 -i 0.2 -W 1 {dst}",
        crate::netns::path(ns).display()
    );
    let script = match cgroup {
        Some(cg) => format!("echo $$ > {}/cgroup.procs && {enter}", cg.display()),
        None => enter,
    };
    let out = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output()
        .context("spawning ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| l.split(" bytes from ").nth(1))
        .filter_map(|r| r.split(':').next())
        .map(str::to_string)
        .collect())
}

/// The bytes of a bpftool JSON hex array (`["0x0a", ...]`).
fn hex_bytes(v: &Value) -> Result<Vec<u8>> {
    v.as_array()
        .context("not a byte array")?
        .iter()
        .map(|b| {
            let s = b.as_str().context("byte not a string")?;
            u8::from_str_radix(s.trim_start_matches("0x"), 16).context("bad byte")
        })
        .collect()
}

fn bpftool_json(args: &[&str]) -> Result<Value> {
    let out = crate::cmd::run("bpftool", args)?;
    if !out.success {
        bail!("bpftool {}: {}", args.join(" "), out.stderr);
    }
    Ok(serde_json::from_str(&out.stdout)?)
}

fn map_lookup(map: &Path, key: &[u8]) -> Result<Vec<u8>> {
    let mut args = vec![
        "-j".to_string(),
        "map".into(),
        "lookup".into(),
        "pinned".into(),
        map.display().to_string(),
        "key".into(),
    ];
    args.extend(key.iter().map(|b| b.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    hex_bytes(&bpftool_json(&args)?["value"])
}

/// The Maglev table node `node` programmed for frontend `vip:port/proto`, read from its pinned
/// maps (`lb_services` → slot, `lb_maglev` row → backend ids, `lb_backends` → addresses): one
/// backend address per table entry.
pub fn maglev_table(node: &Node, vip: Ipv4Addr, port: u16, proto: u8) -> Result<Vec<Ipv4Addr>> {
    let dir = pin_dir_of(node);
    let mut key = vip.octets().to_vec();
    key.extend(port.to_be_bytes());
    key.extend([proto, 0]);
    let svc = map_lookup(&dir.join("lb_services"), &key)?;
    let slot = u32::from_le_bytes(svc[0..4].try_into()?);
    let row = map_lookup(&dir.join("lb_maglev"), &slot.to_le_bytes())?;
    let mut addr_of = std::collections::BTreeMap::new();
    let mut table = Vec::new();
    for id in row.chunks_exact(4) {
        let id = u32::from_le_bytes(id.try_into()?);
        if let std::collections::btree_map::Entry::Vacant(e) = addr_of.entry(id) {
            let b = map_lookup(&dir.join("lb_backends"), &id.to_le_bytes())?;
            e.insert(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        }
        table.push(addr_of[&id]);
    }
    Ok(table)
}
