//! Listing a repository's files the way its owner would: `.gitignore`, `.ignore`,
//! global git excludes, `.git/info/exclude` and `.codesearchignore` are honoured,
//! hidden files are skipped (as ripgrep does), and every other file that is left
//! out is counted under a [`SkipReason`] — never dropped silently.
//!
//! Listing only needs metadata. The checks that need the contents (binary,
//! generated, not UTF-8) are in [`classify`], which the indexer calls on the bytes
//! it reads anyway, so no file is read twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// The ignore file of codesearch's own, read like `.gitignore`.
pub const IGNORE_FILE: &str = ".codesearchignore";

/// Why a file is not indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A NUL byte in the first 8 KiB.
    Binary,
    /// Larger than the size cap.
    TooLarge,
    /// Minified or generated: very long lines on average.
    Generated,
    /// Not valid UTF-8 text.
    NotUtf8,
    /// A symbolic link whose target is outside the repository (or dangling).
    SymlinkOutsideRoot,
    /// The file or its metadata could not be read.
    Unreadable,
}

impl SkipReason {
    /// Every reason.
    pub const ALL: [Self; 6] = [
        Self::Binary,
        Self::TooLarge,
        Self::Generated,
        Self::NotUtf8,
        Self::SymlinkOutsideRoot,
        Self::Unreadable,
    ];

    /// The reason [`SkipReason::as_str`] names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The name used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::TooLarge => "too_large",
            Self::Generated => "generated",
            Self::NotUtf8 => "not_utf8",
            Self::SymlinkOutsideRoot => "symlink_outside_root",
            Self::Unreadable => "unreadable",
        }
    }
}

/// Limits of the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkOptions {
    /// Files larger than this many bytes are skipped.
    pub max_file_bytes: u64,
    /// Files whose average line is longer than this are taken as generated.
    pub max_avg_line_bytes: usize,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            max_file_bytes: 1024 * 1024,
            max_avg_line_bytes: 300,
        }
    }
}

/// A file the walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the root, with `/` separators.
    pub rel: String,
    /// Absolute path (through the symlink if the entry is one).
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
}

/// Files skipped, by reason, with a few example paths for each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skips {
    /// How many files each reason skipped.
    pub counts: BTreeMap<SkipReason, u64>,
    /// Up to [`Skips::EXAMPLES`] relative paths per reason.
    pub examples: BTreeMap<SkipReason, Vec<String>>,
}

impl Skips {
    /// Example paths kept per reason.
    pub const EXAMPLES: usize = 5;

    /// Counts one skipped file.
    pub fn add(&mut self, reason: SkipReason, rel: &str) {
        *self.counts.entry(reason).or_default() += 1;
        let examples = self.examples.entry(reason).or_default();
        if examples.len() < Self::EXAMPLES {
            examples.push(rel.to_owned());
        }
    }

    /// Adds another tally to this one.
    pub fn merge(&mut self, other: Skips) {
        for (reason, n) in other.counts {
            *self.counts.entry(reason).or_default() += n;
        }
        for (reason, paths) in other.examples {
            for p in paths {
                let examples = self.examples.entry(reason).or_default();
                if examples.len() < Self::EXAMPLES {
                    examples.push(p);
                }
            }
        }
    }

    /// Files skipped in all.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Candidate files, sorted by relative path.
    pub files: Vec<FileEntry>,
    /// Files left out by metadata alone (size, symlinks, unreadable).
    pub skips: Skips,
    /// Directories the walk entered (neither hidden nor ignored), relative, `""`
    /// for the root; sorted. Only a whole walk fills it.
    pub dirs: Vec<String>,
}

/// Lists the files under `root` that are candidates for indexing.
pub fn walk(root: &Path, options: &WalkOptions) -> std::io::Result<Walk> {
    let root = root.canonicalize()?;
    run(&root, builder(&root), options, true)
}

/// Lists the files directly inside each of `dirs` (relative to `root`), by the
/// same rules as [`walk`]: the ignore files of the directories above apply. A
/// directory that is gone lists nothing.
pub fn walk_dirs(root: &Path, dirs: &[String], options: &WalkOptions) -> std::io::Result<Walk> {
    let root = root.canonicalize()?;
    let mut all = Walk::default();
    for dir in dirs {
        let path = if dir.is_empty() {
            root.clone()
        } else {
            root.join(dir)
        };
        if !path.is_dir() {
            continue;
        }
        let mut b = builder(&path);
        b.max_depth(Some(1));
        let found = run(&root, b, options, false)?;
        all.files.extend(found.files);
        all.skips.merge(found.skips);
    }
    all.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(all)
}

