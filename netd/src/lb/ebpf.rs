//! Socket-level LB with cgroup sock_addr programs (see `ebpf/`), loaded with aya.
//!
//! Pinned under the per-node bpffs directory: the maps (`lb_*`, by name) and one link per
//! attach point (`link_<prog>`). A starting netd adopts them when the pinned `lb_meta` says they
//! were made from the same objects for the same cgroup: it then loads nothing, and reads the
//! maps back to know what is programmed. Otherwise it loads the embedded objects (reusing
//! compatible pinned maps), attaches new links and only then replaces the old pins, so there is
//! no moment without LB. Established connections never depend on netd: TCP is translated once
//! at connect time, and UDP reverse entries live in the pinned `lb_rev_nat`.
//!
//! Per local container, two tc classifiers on the host end of its veth (TCX links pinned as
//! `tc_<sandbox>_<ifname>[_egress]`, checked by program id, so a restart adopts them): ARP and
//! ICMP echo answers for VIPs, and packet-level LB (DNAT, conntrack, reverse NAT) for traffic
//! to a VIP that no socket hook translated.

use super::maglev;
use super::maps::*;
use super::model::{Backend, Frontend, LbModel, Proto, Service};
use super::LoadBalancer;
use crate::kernel::cmd::{run, Ns};
use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap, Map, MapData};
use aya::programs::links::FdLink;
use aya::programs::tc::TcAttachOptions;
use aya::programs::{CgroupAttachMode, CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType};
use aya::EbpfLoader;
use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};
use std::ffi::CString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! object {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".o")) as &[u8],
        )
    };
}

/// The compiled cgroup programs, one object per attach point (built by build.rs from `ebpf/`).
pub const OBJECTS: [(&str, &[u8]); 4] = [
    object!("connect4"),
    object!("sendmsg4"),
    object!("recvmsg4"),
    object!("getpeername4"),
];

/// The tc classifiers attached (TCX) to the host end of every local container's veth: ingress
/// answers ARP and ICMP echo for VIPs and load-balances packets no socket hook translated,
/// egress reverses that NAT on replies.
pub const TC_OBJECTS: [(&str, &[u8]); 2] = [object!("tc_ingress"), object!("tc_egress")];

/// Per tc object: program, its pin, attach point, suffix of its links' pins.
const TC_PROGS: [(&str, &str, TcAttachType, &str); 2] = [
    (
        "lb_tc_ingress",
        "prog_tc_ingress",
        TcAttachType::Ingress,
        "",
    ),
    (
        "lb_tc_egress",
        "prog_tc_egress",
        TcAttachType::Egress,
        "_egress",
    ),
];
const TC_LINK_PREFIX: &str = "tc_";
/// Drift repair reads every service's Maglev row back (4 KiB each) only up to this many
/// frontends; beyond, it checks the service entries and backends only.
const VERIFY_ROWS_UP_TO: usize = 4096;
/// Frontends compared per `verify_kernel` call (under the LB's lock: a change on the LB thread
/// waits for one slice at most, not for the whole read-back).
const VERIFY_SLICE: usize = 512;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// What is programmed for one frontend.
#[derive(Debug, Clone)]
struct Programmed {
    slot: u32,
    network: String,
    backends: Vec<Backend>,
    /// Drained tasks (not in the maps; kept to notice a change).
    drained: Vec<Backend>,
    /// A write failed half-way: reprogram on the next pass.
    dirty: bool,
}

pub struct EbpfLb {
    services: HashMap<MapData, SvcKey, SvcVal>,
    backends: BackendTable,
    maglev: Array<MapData, MaglevRow>,
    vips: HashMap<MapData, u32, u32>,
    /// VIP -> enabled backends over its frontends, as in `lb_vips`.
    cur_vips: BTreeMap<Ipv4Addr, u32>,
    /// The loaded classifiers (as TC_PROGS) and their program ids.
    tc: Vec<(SchedClassifier, u32)>,
    dir: PathBuf,
    /// Devices served by `tc` (sandbox netns, ifname) -> ifindex checked.
    devices: BTreeMap<(PathBuf, String), u32>,
    /// UDP backends (enabled or drained) at the last apply: see [`close_udp_to`].
    udp_backends: BTreeSet<Backend>,
    cur: BTreeMap<Frontend, Programmed>,
    /// The last frontend compared by a drift-repair read-back under way (see `verify_kernel`).
    verified_up_to: Option<Frontend>,
    ids: BTreeMap<(Backend, Proto), u32>,
    /// Backend ids and service slots never used (from `next_*` up) or freed.
    next_id: u32,
    free_ids: Vec<u32>,
    next_slot: u32,
    free_slots: Vec<u32>,
    /// Services using each backend (the `backends` of `cur`).
    refs: StdHashMap<(Backend, Proto), u32>,
    /// Backends whose last user went: removed from the map once no table is half-written.
    maybe_stale: Vec<(Backend, Proto)>,
    /// The last apply failed somewhere: the next one looks at everything again.
    retry: bool,
    /// Whether the pinned programs were adopted (true) or (re)loaded at start.
    pub adopted: bool,
    /// Frontends the maps hold at most (`lb_max_services`).
    max_services: u32,
}

