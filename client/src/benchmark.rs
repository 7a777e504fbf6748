//! `codesearch benchmark`: one `benchmark.run` per model and repository (the
//! daemon indexes and searches where the model lives), then the tables of the
//! original codesearch's runner, or one JSON document.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use codesearch_proto::benchmark::{
    BenchmarkParams, BenchmarkQuery, BenchmarkResult, Metrics, QueryLine, QueryOutcome,
    parse_queries, results_lines,
};
use codesearch_proto::method;
use serde::Serialize;

use crate::rpc;

/// `codesearch benchmark`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Models to compare, comma-separated (see `codesearch models`) [default: the daemon's]
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// A repository to index and query (repeatable) [default: the current directory]
    #[arg(long = "repo")]
    repos: Vec<PathBuf>,
    /// Labelled queries, one JSON object per line: {"id", "query", "path",
    /// "start_line", "end_line"}, and "corpus" (the repository's folder name)
    /// when several repositories are given.
    #[arg(long)]
    queries: Option<PathBuf>,
    /// hybrid, semantic or lexical [default: hybrid]
    #[arg(long)]
    mode: Option<String>,
    /// Also write each query's hits as `{"id", "results"}` lines (what the
    /// eval's score.py reads).
    #[arg(long)]
    results: Option<PathBuf>,
    /// One JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

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

/// Runs the benchmark and writes the tables (or JSON) to `out`.
pub fn run(c: &mut rpc::Client, out: &mut impl Write, req: &Args) -> anyhow::Result<()> {
    let repos = if req.repos.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        req.repos.clone()
    };
    let repos = repos
        .iter()
        .map(|r| {
            std::fs::canonicalize(r).with_context(|| format!("cannot benchmark {}", r.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let per_repo = match &req.queries {
        Some(path) => assign(&read_queries(path)?, &repos, path)?,
        None => vec![Vec::new(); repos.len()],
    };
    let models: Vec<Option<&str>> = if req.models.is_empty() {
        vec![None]
    } else {
        req.models.iter().map(|m| Some(m.as_str())).collect()
    };
    let total = models.len() * repos.len();
    let mut runs = Vec::with_capacity(total);
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}, {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    // A model that cannot run (weights missing, unsupported) is reported and
    // skipped; the others still run.
    let mut failures: Vec<String> = Vec::new();
    'models: for model in &models {
        for (repo, queries) in repos.iter().zip(&per_repo) {
            bar.set_message(format!(
                "[{}/{total}] {} on {}: indexing from scratch{}",
                runs.len() + failures.len() + 1,
                model.unwrap_or("the default model"),
                repo.display(),
                if queries.is_empty() {
                    String::new()
                } else {
                    format!(", then {} queries", queries.len())
                }
            ));
            let result = c.request::<method::BenchmarkRun>(&BenchmarkParams {
                repo: repo.display().to_string(),
                model: model.map(str::to_owned),
                queries: queries.clone(),
                mode: req.mode.clone(),
            });
            match result {
                Ok(r) => runs.push(r),
                Err(err) if model.is_some() && is_model_error(&err) => {
                    failures.push(format!("{}: {err:#}", model.unwrap_or_default()));
                    continue 'models;
                }
                Err(err) => {
                    return Err(err.context(format!("benchmark of {}", repo.display())));
                }
            }
        }
    }
    bar.finish_and_clear();
    if let Some(path) = &req.results {
        write_results(path, &runs)?;
    }
    let report = Report {
        models: summarize(&runs),
        runs,
    };
    if req.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        tables(out, &report, req, &repos)?;
    }
    if !failures.is_empty() {
        out.flush()?;
        bail!(
            "{} of {} models could not run:\n  {}",
            failures.len(),
            models.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// The daemon's "model unavailable" answer (-32002): that model is skipped.
fn is_model_error(err: &anyhow::Error) -> bool {
    err.downcast_ref::<rpc::RpcError>()
        .is_some_and(|e| e.code == i64::from(codesearch_proto::code::MODEL_UNAVAILABLE))
}

fn read_queries(path: &Path) -> anyhow::Result<Vec<QueryLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read queries from {}", path.display()))?;
    let lines =
        parse_queries(&text).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), e.line))?;
    if lines.is_empty() {
        bail!("{} has no queries", path.display());
    }
    Ok(lines)
}

