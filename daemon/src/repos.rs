//! The daemon's registered repositories: each with its store (one writer), a
//! reader for searches that never waits for the writer, and a status.
//!
//! The list of roots (and their models) is kept in `$CODESEARCH_HOME/repos.json`,
//! written atomically, so a restart serves the same repositories.
//!
//! A batch of watched changes becomes the cheapest pass that is still exact:
//! the folders that hold changed files are listed again (`index::index_dirs`);
//! anything that can change what the walk sees elsewhere (a folder created,
//! removed or renamed, an ignore file edited, lost events) runs a whole
//! incremental pass, which only re-reads files whose size or mtime changed.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codesearch_proto::{RepoProgress, RepoState, RepoStatus};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::chunk::Chunker;
use crate::embed::EmbedHandle;
use crate::index::{self, IndexOptions};
use crate::store::{Manifest, Readers, Store, StoreError};
use crate::walk;
use crate::watch::{Batch, Changes};

/// Least time between two `repo.progress` notifications of one run.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Watched changes save the HNSW file at most this often (it is rebuilt from
/// SQLite if the daemon dies in between, and saved at shutdown).
const HNSW_SAVE_EVERY: Duration = Duration::from_secs(30);

/// How often a repository no watcher follows is rescanned.
const RESCAN_EVERY: Duration = Duration::from_secs(60);

/// Files whose edits change what the walk sees.
const IGNORE_FILES: [&str; 3] = [".gitignore", ".ignore", walk::IGNORE_FILE];

/// What a pass covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole tree; `clear` builds a new index beside the live one and swaps.
    All {
        /// Rebuild from nothing (vectors stay cached) instead of updating.
        clear: bool,
    },
    /// The files directly inside these folders (relative; `""` is the root).
    Dirs(Vec<String>),
}

/// One registered repository.
#[derive(Debug)]
pub struct Repo {
    /// Canonical root.
    pub root: PathBuf,
    /// Canonical model name.
    pub model: String,
    /// The single writer. Indexing holds it for a whole run.
    pub writer: tokio::sync::Mutex<Store>,
    /// Searches borrow a reader each; SQLite WAL and the shared HNSW lock let
    /// them run beside each other and beside the writer.
    pub readers: Readers,
    status: Mutex<RepoStatus>,
    /// Where `repo.progress` goes; nobody listening is fine.
    events: tokio::sync::broadcast::Sender<RepoProgress>,
    /// `repo.remove` took it away: no pass may run any more.
    removed: std::sync::atomic::AtomicBool,
    /// Folders the last whole walk entered; `None` before one ran.
    dirs: Mutex<Option<HashSet<String>>>,
    /// The watcher's pending changes, once watching started.
    changes: Mutex<Option<Arc<Changes>>>,
    last_hnsw_save: Mutex<Instant>,
    /// The daemon's shutdown token: a pass commits its current batch and stops.
    cancel: CancellationToken,
}

/// What `repos.json` holds for one repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoEntry {
    /// Canonical root.
    pub path: PathBuf,
    /// Canonical model name.
    pub model: String,
}

impl Repo {
    /// Opens (or creates) the index of `root` under `indexes` for `embedder`'s
    /// model; indexing runs report their progress to `events`.
    pub fn open(
        indexes: &Path,
        root: &Path,
        embedder: &EmbedHandle,
        events: tokio::sync::broadcast::Sender<RepoProgress>,
        cancel: CancellationToken,
    ) -> Result<Self, StoreError> {
        let manifest = Manifest::of(embedder, root);
        let store = Store::open(&Store::dir_for(indexes, root), &manifest)?;
        let reader = store.reader()?;
        let status = RepoStatus {
            path: root.display().to_string(),
            state: RepoState::Ready,
            model: manifest.model.clone(),
            files: store.file_count()?,
            chunks: store.chunk_count()?,
            pending: 0,
            indexed_at: None,
            error: None,
            watching: false,
            watch_error: None,
            changes_pending: 0,
            last_change_at: None,
            chunks_embedded: 0,
            skipped: None,
        };
        Ok(Self {
            root: root.to_owned(),
            model: manifest.model,
            writer: tokio::sync::Mutex::new(store),
            readers: Readers::for_this_machine(reader),
            status: Mutex::new(status),
            events,
            removed: std::sync::atomic::AtomicBool::new(false),
            dirs: Mutex::new(None),
            changes: Mutex::new(None),
            last_hnsw_save: Mutex::new(Instant::now()),
            cancel,
        })
    }