/// `lb_backends`: an mmapable array, written through shared memory (two 8-byte stores per
/// backend, no syscall: 100k backends are programmed in a few ms).
struct BackendTable {
    _map: MapData,
    ptr: *mut AtomicU64,
    bytes: usize,
}

// SAFETY: the mapping is owned by the table and only accessed through atomics.
unsafe impl Send for BackendTable {}

impl BackendTable {
    fn open(dir: &Path) -> Result<BackendTable> {
        let map = MapData::from_pin(dir.join(MAP_BACKENDS))
            .with_context(|| format!("opening pinned map {MAP_BACKENDS}"))?;
        let bytes = (MAX_BACKENDS as usize * size_of::<BackendVal>()).next_multiple_of(4096);
        // SAFETY: mmap(2) of a BPF_F_MMAPABLE array of exactly MAX_BACKENDS 16-byte values;
        // fails (EINVAL) for any other map.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "mmap of {MAP_BACKENDS}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(BackendTable {
            _map: map,
            ptr: p.cast(),
            bytes,
        })
    }

    /// The two 8-byte words of entry `id`: address, port, protocol; MAC.
    fn words(&self, id: u32) -> (&AtomicU64, &AtomicU64) {
        assert!(id < MAX_BACKENDS);
        // SAFETY: within the mapping (checked), 8-byte aligned (page-aligned base).
        unsafe {
            (
                &*self.ptr.add(id as usize * 2),
                &*self.ptr.add(id as usize * 2 + 1),
            )
        }
    }

    /// The MAC first, then the address: a reader that sees the address sees its MAC.
    fn set(&self, id: u32, v: BackendVal) {
        // SAFETY: BackendVal is 16 bytes of plain integers.
        let [addr, mac] = unsafe { std::mem::transmute::<BackendVal, [u64; 2]>(v) };
        let (a, m) = self.words(id);
        m.store(mac, Ordering::Release);
        a.store(addr, Ordering::Release);
    }

    fn clear(&self, id: u32) {
        let (a, m) = self.words(id);
        a.store(0, Ordering::Release);
        m.store(0, Ordering::Release);
    }

    fn get(&self, id: u32) -> BackendVal {
        let (a, m) = self.words(id);
        let raw = [a.load(Ordering::Acquire), m.load(Ordering::Acquire)];
        // SAFETY: as in `set`.
        unsafe { std::mem::transmute::<[u64; 2], BackendVal>(raw) }
    }
}

impl Drop for BackendTable {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

fn fs_magic(p: &Path) -> Option<i64> {
    let c = CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs(2) with a valid C string and a zeroed out-struct.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_type as i64)
}

/// Mounts bpffs on /sys/fs/bpf if nothing is mounted there (as systemd does at boot), then
/// creates the pin directory, which must be on bpffs.
fn ensure_pin_dir(dir: &Path) -> Result<()> {
    if dir.starts_with(BPFFS_ROOT) && fs_magic(Path::new(BPFFS_ROOT)) != Some(BPF_FS_MAGIC) {
        let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
        // SAFETY: mount(2) with valid C strings and no data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            bail!(
                "mounting bpffs on {BPFFS_ROOT}: {}",
                std::io::Error::last_os_error()
            );
        }
        tracing::info!("mounted bpffs on {BPFFS_ROOT}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if fs_magic(dir) != Some(BPF_FS_MAGIC) {
        bail!("lb_pin_dir: {} is not on a bpffs", dir.display());
    }
    Ok(())
}

/// Opens (creating if needed) the cgroup; refuses a cgroup v2 root (the machine's).
fn open_cgroup(cg: &Path) -> Result<File> {
    let parent = cg.parent().context("lb_cgroup has no parent")?;
    if fs_magic(parent) != Some(CGROUP2_SUPER_MAGIC) {
        bail!(
            "lb_cgroup: {} must be below a cgroup v2 hierarchy, not its root (is {} cgroup2?)",
            cg.display(),
            parent.display()
        );
    }
    if !cg.exists() {
        std::fs::create_dir(cg).with_context(|| format!("creating cgroup {}", cg.display()))?;
    }
    File::open(cg).with_context(|| format!("opening cgroup {}", cg.display()))
}

