//! The remote endpoints of a cluster view, held in chunks that views share.
//!
//! The gossip watcher makes a new view on every change. With one flat vector of 100k
//! endpoints, each new view copied 100k pointers and touched each endpoint's reference count
//! (scattered in memory: ~5 ms p50 of a remote change's path at 10k services x 10 tasks,
//! measured on a running daemon), and dropping the old view touched them all again. Here a view
//! made from the last by a few changes copies only the chunks those fall in ([`CHUNK`]
//! pointers each) and shares the others.

use crate::api::types::RemoteEndpointView;
use std::sync::Arc;

/// Endpoints per chunk when chunks are made; a chunk that grows to twice this is split.
pub const CHUNK: usize = 512;

type Ep = Arc<RemoteEndpointView>;

/// A sequence of endpoints (in view order when the view reader made it).
#[derive(Clone, Default)]
pub struct Endpoints {
    /// None empty.
    chunks: Vec<Arc<Vec<Ep>>>,
    /// The index of the first endpoint of each chunk.
    starts: Vec<usize>,
    len: usize,
}

impl Endpoints {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Ep> + Clone + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Endpoints `from..to`.
    pub fn range(&self, from: usize, to: usize) -> impl Iterator<Item = &Ep> + '_ {
        let to = to.min(self.len);
        let first = if from < to { self.chunk_of(from) } else { 0 };
        let skip = if from < to {
            from - self.starts[first]
        } else {
            0
        };
        self.chunks[first.min(self.chunks.len())..]
            .iter()
            .flat_map(|c| c.iter())
            .skip(skip)
            .take(to.saturating_sub(from))
    }

    pub fn get(&self, i: usize) -> Option<&Ep> {
        if i >= self.len {
            return None;
        }
        let k = self.chunk_of(i);
        self.chunks[k].get(i - self.starts[k])
    }

    /// Replaces endpoint `i` (copying its chunk if another view shares it).
    pub fn set(&mut self, i: usize, e: Ep) {
        assert!(i < self.len, "endpoint {i} of {}", self.len);
        let k = self.chunk_of(i);
        Arc::make_mut(&mut self.chunks[k])[i - self.starts[k]] = e;
    }

    /// The first index in `from..to` where `pred` is false (`pred` true then false over it).
    pub fn partition_point(&self, from: usize, to: usize, pred: impl Fn(&Ep) -> bool) -> usize {
        let (mut lo, mut hi) = (from, to.min(self.len));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.get(mid).expect("in range")) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The chunks, in order (for making the next view with [`Builder::share`]).
    pub fn chunks(&self) -> &[Arc<Vec<Ep>>] {
        &self.chunks
    }

    fn chunk_of(&self, i: usize) -> usize {
        self.starts.partition_point(|s| *s <= i) - 1
    }
}

/// Makes an [`Endpoints`] from shared chunks and new endpoints, in order.
pub struct Builder {
    out: Endpoints,
    pending: Vec<Ep>,
    /// Endpoints per chunk made ([`CHUNK`]; tests use smaller ones).
    chunk: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new(CHUNK)
    }
}

impl Builder {
    pub fn new(chunk: usize) -> Builder {
        Builder {
            out: Endpoints::default(),
            pending: Vec::new(),
            chunk: chunk.max(1),
        }
    }

    /// Appends a chunk of another view as it is.
    pub fn share(&mut self, chunk: &Arc<Vec<Ep>>) {
        self.flush();
        self.add(chunk.clone());
    }

    pub fn push(&mut self, e: Ep) {
        self.pending.push(e);
        if self.pending.len() >= 2 * self.chunk {
            let rest = self.pending.split_off(self.chunk);
            let full = std::mem::replace(&mut self.pending, rest);
            self.add(Arc::new(full));
        }
    }

    pub fn finish(mut self) -> Endpoints {
        self.flush();
        // Deletions leave small chunks behind: chunk afresh when they are more than twice as
        // many as needed (O(n), as rare as that).
        if self.out.chunks.len() > 2 * self.out.len.div_ceil(self.chunk) + 8 {
            return chunked(self.out.iter().cloned(), self.chunk);
        }
        self.out
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            let v = std::mem::take(&mut self.pending);
            self.add(Arc::new(v));
        }
    }

    fn add(&mut self, chunk: Arc<Vec<Ep>>) {
        if chunk.is_empty() {
            return;
        }
        self.out.starts.push(self.out.len);
        self.out.len += chunk.len();
        self.out.chunks.push(chunk);
    }
}

/// `iter` in full chunks of `chunk` (the last one the rest).
fn chunked(iter: impl IntoIterator<Item = Ep>, chunk: usize) -> Endpoints {
    let mut b = Builder::new(chunk);
    for e in iter {
        b.pending.push(e);
        if b.pending.len() == b.chunk {
            b.flush();
        }
    }
    b.flush();
    b.out
}

