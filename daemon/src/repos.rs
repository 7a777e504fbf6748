//! The daemon's registered repositories: each with its store (one writer), a
//! reader for searches that never waits for the writer, and a status.
//!
//! The list of roots (and their models) is kept in `$CODESEARCH_HOME/repos.json`,
//! written atomically, so a restart serves the same repositories.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use codesearch_proto::{RepoProgress, RepoState, RepoStatus};
use serde::{Deserialize, Serialize};

use crate::chunk::Chunker;
use crate::embed::{EmbedHandle, Embedder as _};
use crate::index::{self, IndexOptions};
use crate::store::{Manifest, Quantization, SCHEMA_VERSION, Store, StoreError, StoreReader};

/// Least time between two `repo.progress` notifications of one run.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// One registered repository.
#[derive(Debug)]
pub struct Repo {
    /// Canonical root.
    pub root: PathBuf,
    /// Canonical model name.
    pub model: String,
    /// The single writer. Indexing holds it for a whole run.
    pub writer: tokio::sync::Mutex<Store>,
    /// Searches use this; SQLite WAL and the shared HNSW lock let it run beside the writer.
    pub reader: Mutex<StoreReader>,
    status: Mutex<RepoStatus>,
    /// Where `repo.progress` goes; nobody listening is fine.
    events: tokio::sync::broadcast::Sender<RepoProgress>,
}

/// What `repos.json` holds for one repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
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
    ) -> Result<Self, StoreError> {
        let manifest = Manifest {
            schema_version: SCHEMA_VERSION,
            model: embedder.model_name().to_owned(),
            dims: embedder.dims(),
            root: root.to_owned(),
            quantization: Quantization::F16,
        };
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
        };
        Ok(Self {
            root: root.to_owned(),
            model: manifest.model,
            writer: tokio::sync::Mutex::new(store),
            reader: Mutex::new(reader),
            status: Mutex::new(status),
            events,
        })
    }

    /// The current status.
    pub fn status(&self) -> RepoStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

    /// Runs one incremental indexing pass on a blocking thread; `full` drops the
    /// index first. Status shows `indexing` meanwhile and `ready` or `error` after;
    /// `repo.progress` tells subscribers how far it is.
    pub async fn index(self: &Arc<Self>, embedder: EmbedHandle, chunker: Arc<Chunker>, full: bool) {
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
        let repo = self.clone();
        let mut running = progress.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut store = repo.writer.blocking_lock();
            if full {
                store.clear()?;
            }
            let mut embedder = embedder;
            let mut last_sent = started;
            let stats = index::index(
                &repo.root,
                &mut store,
                &mut embedder,
                &chunker,
                &IndexOptions::default(),
                |s| {
                    let done = s.files_done();
                    repo.update(|st| st.pending = s.files_seen.saturating_sub(done));
                    if last_sent.elapsed() >= PROGRESS_EVERY {
                        last_sent = Instant::now();
                        running.files_total = s.files_seen;
                        running.files_done = done;
                        running.chunks_embedded = s.chunks_embedded;
                        running.chunks_written = s.chunks_written;
                        running.elapsed_s = started.elapsed().as_secs_f64();
                        repo.publish(running.clone());
                    }
                },
            )?;
            let counts = (store.file_count()?, store.chunk_count()?);
            Ok::<_, index::IndexError>((stats, counts))
        })
        .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        progress.elapsed_s = started.elapsed().as_secs_f64();
        match result {
            Ok(Ok((stats, (files, chunks)))) => {
                tracing::info!(root = %self.root.display(), files, chunks, embedded = stats.chunks_embedded, "indexed");
                self.update(|s| {
                    s.state = RepoState::Ready;
                    s.files = files;
                    s.chunks = chunks;
                    s.pending = 0;
                    s.indexed_at = Some(now);
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

/// Reads `repos.json`; a missing file is an empty list.
pub fn load_registry(path: &Path) -> std::io::Result<Vec<Registered>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Writes `repos.json` atomically.
pub fn save_registry(path: &Path, repos: &[Registered]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(repos).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}