/// FNV-1a over the embedded objects: identifies the programs a pinned link runs.
fn objects_hash() -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for (_, bytes) in OBJECTS.into_iter().chain(TC_OBJECTS) {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

fn open_map(dir: &Path, name: &str) -> Result<Map> {
    let data =
        MapData::from_pin(dir.join(name)).with_context(|| format!("opening pinned map {name}"))?;
    Ok(Map::from_map_data(data)?)
}

fn link_path(dir: &Path, prog: &str) -> PathBuf {
    dir.join(format!("link_{prog}"))
}

/// Loads every object (maps pinned by name in `dir`), attaches it to the cgroup and pins the
/// link, replacing an older pinned link only once the new one is attached.
fn load_and_attach(dir: &Path, cgroup: &File, max_services: u32) -> Result<()> {
    // Pinned maps of another layout that loading would not notice (the programs load against
    // either): start them afresh.
    let compatible = !dir.join(MAP_BACKENDS).exists()
        || (BackendTable::open(dir).is_ok()
            && open_map(dir, MAP_MAGLEV)
                .ok()
                .and_then(|m| Array::<MapData, MaglevRow>::try_from(m).ok())
                .is_some()
            && pinned_capacity(dir) == Some(max_services));
    if !compatible {
        tracing::warn!("pinned LB maps of an older layout; recreating them");
        remove_map_pins(dir);
    }
    for (prog, bytes) in OBJECTS {
        let mut bpf = match loader(dir, max_services).load(bytes) {
            Ok(b) => b,
            Err(e) => {
                // Pinned maps of an incompatible layout (an older netd): start them afresh.
                tracing::warn!(prog, error = %e, "loading with the pinned maps failed; recreating the maps");
                remove_map_pins(dir);
                loader(dir, max_services)
                    .load(bytes)
                    .with_context(|| format!("loading eBPF object {prog}"))?
            }
        };
        let fn_name = format!("lb_{prog}");
        let p: &mut CgroupSockAddr = bpf
            .program_mut(&fn_name)
            .with_context(|| format!("program {fn_name} missing"))?
            .try_into()?;
        p.load()
            .with_context(|| format!("loading program {fn_name}"))?;
        // bpf_link_create takes no flags for cgroups (links always coexist, like ALLOW_MULTI):
        // aya's `Single` is flags 0.
        let id = p
            .attach(cgroup, CgroupAttachMode::Single)
            .with_context(|| format!("attaching {fn_name}"))?;
        let link: FdLink = p.take_link(id)?.try_into()?;
        let path = link_path(dir, prog);
        // The old link (if any) detaches when its pin goes; the new one is attached already.
        let _ = std::fs::remove_file(&path);
        link.pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
    }
    // The classifiers: loaded and pinned here, attached per device by `attach_devices`.
    for ((name, bytes), (prog, pin, _, _)) in TC_OBJECTS.into_iter().zip(TC_PROGS) {
        let mut bpf = loader(dir, max_services)
            .load(bytes)
            .with_context(|| format!("loading eBPF object {name}"))?;
        let p: &mut SchedClassifier = bpf
            .program_mut(prog)
            .with_context(|| format!("program {prog} missing"))?
            .try_into()?;
        p.load()
            .with_context(|| format!("loading program {prog}"))?;
        let _ = std::fs::remove_file(dir.join(pin));
        p.pin(dir.join(pin))
            .with_context(|| format!("pinning {prog}"))?;
    }
    Ok(())
}

/// A loader sharing the pinned maps in `dir`, the per-service maps sized to `max_services`
/// (the Maglev table alone is 4 KiB per frontend: 32 MiB of kernel memory at 8192).
fn loader(dir: &Path, max_services: u32) -> EbpfLoader<'_> {
    let mut l = EbpfLoader::new();
    l.default_map_pin_directory(dir);
    for m in [MAP_SERVICES, MAP_MAGLEV, MAP_VIPS] {
        l.map_max_entries(m, max_services);
    }
    l
}

/// The capacity the pinned maps were created with.
fn pinned_capacity(dir: &Path) -> Option<u32> {
    let m = MapData::from_pin(dir.join(MAP_MAGLEV)).ok()?;
    Some(m.info().ok()?.max_entries())
}

fn remove_map_pins(dir: &Path) {
    for m in [
        MAP_SERVICES,
        MAP_BACKENDS,
        MAP_MAGLEV,
        MAP_REV_NAT,
        MAP_META,
        MAP_VIPS,
        MAP_CT,
        MAP_CT_REV,
    ] {
        let _ = std::fs::remove_file(dir.join(m));
    }
}

