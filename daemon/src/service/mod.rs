//! The daemon's state behind the RPC methods: configuration, loaded models and the
//! shutdown signal. Methods call into this; only `rpc` turns its types into protocol types.
//!
//! One file per method group:
//! - `model`: resolving names, loading local and remote models, `models.list`.
//! - `repo`: `repo.add`, `repo.remove`, `repo.list`, `repo.reindex`, progress.
//! - `search`: `search` and the checks of its params.
//! - `benchmark`: `benchmark.run`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use codesearch_proto::RepoProgress;

use crate::chunk::Chunker;
use crate::config::Config;
use crate::embed::{EmbedError, EmbedWorker};
use crate::repos::{self, Repo, RepoEntry};
use crate::store::StoreError;

mod benchmark;
mod model;
mod repo;
mod search;

/// `repo.progress` events kept for a slow subscriber before it skips ahead.
const PROGRESS_BACKLOG: usize = 256;

/// Failures of daemon operations, mapped to JSON-RPC codes in `rpc`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The model cannot be used (unknown, unsupported, weights missing, device).
    #[error(transparent)]
    Model(Box<EmbedError>),
    /// The request is well-formed but its values are not acceptable.
    #[error("{0}")]
    InvalidParams(String),
    /// No repository is registered at this path.
    #[error("no repository is registered at {0}; add it with `codesearch index {0}` (repo.add)")]
    UnknownRepo(String),
    /// The path does not exist or is not a directory.
    #[error("{0}")]
    BadPath(String),
    /// Something on the daemon's side failed.
    #[error("{0}")]
    Internal(String),
}

/// An entry of `repos.json` that start-up could not open, and why.
#[derive(Debug)]
struct Unrestored {
    entry: RepoEntry,
    error: String,
}

/// A model's slot: empty until the model has loaded (while it loads, callers of
/// that model wait on the cell, not on the map).
type ModelSlots = HashMap<String, Arc<tokio::sync::OnceCell<EmbedWorker>>>;

