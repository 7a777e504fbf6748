//! Writing a file so that a crash at any moment leaves the old content or the
//! new, never a torn file: the one way the daemon replaces a file it keeps
//! (`manifest.json`, the HNSW graph, `repos.json`).

use std::io;
use std::path::{Path, PathBuf};

/// Writes `path` through `fill` into a temporary file beside it
/// (`<name>.tmp.<pid>`, which an index folder's open removes if a crash left
/// it), syncs it, renames it over `path`, and syncs the folder so the rename
/// itself survives a power cut. On failure the temporary file is removed and
/// `path` is untouched.
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temporary(path);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        fill(&mut file)?;
        file.sync_all()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Some file systems cannot sync a folder; the rename is done either way.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// `<name>.tmp.<pid>` beside `path`: the name an index folder's open clears.
pub(crate) fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repos.json");
        write_atomic(&path, |f| io::Write::write_all(f, b"one")).unwrap();
        write_atomic(&path, |f| io::Write::write_all(f, b"two")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let err = write_atomic(&path, |f| {
            io::Write::write_all(f, b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"two",
            "a failed write left the file torn"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["repos.json"], "a temporary file was left behind");
    }
}
