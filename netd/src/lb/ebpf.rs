//! Socket-level LB with cgroup sock_addr programs (see `ebpf/`), loaded with aya.
//!
//! Pinned under the per-node bpffs directory: the maps (`lb_*`, by name) and one link per
//! attach point (`link_<prog>`). A starting netd adopts them when the pinned `lb_meta` says they
//! were made from the same objects for the same cgroup: it then loads nothing, and reads the
//! maps back to know what is programmed. Otherwise it loads the embedded objects (reusing
//! compatible pinned maps), attaches new links and only then replaces the old pins, so there is
//! no moment without LB. Established connections never depend on netd: TCP is translated once
//! at connect time, and UDP reverse entries live in the pinned `lb_rev_nat`.

use super::maglev;
use super::maps::*;
use super::model::{Backend, Frontend, LbModel, Proto, Service};
use super::LoadBalancer;
use anyhow::{bail, Context, Result};
use aya::maps::{Array, HashMap, Map, MapData};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::EbpfLoader;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

macro_rules! object {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".o")) as &[u8],
        )
    };
}

/// The compiled programs, one object per attach point (built by build.rs from `ebpf/`).
pub const OBJECTS: [(&str, &[u8]); 4] = [
    object!("connect4"),
    object!("sendmsg4"),
    object!("recvmsg4"),
    object!("getpeername4"),
];

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// What is programmed for one frontend.
#[derive(Debug, Clone)]
struct Programmed {
    slot: u32,
    network: String,
    backends: Vec<Backend>,
    /// Backend ids of the Maglev table (empty: nothing known, rewrite it all).
    table: Vec<u32>,
    /// A write failed half-way: reprogram on the next pass.
    dirty: bool,
}