/// Shared daemon state.
#[derive(Debug)]
pub struct Service {
    config: Config,
    started: Instant,
    /// One slot per model asked for, by canonical name; a slot holds the model's
    /// thread once loaded. The lock is held only to find or insert a slot, never
    /// while a model loads, so loading one model (possibly a download) blocks
    /// neither `daemon.status` nor the users of models already loaded.
    workers: Mutex<ModelSlots>,
    /// Registered repositories by canonical root.
    repos: tokio::sync::RwLock<HashMap<PathBuf, Arc<Repo>>>,
    chunker: Arc<Chunker>,
    /// `systemd`, `launchd`, `codesearch` (auto-started by the client) or `None` (by hand).
    started_by: Option<String>,
    /// `repo.progress` of every repository, for subscribers.
    progress: tokio::sync::broadcast::Sender<RepoProgress>,
    /// The OS file watcher; `None` if it could not start (repositories are then rescanned).
    watcher: Option<crate::watch::Watcher>,
    /// True once the repositories of `repos.json` are open again.
    restored: tokio::sync::watch::Sender<bool>,
    /// Entries of `repos.json` that could not be opened at start-up (their
    /// model would not load: weights gone, a remote server down). They stay in
    /// `repos.json`, so a later start serves them again; `repo.add` or
    /// `repo.remove` of the path settles them. `repo.list` shows each in state
    /// `error` with the reason.
    unrestored: Mutex<Vec<Unrestored>>,
    /// Fired once, at shutdown (the signal, or `daemon.shutdown`): the accept
    /// loop stops, passes commit their current batch and stop, followers end.
    cancel: CancellationToken,
    /// Every background task (restore, passes, watch followers), so shutdown can
    /// wait for them, within a bound.
    tasks: TaskTracker,
    /// One benchmark at a time: two would share the CPU and report each other's load.
    benchmarking: tokio::sync::Mutex<()>,
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            // Another model's index: the fix is a model choice or a full re-index.
            StoreError::Mismatch { .. } => Self::InvalidParams(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl Service {
    /// State for a daemon with `config`.
    pub fn new(config: Config, chunker: Chunker) -> Self {
        Self {
            config,
            started: Instant::now(),
            workers: Mutex::new(HashMap::new()),
            repos: tokio::sync::RwLock::new(HashMap::new()),
            chunker: Arc::new(chunker),
            started_by: None,
            progress: tokio::sync::broadcast::channel(PROGRESS_BACKLOG).0,
            restored: tokio::sync::watch::channel(false).0,
            unrestored: Mutex::new(Vec::new()),
            watcher: crate::watch::Watcher::new()
                .inspect_err(|err| tracing::warn!(%err, "cannot start the file watcher; repositories will be rescanned every minute"))
                .ok(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            benchmarking: tokio::sync::Mutex::new(()),
        }
    }

    /// Records who started the daemon, for `daemon.status`.
    pub fn with_starter(mut self, by: Option<String>) -> Self {
        self.started_by = by;
        self
    }

    /// Who started the daemon: a service manager, the client, or `None` (by hand).
    pub fn starter(&self) -> Option<&str> {
        self.started_by.as_deref()
    }

    fn repo_list_path(&self) -> PathBuf {
        self.config.home.join("repos.json")
    }

    fn indexes(&self) -> PathBuf {
        self.config.home.join("indexes")
    }

    /// Resolves once [`Service::restore`] has finished.
    async fn restored(&self) {
        let mut rx = self.restored.subscribe();
        // Err only if the sender is gone, which it never is while `self` lives.
        let _ = rx.wait_for(|done| *done).await;
    }

    fn find(
        &self,
        repos: &HashMap<PathBuf, Arc<Repo>>,
        path: &str,
    ) -> Result<PathBuf, ServiceError> {
        let key = Path::new(path)
            .canonicalize()
            .unwrap_or_else(|_| PathBuf::from(path));
        if repos.contains_key(&key) {
            Ok(key)
        } else {
            Err(ServiceError::UnknownRepo(path.to_owned()))
        }
    }

    fn persist(&self, repos: &HashMap<PathBuf, Arc<Repo>>) {
        let mut list: Vec<RepoEntry> = repos
            .values()
            .map(|r| RepoEntry {
                path: r.root.clone(),
                model: r.model.clone(),
            })
            .collect();
        list.extend(
            self.unrestored()
                .iter()
                .filter(|u| !repos.contains_key(&u.entry.path))
                .map(|u| u.entry.clone()),
        );
        list.sort_by(|a, b| a.path.cmp(&b.path));
        if let Err(err) = repos::save_repo_list(&self.repo_list_path(), &list) {
            tracing::warn!(path = %self.repo_list_path().display(), %err, "cannot save the repository list");
        }
    }

    fn unrestored(&self) -> std::sync::MutexGuard<'_, Vec<Unrestored>> {
        self.unrestored.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configuration the daemon runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, ModelSlots> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the shutdown: the accept loop stops, and every pass and follower
    /// is told to stop (`daemon.shutdown`, or the signal through `server::run`).
    pub fn request_shutdown(&self) {
        self.cancel.cancel();
    }

    /// The token that fires at shutdown, for tasks that end with it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Resolves once shutdown was requested.
    pub async fn shutdown_requested(&self) {
        self.cancel.cancelled().await;
    }

    /// Runs `task` in the background, tracked: shutdown waits for it (a bounded time).
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task);
    }

    /// After [`Service::request_shutdown`]: waits up to `within` for the
    /// background tasks; whether they all ended.
    pub async fn wait_for_tasks(&self, within: std::time::Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
    }

    /// Saves the HNSW file of every repository no pass is writing (a pass that
    /// still runs saves its own when it stops), and lets the model threads go
    /// without waiting for the job they run: the process is about to exit.
    pub fn close(&self) {
        let repos: Vec<Arc<Repo>> = match self.repos.try_read() {
            Ok(repos) => repos.values().cloned().collect(),
            Err(_) => {
                tracing::info!(
                    "the repository list is being changed; HNSW files not saved now are rebuilt from SQLite on open"
                );
                Vec::new()
            }
        };
        for repo in repos {
            match repo.writer.try_lock() {
                Ok(mut store) => {
                    if let Err(err) = store.save_hnsw() {
                        tracing::warn!(root = %repo.root.display(), %err, "HNSW index not saved; it will be rebuilt on open");
                    }
                }
                Err(_) => {
                    tracing::info!(root = %repo.root.display(), "a pass still holds the index; SQLite keeps its committed batches");
                }
            }
        }
        for slot in self.workers().values() {
            if let Some(worker) = slot.get() {
                worker.close_without_waiting();
            }
        }
    }
}

/// A `mode` parameter: hybrid when absent.
fn parse_mode(mode: Option<&str>) -> Result<crate::search::Mode, ServiceError> {
    mode.map_or(Ok(crate::search::Mode::default()), |m| {
        m.parse().map_err(ServiceError::InvalidParams)
    })
}

fn canonical_dir(path: &str) -> Result<PathBuf, ServiceError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(ServiceError::BadPath(format!(
            "{path} is not an absolute path; clients send absolute paths"
        )));
    }
    let root = p.canonicalize().map_err(|e| {
        ServiceError::BadPath(match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("{path} does not exist; give the root folder of a repository")
            }
            std::io::ErrorKind::PermissionDenied => {
                format!("{path} cannot be read by this daemon's user (permission denied)")
            }
            _ => format!("{path}: {e}"),
        })
    })?;
    if !root.is_dir() {
        return Err(ServiceError::BadPath(format!("{path} is not a directory")));
    }
    if let Some(fs) = crate::walk::pseudo_filesystem(&root) {
        return Err(ServiceError::BadPath(format!(
            "{path} is on {fs}, a pseudo-filesystem of the kernel, not a source tree; index a project folder instead"
        )));
    }
    if root.parent().is_none() {
        return Err(ServiceError::BadPath(format!(
            "{path} is the filesystem root; index a project folder instead"
        )));
    }
    Ok(root)
}
