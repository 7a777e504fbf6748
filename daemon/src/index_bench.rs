//! The cold-index benchmark behind `codesearchd bench-index`: each root
//! indexed from nothing with the model loaded here, then its throughput,
//! storage and memory; with `--queries` the answers for `score.py`, with
//! `--recall` the HNSW graph's recall against an exact scan.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use codesearch_proto::benchmark::{BenchmarkQuery, QueryLine, parse_queries, results_lines};

use crate::chunk::Chunker;
use crate::embed::{Embedder, InputKind};
use crate::index::{self, IndexOptions};
use crate::search::Mode;
use crate::store::{Manifest, Store};

/// What to measure.
#[derive(Debug, Clone)]
pub struct IndexBench {
    /// Repository roots; each is one corpus, named by its folder.
    pub roots: Vec<PathBuf>,
    /// Where the indexes go (a temp folder by default, removed afterwards).
    pub index_dir: Option<PathBuf>,
    /// Keep existing indexes (an incremental run instead of a cold one).
    pub warm: bool,
    /// Queries in the format of `../shared/eval/queries.jsonl`.
    pub queries: Option<PathBuf>,
    /// Where the results lines for `score.py` go (with `queries`).
    pub results: PathBuf,
    /// Ranking for the queries.
    pub mode: Mode,
    /// Stored chunks to probe the HNSW recall with, if measured.
    pub recall: Option<usize>,
    /// HNSW search expansions to measure the recall at (empty: the shipped one).
    pub ef_search: Vec<usize>,
}

/// Runs `args` with `embedder`, writing the table to `out`.
pub fn run(
    args: &IndexBench,
    embedder: &mut dyn Embedder,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let chunker = Chunker::new()?;
    let tmp;
    let index_dir = match &args.index_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    let queries: Vec<QueryLine> = match &args.queries {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read queries from {}", path.display()))?;
            parse_queries(&text)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), e.line))?
        }
        None => Vec::new(),
    };
    let mut results = String::new();
    writeln!(
        out,
        "{:<16} {:>6} {:>7} {:>8} {:>8} {:>9} {:>10} {:>12}",
        "corpus", "files", "chunks", "secs", "files/s", "chunks/s", "storage", "MB/1k chunks"
    )?;
    for root in &args.roots {
        let root = root
            .canonicalize()
            .with_context(|| format!("cannot index {}", root.display()))?;
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = Store::dir_for(&index_dir, &root);
        if !args.warm && dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let manifest = Manifest::of(embedder, &root);
        let mut store = Store::open(&dir, &manifest)?;
        // The model is loaded and the store open: what indexing adds is above this.
        let rss_before = crate::memory::rss_bytes();
        let start = std::time::Instant::now();
        let stats = index::index(
            &root,
            &mut store,
            embedder,
            &chunker,
            &IndexOptions::default(),
            |s| {
                tracing::info!(corpus = %name, files = s.files_indexed, chunks = s.chunks_written, "indexing");
            },
        )?;
        let secs = start.elapsed().as_secs_f64();
        let chunks = store.chunk_count()?;
        let (hnsw_bytes, hnsw_capacity) = store.hnsw_memory();
        let rss_after = crate::memory::rss_bytes();
        drop(store);
        let bytes: u64 = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        writeln!(
            out,
            "{:<16} {:>6} {:>7} {:>8.1} {:>8.1} {:>9.1} {:>8.2}MB {:>12.3}",
            name,
            stats.files_indexed,
            chunks,
            secs,
            stats.files_indexed as f64 / secs,
            stats.chunks_written as f64 / secs,
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / (chunks.max(1) as f64 / 1000.0),
        )?;
        // VmHWM is the whole process's peak, so one root per process measures one corpus.
        let mb = |b: Option<u64>| b.map_or("n/a".to_owned(), |b| format!("{} MB", b / 1_000_000));
        writeln!(
            out,
            "  memory: peak RSS (VmHWM) {}, RSS before indexing {}, after {}; HNSW {} ({} vectors of room)",
            mb(crate::memory::peak_rss_bytes()),
            mb(rss_before),
            mb(rss_after),
            mb(Some(hnsw_bytes as u64)),
            hnsw_capacity,
        )?;
        let t = stats.times;
        writeln!(
            out,
            "  time: read + chunk {:.1} s (reading thread); waiting for it {:.1} s, vector lookups {:.1} s, embed {:.1} s, waiting for the writer {:.1} s (embedding thread); SQLite {:.1} s (writer thread), HNSW {:.1} s (graph thread)",
            t.prepare.as_secs_f64(),
            t.read_wait.as_secs_f64(),
            t.lookup.as_secs_f64(),
            t.embed.as_secs_f64(),
            t.write_wait.as_secs_f64(),
            t.write.as_secs_f64(),
            t.graph.as_secs_f64(),
        )?;
        if stats.skips.total() > 0 {
            writeln!(
                out,
                "  skipped: {}",
                serde_json::to_string(&stats.skips.counts)?
            )?;
        }
        let store = Store::open(&dir, &manifest)?;
        if let Some(probes) = args.recall {
            let texts: Vec<&str> = queries.iter().map(|q| q.query.as_str()).collect();
            let vectors = embedder.embed(&texts, InputKind::Query)?;
            let show = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.4}"));
            let efs: Vec<Option<usize>> = if args.ef_search.is_empty() {
                vec![None]
            } else {
                args.ef_search.iter().copied().map(Some).collect()
            };
            for ef in efs {
                if let Some(ef) = ef {
                    store.set_search_expansion(ef);
                }
                let r = store.hnsw_recall(&vectors, probes, 10)?;
                writeln!(
                    out,
                    "  HNSW recall@10 vs exact over {} vectors{}: stored chunks {}, queries {} ({} probes), search median {:.2} ms",
                    r.vectors,
                    ef.map_or(String::new(), |ef| format!(", expansion {ef}")),
                    show(r.chunks),
                    show(r.queries),
                    r.probes,
                    r.search_ms_median
                )?;
            }
        }
        let mine: Vec<BenchmarkQuery> = queries
            .iter()
            .filter(|q| q.corpus.as_deref() == Some(name.as_str()))
            .map(QueryLine::query)
            .collect();
        let (outcomes, _) = crate::benchmark::answer(&root, &store, embedder, &mine, args.mode)?;
        results.push_str(&results_lines(&outcomes));
    }
    if args.queries.is_some() {
        std::fs::write(&args.results, results)
            .with_context(|| format!("cannot write {}", args.results.display()))?;
        writeln!(out, "results written to {}", args.results.display())?;
    }
    Ok(())
}
