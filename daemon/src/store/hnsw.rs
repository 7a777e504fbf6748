//! The usearch HNSW index: a cache of the vectors in SQLite, keyed by chunk id.
//!
//! Vectors are 8-bit: each is scaled so its largest component is ±127 and
//! rounded ([`quantize`]). Cosine similarity ignores the scale, and a per-vector
//! scale keeps about 8 bits of precision where usearch's own f32→i8 cast (×127)
//! would keep 3 for unit vectors, whose components are near ±0.05. SQLite stores
//! exactly these bytes, and the HNSW index holds exactly them too.
//!
//! The file holds the graph only. usearch's own format puts every vector in
//! front of the graph; SQLite has them already, so [`Hnsw::save`] cuts that
//! matrix out and [`Hnsw::load`] puts it back from SQLite, in the order of the
//! graph's nodes, which it reads from the graph's header. Any surprise in the
//! file (another usearch layout, truncation, a key SQLite lacks) is an error the
//! caller answers by rebuilding from SQLite. Saving is write-to-temp + fsync +
//! rename, so a crash leaves the old file or the new one, never half of either;
//! whether a saved file is current is decided by the store (generations).

use std::collections::HashMap;
use std::path::Path;

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use super::StoreError;

/// Search expansion of a small graph: design.md measured recall@10 0.99 at 256
/// on 100k synthetic vectors; on real code (tokio, 10,612 chunks) it gives
/// 0.99–1.00. Larger graphs get more: see [`expansion_for`].
const EXPANSION_SEARCH: usize = 256;
const EXPANSION_ADD: usize = 128;

/// The insert expansion of concurrent adds. Inserts running side by side do not
/// see each other's nodes: on cargo's registry (592,209 chunks, 16 threads, an
/// H100) the graph they built at 128 found up to 0.6 points fewer of the true
/// ten nearest for 440 natural-language queries than the one-thread graph
/// (0.964–0.968 against 0.970); at 192 it found more (0.974–0.976), and the
/// graph thread had the time (docs/BENCHMARKS.md).
const PARALLEL_EXPANSION_ADD: usize = 192;

/// The search expansion for a graph of `len` vectors. At 554,688 real chunk
/// vectors (bench-index --recall --ef-search on the H100, docs/BENCHMARKS.md)
/// recall@10 for natural-language queries was 0.893 at 256 (1.0 ms a search),
/// 0.966 at 512 (1.6 ms), 0.984 at 1,024 (3.1 ms), 0.988 at 2,048 (5.4 ms).
fn expansion_for(len: usize) -> usize {
    match len {
        0..100_000 => EXPANSION_SEARCH,
        100_000..300_000 => 2 * EXPANSION_SEARCH,
        _ => 4 * EXPANSION_SEARCH,
    }
}

/// Search expansion of the check that a vector added in parallel can be found:
/// it searches for its own (quantized) vector, so a small one finds it whenever
/// the graph leads there at all. At 32 the check costs half what it did at 64;
/// the few reachable nodes it misses are re-added (146 of 20,000 clustered
/// vectors on 16 threads, against 86 at 64), which costs less than it saves.
const REACH_CHECK_EXPANSION: usize = 32;

/// Neighbours the reach check asks for: a vector shared by more chunks than
/// this (the same text in many files) can crowd its own id out of the answer,
/// which is told apart by the answer's distances, all zero then.
const REACH_CHECK_K: usize = 8;

/// Whether a search for `vector` finds `id`, or only exact copies of it.
fn reachable(index: &Index, id: u64, vector: &[i8]) -> bool {
    match index.search(vector, REACH_CHECK_K) {
        Ok(m) => {
            m.keys.contains(&id)
                || (m.keys.len() == REACH_CHECK_K && m.distances.iter().all(|&d| d <= 1e-6))
        }
        Err(_) => false,
    }
}

/// The first bytes of our graph-only file, with its layout version.
const MAGIC: &[u8; 8] = b"csHNSW\x01\x00";

