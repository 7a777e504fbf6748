//! `codesearch benchmark`: one `benchmark.run` per model and repository (the
//! daemon indexes and searches where the model lives), then the tables of the
//! original codesearch's runner, or one JSON document.
//!
//! - `queries`: the queries file, split over the repositories.
//! - `report`: the runs summed per model, and the results file for `score.py`.
//! - `tables`: the tables.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use codesearch_proto::benchmark::BenchmarkParams;
use codesearch_proto::method;

use crate::rpc;

mod queries;
mod report;
mod tables;

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
        Some(path) => queries::assign(&queries::read_queries(path)?, &repos, path)?,
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
        report::write_results(path, &runs)?;
    }
    let report = report::Report {
        models: report::summarize(&runs),
        runs,
    };
    if req.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        tables::write(out, &report, req, &repos)?;
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
