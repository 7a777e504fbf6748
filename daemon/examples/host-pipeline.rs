//! The index pipeline's host side alone: `bench-index` with the deterministic
//! hash embedder (microseconds a text) in place of the model, so walking,
//! chunking, SQLite + FTS5 and the HNSW graph are what is timed. On a CPU the
//! model hides them; on a GPU they are the limit, and this measures them on
//! any machine.
//!
//!   cargo run --release -p codesearchd --features test-support \
//!       --example host-pipeline -- [--gpu-batches] [--recall N] ROOT...
//!
//! `--gpu-batches` makes the embedder report a GPU's batch size (512), so the
//! pipeline commits as it does on a GPU (8,192 chunks a commit; HNSW inserts on
//! every core). `--recall N` also measures the graph's recall@10 with N stored
//! chunks as probes.

use std::io::Write as _;
use std::path::PathBuf;

use codesearchd::embed::hash::HashEmbedder;
use codesearchd::embed::{EmbedError, Embedder, InputKind};
use codesearchd::index_bench::{self, IndexBench};

/// The hash embedder, with the batch size of the device it stands in for.
struct Standin {
    inner: HashEmbedder,
    batch_size: usize,
}

impl Embedder for Standin {
    fn model_name(&self) -> &str {
        self.inner.model_name()
    }
    fn dims(&self) -> usize {
        self.inner.dims()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    fn device_name(&self) -> String {
        "hash (host side only)".to_owned()
    }
    fn batch_size(&self) -> usize {
        self.batch_size
    }
    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.inner.embed(texts, kind)
    }
}

fn main() -> anyhow::Result<()> {
    let mut roots = Vec::new();
    let mut batch_size = 32;
    let mut recall = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--gpu-batches" => batch_size = 512,
            "--recall" => {
                let n = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--recall needs a number"))?;
                recall = Some(n.parse()?);
            }
            flag if flag.starts_with("--") => anyhow::bail!("unknown flag {flag}"),
            root => roots.push(PathBuf::from(root)),
        }
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "usage: host-pipeline [--gpu-batches] [--recall N] ROOT..."
    );
    let mut embedder = Standin {
        inner: HashEmbedder::new("minilm", 384),
        batch_size,
    };
    let args = IndexBench {
        roots,
        index_dir: None,
        warm: false,
        queries: None,
        results: PathBuf::from("/dev/null"),
        mode: codesearchd::search::Mode::Hybrid,
        recall,
        ef_search: Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    index_bench::run(&args, &mut embedder, &mut out)?;
    out.flush()?;
    Ok(())
}