fn run(
    root: &Path,
    builder: ignore::WalkBuilder,
    options: &WalkOptions,
    record_dirs: bool,
) -> std::io::Result<Walk> {
    let result = Mutex::new((Vec::new(), Vec::new(), Vec::new()));
    let walker = builder.build_parallel();
    walker.run(|| {
        let result = &result;
        Box::new(move |entry| {
            let (file, skip) = match &entry {
                Ok(entry) => inspect(root, entry, options),
                Err(err) => {
                    tracing::debug!(%err, "walk error");
                    (None, Some((SkipReason::Unreadable, error_path(err, root))))
                }
            };
            let dir = match &entry {
                Ok(e) if record_dirs && e.file_type().is_some_and(|t| t.is_dir()) => {
                    Some(relative(root, e.path()))
                }
                _ => None,
            };
            let mut result = result.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(file) = file {
                result.0.push(file);
            }
            if let Some(skip) = skip {
                result.1.push(skip);
            }
            if let Some(dir) = dir {
                result.2.push(dir);
            }
            ignore::WalkState::Continue
        })
    });
    // The parallel walk finishes in any order; sort so results and examples are stable.
    let (mut files, mut skipped, mut dirs): (
        Vec<FileEntry>,
        Vec<(SkipReason, String)>,
        Vec<String>,
    ) = result.into_inner().unwrap_or_else(|p| p.into_inner());
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    skipped.sort();
    dirs.sort();
    let mut skips = Skips::default();
    for (reason, rel) in skipped {
        skips.add(reason, &rel);
    }
    Ok(Walk { files, skips, dirs })
}

/// The walker with codesearch's rules; also used to check single paths later.
pub fn builder(root: &Path) -> ignore::WalkBuilder {
    let mut b = ignore::WalkBuilder::new(root);
    b.hidden(true)
        .git_ignore(true)
        .git_global(true)
        .git_exclude(true)
        .ignore(true)
        // Honour .gitignore even outside a git repository (a fresh checkout, a tarball).
        .require_git(false)
        .parents(true)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE);
    b
}

fn inspect(
    root: &Path,
    entry: &ignore::DirEntry,
    options: &WalkOptions,
) -> (Option<FileEntry>, Option<(SkipReason, String)>) {
    let Some(file_type) = entry.file_type() else {
        return (None, None); // stdin; never happens for a directory walk
    };
    let path = entry.path();
    let rel = relative(root, path);
    if file_type.is_dir() {
        return (None, None);
    }
    let metadata = if file_type.is_symlink() {
        // A link is followed only when its target is a file inside the root.
        match path.canonicalize() {
            Ok(target) if target.starts_with(root) => match std::fs::metadata(&target) {
                Ok(m) if m.is_file() => m,
                // A link to a directory inside the root: its files are walked there.
                Ok(_) => return (None, None),
                Err(_) => return (None, Some((SkipReason::Unreadable, rel))),
            },
            _ => return (None, Some((SkipReason::SymlinkOutsideRoot, rel))),
        }
    } else if file_type.is_file() {
        match entry.metadata() {
            Ok(m) => m,
            Err(_) => return (None, Some((SkipReason::Unreadable, rel))),
        }
    } else {
        return (None, None); // sockets, fifos, devices
    };
    if metadata.len() > options.max_file_bytes {
        return (None, Some((SkipReason::TooLarge, rel)));
    }
    let file = FileEntry {
        rel,
        path: path.to_owned(),
        size: metadata.len(),
        mtime: metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    };
    (Some(file), None)
}

/// Decides from a file's bytes whether it is indexable text.
pub fn classify<'a>(bytes: &'a [u8], options: &WalkOptions) -> Result<&'a str, SkipReason> {
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err(SkipReason::Binary);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SkipReason::NotUtf8)?;
    // Short files can't be minified in a way that hurts; long ones with few, huge
    // lines are bundles, lockfile blobs or generated tables.
    if text.len() > 4096 {
        let lines = text.lines().count().max(1);
        if text.len() / lines > options.max_avg_line_bytes {
            return Err(SkipReason::Generated);
        }
    }
    Ok(text)
}

/// `root`-relative path with `/` separators.
pub fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut out = String::new();
    for (i, part) in rel.components().enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&part.as_os_str().to_string_lossy());
    }
    out
}

