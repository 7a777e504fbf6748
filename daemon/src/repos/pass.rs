//! An indexing pass over a repository: the writer taken, the pipeline run on
//! a blocking thread, progress published as it commits, the status it leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use codesearch_proto::{RepoProgress, RepoState};

use super::Repo;
use crate::chunk::Chunker;
use crate::embed::EmbedHandle;
use crate::index::{self, IndexOptions};
use crate::walk;

/// Least time between two `repo.progress` notifications of one run.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Watched changes save the HNSW file at most this often (it is rebuilt from
/// SQLite if the daemon dies in between, and saved at shutdown).
const HNSW_SAVE_EVERY: Duration = Duration::from_secs(30);

/// What a pass covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
    /// The whole tree; `clear` builds a new index beside the live one and swaps.
    All {
        /// Rebuild from nothing (vectors stay cached) instead of updating.
        clear: bool,
    },
    /// The files directly inside these folders (relative; `""` is the root).
    Dirs(Vec<String>),
}

impl Repo {
    /// Runs one incremental indexing pass on a blocking thread; `full` builds a
    /// new index beside the live one and swaps it in when complete. Status shows `indexing` meanwhile and `ready` or `error` after;
    /// `repo.progress` tells subscribers how far it is.
    pub(crate) async fn index(
        self: &Arc<Self>,
        embedder: EmbedHandle,
        chunker: Arc<Chunker>,
        full: bool,
    ) {
        self.pass(embedder, chunker, Scope::All { clear: full }, false)
            .await;
    }

    pub(super) async fn pass(
        self: &Arc<Self>,
        embedder: EmbedHandle,
        chunker: Arc<Chunker>,
        scope: Scope,
        watched: bool,
    ) {
        if self.is_removed() {
            return;
        }
        self.mark_indexing();
        let started = Instant::now();
        let mut progress = RepoProgress {
            path: self.root.display().to_string(),
            state: RepoState::Indexing,
            files_total: 0,
            files_done: 0,
            chunks_embedded: 0,
            chunks_written: 0,
            elapsed_s: 0.0,
            error: None,
        };
        self.publish(progress.clone());
        let whole = matches!(scope, Scope::All { .. });
        let repo = self.clone();
        let mut running = progress.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut store = repo.writer.blocking_lock();
            if repo.is_removed() {
                return Ok(None);
            }
            let mut embedder = embedder;
            let mut last_sent = started;
            let report = |s: &index::IndexStats| {
                let done = s.files_done();
                repo.update(|st| st.pending = s.files_seen.saturating_sub(done));
                if last_sent.elapsed() >= PROGRESS_EVERY {
                    last_sent = Instant::now();
                    repo.show_committed_counts();
                    running.files_total = s.files_seen;
                    running.files_done = done;
                    running.chunks_embedded = s.chunks_embedded;
                    running.chunks_written = s.chunks_written;
                    running.elapsed_s = started.elapsed().as_secs_f64();
                    repo.publish(running.clone());
                }
            };
            let options = IndexOptions {
                cancel: repo.cancel.clone(),
                ..IndexOptions::default()
            };
            let stats = match &scope {
                Scope::All { clear: true } => {
                    // Built beside the live index, which keeps answering searches
                    // until the rebuilt one replaces it whole.
                    let mut side = store.rebuild_beside()?;
                    let stats = match index::index(
                        &repo.root,
                        &mut side,
                        &mut embedder,
                        &chunker,
                        &options,
                        report,
                    ) {
                        Ok(stats) => stats,
                        Err(err) => {
                            if let Err(e) = side.discard() {
                                tracing::warn!(root = %repo.root.display(), %e, "unfinished full re-index not removed; the next start removes it");
                            }
                            return Err(err);
                        }
                    };
                    store.replace_with(side)?;
                    // Searches move to the new index; a search still running
                    // finishes on the old one (its files stay open).
                    repo.readers.replace(store.reader()?);
                    *repo
                        .last_hnsw_save
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    stats
                }
                Scope::All { clear: false } => {
                    let stats = index::index(
                        &repo.root,
                        &mut store,
                        &mut embedder,
                        &chunker,
                        &options,
                        report,
                    )?;
                    *repo
                        .last_hnsw_save
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    stats
                }
                Scope::Dirs(dirs) => {
                    let stats = index::index_dirs(
                        &repo.root,
                        dirs,
                        &mut store,
                        &mut embedder,
                        &chunker,
                        &options,
                        report,
                    )?;
                    let mut saved = repo
                        .last_hnsw_save
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if saved.elapsed() >= HNSW_SAVE_EVERY {
                        store.save_hnsw()?;
                        *saved = Instant::now();
                    }
                    stats
                }
            };
            let counts = (store.file_count()?, store.chunk_count()?);
            Ok::<_, index::IndexError>(Some((stats, counts)))
        })
        .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        progress.elapsed_s = started.elapsed().as_secs_f64();
        match result {
            Ok(Ok(None)) => return, // removed meanwhile
            Ok(Err(index::IndexError::Cancelled)) => {
                tracing::info!(root = %self.root.display(), "indexing stopped at a batch boundary: the daemon is shutting down");
                return;
            }
            Ok(Ok(Some((stats, (files, chunks))))) => {
                tracing::info!(root = %self.root.display(), files, chunks, embedded = stats.chunks_embedded, watched, "indexed");
                if whole {
                    *self.dirs.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(stats.dirs.iter().cloned().collect());
                }
                self.update(|s| {
                    s.state = RepoState::Ready;
                    s.files = files;
                    s.chunks = chunks;
                    s.pending = 0;
                    s.indexed_at = Some(now);
                    s.chunks_embedded += stats.chunks_embedded;
                    if whole {
                        s.skipped = Some(skipped(&stats.skips));
                    }
                    if watched {
                        s.last_change_at = Some(now);
                    }
                });
                progress.state = RepoState::Ready;
                progress.files_total = stats.files_seen;
                progress.files_done = stats.files_done();
                progress.chunks_embedded = stats.chunks_embedded;
                progress.chunks_written = stats.chunks_written;
            }
            Ok(Err(err)) => {
                progress.state = RepoState::Error;
                progress.error = Some(self.fail(err.to_string()));
            }
            Err(join) => {
                progress.state = RepoState::Error;
                progress.error = Some(self.fail(format!("indexing panicked: {join}")));
            }
        }
        self.publish(progress);
    }
}

/// The protocol's form of a pass's skip tally.
fn skipped(skips: &walk::Skips) -> codesearch_proto::Skipped {
    codesearch_proto::Skipped {
        total: skips.total(),
        counts: skips
            .counts
            .iter()
            .map(|(r, n)| (r.as_str().to_owned(), *n))
            .collect(),
        examples: skips
            .examples
            .iter()
            .map(|(r, paths)| (r.as_str().to_owned(), paths.clone()))
            .collect(),
    }
}