impl FromIterator<Ep> for Endpoints {
    fn from_iter<I: IntoIterator<Item = Ep>>(iter: I) -> Self {
        chunked(iter, CHUNK)
    }
}

impl From<Vec<Ep>> for Endpoints {
    fn from(v: Vec<Ep>) -> Self {
        v.into_iter().collect()
    }
}

impl<const N: usize> From<[Ep; N]> for Endpoints {
    fn from(v: [Ep; N]) -> Self {
        v.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Endpoints {
    type Item = &'a Ep;
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, Arc<Vec<Ep>>>,
        std::slice::Iter<'a, Ep>,
        fn(&'a Arc<Vec<Ep>>) -> std::slice::Iter<'a, Ep>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flat_map(|c| c.iter())
    }
}

impl std::ops::Index<usize> for Endpoints {
    type Output = Ep;

    fn index(&self, i: usize) -> &Ep {
        self.get(i)
            .unwrap_or_else(|| panic!("endpoint {i} of {}", self.len))
    }
}

impl PartialEq for Endpoints {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Endpoints {}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::record::EndpointRecord;
    use crate::gossip::ViewInterner;
    use std::net::Ipv4Addr;

    fn ep(i: usize) -> Ep {
        let rec = EndpointRecord {
            ip: Ipv4Addr::from(0x0a00_0000 + i as u32),
            mac: String::new(),
            vtep: Ipv4Addr::new(192, 168, 0, 1),
            name: format!("t{i}"),
            aliases: vec![],
            service: None,
            disabled: false,
        };
        Arc::new(ViewInterner::default().endpoint("a", "n", &format!("{i:06}"), rec))
    }

    /// Indexing, ranges and binary search agree with a flat vector across chunk borders.
    #[test]
    fn chunked_access_matches_a_vector() {
        let flat: Vec<Ep> = (0..3 * CHUNK + 7).map(ep).collect();
        let e: Endpoints = flat.clone().into();
        assert_eq!(e.chunks().len(), 4);
        assert_eq!(e.len(), flat.len());
        assert!(e.iter().eq(flat.iter()));
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 6] {
            assert_eq!(e[i], flat[i]);
        }
        assert!(e.get(flat.len()).is_none());
        for (from, to) in [(0, 0), (3, 9), (CHUNK - 2, 2 * CHUNK + 3), (100, 99999)] {
            let want: Vec<_> = flat[from.min(flat.len())..to.min(flat.len())]
                .iter()
                .collect();
            assert_eq!(e.range(from, to).collect::<Vec<_>>(), want, "{from}..{to}");
        }
        let cut = 2 * CHUNK + 5;
        assert_eq!(e.partition_point(0, e.len(), |x| x.ip < flat[cut].ip), cut);
        assert_eq!(
            e.partition_point(cut + 1, e.len(), |x| x.ip < flat[cut].ip),
            cut + 1
        );
    }

    /// A view made by sharing all chunks but one shares their memory; `set` copies only the
    /// chunk it writes to; growth splits chunks and deletions end in a fresh chunking.
    #[test]
    fn builder_shares_and_keeps_chunks_bounded() {
        let old: Endpoints = (0..4 * CHUNK).map(ep).collect::<Vec<_>>().into();
        let mut b = Builder::default();
        for (k, c) in old.chunks().iter().enumerate() {
            if k == 2 {
                for e in c.iter() {
                    b.push(e.clone());
                }
                b.push(ep(99_999));
            } else {
                b.share(c);
            }
        }
        let new = b.finish();
        assert_eq!(new.len(), old.len() + 1);
        for k in [0, 1, 3] {
            assert!(Arc::ptr_eq(&old.chunks()[k], &new.chunks()[k]));
        }
        assert!(!Arc::ptr_eq(&old.chunks()[2], &new.chunks()[2]));
        let mut copy = new.clone();
        copy.set(5, ep(77_777));
        assert!(Arc::ptr_eq(&copy.chunks()[1], &new.chunks()[1]));
        assert!(!Arc::ptr_eq(&copy.chunks()[0], &new.chunks()[0]));
        assert_eq!(copy[5].name, "t77777");
        assert_eq!(new[5].name, "t5");

        let mut grow = Builder::default();
        for i in 0..5 * CHUNK {
            grow.push(ep(i));
        }
        let grown = grow.finish();
        assert!(grown.chunks().iter().all(|c| c.len() < 2 * CHUNK));
        // One endpoint left of each chunk, 40 times over: chunked afresh.
        let mut small = Builder::default();
        for i in 0..40 {
            small.share(&Arc::new(vec![ep(i)]));
        }
        let small = small.finish();
        assert_eq!(small.len(), 40);
        assert_eq!(small.chunks().len(), 1);
    }
}
