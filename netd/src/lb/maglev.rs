//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): each service gets a lookup table of
//! `M` (prime) entries filled from per-backend permutations. The table depends only on the set
//! of backends (sorted, hashed with fixed seeds), so every node builds the same one, and adding
//! or removing a backend moves few entries.

use super::hash::backend_hash;
use super::model::Backend;

const SEED_OFFSET: u64 = 0x6d61676c65762d6f; // "maglev-o"
const SEED_SKIP: u64 = 0x6d61676c65762d73; // "maglev-s"

/// Fills a table of `m` entries (m prime) with indexes into `backends` (which must be sorted
/// and free of duplicates). Empty input gives an empty table.
pub fn table(backends: &[Backend], m: usize) -> Vec<u32> {
    if backends.is_empty() {
        return Vec::new();
    }
    let n = backends.len();
    let perm: Vec<(usize, usize)> = backends
        .iter()
        .map(|b| {
            let ip = u32::from(b.ip);
            let offset = (backend_hash(ip, b.port, SEED_OFFSET) % m as u64) as usize;
            let skip = (backend_hash(ip, b.port, SEED_SKIP) % (m as u64 - 1) + 1) as usize;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0usize; n];
    let mut entry = vec![u32::MAX; m];
    let mut filled = 0;
    'outer: loop {
        for i in 0..n {
            let (offset, skip) = perm[i];
            let mut c = (offset + next[i] * skip) % m;
            while entry[c] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            entry[c] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'outer;
            }
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn be(i: u8) -> Backend {
        Backend {
            ip: Ipv4Addr::new(10, 1, 0, i),
            port: 80,
        }
    }

    #[test]
    fn balanced_and_complete() {
        let bs: Vec<Backend> = (2..8).map(be).collect();
        let t = table(&bs, 1021);
        assert_eq!(t.len(), 1021);
        let mut counts = [0usize; 6];
        for &e in &t {
            counts[e as usize] += 1;
        }
        for c in counts {
            assert!((160..=181).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_a_backend_moves_little() {
        let bs: Vec<Backend> = (2..12).map(be).collect();
        let before = table(&bs, 1021);
        let fewer: Vec<Backend> = bs.iter().copied().filter(|b| *b != be(5)).collect();
        let after = table(&fewer, 1021);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| bs[**b as usize] != be(5) && bs[**b as usize] != fewer[**a as usize])
            .count();
        // Only entries of the removed backend must move; Maglev moves a few more at most.
        assert!(moved < 1021 / 10, "moved {moved}");
    }

    #[test]
    fn deterministic() {
        let bs: Vec<Backend> = (2..5).map(be).collect();
        assert_eq!(table(&bs, 251), table(&bs, 251));
        assert!(table(&[], 251).is_empty());
    }
}
