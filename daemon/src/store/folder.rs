//! The index folder on disk: atomic writes, the swap of a full re-index, and
//! recovery from a crash in the middle of one.

use super::*;

/// Suffix of the index a full re-index builds beside the live one.
pub(super) const REBUILD: &str = "rebuild";
/// Suffix the live index takes for a moment while a rebuilt one replaces it.
pub(super) const OLD: &str = "old";

/// `<dir>.<suffix>`, beside `dir`.
pub(super) fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(suffix);
    dir.with_file_name(name)
}

/// Trades the names of two folders in one atomic step; `Ok(false)` where the
/// platform or file system has no such call (the caller then renames twice).
pub(super) fn exchange(a: &Path, b: &Path) -> Result<bool, StoreError> {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use rustix::io::Errno;
        match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            // No exchange here (ENOTSUP and EOPNOTSUPP are one code on Linux).
            Err(e)
                if [Errno::INVAL, Errno::NOSYS, Errno::NOTSUP, Errno::OPNOTSUPP].contains(&e) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::io(a, e.into())),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    {
        let _ = (a, b);
        Ok(false)
    }
}

/// Removes a folder and everything in it; a missing one is fine.
pub(super) fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(dir, e)),
        _ => Ok(()),
    }
}

/// Makes a rename inside `dir`'s parent durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(parent, e))
}

/// Deletes what a crash left of an atomic write (`*.tmp`, `*.tmp.<pid>`): a
/// half-saved graph would otherwise take disk for ever. One daemon owns a home.
pub(super) fn remove_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") || name.contains(".tmp.") {
            tracing::debug!(file = %entry.path().display(), "removing a leftover temporary file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Finishes what a crash left of a full re-index: a swap stopped between its
/// two renames gets the live index back; an unfinished rebuild and a replaced
/// index are dropped.
pub(super) fn recover_swap(dir: &Path) -> Result<(), StoreError> {
    let old = sibling(dir, OLD);
    if !dir.exists() && old.is_dir() {
        tracing::warn!(dir = %dir.display(), "a full re-index was interrupted while swapping; keeping the index from before it");
        std::fs::rename(&old, dir).map_err(|e| StoreError::io(&old, e))?;
    }
    remove_dir(&old)?;
    // Not the rebuild's own open (`dir` is never a `.rebuild` of itself).
    let side = sibling(dir, REBUILD);
    if side.is_dir() {
        tracing::info!(dir = %side.display(), "dropping an unfinished full re-index");
        remove_dir(&side)?;
    }
    Ok(())
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    crate::durable::write_atomic(path, |f| std::io::Write::write_all(f, bytes))
        .map_err(|e| StoreError::io(path, e))
}
