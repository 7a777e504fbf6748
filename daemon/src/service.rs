//! The daemon's state behind the RPC methods: configuration, loaded models and the
//! shutdown signal. Methods call into this; only `rpc` turns its types into protocol types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use codesearch_proto::benchmark::{BenchmarkParams, BenchmarkQuery, BenchmarkResult};
use codesearch_proto::{Hit, RepoProgress, RepoStatus, SearchParams, SearchResult};

use crate::chunk::Chunker;
use crate::config::Config;
use crate::embed::{
    self, EmbedError, EmbedHandle, EmbedOptions, EmbedWorker, InputKind, ModelChoice, ModelLocator,
    RemoteEmbedder,
};
use crate::repos::{self, Registered, Repo};
use crate::store::StoreError;

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
            watcher: crate::watch::Watcher::new()
                .inspect_err(|err| tracing::warn!(%err, "cannot start the file watcher; repositories will be rescanned every minute"))
                .ok(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            benchmarking: tokio::sync::Mutex::new(()),
        }
    }

    /// Records who started the daemon, for `daemon.status`.
    pub fn started_by(mut self, by: Option<String>) -> Self {
        self.started_by = by;
        self
    }

    /// Who started the daemon: a service manager, the client, or `None` (by hand).
    pub fn starter(&self) -> Option<&str> {
        self.started_by.as_deref()
    }

    fn registry_path(&self) -> PathBuf {
        self.config.home.join("repos.json")
    }

    fn indexes(&self) -> PathBuf {
        self.config.home.join("indexes")
    }

    /// Re-opens the repositories of `repos.json` and brings each up to date in
    /// the background (edits made while the daemon was down are picked up).
    /// Until it is done, methods that need the set of repositories wait
    /// ([`Service::restored`]); status, models and `embed` answer at once.
    pub async fn restore(self: &Arc<Self>) {
        match repos::load_registry(&self.registry_path()) {
            Ok(registered) => {
                for r in registered {
                    let path = r.path.display().to_string();
                    if let Err(err) = self.register(&path, Some(&r.model), false).await {
                        tracing::warn!(repo = %path, %err, "cannot restore repository");
                    }
                }
            }
            Err(err) => {
                tracing::warn!(path = %self.registry_path().display(), %err, "cannot read the repository list");
            }
        }
        self.restored.send_replace(true);
    }

    /// Resolves once [`Service::restore`] has finished.
    async fn restored(&self) {
        let mut rx = self.restored.subscribe();
        // Err only if the sender is gone, which it never is while `self` lives.
        let _ = rx.wait_for(|done| *done).await;
    }

    /// `repo.add`: registers `path` and indexes it (in the background unless `wait`).
    pub async fn add_repo(
        self: &Arc<Self>,
        path: &str,
        model: Option<&str>,
        wait: bool,
    ) -> Result<RepoStatus, ServiceError> {
        self.restored().await;
        self.register(path, model, wait).await
    }

    async fn register(
        self: &Arc<Self>,
        path: &str,
        model: Option<&str>,
        wait: bool,
    ) -> Result<RepoStatus, ServiceError> {
        let root = canonical_dir(path)?;
        if let Some(repo) = self.repos.read().await.get(&root).cloned() {
            if let Some(asked) = model {
                let asked = self.resolve_model(asked)?;
                if asked.name() != repo.model {
                    return Err(ServiceError::InvalidParams(format!(
                        "{path} is indexed with model `{}`; to use `{}`, `codesearch remove {path}` first, then index it again",
                        repo.model,
                        asked.name()
                    )));
                }
            }
            return Ok(repo.status());
        }
        let embedder = self.embedder(model).await?;
        let indexes = self.indexes();
        let repo = {
            let root = root.clone();
            let embedder = embedder.clone();
            let events = self.progress.clone();
            let cancel = self.cancel.clone();
            tokio::task::spawn_blocking(move || {
                Repo::open(&indexes, &root, &embedder, events, cancel)
            })
            .await
            .map_err(|e| ServiceError::Internal(format!("opening the index panicked: {e}")))??
        };
        let repo = Arc::new(repo);
        {
            let mut repos = self.repos.write().await;
            if let Some(existing) = repos.get(&root) {
                return Ok(existing.status());
            }
            repos.insert(root.clone(), repo.clone());
            self.persist(&repos);
        }
        // Watch before the first pass, so nothing changed during it is missed.
        let changes = match &self.watcher {
            Some(w) => {
                let (changes, error) = w.watch(&root);
                if let Some(error) = error {
                    tracing::warn!(root = %root.display(), %error, "not watching");
                }
                changes
            }
            None => crate::watch::Changes::unwatched(
                "the file watcher could not start (see the daemon's log); this repository is rescanned every minute".to_owned(),
            ),
        };
        repo.set_changes(changes.clone());
        self.tasks.spawn(repos::follow(
            repo.clone(),
            changes,
            embedder.clone(),
            self.chunker.clone(),
            self.cancel.clone(),
        ));
        Ok(self.start_pass(&repo, embedder, false, wait).await)
    }

    /// Starts an indexing pass; with `wait`, answers when it has finished.
    async fn start_pass(
        &self,
        repo: &Arc<Repo>,
        embedder: EmbedHandle,
        full: bool,
        wait: bool,
    ) -> RepoStatus {
        repo.mark_indexing();
        let run = {
            let repo = repo.clone();
            let chunker = self.chunker.clone();
            async move { repo.index(embedder, chunker, full).await }
        };
        if wait {
            run.await;
        } else {
            self.tasks.spawn(run);
        }
        repo.status()
    }

    /// `repo.remove`: forgets the repository and deletes its index (after a running pass ends).
    pub async fn remove_repo(&self, path: &str) -> Result<(), ServiceError> {
        self.restored().await;
        let repo = {
            let mut repos = self.repos.write().await;
            let key = self.find(&repos, path)?;
            let repo = repos
                .remove(&key)
                .ok_or_else(|| ServiceError::UnknownRepo(path.to_owned()))?;
            self.persist(&repos);
            repo
        };
        if let Some(w) = &self.watcher {
            w.unwatch(&repo.root);
        }
        repo.stop_watching();
        repo.mark_removed();
        // Under the writer lock: no pass can write into the folder as it goes.
        let repo_for_delete = repo.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = repo_for_delete.writer.blocking_lock();
            store.delete_files()
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(|e| {
            ServiceError::Internal(format!(
                "cannot delete the index of {}: {e}",
                repo.root.display()
            ))
        })
    }

    /// Every `repo.progress` from now on.
    pub fn progress_events(&self) -> tokio::sync::broadcast::Receiver<RepoProgress> {
        self.progress.subscribe()
    }

    /// `repo.list`: every registered repository, once start-up has restored them.
    pub async fn list_repos(&self) -> Vec<RepoStatus> {
        self.restored().await;
        self.repos_now().await
    }

    /// The repositories open now; during start-up, those restored so far.
    pub async fn repos_now(&self) -> Vec<RepoStatus> {
        let mut out: Vec<RepoStatus> = self
            .repos
            .read()
            .await
            .values()
            .map(|r| r.status())
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// `repo.reindex`.
    pub async fn reindex(
        self: &Arc<Self>,
        path: &str,
        full: bool,
        wait: bool,
    ) -> Result<RepoStatus, ServiceError> {
        self.restored().await;
        let repo = {
            let repos = self.repos.read().await;
            let key = self.find(&repos, path)?;
            repos[&key].clone()
        };
        let embedder = self.embedder(Some(&repo.model)).await?;
        Ok(self.start_pass(&repo, embedder, full, wait).await)
    }

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
        let mut vectors: HashMap<String, Vec<f32>> = HashMap::new();
        let mut hits: Vec<Hit> = Vec::new();
        for repo in selected {
            if mode != crate::search::Mode::Lexical && !vectors.contains_key(&repo.model) {
                let handle = self.embedder(Some(&repo.model)).await?;
                let v = handle
                    .embed_async(vec![p.query.clone()], InputKind::Query)
                    .await
                    .map_err(|e| ServiceError::Model(Box::new(e)))?
                    .pop()
                    .unwrap_or_default();
                vectors.insert(repo.model.clone(), v);
            }
            let query = vectors.get(&repo.model).cloned().unwrap_or_default();
            let text = p.query.clone();
            let (k, languages, paths) = (p.k, p.languages.clone(), paths.clone());
            let filtered = languages.is_some() || paths.is_some();
            let found = tokio::task::spawn_blocking(move || {
                let reader = repo.readers.get()?;
                let keep = |r: &crate::store::ChunkRow| {
                    languages
                        .as_ref()
                        .is_none_or(|l| l.iter().any(|x| x == &r.language))
                        && paths.as_ref().is_none_or(|g| g.is_match(&r.path))
                };
                let req = crate::search::Request {
                    text: &text,
                    vector: (mode != crate::search::Mode::Lexical).then_some(query.as_slice()),
                    k,
                    mode,
                    keep: filtered
                        .then_some(&keep as &(dyn Fn(&crate::store::ChunkRow) -> bool + Sync)),
                };
                let rows = crate::search::ranked(&*reader, &req)?;
                let root = repo.root.display().to_string();
                Ok::<_, StoreError>(
                    crate::search::hits(&repo.root, rows, k)
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
                        .collect::<Vec<_>>(),
                )
            })
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
        let mut list: Vec<Registered> = repos
            .values()
            .map(|r| Registered {
                path: r.root.clone(),
                model: r.model.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.path.cmp(&b.path));
        if let Err(err) = repos::save_registry(&self.registry_path(), &list) {
            tracing::warn!(path = %self.registry_path().display(), %err, "cannot save the repository list");
        }
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

    /// A model name (or alias) as the registry and the remote models know it.
    pub fn resolve_model(&self, name: &str) -> Result<ModelChoice<'_>, ServiceError> {
        embed::resolve(name, &self.config.remote).map_err(|e| ServiceError::Model(Box::new(e)))
    }

    /// The `models.list` rows: every registered model with whether its weights
    /// are here, then the remote ones; loaded models say their device.
    pub fn models(&self) -> Vec<codesearch_proto::ModelInfo> {
        let locator = ModelLocator::from_env();
        // Name → (device, dims) of each loaded model: a remote model's dims
        // are known once it has answered, if its config does not give them.
        let loaded: HashMap<String, (String, usize)> = self
            .workers()
            .values()
            .filter_map(|slot| slot.get())
            .map(|w| {
                let h = w.handle();
                (
                    embed::Embedder::model_name(&h).to_owned(),
                    (embed::Embedder::device_name(&h), embed::Embedder::dims(&h)),
                )
            })
            .collect();
        let e = &self.config.embedding;
        let local = embed::registry::MODELS.iter().map(|spec| {
            let mut info = spec.info();
            let model_path = e.model_path.as_deref().filter(|_| spec.name == e.model);
            let (availability, location) = if !spec.arch.is_supported() {
                ("unsupported", None)
            } else {
                match locator.find_local(spec, model_path) {
                    Some(dir) => ("local", Some(dir.display().to_string())),
                    None if locator.offline || model_path.is_some() => ("missing", None),
                    None => ("download", None),
                }
            };
            info.availability = Some(availability.to_owned());
            info.location = location;
            info
        });
        let remote = self.config.remote.iter().map(|spec| spec.info());
        local
            .chain(remote)
            .map(|mut info| {
                if let Some((device, dims)) = loaded.get(&info.name) {
                    info.device = Some(device.clone());
                    info.dims = *dims;
                }
                info
            })
            .collect()
    }

    /// The model `name` (or the default), loading it on first use.
    ///
    /// Callers of one model that is loading wait for that load (and a failed
    /// load is tried again by the next caller); nobody else waits.
    pub async fn embedder(&self, name: Option<&str>) -> Result<EmbedHandle, ServiceError> {
        let wanted = name.unwrap_or(&self.config.embedding.model);
        let spec = match self.resolve_model(wanted)? {
            ModelChoice::Local(spec) => spec,
            ModelChoice::Remote(remote) => return self.remote_embedder(remote).await,
        };
        let slot = self
            .workers()
            .entry(spec.name.to_owned())
            .or_default()
            .clone();
        let worker = slot
            .get_or_try_init(|| async {
                let e = &self.config.embedding;
                let options = EmbedOptions {
                    model: spec.name.to_owned(),
                    device: e.device,
                    // A folder given for the default model does not hold other models.
                    model_path: e.model_path.clone().filter(|_| spec.name == e.model),
                    max_batch: e.batch_size,
                    token_budget: None,
                    precision: None,
                };
                tracing::info!(model = spec.name, "loading model");
                let model = tokio::task::spawn_blocking(move || {
                    embed::load(&options, &ModelLocator::from_env())
                })
                .await
                .map_err(|e| ServiceError::Internal(format!("model loader panicked: {e}")))?
                .map_err(|e| ServiceError::Model(Box::new(e)))?;
                EmbedWorker::spawn(Box::new(model)).map_err(|e| {
                    ServiceError::Internal(format!("cannot start the model thread: {e}"))
                })
            })
            .await?;
        // Indexing passes block on this handle: at shutdown they stop waiting.
        Ok(worker.handle().cancelled_by(self.cancel.clone()))
    }

    /// A remote model's worker: one thread for documents and one for queries,
    /// each with its own connection to the server.
    async fn remote_embedder(&self, spec: &embed::RemoteSpec) -> Result<EmbedHandle, ServiceError> {
        let slot = self.workers().entry(spec.name.clone()).or_default().clone();
        let worker = slot
            .get_or_try_init(|| async {
                tracing::info!(model = %spec.name, url = %spec.display_url(), "connecting to remote model");
                let spec = spec.clone();
                let documents = tokio::task::spawn_blocking(move || RemoteEmbedder::connect(&spec))
                    .await
                    .map_err(|e| ServiceError::Internal(format!("model loader panicked: {e}")))?
                    .map_err(|e| ServiceError::Model(Box::new(e)))?;
                let queries = documents.clone();
                EmbedWorker::spawn_lanes(Box::new(documents), Box::new(queries)).map_err(|e| {
                    ServiceError::Internal(format!("cannot start the model thread: {e}"))
                })
            })
            .await?;
        Ok(worker.handle().cancelled_by(self.cancel.clone()))
    }

    /// Whether the model `name` (canonical) is loaded; `false` while it loads.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.workers()
            .get(name)
            .is_some_and(|slot| slot.initialized())
    }

    /// `(name, device)` of every loaded model (not those still loading).
    pub fn loaded_models(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .workers()
            .values()
            .filter_map(|slot| slot.get())
            .map(|w| {
                let h = w.handle();
                (
                    embed::Embedder::model_name(&h).to_owned(),
                    embed::Embedder::device_name(&h),
                )
            })
            .collect();
        out.sort();
        out
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

/// A `mode` parameter: hybrid when absent.
fn parse_mode(mode: Option<&str>) -> Result<crate::search::Mode, ServiceError> {
    mode.map_or(Ok(crate::search::Mode::default()), |m| {
        m.parse().map_err(ServiceError::InvalidParams)
    })
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