/// usearch's file layout (index_dense.hpp, index.hpp of usearch 2.x): a 64-byte
/// dense header, the graph header (five u64: size, connectivity,
/// connectivity_base, max_level, entry_slot), one i16 level per node, then the
/// nodes, each a u64 key, an i16 level and neighbour lists of a u32 count plus
/// u32 slots (`connectivity_base` of them on level 0, `connectivity` above).
const DENSE_HEAD: usize = 64;
const GRAPH_HEAD: usize = 40;
const NODE_HEAD: usize = 10;

/// A key usearch gives the slots of removed vectors.
const FREE_KEY: u64 = u64::MAX;

/// Scales `v` so its largest component is ±127 and rounds it; all zeros stays zeros.
pub fn quantize(v: &[f32]) -> Vec<i8> {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return vec![0; v.len()];
    }
    let scale = 127.0 / max;
    v.iter()
        .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8)
        .collect()
}

/// An in-memory HNSW index over 8-bit vectors (cosine).
pub struct Hnsw {
    index: Index,
    dims: usize,
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("dims", &self.dims)
            .field("size", &self.index.size())
            .finish()
    }
}

impl Hnsw {
    /// An empty index.
    pub fn new(dims: usize) -> Result<Self, StoreError> {
        let options = IndexOptions {
            dimensions: dims,
            metric: MetricKind::Cos,
            quantization: ScalarKind::I8,
            connectivity: 0,
            expansion_add: EXPANSION_ADD,
            expansion_search: EXPANSION_SEARCH,
            multi: false,
        };
        let index = Index::new(&options).map_err(|e| StoreError::hnsw("create", e))?;
        Ok(Self { index, dims })
    }

