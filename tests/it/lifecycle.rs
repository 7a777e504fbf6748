//! The daemon's life on the real binary and the real model: a shutdown that
//! commits and exits in time, `kill -9` at any point of indexing that a restart
//! converges from, a terminal's Ctrl-C that leaves the daemon indexing, and
//! status answering while a model is still on its way.
//!
//! Every wait has a deadline; the heavy tests run one at a time (`serial`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use codesearchd::chunk::Chunker;
use codesearchd::embed::hash::HashEmbedder;
use codesearchd::embed::{EmbedError, Embedder, InputKind};
use codesearchd::index::{self, IndexError, IndexOptions};
use codesearchd::store::{Manifest, SCHEMA_VERSION, Store};
use serde_json::{Value, json};

use crate::util::{bin, ignore_corpus, registry_file};

/// These tests keep a daemon's model busy: one at a time on a two-core machine.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The deadline for a daemon to stop: issue 14's acceptance.
const EXIT_WITHIN: Duration = Duration::from_secs(2);

/// Starts `codesearchd serve` on `home` (CPU, offline), its log appended to
/// `home/daemon.log`; `env` adds or (with `None`) removes variables.
fn spawn_with(home: &Path, env: &[(&str, Option<&str>)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("daemon.log"))
        .unwrap();
    let mut cmd = Command::new(bin("codesearchd"));
    cmd.arg("serve")
        .env("CODESEARCH_HOME", home)
        .env_remove("CODESEARCH_SOCKET")
        .env("CODESEARCH_EMBEDDING_DEVICE", "cpu")
        .env("HF_HUB_OFFLINE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.spawn().unwrap()
}

fn spawn(home: &Path) -> Child {
    spawn_with(home, &[])
}

/// The daemon's log so far, for assertion messages.
fn log(home: &Path) -> String {
    let text = std::fs::read_to_string(home.join("daemon.log")).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// One request on a fresh connection; `None` if nothing listens.
fn try_call(home: &Path, method: &str, params: Value) -> Option<Value> {
    let mut s = UnixStream::connect(home.join("codesearchd.sock")).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    s.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).ok()?;
    serde_json::from_str(&answer).ok()
}

#[track_caller]
fn call(home: &Path, method: &str, params: Value) -> Value {
    try_call(home, method, params).unwrap_or_else(|| panic!("no answer to {method}\n{}", log(home)))
}

/// Polls `f` every 20 ms until it gives `Some`, failing after `limit`.
#[track_caller]
fn within<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_listening(home: &Path) {
    within(Duration::from_secs(30), "the daemon listens", || {
        try_call(home, "daemon.status", json!(null))
    });
}

/// The one repository's status, once the daemon has restored its list.
fn repo(home: &Path) -> Value {
    call(home, "repo.list", json!(null))["result"][0].clone()
}

/// Waits until the repository's pass has ended; fails on `error`.
#[track_caller]
fn wait_ready(home: &Path, limit: Duration) -> Value {
    let status = within(limit, "the repository is indexed", || {
        let s = repo(home);
        (s["state"] != "indexing").then_some(s)
    });
    assert_eq!(status["state"], "ready", "{status}\n{}", log(home));
    status
}

/// Waits for `child` to exit; its status and how long that took.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<(ExitStatus, Duration)> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((status, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} failed");
}

fn kill9(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Four sources of the `ignore` crate (170 chunks: seconds of the model on a
/// CPU), so a shutdown lands in the middle of embedding.
fn four_files() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("src")).unwrap();
    for f in ["pathutil.rs", "gitignore.rs", "overrides.rs", "types.rs"] {
        let from = registry_file("ignore", &format!("src/{f}"));
        std::fs::copy(from, tmp.path().join("src").join(f)).unwrap();
    }
    tmp
}

/// `(path, size, blake3, skip)` of a file row.
type FileRow = (String, i64, Vec<u8>, Option<String>);

/// `(path, start, end, symbol, kind, key)` of a chunk row.
type ChunkRow = (String, i64, i64, Option<String>, String, Vec<u8>);

/// What an index holds, model aside: files and chunks, in order.
#[derive(Debug, PartialEq, Eq)]
struct Indexed {
    files: Vec<FileRow>,
    chunks: Vec<ChunkRow>,
}

fn index_dir(home: &Path, root: &Path) -> PathBuf {
    Store::dir_for(&home.join("indexes"), root)
}

