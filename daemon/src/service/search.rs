//! The `search` method: one query vector per model, every selected repository
//! searched, hits merged by score.

use std::sync::Arc;
use std::time::Instant;

use codesearch_proto::{Hit, SearchParams, SearchResult};

use super::{Service, ServiceError, parse_mode};
use crate::embed::InputKind;
use crate::repos::Repo;
use crate::store::StoreError;

impl Service {
    /// `search`: one query embedding per model, the nearest chunks of every
    /// selected repository, filtered, merged by score.
    pub async fn search(&self, p: SearchParams) -> Result<SearchResult, ServiceError> {
        let started = Instant::now();
        self.restored().await;
        let mode = parse_mode(p.mode.as_deref())?;
        check_search(&p)?;
        let paths = match &p.paths {
            Some(globs) => Some(build_globs(globs)?),
            None => None,
        };
        let selected: Vec<Arc<Repo>> = {
            let repos = self.repos.read().await;
            match &p.repos {
                Some(wanted) => wanted
                    .iter()
                    .map(|w| self.find(&repos, w).map(|k| repos[&k].clone()))
                    .collect::<Result<_, _>>()?,
                None => repos.values().cloned().collect(),
            }
        };
        // Every repository is searched at once: its words' side (full text,
        // symbols) right away, beside the model embedding the query; its vector
        // side when the query vector of the repository's model arrives.
        let query = Arc::new(Query {
            text: p.query.clone(),
            k: p.k,
            mode,
            languages: p.languages.clone(),
            paths,
        });
        let mut waiting: Vec<(String, tokio::sync::oneshot::Sender<Arc<Vec<f32>>>)> = Vec::new();
        let searches: Vec<_> = selected
            .iter()
            .map(|repo| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if mode != crate::search::Mode::Lexical {
                    waiting.push((repo.model.clone(), tx));
                }
                tokio::spawn(search_repo(repo.clone(), query.clone(), rx))
            })
            .collect();
        // One query vector per model. On an error the senders drop, and the
        // searches waiting for it end without one.
        while let Some((model, _)) = waiting.first() {
            let model = model.clone();
            let handle = self.embedder(Some(&model)).await?;
            let v = handle
                .embed_async(vec![p.query.clone()], InputKind::Query)
                .await
                .map_err(|e| ServiceError::Model(Box::new(e)))?
                .pop()
                .unwrap_or_default();
            let v = Arc::new(v);
            let (now, later) = std::mem::take(&mut waiting)
                .into_iter()
                .partition::<Vec<_>, _>(|(m, _)| *m == model);
            for (_, tx) in now {
                // A search that already failed has dropped its receiver.
                let _ = tx.send(v.clone());
            }
            waiting = later;
        }
        let mut hits: Vec<Hit> = Vec::new();
        for search in searches {
            let found = search
                .await
                .map_err(|e| ServiceError::Internal(format!("search panicked: {e}")))??;
            hits.extend(found);
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(p.k);
        Ok(SearchResult {
            results: hits,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// What one search asks of each repository.
struct Query {
    text: String,
    k: usize,
    mode: crate::search::Mode,
    languages: Option<Vec<String>>,
    paths: Option<globset::GlobSet>,
}

impl Query {
    fn keeps(&self, r: &crate::store::ChunkRow) -> bool {
        self.languages
            .as_ref()
            .is_none_or(|l| l.iter().any(|x| x == &r.language))
            && self.paths.as_ref().is_none_or(|g| g.is_match(&r.path))
    }

    fn request<'a>(
        &'a self,
        vector: Option<&'a [f32]>,
        keep: &'a (dyn Fn(&crate::store::ChunkRow) -> bool + Sync),
    ) -> crate::search::Request<'a> {
        let filtered = self.languages.is_some() || self.paths.is_some();
        crate::search::Request {
            text: &self.text,
            vector,
            k: self.k,
            mode: self.mode,
            keep: filtered.then_some(keep),
        }
    }
}

/// One repository's hits for the query: the words' side first, then the
/// vector side once `vector` delivers the query's embedding (nothing is
/// awaited in lexical mode). Each side runs on a blocking thread with a reader
/// of its own, after waiting its turn for one in `Repo::searching` (first come,
/// first served: the reader pool's own wait lets a newcomer take a reader
/// handed back before a search that has waited longer, and with 32 clients
/// some searches waited half a second); none is held while the model works.
async fn search_repo(
    repo: Arc<Repo>,
    query: Arc<Query>,
    vector: tokio::sync::oneshot::Receiver<Arc<Vec<f32>>>,
) -> Result<Vec<Hit>, ServiceError> {
    let blocking = |what: &str, e: tokio::task::JoinError| {
        ServiceError::Internal(format!("search ({what}) panicked: {e}"))
    };
    let words = {
        // `searching` is never closed, so the wait always ends with a permit.
        let _turn = repo.searching.acquire().await;
        let (repo, query) = (repo.clone(), query.clone());
        tokio::task::spawn_blocking(move || {
            let keep = |r: &crate::store::ChunkRow| query.keeps(r);
            crate::search::text_side(&*repo.readers.get()?, &query.request(None, &keep))
        })
        .await
        .map_err(|e| blocking("full text", e))??
    };
    let v = match query.mode {
        crate::search::Mode::Lexical => None,
        // No vector: the embedding failed and the search returns its error.
        _ => match vector.await {
            Ok(v) => Some(v),
            Err(_) => return Ok(Vec::new()),
        },
    };
    let _turn = repo.searching.acquire().await;
    let repo2 = repo.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
        let keep = |r: &crate::store::ChunkRow| query.keeps(r);
        let req = query.request(v.as_deref().map(Vec::as_slice), &keep);
        let rows = crate::search::ranked_with(&*repo2.readers.get()?, &req, words)?;
        Ok(crate::search::hits(&repo2.root, rows, query.k))
    })
    .await
    .map_err(|e| blocking("vectors", e))??;
    let root = repo.root.display().to_string();
    Ok(found
        .into_iter()
        .map(|h| Hit {
            repo: root.clone(),
            path: h.path,
            start_line: h.start_line,
            end_line: h.end_line,
            symbol: h.symbol,
            kind: h.kind,
            language: h.language,
            score: h.score,
            snippet: h.snippet,
            stale: h.stale,
        })
        .collect())
}