    /// Loads a graph saved by [`Hnsw::save`], taking each node's vector from
    /// `vectors` (chunk id → quantized vector). Any failure is an error the caller
    /// answers by rebuilding.
    pub fn load(
        path: &Path,
        dims: usize,
        vectors: &HashMap<u64, Vec<i8>>,
    ) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::Hnsw { op: "load", reason };
        let file = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
        let graph = file
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| bad("not a codesearch graph file".to_owned()))?;
        let keys = node_keys(graph).map_err(bad)?;
        let rows = u32::try_from(keys.len()).map_err(|_| bad("too many nodes".to_owned()))?;
        let cols = u32::try_from(dims).map_err(|_| bad("too many dims".to_owned()))?;
        let mut buffer = Vec::with_capacity(8 + keys.len() * dims + graph.len());
        buffer.extend_from_slice(&rows.to_le_bytes());
        buffer.extend_from_slice(&cols.to_le_bytes());
        for key in &keys {
            match vectors.get(key) {
                Some(v) if v.len() == dims => buffer.extend(v.iter().map(|&x| x as u8)),
                Some(v) => return Err(bad(format!("vector of {} dims, expected {dims}", v.len()))),
                None if *key == FREE_KEY => buffer.extend(std::iter::repeat_n(0, dims)),
                None => return Err(bad(format!("chunk {key} of the graph has no vector"))),
            }
        }
        buffer.extend_from_slice(graph);
        let hnsw = Self::new(dims)?;
        hnsw.index
            .load_from_buffer(&buffer)
            .map_err(|e| StoreError::hnsw("load", e))?;
        if hnsw.index.dimensions() != dims {
            return Err(bad(format!(
                "{} dims, expected {dims}",
                hnsw.index.dimensions()
            )));
        }
        hnsw.index
            .change_expansion_search(expansion_for(hnsw.index.size()));
        Ok(hnsw)
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.index.size()
    }

    /// Bytes usearch holds for the graph and its vectors (`memory_usage`), and the
    /// vectors it has room for.
    pub fn memory(&self) -> (usize, usize) {
        (self.index.memory_usage(), self.index.capacity())
    }

    /// Whether the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds (or replaces) vectors, quantized; usearch wants capacity reserved first.
    pub fn add(&mut self, items: &[(u64, Vec<f32>)]) -> Result<(), StoreError> {
        let needed = self.index.size() + items.len();
        if needed > self.index.capacity() {
            self.index
                .reserve(needed.max(self.index.capacity() * 2).max(1024))
                .map_err(|e| StoreError::hnsw("reserve", e))?;
        }
        for (id, v) in items {
            if self.index.contains(*id) {
                self.index
                    .remove(*id)
                    .map_err(|e| StoreError::hnsw("remove", e))?;
            }
            self.index
                .add(*id, &quantize(v))
                .map_err(|e| StoreError::hnsw("add", e))?;
        }
        let ef = expansion_for(self.index.size());
        if self.index.expansion_search() != ef {
            self.index.change_expansion_search(ef);
        }
        Ok(())
    }

    /// Adds (or replaces) many vectors on every core (rayon's pool), then
    /// re-inserts on this thread each one the graph cannot reach; returns how
    /// many that was.
    ///
    /// usearch takes concurrent inserts, but a node whose upper levels are
    /// linked before its level 0 can be found by another insert meanwhile, which
    /// then hangs off it by one edge and may lose that edge later: a node that
    /// is stored and never found (usearch issue 735, open in 2.26). The check
    /// searches each new vector for itself, at a small expansion since the
    /// target is exact; a node missed there is removed and added again alone.
    pub fn add_parallel(&mut self, items: &[(u64, Vec<f32>)]) -> Result<usize, StoreError> {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads();
        for (id, _) in items {
            if self.index.contains(*id) {
                self.index
                    .remove(*id)
                    .map_err(|e| StoreError::hnsw("remove", e))?;
            }
        }
        let needed = self.index.size() + items.len();
        self.index
            .reserve_capacity_and_threads(
                needed.max(self.index.capacity()).max(1024),
                threads.max(1),
            )
            .map_err(|e| StoreError::hnsw("reserve", e))?;
        let quantized: Vec<Vec<i8>> = items.par_iter().map(|(_, v)| quantize(v)).collect();
        let index = &self.index;
        index.change_expansion_add(PARALLEL_EXPANSION_ADD);
        let added = items
            .par_iter()
            .zip(&quantized)
            .with_min_len(16)
            .try_for_each(|((id, _), q)| index.add(*id, q));
        index.change_expansion_add(EXPANSION_ADD);
        added.map_err(|e| StoreError::hnsw("add", e))?;
        let ef = index.expansion_search();
        index.change_expansion_search(REACH_CHECK_EXPANSION);
        let stranded: Vec<usize> = (0..items.len())
            .into_par_iter()
            .with_min_len(16)
            .filter(|&i| !reachable(index, items[i].0, &quantized[i]))
            .collect();
        index.change_expansion_search(ef);
        for &i in &stranded {
            let (id, q) = (items[i].0, &quantized[i]);
            index
                .remove(id)
                .map_err(|e| StoreError::hnsw("remove", e))?;
            index.add(id, q).map_err(|e| StoreError::hnsw("add", e))?;
        }
        let ef = expansion_for(self.index.size());
        if self.index.expansion_search() != ef {
            self.index.change_expansion_search(ef);
        }
        Ok(stranded.len())
    }

    /// Removes vectors; ids that are not there are ignored.
    pub fn remove(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        for &id in ids {
            self.index
                .remove(id)
                .map_err(|e| StoreError::hnsw("remove", e))?;
        }
        Ok(())
    }

    /// The `k` nearest ids with their cosine similarity, best first.
    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<(u64, f32)>, StoreError> {
        if self.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let m = self
            .index
            .search(&quantize(query), k)
            .map_err(|e| StoreError::hnsw("search", e))?;
        Ok(m.keys
            .into_iter()
            .zip(m.distances)
            .map(|(id, d)| (id, 1.0 - d))
            .collect())
    }

    /// Sets how many candidates a search keeps (usearch's `expansion_search`).
    pub fn set_expansion_search(&mut self, ef: usize) {
        self.index.change_expansion_search(ef);
    }

    /// Writes the graph (not the vectors: SQLite has them) to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let bad = |reason: String| StoreError::Hnsw { op: "save", reason };
        // usearch streams vectors and graph to a file of its own; only the
        // graph is read back. Serializing to memory instead held every vector
        // a second time: a spike of 0.45 KB per chunk (253 MB at 563k chunks).
        let full = crate::durable::temporary(&path.with_extension("full"));
        let (rows, cols, graph) = match full.to_str() {
            Some(utf8) => {
                let saved = self
                    .index
                    .save(utf8)
                    .map_err(|e| StoreError::hnsw("save", e));
                let read = saved.and_then(|()| read_graph(&full));
                let _ = std::fs::remove_file(&full);
                read?
            }
            // usearch takes UTF-8 paths only: serialize in memory then.
            None => {
                let mut buffer = vec![0u8; self.index.serialized_length()];
                self.index
                    .save_to_buffer(&mut buffer)
                    .map_err(|e| StoreError::hnsw("save", e))?;
                split_matrix(buffer).map_err(bad)?
            }
        };
        // Refuse to write what `load` could not read back.
        let keys = node_keys(&graph).map_err(bad)?;
        if keys.len() != rows || cols != self.dims {
            return Err(bad(format!(
                "usearch layout changed: {} nodes for {rows} rows of {cols} bytes",
                keys.len()
            )));
        }
        crate::durable::write_atomic(path, |file| {
            std::io::Write::write_all(file, MAGIC)?;
            std::io::Write::write_all(file, &graph)
        })
        .map_err(|e| StoreError::io(path, e))?;
        Ok(())
    }
}