fn error_path(err: &ignore::Error, root: &Path) -> String {
    match err {
        ignore::Error::WithPath { path, .. } => relative(root, path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err, root)
        }
        ignore::Error::Loop { child, .. } => relative(root, child),
        _ => String::from("?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_each_reason() {
        let o = WalkOptions::default();
        assert_eq!(classify(b"fn main() {}\n", &o), Ok("fn main() {}\n"));
        assert_eq!(classify(b"ab\0cd", &o), Err(SkipReason::Binary));
        assert_eq!(classify(&[0xff, 0xfe, b'a'], &o), Err(SkipReason::NotUtf8));
        let minified = format!("var a={};\n", "x".repeat(10_000));
        assert_eq!(
            classify(minified.as_bytes(), &o),
            Err(SkipReason::Generated)
        );
        let normal = "let x = 1;\n".repeat(1000);
        assert!(classify(normal.as_bytes(), &o).is_ok());
    }

    /// Walks and classifies like the indexer: every file is indexed or counted.
    fn walk_and_classify(root: &Path, options: &WalkOptions) -> (Vec<String>, Skips) {
        let mut w = walk(root, options).unwrap();
        let mut kept = Vec::new();
        for f in &w.files {
            match classify(&std::fs::read(&f.path).unwrap(), options) {
                Ok(_) => kept.push(f.rel.clone()),
                Err(reason) => w.skips.add(reason, &f.rel),
            }
        }
        (kept, w.skips)
    }

    #[test]
    fn honours_ignore_files_and_counts_every_skip() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let write = |rel: &str, bytes: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        };
        write(".gitignore", b"target/\n*.log\n");
        write(".codesearchignore", b"secrets.txt\n");
        write("src/lib.rs", b"pub fn f() {}\n");
        write("src/nested/.gitignore", b"gen.rs\n");
        write("src/nested/gen.rs", b"// generated\n");
        write("src/nested/keep.rs", b"fn keep() {}\n");
        write("target/debug/out.rs", b"fn no() {}\n");
        write("run.log", b"log\n");
        write("secrets.txt", b"key\n");
        write(".hidden/config", b"x\n");
        write("logo.png", b"\x89PNG\r\n\x1a\n\0\0\0");
        write("latin1.txt", b"caf\xe9\n");
        write(
            "bundle.min.js",
            format!("var a={};\n", "x".repeat(9000)).as_bytes(),
        );
        write("big.txt", &vec![b'a'; 3000]);
        std::fs::write(outside.path().join("elsewhere.rs"), b"fn away() {}\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("elsewhere.rs"), root.join("away.rs"))
            .unwrap();
        std::os::unix::fs::symlink(root.join("src/lib.rs"), root.join("alias.rs")).unwrap();
        std::os::unix::fs::symlink(root.join("missing.rs"), root.join("dangling.rs")).unwrap();

        let options = WalkOptions {
            max_file_bytes: 2048,
            ..WalkOptions::default()
        };
        let (kept, skips) = walk_and_classify(root, &options);
        assert_eq!(
            kept,
            ["alias.rs", "src/lib.rs", "src/nested/keep.rs"],
            "hidden files (the ignore files among them) are not indexed, as in ripgrep"
        );
        let count = |r| skips.counts.get(&r).copied().unwrap_or(0);
        assert_eq!(count(SkipReason::Binary), 1);
        assert_eq!(count(SkipReason::NotUtf8), 1);
        assert_eq!(
            count(SkipReason::Generated),
            0,
            "the minified file is over the size cap"
        );
        assert_eq!(count(SkipReason::TooLarge), 2);
        assert_eq!(count(SkipReason::SymlinkOutsideRoot), 2);
        assert_eq!(skips.examples[&SkipReason::Binary], ["logo.png"]);
        assert_eq!(
            skips.examples[&SkipReason::SymlinkOutsideRoot],
            ["away.rs", "dangling.rs"]
        );

        let (_, skips) = walk_and_classify(root, &WalkOptions::default());
        assert_eq!(skips.examples[&SkipReason::Generated], ["bundle.min.js"]);
    }

    #[test]
    fn skips_keep_counts_and_a_few_examples() {
        let mut s = Skips::default();
        for i in 0..8 {
            s.add(SkipReason::Binary, &format!("b{i}"));
        }
        s.add(SkipReason::TooLarge, "big");
        assert_eq!(s.counts[&SkipReason::Binary], 8);
        assert_eq!(s.examples[&SkipReason::Binary].len(), Skips::EXAMPLES);
        assert_eq!(s.total(), 9);
    }
}
