//! The daemon's registered repositories: each with its store (one writer), a
//! reader for searches that never waits for the writer, and a status.
//!
//! The list of roots (and their models) is kept in `$CODESEARCH_HOME/repos.json`,
//! written atomically, so a restart serves the same repositories.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use codesearch_proto::{RepoState, RepoStatus};
use serde::{Deserialize, Serialize};

use crate::chunk::Chunker;
use crate::embed::{EmbedHandle, Embedder as _};
use crate::index::{self, IndexOptions};
use crate::store::{Manifest, Quantization, SCHEMA_VERSION, Store, StoreError, StoreReader};

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
    /// Opens (or creates) the index of `root` under `indexes` for `embedder`'s model.
    pub fn open(indexes: &Path, root: &Path, embedder: &EmbedHandle) -> Result<Self, StoreError> {
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
    /// index first. Status shows `indexing` meanwhile and `ready` or `error` after.
    pub async fn index(self: &Arc<Self>, embedder: EmbedHandle, chunker: Arc<Chunker>, full: bool) {
        self.mark_indexing();
        let repo = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut store = repo.writer.blocking_lock();
            if full {
                store.clear()?;
            }
            let mut embedder = embedder;
            let stats = index::index(
                &repo.root,
                &mut store,
                &mut embedder,
                &chunker,
                &IndexOptions::default(),
                |s| {
                    repo.update(|st| {
                        st.pending = s.files_seen.saturating_sub(
                            s.files_unchanged
                                + s.files_same_content
                                + s.files_indexed
                                + s.skips.total(),
                        );
                    })
                },
            )?;
            let counts = (store.file_count()?, store.chunk_count()?);
            Ok::<_, index::IndexError>((stats, counts))
        })
        .await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
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
            }
            Ok(Err(err)) => self.fail(err.to_string()),
            Err(join) => self.fail(format!("indexing panicked: {join}")),
        }
    }

    fn fail(&self, error: String) {
        tracing::warn!(root = %self.root.display(), %error, "indexing failed");
        self.update(|s| {
            s.state = RepoState::Error;
            s.error = Some(error);
        });
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