/// Rows, columns and the graph part (dense header onwards) of a file usearch
/// saved: the vector matrix in front of the graph is skipped, never read.
fn read_graph(path: &Path) -> Result<(usize, usize, Vec<u8>), StoreError> {
    use std::io::{Read as _, Seek as _};
    let bad = |reason: String| StoreError::Hnsw { op: "save", reason };
    let io = |e| StoreError::io(path, e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 8];
    file.read_exact(&mut head)
        .map_err(|_| bad("usearch wrote less than a header".to_owned()))?;
    let (rows, cols) = matrix_shape(&head);
    let len = file.metadata().map_err(io)?.len();
    let matrix = 8 + rows as u64 * cols as u64;
    if matrix > len {
        return Err(bad("usearch wrote a truncated matrix".to_owned()));
    }
    file.seek(std::io::SeekFrom::Start(matrix)).map_err(io)?;
    let mut graph = Vec::with_capacity((len - matrix) as usize);
    file.read_to_end(&mut graph).map_err(io)?;
    Ok((rows, cols, graph))
}

/// Rows and columns of usearch's vector matrix, from its 8-byte header.
fn matrix_shape(head: &[u8; 8]) -> (usize, usize) {
    let rows = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let cols = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    (rows, cols)
}

/// [`read_graph`] for a whole serialization in memory.
fn split_matrix(mut buffer: Vec<u8>) -> Result<(usize, usize, Vec<u8>), String> {
    let head: [u8; 8] = buffer
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or("usearch wrote less than a header")?;
    let (rows, cols) = matrix_shape(&head);
    let matrix = 8 + rows * cols;
    if matrix > buffer.len() {
        return Err("usearch wrote a truncated matrix".to_owned());
    }
    Ok((rows, cols, buffer.split_off(matrix)))
}