fn if_index(name: &str) -> u32 {
    let Ok(c) = CString::new(name) else { return 0 };
    // SAFETY: if_nametoindex(3) with a valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Pin name of the link of device `ifname` in sandbox `ns` (`suffix` as in TC_PROGS).
fn tc_link_pin(ns: &Path, ifname: &str, suffix: &str) -> String {
    let ns = ns
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    format!("{TC_LINK_PREFIX}{ns}_{ifname}{suffix}")
}

impl EbpfLb {
    pub fn open(cgroup: &Path, dir: &Path, max_services: u32) -> Result<EbpfLb> {
        ensure_pin_dir(dir)?;
        let cg = open_cgroup(cgroup)?;
        let cg_id = cg.metadata()?.ino();
        let hash = objects_hash();
        let meta_matches = || -> bool {
            let Ok(m) = open_map(dir, MAP_META) else {
                return false;
            };
            let Ok(meta) = Array::<MapData, u64>::try_from(m) else {
                return false;
            };
            meta.get(&0, 0).ok() == Some(hash)
                && meta.get(&1, 0).ok() == Some(cg_id)
                && pinned_capacity(dir) == Some(max_services)
        };
        let links_pinned = OBJECTS.iter().all(|(p, _)| {
            link_path(dir, p).exists()
                && aya::programs::links::PinnedLink::from_pin(link_path(dir, p)).is_ok()
        });
        let adopted = links_pinned
            && TC_PROGS.iter().all(|(_, pin, _, _)| dir.join(pin).exists())
            && meta_matches();
        if adopted {
            tracing::info!(dir = %dir.display(), "adopting pinned LB programs and maps");
        } else {
            tracing::info!(dir = %dir.display(), cgroup = %cgroup.display(), "loading LB programs");
            load_and_attach(dir, &cg, max_services)?;
            let mut meta = Array::<MapData, u64>::try_from(open_map(dir, MAP_META)?)?;
            meta.set(0, hash, 0)?;
            meta.set(1, cg_id, 0)?;
        }
        let mut tc = Vec::new();
        for (prog, pin, _, _) in TC_PROGS {
            let p = SchedClassifier::from_pin(dir.join(pin))
                .with_context(|| format!("opening pinned {prog}"))?;
            let id = p.info()?.id();
            tc.push((p, id));
        }
        let mut lb = EbpfLb {
            services: HashMap::try_from(open_map(dir, MAP_SERVICES)?)?,
            backends: BackendTable::open(dir)?,
            maglev: Array::try_from(open_map(dir, MAP_MAGLEV)?)?,
            vips: HashMap::try_from(open_map(dir, MAP_VIPS)?)?,
            cur_vips: BTreeMap::new(),
            tc,
            dir: dir.to_path_buf(),
            devices: BTreeMap::new(),
            udp_backends: BTreeSet::new(),
            cur: BTreeMap::new(),
            verified_up_to: None,
            ids: BTreeMap::new(),
            next_id: 0,
            free_ids: Vec::new(),
            next_slot: 0,
            free_slots: Vec::new(),
            refs: StdHashMap::new(),
            maybe_stale: Vec::new(),
            retry: true,
            adopted,
            max_services,
        };
        lb.read_back()?;
        Ok(lb)
    }

    /// Rebuilds the in-memory picture from the maps (after a restart).
    fn read_back(&mut self) -> Result<()> {
        let mut by_id = BTreeMap::new();
        for id in 0..MAX_BACKENDS {
            let v = self.backends.get(id);
            if v.ip == 0 {
                continue;
            }
            if let Some(b) = v.backend() {
                self.ids.insert(b, id);
                by_id.insert(id, b);
            }
        }
        for r in self.vips.iter() {
            let (vip, n) = r?;
            self.cur_vips.insert(Ipv4Addr::from(vip.to_ne_bytes()), n);
        }
        let mut svcs = Vec::new();
        for r in self.services.iter() {
            let (k, v) = r?;
            svcs.push((k, v));
        }
        for (k, v) in svcs {
            let Some(fe) = k.frontend() else { continue };
            let mut backends = BTreeSet::new();
            if v.count > 0 && v.slot < self.max_services {
                let row = self.maglev.get(&v.slot, 0)?;
                for id in row.ids {
                    if let Some((b, _)) = by_id.get(&id) {
                        backends.insert(*b);
                    }
                }
            }
            self.cur.insert(
                fe,
                Programmed {
                    slot: v.slot,
                    network: String::new(),
                    backends: backends.into_iter().collect(),
                    drained: Vec::new(),
                    dirty: false,
                },
            );
        }
        for (fe, p) in &self.cur {
            for b in &p.backends {
                *self.refs.entry((*b, fe.proto)).or_default() += 1;
            }
        }
        self.maybe_stale = self
            .ids
            .keys()
            .filter(|k| !self.refs.contains_key(k))
            .copied()
            .collect();
        // Free lists: everything below the highest used id/slot that is not in use.
        let used: BTreeSet<u32> = self.cur.values().map(|p| p.slot).collect();
        self.next_slot = used.last().map_or(0, |s| s + 1);
        self.free_slots = (0..self.next_slot)
            .rev()
            .filter(|s| !used.contains(s))
            .collect();
        let used: BTreeSet<u32> = self.ids.values().copied().collect();
        self.next_id = used.last().map_or(0, |s| s + 1);
        self.free_ids = (0..self.next_id)
            .rev()
            .filter(|s| !used.contains(s))
            .collect();
        Ok(())
    }

    fn alloc_slot(&mut self) -> Result<u32> {
        if let Some(s) = self.free_slots.pop() {
            return Ok(s);
        }
        if self.next_slot >= self.max_services {
            bail!(
                "no free service slot (lb_services full: {}; raise lb_max_services)",
                self.max_services
            );
        }
        self.next_slot += 1;
        Ok(self.next_slot - 1)
    }

    fn backend_id(&mut self, b: Backend, proto: Proto) -> Result<u32> {
        if let Some(id) = self.ids.get(&(b, proto)) {
            return Ok(*id);
        }
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None if self.next_id < MAX_BACKENDS => {
                self.next_id += 1;
                self.next_id - 1
            }
            None => bail!("no free backend id (lb_backends full: {MAX_BACKENDS})"),
        };
        self.backends.set(id, BackendVal::of(&b, proto, [0; 6]));
        self.ids.insert((b, proto), id);
        Ok(id)
    }

    /// Programs one frontend; returns whether anything changed.
    fn program(
        &mut self,
        fe: &Frontend,
        svc: &Service,
        macs: &BTreeMap<Ipv4Addr, [u8; 6]>,
    ) -> Result<bool> {
        let drained_same = |p: &Programmed| p.drained.iter().eq(svc.drained.iter());
        let slot = match self.cur.get_mut(fe) {
            Some(p) if !p.dirty && p.backends.iter().eq(svc.backends.iter()) => {
                if drained_same(p) {
                    return Ok(false);
                }
                self.set_drained(fe, svc)?;
                return Ok(true);
            }
            Some(p) => {
                p.dirty = true;
                p.slot
            }
            None => {
                let slot = self.alloc_slot()?;
                self.cur.insert(
                    *fe,
                    Programmed {
                        slot,
                        network: svc.network.clone(),
                        backends: Vec::new(),
                        drained: Vec::new(),
                        dirty: true,
                    },
                );
                slot
            }
        };
        let bs: Vec<Backend> = svc.backends.iter().copied().collect();
        let mut ids = Vec::with_capacity(bs.len());
        for b in &bs {
            ids.push(self.backend_id(*b, fe.proto)?);
        }
        // MACs: set with the backend; a task re-created with the same address may have a new
        // one.
        for (b, id) in bs.iter().zip(&ids) {
            if let Some(m) = macs.get(&b.ip) {
                if self.backends.get(*id).mac != *m {
                    self.backends.set(*id, BackendVal::of(b, fe.proto, *m));
                }
            }
        }
        // Backends first (done), then the table (one update: entries that do not move keep
        // their value), then the service: a program never reads an entry that points nowhere.
        if !bs.is_empty() {
            let mut row = MaglevRow {
                ids: [0; MAGLEV_M as usize],
            };
            for (slot_id, i) in row
                .ids
                .iter_mut()
                .zip(maglev::table(&bs, MAGLEV_M as usize))
            {
                *slot_id = ids[i as usize];
            }
            self.maglev.set(slot, row, 0)?;
        }
        self.services.insert(
            SvcKey::of(fe),
            SvcVal {
                slot,
                count: bs.len() as u32,
            },
            0,
        )?;
        let p = self.cur.get_mut(fe).expect("inserted above");
        for b in &bs {
            *self.refs.entry((*b, fe.proto)).or_default() += 1;
        }
        for b in std::mem::replace(&mut p.backends, bs) {
            unref(&mut self.refs, &mut self.maybe_stale, (b, fe.proto));
        }
        p.network = svc.network.clone();
        p.dirty = false;
        if !drained_same(p) {
            self.set_drained(fe, svc)?;
        }
        Ok(true)
    }

    /// [`LoadBalancer::apply`], looking at the frontends in `only` if given (the others are as
    /// programmed), unless the last apply failed.
    fn apply_some(&mut self, want: &LbModel, only: Option<&BTreeSet<Frontend>>) -> Result<()> {
        let mut first_err = None;
        let retry = self.retry;
        let only = only.filter(|_| !retry);
        let mut vips_touched: BTreeSet<Ipv4Addr> = BTreeSet::new();
        let mut udp_touched = retry;
        let todo: Box<dyn Iterator<Item = (&Frontend, &Service)>> = match only {
            Some(fes) => Box::new(fes.iter().filter_map(|fe| want.services.get_key_value(fe))),
            None => Box::new(want.services.iter()),
        };
        for (fe, svc) in todo {
            match self.program(fe, svc, &want.macs) {
                Ok(false) => {}
                Ok(true) => {
                    vips_touched.insert(fe.vip);
                    udp_touched |= fe.proto == Proto::Udp;
                }
                Err(e) => {
                    tracing::warn!(vip = %fe.vip, port = fe.port, error = %format!("{e:#}"), "programming LB service");
                    first_err.get_or_insert(e);
                }
            }
        }
        // Every wanted frontend is in `cur` now (unless its programming failed): more there
        // means some are gone. The common pass (nothing changed) costs O(services) compares.
        if retry || first_err.is_some() || self.cur.len() > want.services.len() {
            let gone: Vec<Frontend> = match only {
                Some(fes) if first_err.is_none() => fes
                    .iter()
                    .filter(|fe| self.cur.contains_key(fe) && !want.services.contains_key(fe))
                    .copied()
                    .collect(),
                _ => self
                    .cur
                    .keys()
                    .filter(|fe| !want.services.contains_key(fe))
                    .copied()
                    .collect(),
            };
            for fe in gone {
                match self.services.remove(&SvcKey::of(&fe)) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {
                        if let Some(p) = self.cur.remove(&fe) {
                            self.free_slots.push(p.slot);
                            for b in p.backends.into_iter().chain(p.drained) {
                                unref(&mut self.refs, &mut self.maybe_stale, (b, fe.proto));
                            }
                        }
                        vips_touched.insert(fe.vip);
                        udp_touched |= fe.proto == Proto::Udp;
                    }
                    Err(e) => {
                        first_err.get_or_insert(e.into());
                    }
                }
            }
        }
        if retry {
            vips_touched.extend(self.cur_vips.keys());
            vips_touched.extend(want.services.keys().map(|fe| fe.vip));
        }
        // Connected UDP sockets of local containers pinned (at connect time) to a backend that
        // left: closed, so the application sees an error and reconnects (to a live backend)
        // instead of sending into a black hole. Drained backends keep their sockets.
        if udp_touched {
            let udp = want.udp_backends();
            let removed: Vec<Backend> = self.udp_backends.difference(&udp).copied().collect();
            if !removed.is_empty() {
                for netns in want.clients.keys() {
                    if let Err(e) = close_udp_to(netns, &removed) {
                        tracing::warn!(netns = %netns.display(), error = %format!("{e:#}"), "closing UDP sockets of removed backends");
                    }
                }
            }
            self.udp_backends = udp;
        }
        // VIPs (ARP and ICMP echo): the sum of enabled backends over each VIP's frontends.
        for vip in vips_touched {
            let range = Frontend {
                vip,
                port: 0,
                proto: Proto::Tcp,
            }..=Frontend {
                vip,
                port: u16::MAX,
                proto: Proto::Udp,
            };
            let mut fes = want.services.range(range).peekable();
            let key = u32::from_ne_bytes(vip.octets());
            if fes.peek().is_none() {
                match self.vips.remove(&key) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {
                        self.cur_vips.remove(&vip);
                    }
                    Err(e) => {
                        first_err.get_or_insert(e.into());
                    }
                }
                continue;
            }
            let n = fes.map(|(_, s)| s.backends.len() as u32).sum::<u32>();
            if self.cur_vips.get(&vip) != Some(&n) {
                match self.vips.insert(key, n, 0) {
                    Ok(()) => {
                        self.cur_vips.insert(vip, n);
                    }
                    Err(e) => {
                        first_err.get_or_insert(e.into());
                    }
                }
            }
        }
        // Backends no service uses any more (after the tables stopped pointing at them).
        if !self.maybe_stale.is_empty() && self.cur.values().all(|p| !p.dirty) {
            for k in std::mem::take(&mut self.maybe_stale) {
                if self.refs.contains_key(&k) {
                    continue; // used again
                }
                let Some(&id) = self.ids.get(&k) else {
                    continue;
                };
                self.backends.clear(id);
                self.ids.remove(&k);
                self.free_ids.push(id);
            }
        }
        self.retry = first_err.is_some();
        first_err.map_or(Ok(()), Err)
    }

    /// Drained tasks keep their backend entries (not in the tables): flows the packet-level LB
    /// pinned to them (its conntrack) continue.
    fn set_drained(&mut self, fe: &Frontend, svc: &Service) -> Result<()> {
        for b in &svc.drained {
            self.backend_id(*b, fe.proto)?;
            *self.refs.entry((*b, fe.proto)).or_default() += 1;
        }
        let p = self.cur.get_mut(fe).expect("programmed");
        let old = std::mem::replace(&mut p.drained, svc.drained.iter().copied().collect());
        for b in old {
            unref(&mut self.refs, &mut self.maybe_stale, (b, fe.proto));
        }
        Ok(())
    }
}

