//! Following repositories' changes: one OS watcher (notify: inotify, FSEvents,
//! …) for the daemon, and per repository a [`Changes`] set that coalesces the
//! paths events name until the tree is quiet.
//!
//! This module only collects; what a batch means (which folders to re-list, or
//! a whole incremental pass) is decided by the repository's writer in `repos`.
//! Paths are kept as a set, so a burst of thousands of events (a branch switch,
//! a formatter run) costs one entry per distinct path and becomes one batch.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

// tokio's clock (std's outside tests), so the debounce tests run on a paused clock.
use tokio::time::Instant;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

/// A batch is cut once no event came for this long…
const QUIET: Duration = Duration::from_millis(100);
/// …or once the first event of the batch is this old, even if events keep coming.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// What to tell a user whose system ran out of inotify watches.
pub(crate) const OUT_OF_WATCHES: &str = "the system ran out of inotify watches; raise the limit with `sudo sysctl fs.inotify.max_user_watches=524288` (and a file in /etc/sysctl.d to keep it); until then this repository is rescanned every minute";

/// Changed paths of one repository, waiting for its writer.
#[derive(Debug)]
pub(crate) struct Changes {
    state: Mutex<Pending>,
    wake: tokio::sync::Notify,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct Pending {
    paths: HashSet<PathBuf>,
    /// Events were lost (queue overflow): only a whole pass is safe.
    rescan: bool,
    /// Watching failed for part of the tree; the message says why.
    error: Option<String>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// One batch of changes, ready to apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Absolute paths that changed (created, written, removed, renamed from or to).
    pub paths: Vec<PathBuf>,
    /// Apply as a whole incremental pass rather than per folder.
    pub rescan: bool,
}

impl Changes {
    fn new() -> Self {
        Self {
            state: Mutex::new(Pending::default()),
            wake: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Changes of a repository no OS watcher follows, for the reason `error`:
    /// only rescans will find its edits.
    pub(crate) fn unwatched(error: String) -> Arc<Self> {
        let c = Self::new();
        c.lock().error = Some(error);
        Arc::new(c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records changed paths (or, with `rescan`, that events were lost).
    pub(crate) fn push(&self, paths: impl IntoIterator<Item = PathBuf>, rescan: bool) {
        let now = Instant::now();
        let mut p = self.lock();
        p.paths.extend(paths);
        p.rescan |= rescan;
        p.first.get_or_insert(now);
        p.last = Some(now);
        drop(p);
        self.wake.notify_one();
    }

    fn fail(&self, error: String) {
        self.lock().error = Some(error);
        self.push([], true);
    }

    /// Paths waiting.
    pub(crate) fn pending(&self) -> usize {
        self.lock().paths.len()
    }

    /// Why watching is degraded, if it is.
    pub(crate) fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    /// Waits for changes, then for the tree to be quiet ([`QUIET`], at most
    /// [`MAX_DELAY`] after the first change), and takes them. `None` once closed.
    pub(crate) async fn next_batch(&self) -> Option<Batch> {
        loop {
            let notified = self.wake.notified();
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            let wait = {
                let p = self.lock();
                match (p.first, p.last) {
                    (Some(first), Some(last)) => {
                        let quiet_in = QUIET.saturating_sub(last.elapsed());
                        let deadline_in = MAX_DELAY.saturating_sub(first.elapsed());
                        Some(quiet_in.min(deadline_in))
                    }
                    _ => None,
                }
            };
            match wait {
                Some(d) if d.is_zero() => {
                    let mut p = self.lock();
                    let batch = Batch {
                        paths: p.paths.drain().collect(),
                        rescan: std::mem::take(&mut p.rescan),
                    };
                    p.first = None;
                    p.last = None;
                    return Some(batch);
                }
                Some(d) => tokio::time::sleep(d).await,
                None => notified.await,
            }
        }
    }

    /// Ends [`Changes::next_batch`] for good.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

type Routes = Arc<RwLock<Vec<(PathBuf, Arc<Changes>)>>>;

/// The daemon's one OS watcher, routing events to each repository's [`Changes`].
pub(crate) struct Watcher {
    os: Mutex<notify::RecommendedWatcher>,
    routes: Routes,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts the OS watcher (no repository yet).
    pub(crate) fn new() -> notify::Result<Self> {
        let routes: Routes = Arc::default();
        let os = notify::recommended_watcher({
            let routes = routes.clone();
            move |event: notify::Result<notify::Event>| route(&routes, event)
        })?;
        Ok(Self {
            os: Mutex::new(os),
            routes,
        })
    }

    /// Watches `root` recursively. The [`Changes`] collect its events; when the OS
    /// refuses (out of inotify watches), it is returned anyway, with the error to
    /// report, and the caller falls back to rescans.
    pub(crate) fn watch(&self, root: &Path) -> (Arc<Changes>, Option<String>) {
        let changes = Arc::new(Changes::new());
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((root.to_owned(), changes.clone()));
        let result = self
            .os
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .watch(root, RecursiveMode::Recursive);
        let error = result.err().map(|e| describe(&e));
        if let Some(e) = &error {
            changes.lock().error = Some(e.clone());
        }
        (changes, error)
    }

    /// Stops watching `root` and closes its [`Changes`].
    pub(crate) fn unwatch(&self, root: &Path) {
        let _ = self
            .os
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwatch(root);
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|(r, changes)| {
            let keep = r != root;
            if !keep {
                changes.close();
            }
            keep
        });
    }
}

/// Runs on notify's thread: hands each path to the repository it lies in.
fn route(routes: &Routes, event: notify::Result<notify::Event>) {
    let routes = routes.read().unwrap_or_else(|p| p.into_inner());
    let owner = |path: &Path| {
        routes
            .iter()
            .filter(|(root, _)| path.starts_with(root))
            .max_by_key(|(root, _)| root.as_os_str().len())
            .map(|(_, c)| c.clone())
    };
    match event {
        Ok(event) => {
            // Reads and opens change nothing; a close after writing does.
            if let EventKind::Access(kind) = event.kind
                && kind != AccessKind::Close(AccessMode::Write)
            {
                return;
            }
            let rescan = event.need_rescan();
            if rescan && event.paths.is_empty() {
                for (_, c) in routes.iter() {
                    c.push([], true);
                }
                return;
            }
            for path in event.paths {
                if let Some(c) = owner(&path) {
                    c.push([path], rescan);
                }
            }
        }
        Err(err) => {
            tracing::warn!(%err, "file watcher error");
            let message = describe(&err);
            if err.paths.is_empty() {
                for (_, c) in routes.iter() {
                    c.fail(message.clone());
                }
            }
            for path in &err.paths {
                if let Some(c) = owner(path) {
                    c.fail(message.clone());
                }
            }
        }
    }
}

fn describe(err: &notify::Error) -> String {
    match err.kind {
        notify::ErrorKind::MaxFilesWatch => OUT_OF_WATCHES.to_owned(),
        _ => format!("cannot watch for changes ({err}); this repository is rescanned every minute"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(roots: &[&str]) -> (Routes, Vec<Arc<Changes>>) {
        let changes: Vec<_> = roots.iter().map(|_| Arc::new(Changes::new())).collect();
        let routes: Routes = Arc::new(RwLock::new(
            roots
                .iter()
                .zip(&changes)
                .map(|(r, c)| (PathBuf::from(r), c.clone()))
                .collect(),
        ));
        (routes, changes)
    }

    #[tokio::test]
    async fn a_burst_is_one_batch_of_distinct_paths_for_the_repository_it_lies_in() {
        let (routes, changes) = routes(&["/r", "/r/nested"]);
        for i in 0..1000 {
            let kind = EventKind::Modify(notify::event::ModifyKind::Any);
            let event = notify::Event::new(kind)
                .add_path(PathBuf::from(format!("/r/src/f{}.rs", i % 10)))
                .add_path(PathBuf::from("/r/nested/x.rs"))
                .add_path(PathBuf::from("/elsewhere/y.rs"));
            route(&routes, Ok(event));
        }
        let read = notify::Event::new(EventKind::Access(AccessKind::Read))
            .add_path(PathBuf::from("/r/src/read.rs"));
        route(&routes, Ok(read));
        assert_eq!((changes[0].pending(), changes[1].pending()), (10, 1));
        let batch = changes[0].next_batch().await.unwrap();
        assert_eq!((batch.paths.len(), batch.rescan), (10, false));
        assert_eq!(changes[0].pending(), 0);
        changes[1].close();
        assert!(changes[1].next_batch().await.is_none());
    }

    fn modify(routes: &Routes, path: &str) {
        let kind = EventKind::Modify(notify::event::ModifyKind::Any);
        route(
            routes,
            Ok(notify::Event::new(kind).add_path(PathBuf::from(path))),
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_quiet_but_never_longer_than_the_maximum_delay() {
        let (routes, changes) = routes(&["/r"]);
        // One change: the batch comes once the tree has been quiet for QUIET.
        let started = Instant::now();
        modify(&routes, "/r/a.rs");
        let batch = changes[0].next_batch().await.unwrap();
        assert_eq!(batch.paths.len(), 1);
        assert_eq!(started.elapsed(), QUIET);

        // A change every half QUIET never lets the tree be quiet: the batch is
        // taken at MAX_DELAY after the first change, with all of them.
        let started = Instant::now();
        let writer = {
            let routes = routes.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    modify(&routes, &format!("/r/f{}.rs", i % 7));
                    tokio::time::sleep(QUIET / 2).await;
                }
            })
        };
        let batch = tokio::time::timeout(MAX_DELAY * 2, changes[0].next_batch())
            .await
            .expect("no batch while changes kept coming")
            .unwrap();
        let waited = started.elapsed();
        writer.abort();
        assert!(
            waited >= MAX_DELAY && waited < MAX_DELAY + QUIET,
            "{waited:?}"
        );
        assert_eq!(batch.paths.len(), 7);
    }

    #[tokio::test]
    async fn running_out_of_watches_is_reported_with_the_fix_and_asks_for_a_rescan() {
        let (routes, changes) = routes(&["/r"]);
        let err = notify::Error::new(notify::ErrorKind::MaxFilesWatch)
            .add_path(PathBuf::from("/r/deep/dir"));
        route(&routes, Err(err));
        let error = changes[0].error().unwrap();
        assert!(error.contains("fs.inotify.max_user_watches"), "{error}");
        let batch = changes[0].next_batch().await.unwrap();
        assert!(batch.rescan && batch.paths.is_empty());
        let lost = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        route(&routes, Ok(lost));
        assert!(changes[0].next_batch().await.unwrap().rescan);
    }
}