    /// The current status.
    pub fn status(&self) -> RepoStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(changes) = self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            status.watching = true;
            status.watch_error = changes.error();
            status.changes_pending = changes.pending() as u64;
        }
        status
    }

    /// From now on, passes that start or wait for the writer do nothing.
    pub fn mark_removed(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Ends the watcher's batches for this repository.
    pub fn stop_watching(&self) {
        if let Some(changes) = self
            .changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            changes.close();
        }
    }

    /// Reports the watcher's `changes` in the status from now on.
    pub fn set_changes(&self, changes: Arc<Changes>) {
        *self.changes.lock().unwrap_or_else(|p| p.into_inner()) = Some(changes);
    }

    /// Applies a batch of watched changes: re-lists the folders of changed files,
    /// or runs a whole incremental pass when the batch can change more than that.
    pub async fn apply_changes(
        self: &Arc<Self>,
        batch: Batch,
        embedder: EmbedHandle,
        chunker: Arc<Chunker>,
    ) {
        let Some(scope) = self.scope_of(&batch) else {
            return;
        };
        tracing::debug!(root = %self.root.display(), ?scope, "applying changes");
        self.pass(embedder, chunker, scope, true).await;
    }

    /// The pass a batch needs, or `None` when nothing it names is indexed or visible.
    fn scope_of(&self, batch: &Batch) -> Option<Scope> {
        let all = Some(Scope::All { clear: false });
        if batch.rescan {
            return all;
        }
        let known = self.dirs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(known) = known.as_ref() else {
            return all;
        };
        let mut dirs = BTreeSet::new();
        for path in &batch.paths {
            if !path.starts_with(&self.root) {
                continue;
            }
            let rel = walk::relative(&self.root, path);
            let name = rel.rsplit('/').next().unwrap_or("");
            if rel.is_empty()
                || IGNORE_FILES.contains(&name)
                || rel == ".git/info/exclude"
                || known.contains(&rel)
            {
                return all; // the root, a rule, or a known folder (removed, renamed) changed
            }
            if name.starts_with('.') {
                continue; // hidden, like editors' swap files: the walk skips them too
            }
            let parent = index::parent_dir(&rel);
            if known.contains(parent) {
                if path.is_dir() {
                    return all; // a new folder: walk it under every rule
                }
                dirs.insert(parent.to_owned());
            }
            // Otherwise it lies in a hidden or ignored folder: not ours.
        }
        (!dirs.is_empty()).then(|| Scope::Dirs(dirs.into_iter().collect()))
    }

    fn update(&self, f: impl FnOnce(&mut RepoStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Shows `indexing` from now on, so a caller that polls right after starting a
    /// pass never sees the state from before it.
    pub fn mark_indexing(&self) {
        self.update(|s| {
            s.state = RepoState::Indexing;
            s.error = None;
        });
    }

    /// Runs one incremental indexing pass on a blocking thread; `full` builds a
    /// new index beside the live one and swaps it in when complete. Status shows `indexing` meanwhile and `ready` or `error` after;
    /// `repo.progress` tells subscribers how far it is.
    pub async fn index(self: &Arc<Self>, embedder: EmbedHandle, chunker: Arc<Chunker>, full: bool) {
        self.pass(embedder, chunker, Scope::All { clear: full }, false)
            .await;
    }

    async fn pass(
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

    /// Files and chunks as committed so far (the reader sees each committed
    /// batch), so `repo.list` counts up while a pass runs instead of showing
    /// the numbers from before it until the end.
    fn show_committed_counts(&self) {
        // Not worth waiting for a reader that searches hold: the next report counts.
        let counts = self
            .readers
            .try_get()
            .and_then(|r| r.map(|r| r.counts()).transpose());
        if let Ok(Some((files, chunks))) = counts {
            self.update(|s| (s.files, s.chunks) = (files, chunks));
        }
    }

    fn publish(&self, progress: RepoProgress) {
        // An error only means that no client is subscribed.
        let _ = self.events.send(progress);
    }

    fn fail(&self, error: String) -> String {
        tracing::warn!(root = %self.root.display(), %error, "indexing failed");
        self.update(|s| {
            s.state = RepoState::Error;
            s.error = Some(error.clone());
        });
        error
    }
}

/// Applies `changes` to `repo` batch by batch until they are closed. Without a
/// working watcher (`changes` has an error), a whole pass runs every minute too.
pub async fn follow(
    repo: Arc<Repo>,
    changes: Arc<Changes>,
    embedder: EmbedHandle,
    chunker: Arc<Chunker>,
    cancel: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            () = cancel.cancelled() => return,
            batch = changes.next_batch() => batch,
            () = tokio::time::sleep(RESCAN_EVERY), if changes.error().is_some() => {
                Some(Batch { paths: Vec::new(), rescan: true })
            }
        };
        let Some(batch) = batch else {
            return;
        };
        repo.apply_changes(batch, embedder.clone(), chunker.clone())
            .await;
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

/// Reads `repos.json`; a missing file is an empty list.
pub fn load_repo_list(path: &Path) -> std::io::Result<Vec<RepoEntry>> {
    match walk::read_small_file(path, walk::SMALL_FILE_LIMIT) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Writes `repos.json` atomically.
pub fn save_repo_list(path: &Path, repos: &[RepoEntry]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(repos).map_err(std::io::Error::other)?;
    crate::durable::write_atomic(path, |f| std::io::Write::write_all(f, &bytes))
}