fn unref(
    refs: &mut StdHashMap<(Backend, Proto), u32>,
    stale: &mut Vec<(Backend, Proto)>,
    k: (Backend, Proto),
) {
    if let Some(n) = refs.get_mut(&k) {
        *n -= 1;
        if *n == 0 {
            refs.remove(&k);
            stale.push(k);
        }
    }
}

/// Destroys (sock_diag SOCK_DESTROY, `ss -K`) the connected UDP sockets in `netns` whose peer
/// is one of `backends`: the owner gets ECONNABORTED and its socket is disconnected.
fn close_udp_to(netns: &Path, backends: &[Backend]) -> Result<()> {
    if !netns.exists() {
        return Ok(());
    }
    let mut args = vec!["-K", "-n", "-u", "state", "established", "("];
    let filters: Vec<String> = backends
        .iter()
        .map(|b| format!("dst {}:{}", b.ip, b.port))
        .collect();
    for (i, f) in filters.iter().enumerate() {
        if i > 0 {
            args.push("or");
        }
        args.extend(f.split(' '));
    }
    args.push(")");
    let out = run(&Ns::path(netns), "ss", &args)?;
    let closed = out.lines().skip(1).filter(|l| !l.trim().is_empty()).count();
    if closed > 0 {
        tracing::info!(netns = %netns.display(), closed, "closed UDP sockets of removed backends");
    }
    Ok(())
}