/// Reads the index in `dir` beside (or after) its daemon, checking SQLite's and
/// FTS5's integrity and that every chunk has its vector.
#[track_caller]
fn indexed(dir: &Path) -> Indexed {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("index.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "SQLite integrity of {}", dir.display());
    db.execute(
        "INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')",
        [],
    )
    .unwrap_or_else(|e| panic!("FTS5 integrity of {}: {e}", dir.display()));
    let files = db
        .prepare("SELECT path, size, hash, skip FROM files ORDER BY path")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let chunks = db
        .prepare(
            "SELECT f.path, c.start_line, c.end_line, c.symbol, c.kind, v.key
             FROM chunks c JOIN files f ON f.id = c.file_id JOIN vectors v ON v.id = c.vector_id
             ORDER BY f.path, c.start_line, c.end_line, v.key",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let all: i64 = db
        .query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(all as usize, chunks.len(), "chunks without a vector");
    Indexed { files, chunks }
}

/// What a kill during a first or cold index left: the daemon may have died
/// before it made the index folder or its tables (nothing committed, which the
/// restart must then build in full); once the tables are there, as [`indexed`].
#[track_caller]
fn left_by_a_cold_kill(dir: &Path) -> Indexed {
    let nothing = || Indexed {
        files: Vec::new(),
        chunks: Vec::new(),
    };
    let Ok(db) = rusqlite::Connection::open_with_flags(
        dir.join("index.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return nothing();
    };
    let tables: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_master
             WHERE name IN ('meta', 'files', 'chunks', 'vectors', 'chunks_fts')",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    drop(db);
    if tables < 5 { nothing() } else { indexed(dir) }
}

/// A deterministic stand-in for the model: files and chunks do not depend on
/// the vectors, so it gives the clean index they must equal in no time.
fn hash_embedder() -> HashEmbedder {
    HashEmbedder::new("minilm", 384)
}

fn manifest(root: &Path) -> Manifest {
    Manifest {
        schema_version: SCHEMA_VERSION,
        model: "minilm".into(),
        dims: 384,
        source: None,
        root: root.to_owned(),
    }
}

/// Files and chunks of a clean index of `root`.
fn clean_index(root: &Path) -> Indexed {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &manifest(root)).unwrap();
    index::index(
        root,
        &mut store,
        &mut hash_embedder(),
        &Chunker::new().unwrap(),
        &IndexOptions::default(),
        |_| {},
    )
    .unwrap();
    drop(store);
    indexed(dir.path())
}

/// Stops a daemon in the middle of its first pass over `four_files` with `stop`,
/// checks it exits within 2 s with the committed state intact, and that a
/// restart converges to a clean index.
fn stop_mid_pass(how: &str, stop: impl FnOnce(&Path, &Child)) {
    let _one = serial();
    let test_start = Instant::now();
    let corpus = four_files();
    let root = corpus.path().canonicalize().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let mut child = spawn(home);
    wait_listening(home);
    let added = call(home, "repo.add", json!({"path": root}));
    assert_eq!(added["result"]["state"], "indexing", "{added}");
    // The walk is done and the files are chunked: the model is embedding.
    within(Duration::from_secs(60), "the pass counts its files", || {
        (repo(home)["pending"].as_u64() > Some(0)).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(repo(home)["state"], "indexing", "the pass ended too soon");
    let stopping = Instant::now();
    stop(home, &child);
    let (status, _) = wait_exit(&mut child, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the daemon never exited\n{}", log(home)));
    let took = stopping.elapsed();
    assert!(
        took <= EXIT_WITHIN,
        "{how} mid-pass: exited after {took:?}\n{}",
        log(home)
    );
    assert!(status.success(), "{how}: {status:?}\n{}", log(home));
    let dir = index_dir(home, &root);
    let committed = indexed(&dir);
    assert!(
        !home.join("codesearchd.sock").exists(),
        "the socket is removed"
    );

    let mut child = spawn(home);
    wait_listening(home);
    let status = wait_ready(home, Duration::from_secs(180));
    let clean = clean_index(&root);
    assert_eq!(indexed(&dir), clean, "a restart converges to a clean index");
    assert_eq!(status["chunks"].as_u64(), Some(clean.chunks.len() as u64));
    let hits = call(
        home,
        "search",
        json!({"query": "expand a leading tilde to the home directory", "k": 3}),
    );
    assert!(
        hits["result"]["results"]
            .to_string()
            .contains("expand_tilde"),
        "{hits}"
    );
    // Idle, it stops as fast.
    let stopping = Instant::now();
    call(home, "daemon.shutdown", json!(null));
    wait_exit(&mut child, EXIT_WITHIN).expect("an idle daemon exits within 2 s");
    eprintln!(
        "{how} mid-pass: exit after {took:?}, {} of {} files committed; test took {:?} (idle shutdown {:?})",
        committed.files.len(),
        clean.files.len(),
        test_start.elapsed(),
        stopping.elapsed()
    );
}

#[test]
fn sigterm_mid_pass_exits_within_2s_and_a_restart_converges() {
    stop_mid_pass("SIGTERM", |_, child| signal(child, "-TERM"));
}

#[test]
fn daemon_shutdown_mid_pass_exits_within_2s_and_a_restart_converges() {
    stop_mid_pass("daemon.shutdown", |home, _| {
        let answer = call(home, "daemon.shutdown", json!(null));
        assert_eq!(answer["result"], Value::Null, "{answer}");
    });
}

/// The hash embedder that fires `cancel` once it has embedded `after` calls.
struct CancelAfter {
    calls: usize,
    after: usize,
    cancel: tokio_util::sync::CancellationToken,
}

impl Embedder for CancelAfter {
    fn model_name(&self) -> &str {
        "minilm"
    }
    fn dims(&self) -> usize {
        384
    }
    fn max_tokens(&self) -> usize {
        256
    }
    fn device_name(&self) -> String {
        "cpu".into()
    }
    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.calls += 1;
        if self.calls == self.after {
            self.cancel.cancel();
        }
        hash_embedder().embed(texts, kind)
    }
}

#[test]
fn a_cancelled_pass_commits_what_it_embedded_saves_the_hnsw_and_resumes() {
    let corpus = four_files();
    let root = corpus.path().canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let chunker = Chunker::new().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    // Each file is a batch of its own; the token fires during the first's call.
    let options = IndexOptions {
        chunks_per_commit: 8,
        cancel: cancel.clone(),
        ..IndexOptions::default()
    };
    let mut store = Store::open(dir.path(), &manifest(&root)).unwrap();
    let before = std::time::SystemTime::now();
    let mut model = CancelAfter {
        calls: 0,
        after: 1,
        cancel,
    };
    let result = index::index(&root, &mut store, &mut model, &chunker, &options, |_| {});
    assert!(matches!(result, Err(IndexError::Cancelled)), "{result:?}");
    assert_eq!(model.calls, 1, "no model call after the token fired");
    // Saved by the cancelled run itself, not by `Drop`: the store is still open.
    let saved = std::fs::metadata(dir.path().join("vectors.usearch"))
        .and_then(|m| m.modified())
        .expect("the HNSW file is saved");
    assert!(saved >= before);
    let committed = store.file_count().unwrap();
    drop(store);
    let clean = clean_index(&root);
    let partial = indexed(dir.path());
    assert!(
        committed > 0 && (committed as usize) < clean.files.len(),
        "{committed} of {} files committed",
        clean.files.len()
    );
    // What was committed is exactly what a clean index holds for those files.
    for (path, ..) in &partial.files {
        let mine: Vec<_> = partial.chunks.iter().filter(|c| &c.0 == path).collect();
        let want: Vec<_> = clean.chunks.iter().filter(|c| &c.0 == path).collect();
        assert_eq!(mine, want, "{path}");
    }
    let mut store = Store::open(dir.path(), &manifest(&root)).unwrap();
    index::index(
        &root,
        &mut store,
        &mut hash_embedder(),
        &chunker,
        &IndexOptions::default(),
        |_| {},
    )
    .unwrap();
    drop(store);
    assert_eq!(
        indexed(dir.path()),
        clean,
        "the next run resumes and converges"
    );
    eprintln!(
        "cancelled in the first call: {committed} of {} files committed",
        clean.files.len()
    );
}

/// xorshift64: the kill points, the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let ms = n.as_millis().max(1) as u64;
        Duration::from_millis(self.0 % ms)
    }
}

const QUERIES: &[&str] = &[
    "expand a leading tilde to the home directory",
    "match a path against gitignore globs",
    "strip a prefix from a path",
];

/// `(path, start_line, end_line)` of the top 5 hits of each of [`QUERIES`].
fn top5(home: &Path) -> Vec<Vec<(String, u64, u64)>> {
    QUERIES
        .iter()
        .map(|q| {
            let v = call(home, "search", json!({"query": q, "k": 5}));
            v["result"]["results"]
                .as_array()
                .unwrap_or_else(|| panic!("{v}"))
                .iter()
                .map(|h| {
                    (
                        h["path"].as_str().unwrap().to_owned(),
                        h["start_line"].as_u64().unwrap(),
                        h["end_line"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .collect()
}

#[test]
fn twenty_kill_9s_during_indexing_and_full_reindexes_converge_to_a_clean_index() {
    let _one = serial();
    let test_start = Instant::now();
    let corpus = ignore_corpus();
    let root = corpus.path().canonicalize().unwrap();
    let path = json!({"path": root});

    // The clean index, and how long its phases take (the window of kill points).
    let clean_home = tempfile::tempdir().unwrap();
    let clean_home = clean_home.path();
    let spawned = Instant::now();
    let mut child = spawn(clean_home);
    wait_listening(clean_home);
    call(clean_home, "repo.add", path.clone());
    wait_ready(clean_home, Duration::from_secs(120));
    let cold = spawned.elapsed();
    let reindexing = Instant::now();
    let r = call(
        clean_home,
        "repo.reindex",
        json!({"path": root, "full": true, "wait": true}),
    );
    assert_eq!(r["result"]["state"], "ready", "{r}");
    let full = reindexing.elapsed();
    let clean = indexed(&index_dir(clean_home, &root));
    let clean_hits = top5(clean_home);
    assert_eq!(clean, clean_index(&root));
    call(clean_home, "daemon.shutdown", json!(null));
    wait_exit(&mut child, EXIT_WITHIN).expect("exit");

    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let dir = index_dir(home, &root);
    let mut rng = Rng(0x5eed_0014_c0de_0001);
    let mut child = spawn(home);
    wait_listening(home);
    call(home, "repo.add", path.clone());
    let mut kill_at = rng.below(cold);
    let mut phase = "first index";
    for kill in 1..=20 {
        std::thread::sleep(kill_at);
        kill9(&mut child);
        // The state a crash leaves is consistent, whatever it holds; during a
        // full re-index (built beside, swapped whole) it is the complete index.
        let left = if phase == "full re-index" {
            indexed(&dir)
        } else {
            left_by_a_cold_kill(&dir)
        };
        if phase == "full re-index" {
            assert_eq!(
                left, clean,
                "kill {kill}: the live index during a full re-index"
            );
        }
        eprintln!(
            "kill {kill:2}: {phase}, after {kill_at:?}: {} files, {} chunks committed",
            left.files.len(),
            left.chunks.len()
        );
        child = spawn(home);
        wait_listening(home);
        wait_ready(home, Duration::from_secs(120));
        assert_eq!(indexed(&dir), clean, "kill {kill} ({phase})");
        assert_eq!(top5(home), clean_hits, "kill {kill} ({phase})");
        if kill == 20 {
            break;
        }
        if kill % 4 != 0 {
            // A full re-index, killed somewhere in it.
            let r = call(home, "repo.reindex", json!({"path": root, "full": true}));
            assert!(r["result"].is_object(), "{r}");
            kill_at = rng.below(full);
            phase = "full re-index";
        } else {
            // A cold start on a lost index: the model embeds it all again.
            kill9(&mut child);
            std::fs::remove_dir_all(&dir).unwrap();
            child = spawn(home);
            kill_at = rng.below(cold);
            phase = "cold start and index";
        }
    }
    call(home, "daemon.shutdown", json!(null));
    wait_exit(&mut child, EXIT_WITHIN).expect("exit");
    eprintln!(
        "20 kills converged (cold index {cold:?}, full re-index {full:?}); test took {:?}",
        test_start.elapsed()
    );
}

/// Runs `codesearch ARGS…` on a new pseudo-terminal (python3's `pty`), as a user
/// at a terminal would, types Ctrl-C once `needle` is on the screen, and returns
/// what the terminal showed and the exit code.
fn ctrl_c_in_a_terminal(home: &Path, args: &[&str], needle: &str) -> (String, i32) {
    const SCRIPT: &str = r#"
import os, pty, select, sys, time
needle, argv = sys.argv[1].encode(), sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, sent, deadline = b"", False, time.time() + 120
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.05)
    if ready:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
    if not sent and needle in out:
        time.sleep(0.5)
        os.write(fd, b"\x03")  # the terminal turns it into SIGINT for the foreground group
        sent = True
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
sys.stdout.write("\nEXIT %d SENT %d\n" % (os.waitstatus_to_exitcode(status), sent))
"#;
    let exe = bin("codesearch");
    let o = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(needle)
        .arg(&exe)
        .args(args)
        .env("CODESEARCH_HOME", home)
        .env_remove("CODESEARCH_SOCKET")
        .env("CODESEARCH_EMBEDDING_DEVICE", "cpu")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("python3 runs the terminal");
    let screen = String::from_utf8_lossy(&o.stdout).into_owned();
    let tail = screen.rsplit("\nEXIT ").next().unwrap_or("");
    assert!(
        tail.ends_with("SENT 1\n"),
        "Ctrl-C was never typed:\n{screen}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let code = tail.split(' ').next().unwrap().parse().unwrap();
    (screen, code)
}

#[test]
fn ctrl_c_on_the_first_index_leaves_the_daemon_running_and_indexing() {
    let _one = serial();
    let test_start = Instant::now();
    let corpus = ignore_corpus();
    let root = corpus.path().canonicalize().unwrap();
    let home = crate::util::Home::new();
    let h = home.dir.path();
    // No daemon yet: `codesearch index` starts it, then shows its progress.
    let (screen, code) = ctrl_c_in_a_terminal(h, &["index", root.to_str().unwrap()], "indexing");
    assert_eq!(code, 130, "{screen}");
    assert!(
        screen.contains("indexing continues in the background; `codesearch status`"),
        "{screen}"
    );
    let status = call(h, "daemon.status", json!(null));
    assert_eq!(status["result"]["started_by"], "codesearch", "{status}");
    let daemon_pid = status["result"]["pid"].as_u64().unwrap();
    let interrupted = repo(h);
    assert!(
        interrupted["state"] == "indexing" || interrupted["state"] == "ready",
        "the pass goes on: {interrupted}"
    );
    let done = wait_ready(h, Duration::from_secs(180));
    assert_eq!(
        done["chunks"].as_u64(),
        Some(clean_index(&root).chunks.len() as u64),
        "{done}"
    );
    let status = call(h, "daemon.status", json!(null));
    assert_eq!(status["result"]["pid"].as_u64(), Some(daemon_pid));
    eprintln!("Ctrl-C test took {:?}", test_start.elapsed());
}

/// A hub that takes connections and never answers: a download in progress.
struct StalledHub {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StalledHub {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (accepted, stop) = (accepted.clone(), stop.clone());
            move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            held.push(conn);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                // Dropping the connections ends the downloads with an error.
            }
        });
        Self {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes every connection: the downloads fail.
    fn hang_up(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for StalledHub {
    fn drop(&mut self) {
        self.hang_up();
    }
}

#[test]
fn status_and_search_answer_while_another_model_is_still_loading() {
    let _one = serial();
    let test_start = Instant::now();
    let mut hub = StalledHub::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_owned();
    let endpoint = format!("http://{}", hub.addr);
    let mut child = spawn_with(
        &home,
        &[
            ("HF_HUB_OFFLINE", None),
            ("HF_ENDPOINT", Some(endpoint.as_str())),
        ],
    );
    wait_listening(&home);
    let corpus = ignore_corpus();
    let r = call(
        &home,
        "repo.add",
        json!({"path": corpus.path(), "wait": true}),
    );
    assert_eq!(r["result"]["state"], "ready", "{r}");

    // bge-small is not in the cache: loading it means a download, from a hub
    // that never answers.
    let loading = std::thread::spawn({
        let home = home.clone();
        move || {
            call(
                &home,
                "embed",
                json!({"texts": ["x"], "model": "bge-small"}),
            )
        }
    });
    within(
        Duration::from_secs(30),
        "the download reaches the hub",
        || (hub.accepted.load(Ordering::SeqCst) > 0).then_some(()),
    );
    for _ in 0..3 {
        let asked = Instant::now();
        let status = call(&home, "daemon.status", json!(null));
        let took = asked.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "daemon.status took {took:?}"
        );
        assert_eq!(
            status["result"]["models"],
            json!([{"name": "minilm", "device": "cpu"}]),
            "a model that is loading is not listed: {status}"
        );
        let asked = Instant::now();
        let hits = call(
            &home,
            "search",
            json!({"query": "expand a leading tilde to the home directory", "k": 3}),
        );
        let took = asked.elapsed();
        assert!(
            hits["result"]["results"]
                .to_string()
                .contains("expand_tilde"),
            "{hits}"
        );
        assert!(
            took < Duration::from_secs(3),
            "search with the loaded model took {took:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!loading.is_finished(), "the download is still in progress");
    hub.hang_up();
    let failed = loading.join().unwrap();
    assert_eq!(failed["error"]["code"], -32002, "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("download"),
        "{failed}"
    );
    call(&home, "daemon.shutdown", json!(null));
    wait_exit(&mut child, EXIT_WITHIN).expect("exit");
    eprintln!("model-loading test took {:?}", test_start.elapsed());
}
