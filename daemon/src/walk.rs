//! Listing a repository's files the way its owner would: `.gitignore`, `.ignore`,
//! global git excludes, `.git/info/exclude` and `.codesearchignore` are honoured,
//! hidden files are skipped (as ripgrep does), and every other file that is left
//! out is counted under a [`SkipReason`] — never dropped silently.
//!
//! Listing only needs metadata. The checks that need the contents (binary,
//! generated, not UTF-8) are in [`classify`], which the indexer calls on the bytes
//! it reads anyway, so no file is read twice.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use std::os::unix::fs::MetadataExt as _;

/// The ignore file of codesearch's own, read like `.gitignore`.
pub(crate) const IGNORE_FILE: &str = ".codesearchignore";

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
pub(crate) struct FileEntry {
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
pub(crate) struct Walk {
    /// Candidate files, sorted by relative path.
    pub files: Vec<FileEntry>,
    /// Files left out by metadata alone (size, symlinks, unreadable).
    pub skips: Skips,
    /// Directories the walk entered (neither hidden nor ignored), relative, `""`
    /// for the root; sorted. Only a whole walk fills it.
    pub dirs: Vec<String>,
}

/// Lists the files under `root` that are candidates for indexing.
pub(crate) fn walk(root: &Path, options: &WalkOptions) -> std::io::Result<Walk> {
    let root = root.canonicalize()?;
    run(&root, builder(&root), options, true)
}

/// Lists the files directly inside each of `dirs` (relative to `root`), by the
/// same rules as [`walk`]: the ignore files of the directories above apply. A
/// directory that is gone lists nothing.
pub(crate) fn walk_dirs(
    root: &Path,
    dirs: &[String],
    options: &WalkOptions,
) -> std::io::Result<Walk> {
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
    let mut builder = builder;
    // A mount of procfs, sysfs, … under the root is never entered: its files lie
    // about their sizes and some never end. Only folders on another device than
    // the root's are looked at, so this costs a stat per mount point.
    let root_dev = std::fs::metadata(root).map(|m| m.dev()).ok();
    builder.filter_entry(move |entry| {
        if !entry.file_type().is_some_and(|t| t.is_dir()) {
            return true;
        }
        let other_device = entry
            .metadata()
            .ok()
            .is_some_and(|m| Some(m.dev()) != root_dev);
        if other_device && let Some(fs) = pseudo_filesystem(entry.path()) {
            tracing::info!(path = %entry.path().display(), fs, "not entering a pseudo-filesystem");
            return false;
        }
        true
    });
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
pub(crate) fn builder(root: &Path) -> ignore::WalkBuilder {
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
        // Sockets, FIFOs, devices: never opened, but counted, so nothing is
        // missing without a reason.
        return (None, Some((SkipReason::Unreadable, rel)));
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
pub(crate) fn classify<'a>(bytes: &'a [u8], options: &WalkOptions) -> Result<&'a str, SkipReason> {
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

/// Block size of [`read_at_most`]: whole blocks are read, whatever the size the
/// metadata reports (procfs and sysfs files report 0 or 4096 and hold more, or
/// never end; a file can grow while it is read).
pub(crate) const READ_BLOCK: usize = 64 * 1024;

/// What [`read_at_most`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bounded {
    /// The whole file, at most the limit.
    Bytes(Vec<u8>),
    /// More than the limit: at most the limit and one block were read, none kept.
    TooLarge,
}

/// Reads the file at `path` if it holds at most `limit` bytes, reading whole
/// [`READ_BLOCK`]s and stopping as soon as more than `limit` bytes came, so
/// never more than `limit` + one block, whatever its metadata says.
///
/// The file is opened non-blocking, so a FIFO (or a device) put where a file
/// was never blocks the caller, and anything but a regular file is refused once
/// open (`InvalidInput`), so nothing is read from one.
pub(crate) fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Bounded> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX - 1);
    // Trust the reported size for the first allocation only, and never past the limit.
    let hint = usize::try_from(meta.len()).unwrap_or(usize::MAX).min(limit);
    let mut buf: Vec<u8> = Vec::with_capacity(hint.saturating_add(READ_BLOCK));
    loop {
        if buf.len() > limit {
            return Ok(Bounded::TooLarge);
        }
        // Whole blocks: some procfs files (pagemap) refuse reads of odd sizes.
        let start = buf.len();
        buf.resize(start + READ_BLOCK, 0);
        match file.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(Bounded::Bytes(buf));
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => return Err(e),
        }
    }
}

/// Size cap of the daemon's own small files (`config.yaml`, `repos.json`).
pub(crate) const SMALL_FILE_LIMIT: u64 = 16 * 1024 * 1024;

/// Reads a small file the daemon owns (`config.yaml`, `repos.json`): at most
/// `limit` bytes, or an `InvalidData` error naming the file and the limit.
pub(crate) fn read_small_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    match read_at_most(path, limit)? {
        Bounded::Bytes(b) => Ok(b),
        Bounded::TooLarge => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        )),
    }
}