/// What `lb_backend = "ebpf"` needs that older kernels lack: TCX (BPF links on the tc hooks,
/// Linux 6.6 and later), which the classifiers on the containers' veths are attached with.
/// Probed for real: a TCX query on `lo` of the current namespace (the kernel rejects the attach
/// type with EINVAL when it has no TCX); no side effects.
pub fn probe_tcx() -> Result<()> {
    SchedClassifier::query_tcx("lo", TcAttachType::Ingress)
        .map(|_| ())
        .context(
            "the kernel has no TCX (BPF links on the tc hooks, Linux 6.6 or later), which the \
             eBPF LB attaches its tc programs with (a TCX query on lo failed)",
        )
}

/// Makes sure classifier `which` (of TC_PROGS) runs at its TCX hook of `ifname` (in the
/// current netns): adopts what is attached already (a restart), else attaches a link and pins
/// it, replacing the pin of an older link (which detaches it).
fn attach_tc(
    (tc, tc_id): &mut (SchedClassifier, u32),
    which: usize,
    dir: &Path,
    ns: &Path,
    ifname: &str,
) -> Result<()> {
    let (prog, _, at, suffix) = TC_PROGS[which];
    let (_, progs) = SchedClassifier::query_tcx(ifname, at)
        .with_context(|| format!("querying tcx of {ifname}"))?;
    if progs.iter().any(|p| p.id() == *tc_id) {
        return Ok(());
    }
    let id = tc
        .attach_with_options(ifname, at, TcAttachOptions::TcxOrder(LinkOrder::default()))
        .with_context(|| format!("attaching {prog} to {ifname}"))?;
    let link: FdLink = tc.take_link(id)?.try_into()?;
    let path = dir.join(tc_link_pin(ns, ifname, suffix));
    let _ = std::fs::remove_file(&path);
    link.pin(&path)
        .with_context(|| format!("pinning {}", path.display()))?;
    Ok(())
}

