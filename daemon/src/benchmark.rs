//! `benchmark.run`: a cold index of a repository with one model into a scratch
//! folder, then labelled queries answered the way `search` answers them: speed,
//! memory, storage and retrieval quality in one report. Blocking; the service
//! runs it on a worker thread with the model the daemon keeps resident.

use std::path::Path;
use std::time::Instant;

use codesearch_proto::benchmark::{
    BenchmarkQuery, BenchmarkResult, HitRange, K, Metrics, QueryOutcome,
};

use crate::chunk::{self, Chunker};
use crate::embed::Embedder;
use crate::index::{self, IndexError, IndexOptions};
use crate::search::{self, Mode, SearchError};
use crate::store::{Manifest, Store, StoreError};

/// Queries timed when no labelled ones are given: short, long, code-like.
const PROBES: &[&str] = &[
    "parse http headers",
    "function that validates input and returns an error",
    "read the configuration file from the user's home directory",
    "retry with exponential backoff",
    "fn main",
];

/// Most labelled queries one call may carry.
pub(crate) const MAX_QUERIES: usize = 10_000;

/// Benchmark failures.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchmarkError {
    /// Indexing the repository failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The scratch index failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query failed.
    #[error(transparent)]
    Search(#[from] SearchError),
    /// The scratch folder cannot be read.
    #[error("cannot measure the index in {path}: {source}", path = path.display())]
    Io {
        /// The folder.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Indexes `root` into `scratch` from nothing, then answers `queries` (or times
/// a few probes when there are none).
pub(crate) fn run(
    root: &Path,
    scratch: &Path,
    embedder: &mut dyn Embedder,
    chunker: &Chunker,
    queries: &[BenchmarkQuery],
    mode: Mode,
) -> Result<BenchmarkResult, BenchmarkError> {
    crate::memory::reset_peak_rss();
    let manifest = Manifest::of(embedder, root);
    let dir = Store::dir_for(scratch, root);
    let mut store = Store::open(&dir, &manifest)?;
    let start = Instant::now();
    let stats = index::index(
        root,
        &mut store,
        embedder,
        chunker,
        &IndexOptions::default(),
        |_| {},
    )?;
    let index_s = start.elapsed().as_secs_f64();
    let chunks = store.chunk_count()?;
    // Closing checkpoints the WAL, so the size is the size at rest.
    drop(store);
    let storage_bytes = dir_size(&dir).map_err(|source| BenchmarkError::Io {
        path: dir.clone(),
        source,
    })?;
    let store = Store::open(&dir, &manifest)?;

    let (outcomes, mut latencies) = if queries.is_empty() {
        let mut latencies = Vec::new();
        for _ in 0..4 {
            for probe in PROBES {
                let t = Instant::now();
                search::search(root, &store, embedder, probe, K as usize, mode)?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        (Vec::new(), latencies)
    } else {
        answer(root, &store, embedder, queries, mode)?
    };
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(BenchmarkResult {
        model: embedder.model_name().to_owned(),
        device: embedder.device_name(),
        repo: root.display().to_string(),
        mode: mode.to_string(),
        files: stats.files_indexed,
        chunks,
        index_s,
        chunks_per_s: stats.chunks_written as f64 / index_s.max(1e-9),
        storage_bytes,
        storage_mb_per_1k: storage_bytes as f64 / 1e6 / (chunks.max(1) as f64 / 1000.0),
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        query_ms_median: quantile(0.5),
        query_ms_p95: quantile(0.95),
        quality: (!outcomes.is_empty()).then(|| Metrics::of(&outcomes)),
        queries: outcomes,
    })
}

/// Answers each query with the top 10 hits of `mode`, and where its target
/// ranked; with the milliseconds each search took.
pub(crate) fn answer(
    root: &Path,
    store: &Store,
    embedder: &mut dyn Embedder,
    queries: &[BenchmarkQuery],
    mode: Mode,
) -> Result<(Vec<QueryOutcome>, Vec<f64>), SearchError> {
    let mut outcomes = Vec::with_capacity(queries.len());
    let mut latencies = Vec::with_capacity(queries.len());
    for q in queries {
        let t = Instant::now();
        let hits = search::search(root, store, embedder, &q.query, K as usize, mode)?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        let results: Vec<HitRange> = hits
            .into_iter()
            .map(|h| HitRange {
                path: h.path,
                start_line: h.start_line,
                end_line: h.end_line,
            })
            .collect();
        let rank = results
            .iter()
            .position(|h| h.answers(q))
            .map(|i| i as u32 + 1);
        outcomes.push(QueryOutcome {
            id: q.id.clone(),
            language: chunk::detect(&q.path).name.to_owned(),
            rank,
            results,
        });
    }
    Ok((outcomes, latencies))
}

/// Bytes of the files in `dir` (an index folder has no subfolders).
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}
