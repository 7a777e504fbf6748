//! What `codesearch benchmark` measured: the runs, and per model the sums
//! over repositories; and the results file for `score.py`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use codesearch_proto::benchmark::{BenchmarkResult, Metrics, QueryOutcome, results_lines};
use serde::Serialize;

use super::queries::folder_name;

/// Everything measured: each run, and per model the sums over repositories.
#[derive(Debug, Serialize)]
pub struct Report {
    /// One per model and repository.
    pub runs: Vec<BenchmarkResult>,
    /// Per model, in the order asked.
    pub models: Vec<ModelSummary>,
}

/// One model over every repository.
#[derive(Debug, Serialize)]
pub struct ModelSummary {
    /// Canonical model name.
    pub model: String,
    /// Where it ran.
    pub device: String,
    /// Chunks embedded and written per second over all repositories.
    pub chunks_per_s: f64,
    /// Highest peak RSS of the daemon in any run.
    pub peak_rss_bytes: Option<u64>,
    /// Megabytes of index per 1,000 chunks over all repositories.
    pub storage_mb_per_1k: f64,
    /// Median query latency over all runs' medians, in ms.
    pub query_ms_median: f64,
    /// Highest p95 of any run, in ms.
    pub query_ms_p95: f64,
    /// Quality over all queries.
    pub overall: Option<Metrics>,
    /// Quality per repository folder name.
    pub by_repo: BTreeMap<String, Metrics>,
    /// Quality per target language.
    pub by_language: BTreeMap<String, Metrics>,
}

/// The results file `score.py` reads.
pub(super) fn write_results(path: &Path, runs: &[BenchmarkResult]) -> anyhow::Result<()> {
    let text = results_lines(runs.iter().flat_map(|r| &r.queries));
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Per model, in the order the runs came: throughput, memory, storage and latency over all its runs, and quality overall, per repository and per language.
pub(super) fn summarize(runs: &[BenchmarkResult]) -> Vec<ModelSummary> {
    let mut order: Vec<&str> = Vec::new();
    for r in runs {
        if !order.contains(&r.model.as_str()) {
            order.push(&r.model);
        }
    }
    order
        .into_iter()
        .map(|model| {
            let mine: Vec<&BenchmarkResult> = runs.iter().filter(|r| r.model == model).collect();
            let chunks: u64 = mine.iter().map(|r| r.chunks).sum();
            let secs: f64 = mine.iter().map(|r| r.index_s).sum();
            let bytes: u64 = mine.iter().map(|r| r.storage_bytes).sum();
            let mut medians: Vec<f64> = mine.iter().map(|r| r.query_ms_median).collect();
            medians.sort_by(f64::total_cmp);
            let outcomes: Vec<&QueryOutcome> = mine.iter().flat_map(|r| &r.queries).collect();
            ModelSummary {
                model: model.to_owned(),
                device: mine.first().map(|r| r.device.clone()).unwrap_or_default(),
                chunks_per_s: chunks as f64 / secs.max(1e-9),
                peak_rss_bytes: mine.iter().filter_map(|r| r.peak_rss_bytes).max(),
                storage_mb_per_1k: bytes as f64 / 1e6 / (chunks.max(1) as f64 / 1000.0),
                query_ms_median: medians.get(medians.len() / 2).copied().unwrap_or(0.0),
                query_ms_p95: mine.iter().map(|r| r.query_ms_p95).fold(0.0, f64::max),
                overall: (!outcomes.is_empty()).then(|| Metrics::of(outcomes.iter().copied())),
                by_repo: mine
                    .iter()
                    .filter_map(|r| Some((folder_name(Path::new(&r.repo)), r.quality?)))
                    .collect(),
                by_language: Metrics::by_language(outcomes.iter().copied()),
            }
        })
        .collect()
}