impl LoadBalancer for EbpfLb {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn apply(&mut self, want: &LbModel) -> Result<()> {
        self.apply_some(want, None)
    }

    fn apply_changed(&mut self, want: &LbModel, changed: &BTreeSet<Frontend>) -> Result<()> {
        self.apply_some(want, Some(changed))
    }

    fn attach_devices(&mut self, devices: &BTreeSet<(PathBuf, String)>) -> Result<()> {
        let mut by_ns: BTreeMap<&Path, Vec<&str>> = BTreeMap::new();
        for (ns, ifname) in devices {
            by_ns.entry(ns.as_path()).or_default().push(ifname);
        }
        let mut first_err = None;
        for (ns, ifnames) in by_ns {
            let (tc, dir) = (&mut self.tc, self.dir.as_path());
            let known: Vec<u32> = ifnames
                .iter()
                .map(|i| {
                    self.devices
                        .get(&(ns.to_path_buf(), i.to_string()))
                        .copied()
                        .unwrap_or(0)
                })
                .collect();
            let r = crate::kernel::netns::in_netns(ns, || {
                let mut done = Vec::new();
                for (ifname, known) in ifnames.iter().zip(known) {
                    let idx = if_index(ifname);
                    if idx == 0 {
                        continue; // not created yet: the next pass
                    }
                    if idx != known {
                        for (which, t) in tc.iter_mut().enumerate() {
                            attach_tc(t, which, dir, ns, ifname)?;
                        }
                    }
                    done.push((ifname.to_string(), idx));
                }
                Ok(done)
            });
            match r {
                Ok(done) => {
                    for (ifname, idx) in done {
                        self.devices.insert((ns.to_path_buf(), ifname), idx);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // Links of devices no endpoint has any more (their devices are usually gone already).
        self.devices.retain(|k, _| devices.contains(k));
        let wanted: BTreeSet<String> = devices
            .iter()
            .flat_map(|(n, i)| TC_PROGS.iter().map(|t| tc_link_pin(n, i, t.3)))
            .collect();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(TC_LINK_PREFIX) && !wanted.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// A slice of [`VERIFY_SLICE`] frontends per call, in order; the stray entries of
    /// `lb_services` with the last.
    fn verify_kernel(&mut self) -> Result<(Vec<String>, bool)> {
        let r = self.verify_slice();
        if !matches!(r, Ok((_, false))) {
            self.verified_up_to = None; // done or failed: the next read-back starts anew
        }
        r
    }

    fn current(&self) -> LbModel {
        let mut m = LbModel::default();
        for (fe, p) in &self.cur {
            m.services.insert(
                *fe,
                Service {
                    network: p.network.clone(),
                    backends: p.backends.iter().copied().collect(),
                    ..Service::default()
                },
            );
        }
        m
    }
}

impl EbpfLb {
    /// The next slice of `verify_kernel`: the frontends after `verified_up_to`, and when none
    /// are left, the stray entries of `lb_services`.
    fn verify_slice(&mut self) -> Result<(Vec<String>, bool)> {
        use std::ops::Bound;
        let mut found = Vec::new();
        let check_rows = self.cur.len() <= VERIFY_ROWS_UP_TO;
        let from = match self.verified_up_to {
            Some(fe) => Bound::Excluded(fe),
            None => Bound::Unbounded,
        };
        for (seen, (fe, p)) in self.cur.range_mut((from, Bound::Unbounded)).enumerate() {
            if seen == VERIFY_SLICE {
                return Ok((found, false));
            }
            self.verified_up_to = Some(*fe);
            if p.dirty {
                continue; // reprogrammed by the next apply anyway
            }
            let name = format!("{}:{}/{}", fe.vip, fe.port, fe.proto.name());
            let want = SvcVal {
                slot: p.slot,
                count: p.backends.len() as u32,
            };
            let problem = match self.services.get(&SvcKey::of(fe), 0) {
                Ok(v) if v == want => {
                    let ids: Option<BTreeSet<u32>> = p
                        .backends
                        .iter()
                        .map(|b| self.ids.get(&(*b, fe.proto)).copied())
                        .collect();
                    match ids {
                        Some(ids) if ids.iter().any(|id| self.backends.get(*id).ip == 0) => Some(
                            format!("{name}: a backend entry of lb_backends was cleared"),
                        ),
                        Some(ids) if check_rows && !ids.is_empty() => {
                            let row = self.maglev.get(&p.slot, 0)?;
                            (!row.ids.iter().all(|id| ids.contains(id))).then(|| {
                                format!(
                                    "{name}: lb_maglev slot {} points at other backends",
                                    p.slot
                                )
                            })
                        }
                        _ => None,
                    }
                }
                Ok(v) => Some(format!(
                    "{name}: lb_services holds slot {} count {}, want slot {} count {}",
                    v.slot, v.count, want.slot, want.count
                )),
                Err(aya::maps::MapError::KeyNotFound) => {
                    Some(format!("{name}: missing from lb_services, restored"))
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(d) = problem {
                p.dirty = true;
                found.push(d);
            }
        }
        let keys: Vec<SvcKey> = self.services.keys().collect::<Result<_, _>>()?;
        for k in keys {
            let known = k.frontend().is_some_and(|fe| self.cur.contains_key(&fe));
            if !known {
                match self.services.remove(&k) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(e.into()),
                }
                let fe = k.frontend();
                found.push(match fe {
                    Some(fe) => format!(
                        "{}:{}/{}: stray lb_services entry removed",
                        fe.vip,
                        fe.port,
                        fe.proto.name()
                    ),
                    None => "stray lb_services entry removed".to_string(),
                });
            }
        }
        Ok((found, true))
    }
}

#[cfg(test)]
#[path = "ebpf_kernel_tests.rs"]
mod kernel_tests;