/// The name of the pseudo-filesystem `path` lies on (procfs, sysfs, devtmpfs,
/// cgroup, …), or `None` for a filesystem that holds files (tmpfs included).
/// Such trees are refused as repository roots and never entered by a walk.
pub(crate) fn pseudo_filesystem(path: &Path) -> Option<&'static str> {
    // devtmpfs reports tmpfs' magic number; /dev is known by its place.
    if path == Path::new("/dev") || path.starts_with("/dev/") {
        return Some("devfs");
    }
    #[cfg(target_os = "linux")]
    {
        let fs = rustix::fs::statfs(path).ok()?;
        pseudo_fs_name(fs.f_type as u32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Linux `statfs` `f_type` magic numbers of filesystems without real files.
#[cfg(target_os = "linux")]
fn pseudo_fs_name(magic: u32) -> Option<&'static str> {
    Some(match magic {
        0x9fa0 => "procfs",
        0x6265_6572 => "sysfs",
        0x1cd1 => "devpts",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x6462_6720 => "debugfs",
        0x7472_6163 => "tracefs",
        0x7363_6673 => "securityfs",
        0xcafe_4a11 => "bpf",
        0x6165_676c => "pstore",
        0xde5e_81e4 => "efivarfs",
        0x6265_6570 => "configfs",
        0x6573_5543 => "fusectl",
        0xf97c_ff8c => "selinuxfs",
        0x4249_4e4d => "binfmt_misc",
        0x1980_0202 => "mqueue",
        0x6e73_6673 => "nsfs",
        0x9584_58f6 => "hugetlbfs",
        _ => return None,
    })
}

/// `root`-relative path with `/` separators.
pub(crate) fn relative(root: &Path, path: &Path) -> String {
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
    fn read_at_most_stops_at_the_limit_whatever_the_metadata_says() {
        // pagemap reports size 0 and holds 8 bytes per page of the address space.
        let t = std::time::Instant::now();
        assert_eq!(
            read_at_most(Path::new("/proc/self/pagemap"), 1 << 20).unwrap(),
            Bounded::TooLarge
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        match read_at_most(Path::new("/proc/self/status"), 1 << 20).unwrap() {
            Bounded::Bytes(b) => assert!(String::from_utf8_lossy(&b).contains("VmRSS")),
            Bounded::TooLarge => panic!("/proc/self/status is small"),
        }
    }

    #[test]
    fn read_at_most_refuses_fifos_and_files_over_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("pipe.py");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Would block forever without O_NONBLOCK: nobody writes to it.
        let err = read_at_most(&fifo, 1024).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        let big = tmp.path().join("big.rs");
        std::fs::write(&big, vec![b'a'; 3 * READ_BLOCK + 1]).unwrap();
        assert_eq!(
            read_at_most(&big, 3 * READ_BLOCK as u64).unwrap(),
            Bounded::TooLarge
        );
        assert_eq!(
            read_at_most(&big, 3 * READ_BLOCK as u64 + 1).unwrap(),
            Bounded::Bytes(vec![b'a'; 3 * READ_BLOCK + 1])
        );
        assert_eq!(
            read_at_most(&tmp.path().join("empty"), 10).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::NotFound)
        );
        assert!(read_small_file(&big, 100).is_err());
        assert_eq!(
            read_at_most(tmp.path(), 10).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::InvalidInput)
        );
    }

    #[test]
    fn a_walk_never_enters_a_pseudo_filesystem_mounted_under_its_root() {
        // `/` holds mounts of procfs (`/proc`), sysfs and devtmpfs: the
        // nearest thing to a repository that contains one.
        let root = Path::new("/");
        let mut b = builder(root);
        b.max_depth(Some(2));
        let w = run(root, b, &WalkOptions::default(), true).unwrap();
        assert!(
            w.dirs.iter().any(|d| d == "usr" || d == "etc"),
            "{:?}",
            w.dirs
        );
        for pseudo in ["proc", "sys", "dev"] {
            assert!(
                !w.dirs
                    .iter()
                    .any(|d| d == pseudo || d.starts_with(&format!("{pseudo}/"))),
                "entered /{pseudo}: {:?}",
                w.dirs
            );
            assert!(
                !w.files
                    .iter()
                    .any(|f| f.rel.starts_with(&format!("{pseudo}/")))
            );
        }
    }

    #[test]
    fn pseudo_filesystems_are_known() {
        assert_eq!(pseudo_filesystem(Path::new("/proc")), Some("procfs"));
        assert_eq!(pseudo_filesystem(Path::new("/proc/self")), Some("procfs"));
        assert_eq!(pseudo_filesystem(Path::new("/dev")), Some("devfs"));
        if Path::new("/sys/kernel").is_dir() {
            assert_eq!(pseudo_filesystem(Path::new("/sys")), Some("sysfs"));
        }
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(pseudo_filesystem(tmp.path()), None);
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