/// The limits of `search` params (`codesearch_proto::limits`), before any work.
fn check_search(p: &SearchParams) -> Result<(), ServiceError> {
    use codesearch_proto::limits::{MAX_FILTER_ITEMS, MAX_K, MAX_QUERY_BYTES};
    if p.k == 0 || p.k > MAX_K {
        return Err(ServiceError::InvalidParams(format!(
            "k must be between 1 and {MAX_K}, not {}",
            p.k
        )));
    }
    if p.query.len() > MAX_QUERY_BYTES {
        return Err(ServiceError::InvalidParams(format!(
            "the query is {} bytes; send at most {MAX_QUERY_BYTES}",
            p.query.len()
        )));
    }
    for (name, list) in [
        ("repos", &p.repos),
        ("languages", &p.languages),
        ("paths", &p.paths),
    ] {
        if let Some(list) = list
            && list.len() > MAX_FILTER_ITEMS
        {
            return Err(ServiceError::InvalidParams(format!(
                "`{name}` has {} entries; send at most {MAX_FILTER_ITEMS}",
                list.len()
            )));
        }
    }
    Ok(())
}

fn build_globs(globs: &[String]) -> Result<globset::GlobSet, ServiceError> {
    let mut b = globset::GlobSetBuilder::new();
    for g in globs {
        b.add(
            globset::Glob::new(g)
                .map_err(|e| ServiceError::InvalidParams(format!("bad path glob `{g}`: {e}")))?,
        );
    }
    b.build()
        .map_err(|e| ServiceError::InvalidParams(format!("bad path globs: {e}")))
}
