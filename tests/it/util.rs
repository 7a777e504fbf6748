//! Shared test helpers: where the shared data and the binaries are.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use codesearchd::embed::{self, CandleEmbedder, EmbedOptions, ModelLocator};

/// `../shared` beside the repository, or `$CODESEARCH_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CODESEARCH_SHARED_DIR") {
        return dir.into();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("../../shared");
    assert!(
        dir.join("reference/chunks.jsonl").is_file(),
        "the shared data is not at {}; set CODESEARCH_SHARED_DIR",
        dir.display()
    );
    dir
}

/// The real all-MiniLM-L6-v2 from the HF cache, loaded once per test binary.
///
/// Tests take the lock for as long as they use it, so they never run the model
/// concurrently on this two-core machine.
pub fn minilm() -> MutexGuard<'static, CandleEmbedder> {
    static MODEL: OnceLock<Mutex<CandleEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            // f32 documents: the reference engine (int8, the default on CPUs
            // with VNNI, has its own test).
            let options = EmbedOptions {
                model: "minilm".into(),
                device: embed::DeviceChoice::Cpu,
                precision: Some(embed::Precision::F32),
                ..Default::default()
            };
            let model = embed::load(&options, &ModelLocator::from_env()).unwrap_or_else(|e| {
                panic!("{e}\n(the real model is required: run scripts/fetch-model.sh)")
            });
            Mutex::new(model)
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A binary of this workspace, built in the profile (and target folder) of this test.
///
/// `cargo test` builds only the binaries of the package under test, and these tests
/// live in their own package, so the first call builds `codesearchd` and `codesearch`
/// with the same cargo. Their dependencies are already compiled for the tests, so
/// this links two binaries and compiles nothing twice.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/integration-<hash> -> target/<profile>
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("test executable lives in target/<profile>/deps")
            .to_owned();
        let mut cargo = Command::new(env!("CARGO"));
        cargo.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "codesearchd",
            "-p",
            "codesearch",
            // The tests' own build of the daemon's library has it (the
            // offline tier's embedder): the same features compile nothing twice.
            "--features",
            "codesearchd/test-support",
        ]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        if cfg!(feature = "cuda") {
            cargo.args(["--features", "codesearchd/cuda"]);
        }
        let status = cargo.status().expect("run cargo to build the binaries");
        assert!(status.success(), "cargo build of the binaries failed");
        dir
    });
    let path = dir.join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A temp repository with `src/pathutil.rs` and `src/gitignore.rs` of the `ignore`
/// crate (real code, 2 files, about 90 chunks), for tests that edit it.
pub fn ignore_corpus() -> tempfile::TempDir {
    let corpus = tempfile::tempdir().unwrap();
    let src = corpus.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["pathutil.rs", "gitignore.rs"] {
        std::fs::copy(registry_file("ignore", &format!("src/{f}")), src.join(f)).unwrap();
    }
    corpus
}

/// `file` inside the registry source of `krate` at the version `Cargo.lock` pins.
pub fn registry_file(krate: &str, file: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let needle = format!("name = \"{krate}\"\nversion = \"");
    let at = lock
        .find(&needle)
        .unwrap_or_else(|| panic!("{krate} is not in Cargo.lock"));
    let version = lock[at + needle.len()..].split('"').next().unwrap();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"));
    let src = cargo_home.join("registry/src");
    let found = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .flatten()
        .map(|index| index.path().join(format!("{krate}-{version}")).join(file))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{krate}-{version}/{file} is not in {}; run `cargo fetch`",
            src.display()
        )
    })
}

/// Compares `got` with `it/snapshots/<name>.txt`; `UPDATE_SNAPSHOTS=1` rewrites it.
#[track_caller]
pub fn check_snapshot(name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("it/snapshots/{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_SNAPSHOTS=1 to create it",
            path.display()
        )
    });
    assert!(
        got == want,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it)\n--- got ---\n{got}\n--- want ---\n{want}"
    );
}

/// A file unpacked by `scripts/fetch-test-corpora.sh` (into `target/test-corpora`,
/// or `$CODESEARCH_TEST_CORPORA`).
pub fn test_corpus_file(rel: &str) -> PathBuf {
    let dir = std::env::var_os("CODESEARCH_TEST_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-corpora")
        });
    let path = dir.join(rel);
    assert!(
        path.is_file(),
        "{} is missing; run scripts/fetch-test-corpora.sh",
        path.display()
    );
    path
}

/// A finished command's exit status, stdout and stderr, for assertion messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A codesearch home in a temp folder, for running the `codesearch` client
/// (which starts its own daemon there, on the CPU, offline); the daemon is
/// stopped on drop.
pub struct Home {
    /// The home folder.
    pub dir: tempfile::TempDir,
}

impl Home {
    /// A fresh, empty home.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs `codesearch ARGS…` against this home.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("codesearch"))
            .args(args)
            .env("CODESEARCH_HOME", self.dir.path())
            .env_remove("CODESEARCH_SOCKET")
            .env("CODESEARCH_EMBEDDING_DEVICE", "cpu")
            .env("HF_HUB_OFFLINE", "1")
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.run(&["daemon", "stop"]);
    }
}

/// A corpus of the public eval (`../shared/eval/fetch.sh`, run by
/// `scripts/fetch-test-corpora.sh` into `target/test-corpora/eval`).
pub fn eval_corpus(name: &str) -> PathBuf {
    let dir = std::env::var_os("CODESEARCH_TEST_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-corpora"))
        .join("eval")
        .join(name);
    assert!(
        dir.is_dir(),
        "{} is missing; run scripts/fetch-test-corpora.sh",
        dir.display()
    );
    dir
}

/// Go's pkg/errors (Debian's golang-github-pkg-errors, fetched by
/// `scripts/fetch-test-corpora.sh`), copied out of the build tree (whose
/// .gitignore would hide it) into a temp folder: a small real repository.
pub fn pkg_errors_corpus() -> tempfile::TempDir {
    let src = test_corpus_file(
        "golang-github-pkg-errors-0.9.1/usr/share/gocode/src/github.com/pkg/errors/errors.go",
    );
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(src.parent().unwrap()).unwrap().flatten() {
        if f.path().is_file() {
            std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
        }
    }
    dir
}
