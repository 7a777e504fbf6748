//! The embedding benchmark: throughput on real chunks, one query's latency, peak
//! memory, and agreement with the reference vectors.
//!
//! It lives in the library so `codesearchd bench-embed` and the tests run the same code.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::embed::{CandleEmbedder, Embedder, InputKind};

/// The short query whose latency is measured (also in the reference file).
pub const QUERY: &str = "parse http headers";

/// What one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Canonical model name.
    pub model: String,
    /// Where it ran.
    pub device: String,
    /// Texts per forward pass at most.
    pub max_batch: usize,
    /// Padded tokens per forward pass at most.
    pub token_budget: usize,
    /// Threads candle's CPU kernels use.
    pub threads: usize,
    /// Chunks embedded in the timed run.
    pub chunks: usize,
    /// Seconds the timed run took.
    pub secs: f64,
    /// Chunks per second.
    pub chunks_per_s: f64,
    /// Real (non-padding) tokens per second.
    pub tokens_per_s: f64,
    /// Padded token slots over real tokens (1.0 = no padding).
    pub padding_ratio: f64,
    /// Median latency of one short query, in milliseconds, after warm-up.
    pub query_ms_median: f64,
    /// Peak resident memory of the process, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Lowest cosine against the reference vectors, when they were given.
    pub min_cos_vs_reference: Option<f32>,
    /// Whether documents ran in int8 (`--precision int8`).
    pub int8_documents: bool,
    /// With int8 documents: the lowest and the mean cosine of every chunk's
    /// vector to its f32 vector from the same weights.
    pub min_cos_vs_f32: Option<f32>,
    /// See `min_cos_vs_f32`.
    pub mean_cos_vs_f32: Option<f32>,
}

/// One line of `chunks.jsonl`.
#[derive(Debug, Deserialize)]
pub struct Chunk {
    /// `file:line:name`.
    pub id: String,
    /// The code.
    pub text: String,
}

/// The reference file: vectors sentence-transformers produced.
#[derive(Debug, Deserialize)]
pub struct Reference {
    /// Ids of the chunks embedded, in order.
    pub ids: Vec<String>,
    /// One vector per id.
    pub embeddings: Vec<Vec<f32>>,
    /// The query's text.
    #[serde(default)]
    pub query: Option<String>,
    /// The query's vector.
    #[serde(default)]
    pub query_embedding: Option<Vec<f32>>,
}

/// Reads a `chunks.jsonl` file.
pub fn read_chunks(path: &Path) -> anyhow::Result<Vec<Chunk>> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read chunks from {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a chunk object", path.display(), i + 1))
        })
        .collect()
}

/// Reads `ref_first20.json`.
pub fn read_reference(path: &Path) -> anyhow::Result<Reference> {
    use anyhow::Context as _;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read reference vectors from {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a reference vector file", path.display()))
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(f32::MIN_POSITIVE)
}

/// Per reference chunk (and the query, last), the cosine of our vector to the reference.
pub fn compare_with_reference(
    embedder: &mut dyn Embedder,
    chunks: &[Chunk],
    reference: &Reference,
) -> anyhow::Result<Vec<(String, f32)>> {
    let texts: Vec<&str> = reference
        .ids
        .iter()
        .map(|id| {
            chunks
                .iter()
                .find(|c| &c.id == id)
                .map(|c| c.text.as_str())
                .ok_or_else(|| anyhow::anyhow!("reference chunk `{id}` is not in the chunks file"))
        })
        .collect::<anyhow::Result<_>>()?;
    let ours = embedder.embed(&texts, InputKind::Document)?;
    let mut out: Vec<(String, f32)> = reference
        .ids
        .iter()
        .zip(ours.iter().zip(&reference.embeddings))
        .map(|(id, (a, b))| (id.clone(), cosine(a, b)))
        .collect();
    if let (Some(q), Some(qv)) = (&reference.query, &reference.query_embedding) {
        let ours = embedder.embed(&[q.as_str()], InputKind::Query)?;
        out.push((format!("query: {q}"), cosine(&ours[0], qv)));
    }
    Ok(out)
}

/// Embeds every chunk `repeat` times over, then times the query.
pub fn run(
    embedder: &mut CandleEmbedder,
    chunks: &[Chunk],
    repeat: usize,
    reference: Option<&Reference>,
) -> anyhow::Result<BenchReport> {
    let policy = embedder.policy();
    let min_cos = match reference {
        Some(r) => compare_with_reference(embedder, chunks, r)?
            .into_iter()
            .map(|(_, c)| c)
            .reduce(f32::min),
        None => None,
    };
    let int8_documents = embedder.int8_documents();
    let (min_cos_vs_f32, mean_cos_vs_f32) = if int8_documents {
        let all: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        let int8 = embedder.embed(&all, InputKind::Document)?;
        embedder.set_int8_documents(false);
        let f32s = embedder.embed(&all, InputKind::Document);
        embedder.set_int8_documents(true);
        let cos: Vec<f32> = int8.iter().zip(&f32s?).map(|(a, b)| cosine(a, b)).collect();
        (
            cos.iter().copied().reduce(f32::min),
            Some(cos.iter().sum::<f32>() / cos.len().max(1) as f32),
        )
    } else {
        (None, None)
    };
    let texts: Vec<&str> = (0..repeat.max(1))
        .flat_map(|_| chunks.iter().map(|c| c.text.as_str()))
        .collect();
    // The reference check embedded a query: time documents at the full budget.
    embedder.forget_queries();
    // Warm-up: first-touch allocations, kernel compilation on GPUs.
    embedder.embed(&texts[..texts.len().min(64)], InputKind::Document)?;
    let before = embedder.stats();
    let start = Instant::now();
    let vectors = embedder.embed(&texts, InputKind::Document)?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(vectors.len() == texts.len(), "embedder lost vectors");
    let after = embedder.stats();
    let tokens = after.tokens - before.tokens;
    let padded = after.padded_tokens - before.padded_tokens;

    let mut latencies = Vec::with_capacity(50);
    for i in 0..55 {
        let t = Instant::now();
        embedder.embed(&[QUERY], InputKind::Query)?;
        if i >= 5 {
            latencies.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(BenchReport {
        model: embedder.model_name().to_owned(),
        device: embedder.device_name(),
        max_batch: policy.max_batch,
        token_budget: policy.token_budget,
        threads: crate::embed::cpu_threads(),
        chunks: texts.len(),
        secs,
        chunks_per_s: texts.len() as f64 / secs,
        tokens_per_s: tokens as f64 / secs,
        padding_ratio: padded as f64 / tokens.max(1) as f64,
        query_ms_median: latencies[latencies.len() / 2],
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        min_cos_vs_reference: min_cos,
        int8_documents,
        min_cos_vs_f32,
        mean_cos_vs_f32,
    })
}