/// The key of every node of a serialized graph (dense header onwards), in slot
/// order; the layout must account for every byte.
fn node_keys(graph: &[u8]) -> Result<Vec<u64>, String> {
    let u64_at = |at: usize| -> Result<u64, String> {
        graph
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or_else(|| "truncated graph".to_owned())
    };
    let head = DENSE_HEAD;
    let size = usize::try_from(u64_at(head)?).map_err(|_| "bad node count")?;
    let connectivity = usize::try_from(u64_at(head + 8)?).map_err(|_| "bad connectivity")?;
    let connectivity_base = usize::try_from(u64_at(head + 16)?).map_err(|_| "bad connectivity")?;
    let levels_at = head + GRAPH_HEAD;
    let levels = graph
        .get(levels_at..levels_at + size.checked_mul(2).ok_or("bad node count")?)
        .ok_or_else(|| "truncated level table".to_owned())?;
    let base = 4 + connectivity_base * 4;
    let per_level = 4 + connectivity * 4;
    let mut at = levels_at + levels.len();
    let mut keys = Vec::with_capacity(size);
    for level in levels.chunks_exact(2) {
        let level = i16::from_le_bytes([level[0], level[1]]);
        let level = usize::try_from(level).map_err(|_| "negative level")?;
        keys.push(u64_at(at)?);
        at += NODE_HEAD + base + level * per_level;
    }
    if at != graph.len() {
        return Err(format!(
            "graph layout not understood ({at} of {} bytes accounted for)",
            graph.len()
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors around 1,024 fixed centers (as embeddings of related code
    /// cluster); `seed` picks the noise, so queries come from the same clusters.
    fn vectors(n: usize, dims: usize, seed: u64) -> Vec<Vec<f32>> {
        fn rng(mut state: u64) -> impl FnMut() -> f32 {
            move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
            }
        }
        let mut center = rng(1);
        let centers: Vec<Vec<f32>> = (0..1024)
            .map(|_| (0..dims).map(|_| center()).collect())
            .collect();
        let mut noise = rng(seed);
        (0..n)
            .map(|i| {
                let c = &centers[(i * 7919) % centers.len()];
                let v: Vec<f32> = c.iter().map(|x| x + 0.5 * noise()).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn recall_at_10_against_exact_f32_search_is_at_least_0_99() {
        let (n, dims) = (20_000, 384);
        let data = vectors(n, dims, 7);
        let mut hnsw = Hnsw::new(dims).unwrap();
        let items: Vec<(u64, Vec<f32>)> = data
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, v)| (i as u64, v))
            .collect();
        hnsw.add(&items).unwrap();
        let quantized: Vec<Vec<f32>> = data
            .iter()
            .map(|v| quantize(v).into_iter().map(f32::from).collect())
            .collect();
        let top10 = |q: &[f32], set: &[Vec<f32>]| -> Vec<u64> {
            let mut all: Vec<(u64, f32)> = set
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, cosine(q, v) / cosine(v, v).sqrt()))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            all[..10].iter().map(|(i, _)| *i).collect()
        };
        let queries = vectors(200, dims, 99);
        let (mut found, mut quantization_only) = (0, 0);
        for q in &queries {
            let truth = top10(q, &data);
            let got = hnsw.search(q, 10).unwrap();
            found += got.iter().filter(|(id, _)| truth.contains(id)).count();
            let q8: Vec<f32> = quantize(q).into_iter().map(f32::from).collect();
            quantization_only += top10(&q8, &quantized)
                .iter()
                .filter(|id| truth.contains(id))
                .count();
        }
        let total = (queries.len() * 10) as f64;
        let recall = found as f64 / total;
        assert!(
            recall >= 0.99,
            "recall@10 {recall}; exact search over the 8-bit vectors alone: {}",
            quantization_only as f64 / total
        );
    }

    /// recall@10 of `hnsw` for 200 queries against an exact scan of `data`.
    fn recall(hnsw: &Hnsw, data: &[Vec<f32>]) -> f64 {
        let queries = vectors(200, data[0].len(), 99);
        let mut found = 0;
        for q in &queries {
            let mut all: Vec<(u64, f32)> = data
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, cosine(q, v)))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let truth: Vec<u64> = all[..10].iter().map(|(i, _)| *i).collect();
            found += hnsw
                .search(q, 10)
                .unwrap()
                .iter()
                .filter(|(id, _)| truth.contains(id))
                .count();
        }
        found as f64 / (queries.len() * 10) as f64
    }

    #[test]
    fn parallel_adds_find_every_vector_and_keep_the_recall_of_one_thread() {
        let (n, dims) = (20_000, 384);
        let data = vectors(n, dims, 7);
        let items: Vec<(u64, Vec<f32>)> = data
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, v)| (i as u64, v))
            .collect();
        let mut one = Hnsw::new(dims).unwrap();
        let t = std::time::Instant::now();
        one.add(&items).unwrap();
        let one_secs = t.elapsed().as_secs_f64();
        let mut many = Hnsw::new(dims).unwrap();
        let t = std::time::Instant::now();
        let stranded = many.add_parallel(&items).unwrap();
        let many_secs = t.elapsed().as_secs_f64();
        assert_eq!(many.len(), n);
        let unreachable = items
            .iter()
            .filter(|(id, v)| !reachable(&many.index, *id, &quantize(v)))
            .count();
        let (r1, rn) = (recall(&one, &data), recall(&many, &data));
        eprintln!(
            "one thread {one_secs:.2} s recall {r1:.4}; {} threads {many_secs:.2} s recall {rn:.4}, {stranded} re-added, {unreachable} unreachable after",
            rayon::current_num_threads()
        );
        assert_eq!(unreachable, 0);
        assert!(rn >= r1 - 0.005, "recall {rn} against {r1} on one thread");
        // Replacing is still replacing.
        many.add_parallel(&items[..5_000]).unwrap();
        assert_eq!(many.len(), n);
    }

    #[test]
    fn a_saved_graph_loads_with_vectors_from_elsewhere_and_answers_the_same() {
        let dims = 384;
        let data = vectors(3_000, dims, 3);
        let mut hnsw = Hnsw::new(dims).unwrap();
        let items: Vec<(u64, Vec<f32>)> = data
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, v)| (i as u64 * 3 + 1, v))
            .collect();
        hnsw.add(&items).unwrap();
        // Removed and replaced entries leave free slots in the graph.
        hnsw.remove(&[1, 4, 7]).unwrap();
        hnsw.add(&items[5..8]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.usearch");
        hnsw.save(&path).unwrap();
        let size = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(
            size < 3_000 * 200,
            "the file holds no vectors: {size} bytes"
        );

        let stored: HashMap<u64, Vec<i8>> = items
            .iter()
            .filter(|(id, _)| ![1, 4].contains(id))
            .map(|(id, v)| (*id, quantize(v)))
            .collect();
        let loaded = Hnsw::load(&path, dims, &stored).unwrap();
        assert_eq!(loaded.len(), hnsw.len());
        for q in vectors(20, dims, 11) {
            assert_eq!(loaded.search(&q, 10).unwrap(), hnsw.search(&q, 10).unwrap());
        }

        let mut missing = stored.clone();
        missing.remove(&10);
        assert!(
            Hnsw::load(&path, dims, &missing).is_err(),
            "a vector SQLite lacks"
        );
        std::fs::write(&path, &std::fs::read(&path).unwrap()[..1000]).unwrap();
        assert!(
            Hnsw::load(&path, dims, &stored).is_err(),
            "a truncated file"
        );
    }

    #[test]
    fn larger_graphs_search_wider() {
        assert_eq!(
            [1, 99_999, 100_000, 299_999, 300_000, 5_000_000].map(expansion_for),
            [256, 256, 512, 512, 1024, 1024]
        );
        let mut hnsw = Hnsw::new(384).unwrap();
        hnsw.add(&[(1, vectors(1, 384, 1).remove(0))]).unwrap();
        assert_eq!(hnsw.index.expansion_search(), 256);
    }

    #[test]
    fn quantization_keeps_cosine_and_is_idempotent() {
        let v = vectors(50, 384, 5);
        for pair in v.windows(2) {
            let (a, b) = (quantize(&pair[0]), quantize(&pair[1]));
            let f = |q: &[i8]| q.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            let (fa, fb) = (f(&a), f(&b));
            let c = cosine(&fa, &fb) / (cosine(&fa, &fa).sqrt() * cosine(&fb, &fb).sqrt());
            assert!((c - cosine(&pair[0], &pair[1])).abs() < 0.002, "{c}");
            assert_eq!(quantize(&fa), a);
        }
        assert_eq!(quantize(&[0.0; 4]), [0; 4]);
    }
}