/// Queries per repository: by `corpus` = the repository's folder name, or all
/// of them to the only repository.
fn assign(
    lines: &[QueryLine],
    repos: &[PathBuf],
    file: &Path,
) -> anyhow::Result<Vec<Vec<BenchmarkQuery>>> {
    let mut out = vec![Vec::new(); repos.len()];
    let names: Vec<String> = repos.iter().map(|r| folder_name(r)).collect();
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for q in lines {
        let slot = match (&q.corpus, repos.len()) {
            (None, 1) => Some(0),
            (None, _) => bail!(
                "{}: query {} has no \"corpus\" field, so it cannot be matched to one of {} repositories",
                file.display(),
                q.id,
                repos.len()
            ),
            (Some(c), 1) if !names.contains(c) && lines.iter().all(|l| l.corpus == q.corpus) => {
                Some(0)
            }
            (Some(c), _) => names.iter().position(|n| n == c),
        };
        match slot {
            Some(i) => out[i].push(q.query()),
            None => {
                *skipped
                    .entry(q.corpus.clone().unwrap_or_default())
                    .or_default() += 1
            }
        }
    }
    if out.iter().all(Vec::is_empty) {
        bail!(
            "no query in {} is for {} (queries name their repository folder in \"corpus\")",
            file.display(),
            names.join(", ")
        );
    }
    for (corpus, n) in skipped {
        let _ = writeln!(
            std::io::stderr(),
            "codesearch: note: {n} queries are for `{corpus}`, which is not among the repositories given; add --repo …/{corpus} to include them"
        );
    }
    Ok(out)
}

fn folder_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The results file `score.py` reads.
fn write_results(path: &Path, runs: &[BenchmarkResult]) -> anyhow::Result<()> {
    let text = results_lines(runs.iter().flat_map(|r| &r.queries));
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn summarize(runs: &[BenchmarkResult]) -> Vec<ModelSummary> {
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

fn tables(
    out: &mut impl Write,
    report: &Report,
    req: &Args,
    repos: &[PathBuf],
) -> std::io::Result<()> {
    let names: Vec<String> = repos.iter().map(|r| folder_name(r)).collect();
    let width = report
        .models
        .iter()
        .map(|m| m.model.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(out, "Performance (cold index of {})", names.join(", "))?;
    writeln!(
        out,
        "{:<width$}  {:<7} {:>9} {:>12} {:>20} {:>14} {:>9}",
        "Model", "Device", "Samples/s", "Peak memory", "Storage/1K entities", "Query median", "p95"
    )?;
    for m in &report.models {
        let memory = m
            .peak_rss_bytes
            .map_or("n/a".to_owned(), |b| format!("{} MB", b / 1_000_000));
        writeln!(
            out,
            "{:<width$}  {:<7} {:>9.1} {:>12} {:>17.2} MB {:>11.1} ms {:>6.1} ms",
            m.model,
            m.device,
            m.chunks_per_s,
            memory,
            m.storage_mb_per_1k,
            m.query_ms_median,
            m.query_ms_p95
        )?;
    }
    if report.models.iter().all(|m| m.overall.is_none()) {
        return Ok(());
    }
    let source = req
        .queries
        .as_ref()
        .map(|q| folder_name(q))
        .unwrap_or_default();
    writeln!(out)?;
    writeln!(
        out,
        "Quality ({source}, {} ranking)",
        req.mode.as_deref().unwrap_or("hybrid")
    )?;
    writeln!(
        out,
        "{:<width$}  {:<16} {:>4} {:>7} {:>6} {:>6} {:>6} {:>8} {:>7}",
        "Model", "Set", "n", "MRR@10", "R@1", "R@5", "R@10", "nDCG@10", "no_res"
    )?;
    for m in &report.models {
        let Some(overall) = m.overall else { continue };
        let mut rows: Vec<(String, Metrics)> =
            m.by_repo.iter().map(|(k, v)| (k.clone(), *v)).collect();
        if m.by_language.len() > 1 || m.by_repo.len() > 1 {
            rows.extend(m.by_language.iter().map(|(k, v)| (format!("lang {k}"), *v)));
        }
        rows.push(("OVERALL".to_owned(), overall));
        for (i, (set, x)) in rows.iter().enumerate() {
            writeln!(
                out,
                "{:<width$}  {:<16} {:>4} {:>7.3} {:>6.3} {:>6.3} {:>6.3} {:>8.3} {:>7}",
                if i == 0 { m.model.as_str() } else { "" },
                set,
                x.n,
                x.mrr_at_10,
                x.recall_at_1,
                x.recall_at_5,
                x.recall_at_10,
                x.ndcg_at_10,
                x.no_results
            )?;
        }
    }
    Ok(())
}
