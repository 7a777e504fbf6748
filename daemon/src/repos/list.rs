//! `$CODESEARCH_HOME/repos.json`: the registered roots and their models,
//! written atomically, so a restart serves the same repositories.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::walk;

/// What `repos.json` holds for one repository.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RepoEntry {
    /// Canonical root.
    pub path: PathBuf,
    /// Canonical model name.
    pub model: String,
}

/// Reads `repos.json`; a missing file is an empty list.
pub(crate) fn load_repo_list(path: &Path) -> std::io::Result<Vec<RepoEntry>> {
    match walk::read_small_file(path, walk::SMALL_FILE_LIMIT) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Writes `repos.json` atomically.
pub(crate) fn save_repo_list(path: &Path, repos: &[RepoEntry]) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(repos).map_err(std::io::Error::other)?;
    crate::durable::write_atomic(path, |f| std::io::Write::write_all(f, &bytes))
}
