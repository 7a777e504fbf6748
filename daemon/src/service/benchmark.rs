//! The `benchmark.run` method: a cold index into a scratch folder, then labelled queries.

use std::path::Path;

use codesearch_proto::benchmark::{BenchmarkParams, BenchmarkQuery, BenchmarkResult};

use super::{Service, ServiceError, canonical_dir, parse_mode};

impl Service {
    /// `benchmark.run`: a cold index of `repo` with the model into a scratch
    /// folder under the codesearch home (removed afterwards), then the queries.
    /// A model other than the default, loaded only for this, is unloaded again.
    pub async fn benchmark(&self, p: BenchmarkParams) -> Result<BenchmarkResult, ServiceError> {
        let root = canonical_dir(&p.repo)?;
        let mode = parse_mode(p.mode.as_deref())?;
        check_queries(&p.queries)?;
        let _one_at_a_time = self.benchmarking.lock().await;
        let name = self
            .resolve_model(p.model.as_deref().unwrap_or(&self.config.embedding.model))?
            .name()
            .to_owned();
        let name = name.as_str();
        let was_loaded = self.is_loaded(name);
        let handle = self.embedder(Some(name)).await?;
        let scratch = tempfile::Builder::new()
            .prefix("benchmark-")
            .tempdir_in(&self.config.home)
            .map_err(|e| {
                ServiceError::Internal(format!(
                    "cannot make a scratch folder in {}: {e}",
                    self.config.home.display()
                ))
            })?;
        let chunker = self.chunker.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut handle = handle;
            crate::benchmark::run(
                &root,
                scratch.path(),
                &mut handle,
                &chunker,
                &p.queries,
                mode,
            )
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("benchmark panicked: {e}")))?
        .map_err(|e| ServiceError::Internal(format!("benchmark of {}: {e}", p.repo)));
        // The default model stays: the next search or repo.add wants it anyway.
        let default = name == self.config.embedding.model;
        if !was_loaded && !default && !self.repos.read().await.values().any(|r| r.model == name) {
            // Dropped after the map's lock: dropping a worker joins its thread.
            let unloaded = self.workers().remove(name);
            drop(unloaded);
        }
        result
    }
}

/// Labelled queries are checked before any work: a bad one is an error naming it.
fn check_queries(queries: &[BenchmarkQuery]) -> Result<(), ServiceError> {
    if queries.len() > crate::benchmark::MAX_QUERIES {
        return Err(ServiceError::InvalidParams(format!(
            "{} queries in one call; send at most {}",
            queries.len(),
            crate::benchmark::MAX_QUERIES
        )));
    }
    for q in queries {
        let bad = |why: &str| ServiceError::InvalidParams(format!("query `{}`: {why}", q.id));
        if q.query.trim().is_empty() {
            return Err(bad("the query text is empty"));
        }
        if q.path.is_empty() || Path::new(&q.path).is_absolute() {
            return Err(bad("`path` must be relative to the repository root"));
        }
        if q.start_line == 0 || q.end_line < q.start_line {
            return Err(bad(
                "`start_line` and `end_line` must be 1-based with start ≤ end",
            ));
        }
    }
    Ok(())
}