pub struct EbpfLb {
    services: HashMap<MapData, SvcKey, SvcVal>,
    backends: HashMap<MapData, u32, BackendVal>,
    maglev: Array<MapData, u32>,
    cur: BTreeMap<Frontend, Programmed>,
    ids: BTreeMap<(Backend, Proto), u32>,
    next_id: u32,
    /// Whether the pinned programs were adopted (true) or (re)loaded at start.
    pub adopted: bool,
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
    for (_, bytes) in OBJECTS {
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
fn load_and_attach(dir: &Path, cgroup: &File) -> Result<()> {
    for (prog, bytes) in OBJECTS {
        let mut bpf = match EbpfLoader::new().default_map_pin_directory(dir).load(bytes) {
            Ok(b) => b,
            Err(e) => {
                // Pinned maps of an incompatible layout (an older netd): start them afresh.
                tracing::warn!(prog, error = %e, "loading with the pinned maps failed; recreating the maps");
                for m in [
                    MAP_SERVICES,
                    MAP_BACKENDS,
                    MAP_MAGLEV,
                    MAP_REV_NAT,
                    MAP_META,
                ] {
                    let _ = std::fs::remove_file(dir.join(m));
                }
                EbpfLoader::new()
                    .default_map_pin_directory(dir)
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
    Ok(())
}

impl EbpfLb {
    pub fn open(cgroup: &Path, dir: &Path) -> Result<EbpfLb> {
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
            meta.get(&0, 0).ok() == Some(hash) && meta.get(&1, 0).ok() == Some(cg_id)
        };
        let links_pinned = OBJECTS.iter().all(|(p, _)| {
            link_path(dir, p).exists()
                && aya::programs::links::PinnedLink::from_pin(link_path(dir, p)).is_ok()
        });
        let adopted = links_pinned && meta_matches();
        if adopted {
            tracing::info!(dir = %dir.display(), "adopting pinned LB programs and maps");
        } else {
            tracing::info!(dir = %dir.display(), cgroup = %cgroup.display(), "loading LB programs");
            load_and_attach(dir, &cg)?;
            let mut meta = Array::<MapData, u64>::try_from(open_map(dir, MAP_META)?)?;
            meta.set(0, hash, 0)?;
            meta.set(1, cg_id, 0)?;
        }
        let mut lb = EbpfLb {
            services: HashMap::try_from(open_map(dir, MAP_SERVICES)?)?,
            backends: HashMap::try_from(open_map(dir, MAP_BACKENDS)?)?,
            maglev: Array::try_from(open_map(dir, MAP_MAGLEV)?)?,
            cur: BTreeMap::new(),
            ids: BTreeMap::new(),
            next_id: 0,
            adopted,
        };
        lb.read_back()?;
        Ok(lb)
    }

    /// Rebuilds the in-memory picture from the maps (after a restart).
    fn read_back(&mut self) -> Result<()> {
        let mut by_id = BTreeMap::new();
        for r in self.backends.iter() {
            let (id, v) = r?;
            if let Some(b) = v.backend() {
                self.ids.insert(b, id);
                by_id.insert(id, b);
            }
        }
        let mut svcs = Vec::new();
        for r in self.services.iter() {
            let (k, v) = r?;
            svcs.push((k, v));
        }
        for (k, v) in svcs {
            let Some(fe) = k.frontend() else { continue };
            let mut table = Vec::new();
            let mut backends = BTreeSet::new();
            if v.count > 0 && v.slot < MAX_SERVICES {
                for i in 0..MAGLEV_M {
                    let id = self.maglev.get(&(v.slot * MAGLEV_M + i), 0)?;
                    if let Some((b, _)) = by_id.get(&id) {
                        backends.insert(*b);
                    }
                    table.push(id);
                }
            }
            self.cur.insert(
                fe,
                Programmed {
                    slot: v.slot,
                    network: String::new(),
                    backends: backends.into_iter().collect(),
                    table,
                    dirty: false,
                },
            );
        }
        Ok(())
    }

    fn alloc_slot(&self) -> Result<u32> {
        let used: BTreeSet<u32> = self.cur.values().map(|p| p.slot).collect();
        (0..MAX_SERVICES)
            .find(|s| !used.contains(s))
            .context("no free service slot (lb_services full)")
    }

    fn backend_id(&mut self, b: Backend, proto: Proto) -> Result<u32> {
        if let Some(id) = self.ids.get(&(b, proto)) {
            return Ok(*id);
        }
        let used: BTreeSet<u32> = self.ids.values().copied().collect();
        if used.len() as u32 >= MAX_BACKENDS {
            bail!("no free backend id (lb_backends full)");
        }
        let mut id = self.next_id % MAX_BACKENDS;
        while used.contains(&id) {
            id = (id + 1) % MAX_BACKENDS;
        }
        self.next_id = id + 1;
        self.backends.insert(id, BackendVal::of(&b, proto), 0)?;
        self.ids.insert((b, proto), id);
        Ok(id)
    }

    fn program(&mut self, fe: &Frontend, svc: &Service) -> Result<()> {
        let bs: Vec<Backend> = svc.backends.iter().copied().collect();
        let (slot, old_table) = match self.cur.get_mut(fe) {
            Some(p) if !p.dirty && p.backends == bs => return Ok(()),
            Some(p) => {
                p.dirty = true;
                (p.slot, std::mem::take(&mut p.table))
            }
            None => {
                let slot = self.alloc_slot()?;
                self.cur.insert(
                    *fe,
                    Programmed {
                        slot,
                        network: svc.network.clone(),
                        backends: Vec::new(),
                        table: Vec::new(),
                        dirty: true,
                    },
                );
                (slot, Vec::new())
            }
        };
        let mut ids = Vec::with_capacity(bs.len());
        for b in &bs {
            ids.push(self.backend_id(*b, fe.proto)?);
        }
        let table: Vec<u32> = maglev::table(&bs, MAGLEV_M as usize)
            .into_iter()
            .map(|i| ids[i as usize])
            .collect();
        // Backends first (done), then the table, then the service: a program never reads an
        // entry that points nowhere.
        for (i, id) in table.iter().enumerate() {
            if old_table.get(i) != Some(id) {
                self.maglev.set(slot * MAGLEV_M + i as u32, *id, 0)?;
            }
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
        p.backends = bs;
        p.table = table;
        p.network = svc.network.clone();
        p.dirty = false;
        Ok(())
    }
}

impl LoadBalancer for EbpfLb {
    fn name(&self) -> &'static str {
        "ebpf"
    }

    fn apply(&mut self, want: &LbModel) -> Result<()> {
        let mut first_err = None;
        for (fe, svc) in &want.services {
            if let Err(e) = self.program(fe, svc) {
                tracing::warn!(vip = %fe.vip, port = fe.port, error = %format!("{e:#}"), "programming LB service");
                first_err.get_or_insert(e);
            }
        }
        let gone: Vec<Frontend> = self
            .cur
            .keys()
            .filter(|fe| !want.services.contains_key(fe))
            .copied()
            .collect();
        for fe in gone {
            match self.services.remove(&SvcKey::of(&fe)) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {
                    self.cur.remove(&fe);
                }
                Err(e) => {
                    first_err.get_or_insert(e.into());
                }
            }
        }
        // Backends no service uses any more (after the tables stopped pointing at them).
        let used: BTreeSet<(Backend, Proto)> = self
            .cur
            .iter()
            .flat_map(|(fe, p)| p.backends.iter().map(|b| (*b, fe.proto)))
            .collect();
        let stale: Vec<((Backend, Proto), u32)> = self
            .ids
            .iter()
            .filter(|(k, _)| !used.contains(k))
            .map(|(k, v)| (*k, *v))
            .collect();
        if self.cur.values().all(|p| !p.dirty) {
            for (k, id) in stale {
                match self.backends.remove(&id) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {
                        self.ids.remove(&k);
                    }
                    Err(e) => {
                        first_err.get_or_insert(e.into());
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn current(&self) -> LbModel {
        let mut m = LbModel::default();
        for (fe, p) in &self.cur {
            m.services.insert(
                *fe,
                Service {
                    network: p.network.clone(),
                    backends: p.backends.iter().copied().collect(),
                },
            );
        }
        m
    }
}
