//! The `repo.*` methods: registering, indexing, listing and removing repositories.

use std::sync::Arc;

use codesearch_proto::{RepoProgress, RepoState, RepoStatus};

use super::{Service, ServiceError, Unrestored, canonical_dir};
use crate::embed::EmbedHandle;
use crate::repos::{self, Repo};

impl Service {
    /// Re-opens the repositories of `repos.json` and brings each up to date in
    /// the background (edits made while the daemon was down are picked up).
    /// Until it is done, methods that need the set of repositories wait
    /// ([`Service::restored`]); status, models and `embed` answer at once.
    pub async fn restore(self: &Arc<Self>) {
        match repos::load_repo_list(&self.repo_list_path()) {
            Ok(registered) => {
                for r in registered {
                    let path = r.path.display().to_string();
                    if let Err(err) = self.register(&path, Some(&r.model), false).await {
                        tracing::warn!(repo = %path, %err, "cannot restore repository; it stays in the repository list for the next start");
                        self.unrestored().push(Unrestored {
                            entry: r,
                            error: err.to_string(),
                        });
                    }
                }
            }
            Err(err) => {
                tracing::warn!(path = %self.repo_list_path().display(), %err, "cannot read the repository list");
            }
        }
        self.restored.send_replace(true);
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
            self.unrestored().retain(|u| u.entry.path != root);
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
            let key = match self.find(&repos, path) {
                Ok(key) => key,
                Err(unknown) => return self.forget_unrestored(&repos, path).ok_or(unknown)?,
            };
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

    /// `repo.remove` of a repository start-up could not open: it leaves
    /// `repos.json` and its index is deleted. `None` if `path` is not one.
    fn forget_unrestored(
        &self,
        repos: &std::collections::HashMap<std::path::PathBuf, Arc<Repo>>,
        path: &str,
    ) -> Option<Result<(), ServiceError>> {
        let key = std::path::Path::new(path)
            .canonicalize()
            .unwrap_or_else(|_| path.into());
        {
            let mut unrestored = self.unrestored();
            let at = unrestored.iter().position(|u| u.entry.path == key)?;
            unrestored.remove(at);
        }
        self.persist(repos);
        let dir = crate::store::Store::dir_for(&self.indexes(), &key);
        Some(match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ServiceError::Internal(format!(
                    "cannot delete the index of {path} at {}: {e}",
                    dir.display()
                )))
            }
            _ => Ok(()),
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
        out.extend(self.unrestored().iter().map(|u| RepoStatus {
            path: u.entry.path.display().to_string(),
            state: RepoState::Error,
            model: u.entry.model.clone(),
            files: 0,
            chunks: 0,
            pending: 0,
            indexed_at: None,
            error: Some(format!(
                "not opened at start-up: {}; fix that and restart the daemon, or `codesearch remove` it",
                u.error
            )),
            watching: false,
            watch_error: None,
            changes_pending: 0,
            last_change_at: None,
            chunks_embedded: 0,
            skipped: None,
        }));
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
}
