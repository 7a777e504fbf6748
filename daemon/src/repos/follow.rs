//! Watched changes become the cheapest pass that is still exact: the folders
//! that hold changed files are listed again (`index::index_dirs`); anything
//! that can change what the walk sees elsewhere (a folder created, removed or
//! renamed, an ignore file edited, lost events) runs a whole incremental pass,
//! which only re-reads files whose size or mtime changed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Repo;
use super::pass::Scope;
use crate::chunk::Chunker;
use crate::embed::EmbedHandle;
use crate::index;
use crate::walk;
use crate::watch::{Batch, Changes};

/// How often a repository no watcher follows is rescanned.
const RESCAN_EVERY: Duration = Duration::from_secs(60);

/// Files whose edits change what the walk sees.
const IGNORE_FILES: [&str; 3] = [".gitignore", ".ignore", walk::IGNORE_FILE];

impl Repo {
    /// Applies a batch of watched changes: re-lists the folders of changed files,
    /// or runs a whole incremental pass when the batch can change more than that.
    pub(crate) async fn apply_changes(
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
}

/// Applies `changes` to `repo` batch by batch until they are closed. Without a
/// working watcher (`changes` has an error), a whole pass runs every minute too.
pub(crate) async fn follow(
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
