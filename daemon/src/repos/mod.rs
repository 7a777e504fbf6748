//! The daemon's registered repositories: each with its store (one writer), a
//! reader for searches that never waits for the writer, and a status.
//!
//! - `pass`: an indexing pass, with its progress and the status it leaves.
//! - `follow`: watched changes turned into the cheapest exact pass.
//! - `list`: `$CODESEARCH_HOME/repos.json`, the roots (and their models), so a
//!   restart serves the same repositories.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use codesearch_proto::{RepoProgress, RepoState, RepoStatus};
use tokio_util::sync::CancellationToken;

use crate::embed::EmbedHandle;
use crate::store::{Manifest, Readers, Store, StoreError};
use crate::watch::Changes;

mod follow;
mod list;
mod pass;

pub(crate) use follow::follow;
pub(crate) use list::{RepoEntry, load_repo_list, save_repo_list};

/// One registered repository.
#[derive(Debug)]
pub(crate) struct Repo {
    /// Canonical root.
    pub root: PathBuf,
    /// Canonical model name.
    pub model: String,
    /// The single writer. Indexing holds it for a whole run.
    pub writer: tokio::sync::Mutex<Store>,
    /// Searches borrow a reader each; SQLite WAL and the shared HNSW lock let
    /// them run beside each other and beside the writer.
    pub readers: Readers,
    /// Turns at the readers, first come first served: a search waits here (not
    /// on a blocking thread in the pool) until a reader is sure to be free.
    pub searching: tokio::sync::Semaphore,
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

impl Repo {
    /// Opens (or creates) the index of `root` under `indexes` for `embedder`'s
    /// model; indexing runs report their progress to `events`.
    pub(crate) fn open(
        indexes: &Path,
        root: &Path,
        embedder: &EmbedHandle,
        events: tokio::sync::broadcast::Sender<RepoProgress>,
        cancel: CancellationToken,
    ) -> Result<Self, StoreError> {
        let manifest = Manifest::of(embedder, root);
        let store = Store::open(&Store::dir_for(indexes, root), &manifest)?;
        let readers = Readers::for_this_machine(store.reader()?);
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
            searching: tokio::sync::Semaphore::new(readers.max()),
            readers,
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
    pub(crate) fn status(&self) -> RepoStatus {
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
    pub(crate) fn mark_removed(&self) {
        self.removed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(super) fn is_removed(&self) -> bool {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Ends the watcher's batches for this repository.
    pub(crate) fn stop_watching(&self) {
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
    pub(crate) fn set_changes(&self, changes: Arc<Changes>) {
        *self.changes.lock().unwrap_or_else(|p| p.into_inner()) = Some(changes);
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut RepoStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Shows `indexing` from now on, so a caller that polls right after starting a
    /// pass never sees the state from before it.
    pub(crate) fn mark_indexing(&self) {
        self.update(|s| {
            s.state = RepoState::Indexing;
            s.error = None;
        });
    }

    /// Files and chunks as committed so far (the reader sees each committed
    /// batch), so `repo.list` counts up while a pass runs instead of showing
    /// the numbers from before it until the end.
    pub(super) fn show_committed_counts(&self) {
        // Not worth waiting for a reader that searches hold: the next report counts.
        let counts = self
            .readers
            .try_get()
            .and_then(|r| r.map(|r| r.counts()).transpose());
        if let Ok(Some((files, chunks))) = counts {
            self.update(|s| (s.files, s.chunks) = (files, chunks));
        }
    }

    pub(super) fn publish(&self, progress: RepoProgress) {
        // An error only means that no client is subscribed.
        let _ = self.events.send(progress);
    }

    pub(super) fn fail(&self, error: String) -> String {
        tracing::warn!(root = %self.root.display(), %error, "indexing failed");
        self.update(|s| {
            s.state = RepoState::Error;
            s.error = Some(error.clone());
        });
        error
    }
}
