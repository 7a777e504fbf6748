//! The real `codesearchd` on a temp home, spoken to over its real socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{bin, ignore_corpus, registry_file};

pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) home: tempfile::TempDir,
}

impl Daemon {
    pub(crate) fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        // Its log goes to a file: a pipe nobody reads fills (64 KiB) under a
        // long test's logging, and the daemon then blocks on its next line.
        let log = std::fs::File::create(home.path().join("daemon.log")).unwrap();
        let child = command(home.path()).stderr(log).spawn().unwrap();
        let d = Self { child, home };
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(d.socket()).is_err() {
            assert!(Instant::now() < deadline, "the daemon never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.home.path().join("codesearchd.sock")
    }

    /// Sends raw lines on one connection and reads one answer per line that gets one.
    fn send(&self, lines: &[&[u8]], answers: usize) -> Vec<Value> {
        let mut s = UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        for l in lines {
            s.write_all(l).unwrap();
            s.write_all(b"\n").unwrap();
        }
        let mut r = BufReader::new(s);
        (0..answers)
            .map(|_| {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
            })
            .collect()
    }

    pub(crate) fn call(&self, method: &str, params: Value) -> Value {
        let line =
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
        self.send(&[line.as_bytes()], 1).remove(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon on `home` whose stderr the caller reads (`wait_with_output`).
pub(crate) fn spawn(home: &Path) -> Child {
    command(home).stderr(Stdio::piped()).spawn().unwrap()
}

fn command(home: &Path) -> Command {
    let mut c = Command::new(bin("codesearchd"));
    c.env("CODESEARCH_HOME", home)
        .env_remove("CODESEARCH_SOCKET")
        .env("CODESEARCH_EMBEDDING_DEVICE", "cpu")
        .env("HF_HUB_OFFLINE", "1")
        .stdout(Stdio::null());
    c
}

#[test]
fn serves_models_embeddings_and_status_and_survives_bad_input() {
    let d = Daemon::start();
    let models = d.call("models.list", json!({}));
    assert_eq!(models["result"][0]["name"], "minilm", "{models}");
    assert_eq!(models["result"][0]["dims"], 384);
    // The real model is in the cache (CI fetched it); jina-code cannot run;
    // the built-in remote models are listed with their endpoint.
    assert_eq!(models["result"][0]["availability"], "local", "{models}");
    assert!(
        models["result"][0]["location"]
            .as_str()
            .unwrap()
            .contains("all-MiniLM-L6-v2")
    );
    let row = |name: &str| {
        models["result"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing: {models}"))
    };
    assert_eq!(row("jina-code")["availability"], "unsupported");
    assert_eq!(row("voyage")["availability"], "remote");
    assert_eq!(row("voyage")["location"], "https://api.voyageai.com/v1");
    assert_eq!(row("voyage")["remote_model"], "voyage-code-3");

    let bad_params = d.call("embed", json!({"texts": 5}));
    assert_eq!(bad_params["error"]["code"], -32602, "{bad_params}");
    let unknown_model = d.call("embed", json!({"texts": ["x"], "model": "nope"}));
    assert_eq!(unknown_model["error"]["code"], -32002, "{unknown_model}");
    assert!(
        unknown_model["error"]["message"]
            .as_str()
            .unwrap()
            .contains("minilm")
    );

    // Malformed JSON, an unknown method, a 17 MiB line, then a real request on
    // the same connection: each gets its error and the daemon keeps answering.
    let huge = vec![b'x'; 17 * 1024 * 1024];
    let embed = json!({"jsonrpc": "2.0", "id": 9, "method": "embed",
        "params": {"texts": ["parse http headers"], "kind": "query"}})
    .to_string();
    let answers = d.send(
        &[
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\"",
            br#"{"jsonrpc":"2.0","id":2,"method":"no.such.method"}"#,
            &huge,
            embed.as_bytes(),
        ],
        4,
    );
    let codes: Vec<_> = answers.iter().map(|a| a["error"]["code"].clone()).collect();
    assert_eq!(
        codes,
        [json!(-32700), json!(-32601), json!(-32600), Value::Null],
        "{answers:?}"
    );
    let v = &answers[3]["result"];
    assert_eq!(
        (v["model"].as_str(), v["dims"].as_u64()),
        (Some("minilm"), Some(384))
    );
    let vector: Vec<f32> = serde_json::from_value(v["vectors"][0].clone()).unwrap();
    let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);

    let status = d.call("daemon.status", json!(null));
    assert_eq!(
        status["result"]["models"][0],
        json!({"name": "minilm", "device": "cpu"}),
        "{status}"
    );
    assert!(status["result"]["rss_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn home_and_socket_are_private_and_one_daemon_per_home() {
    let mut d = Daemon::start();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.home.path()), 0o700);
    assert_eq!(mode(&d.socket()), 0o600);

    let second = spawn(d.home.path()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("another codesearchd (pid {})", d.child.id())),
        "{stderr}"
    );

    // Shut down over the socket: the process exits cleanly and takes its socket along.
    let bye = d.call("daemon.shutdown", json!(null));
    assert_eq!(bye["result"], Value::Null, "{bye}");
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!d.socket().exists());

    // A stale socket from a crash is replaced.
    let stale = std::os::unix::net::UnixListener::bind(d.socket()).unwrap();
    drop(stale);
    assert!(d.socket().exists());
    d.child = spawn(d.home.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(d.socket()).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not replace the stale socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        d.call("models.list", json!({}))["result"][0]["name"],
        "minilm"
    );
}

#[test]
fn indexes_a_repository_and_searches_it_over_the_socket() {
    let corpus = ignore_corpus();
    let root = corpus.path().canonicalize().unwrap().display().to_string();
    let d = Daemon::start();

    let not_dir = d.call(
        "repo.add",
        json!({"path": format!("{root}/src/pathutil.rs")}),
    );
    assert_eq!(not_dir["error"]["code"], -32003, "{not_dir}");
    let relative = d.call("repo.add", json!({"path": "src"}));
    assert_eq!(relative["error"]["code"], -32003, "{relative}");
    let unknown = d.call("repo.reindex", json!({"path": "/nowhere"}));
    assert_eq!(unknown["error"]["code"], -32001, "{unknown}");

    let added = d.call("repo.add", json!({"path": root, "wait": true}));
    let status = &added["result"];
    assert_eq!(
        (status["state"].as_str(), status["model"].as_str()),
        (Some("ready"), Some("minilm")),
        "{added}"
    );
    assert_eq!(status["files"], 2);
    assert!(status["chunks"].as_u64().unwrap() > 50, "{added}");
    let other_model = d.call("repo.add", json!({"path": root, "model": "bge-small-mlx"}));
    assert_eq!(other_model["error"]["code"], -32602, "{other_model}");
    assert!(
        other_model["error"]["message"]
            .as_str()
            .unwrap()
            .contains("codesearch remove"),
        "{other_model}"
    );

    let found = d.call(
        "search",
        json!({"query": "expand a leading tilde to the home directory", "k": 5}),
    );
    let hits: Vec<codesearch_proto::Hit> =
        serde_json::from_value(found["result"]["results"].clone()).unwrap();
    assert_eq!(hits.len(), 5, "{found}");
    assert!(
        hits.iter()
            .take(3)
            .any(|h| h.path == "src/gitignore.rs" && h.symbol.as_deref() == Some("expand_tilde")),
        "{hits:#?}"
    );
    assert!(hits.iter().all(|h| h.repo == root && !h.stale));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    let filtered = d.call(
        "search",
        json!({"query": "is this file hidden", "k": 3, "paths": ["src/pathutil.rs"], "languages": ["rust"]}),
    );
    let hits = filtered["result"]["results"].as_array().unwrap();
    assert!(
        !hits.is_empty() && hits.iter().all(|h| h["path"] == "src/pathutil.rs"),
        "{filtered}"
    );
    // BM25 alone finds an identifier, also written in camelCase.
    for query in ["expand_tilde", "expandTilde"] {
        let lexical = d.call("search", json!({"query": query, "k": 3, "mode": "lexical"}));
        let hits: Vec<codesearch_proto::Hit> =
            serde_json::from_value(lexical["result"]["results"].clone()).unwrap();
        assert!(
            hits.iter()
                .any(|h| h.symbol.as_deref() == Some("expand_tilde")),
            "{query}: {lexical}"
        );
    }
    let semantic = d.call(
        "search",
        json!({"query": "expand a leading tilde", "k": 3, "mode": "semantic"}),
    );
    assert_eq!(
        semantic["result"]["results"].as_array().map(Vec::len),
        Some(3),
        "{semantic}"
    );
    let bad_mode = d.call("search", json!({"query": "x", "mode": "fuzzy"}));
    assert_eq!(bad_mode["error"]["code"], -32602, "{bad_mode}");

    let listed = d.call("repo.list", json!(null));
    assert_eq!(listed["result"][0]["path"], root.as_str(), "{listed}");
    let status = d.call("daemon.status", json!(null));
    assert_eq!(status["result"]["repos"][0]["state"], "ready", "{status}");

    let removed = d.call("repo.remove", json!({"path": root}));
    assert_eq!(removed["result"], Value::Null, "{removed}");
    assert_eq!(d.call("repo.list", json!(null))["result"], json!([]));
    let gone = d.call("search", json!({"query": "tilde", "repos": [root]}));
    assert_eq!(gone["error"]["code"], -32001, "{gone}");
}

#[test]
fn a_restarted_daemon_serves_its_repositories_again() {
    let corpus = tempfile::tempdir().unwrap();
    std::fs::copy(
        registry_file("ignore", "src/pathutil.rs"),
        corpus.path().join("pathutil.rs"),
    )
    .unwrap();
    std::fs::write(
        corpus.path().join("old.py"),
        "def defragment_the_warehouse(shelves):\n    return sorted(shelves)\n",
    )
    .unwrap();
    let root = corpus.path().canonicalize().unwrap().display().to_string();
    let mut d = Daemon::start();
    let added = d.call("repo.add", json!({"path": root, "wait": true}));
    assert_eq!(added["result"]["state"], "ready", "{added}");
    assert_eq!(added["result"]["files"], 2, "{added}");
    assert_eq!(
        d.call("daemon.shutdown", json!(null))["result"],
        Value::Null
    );
    assert!(d.child.wait().unwrap().success());

    // Changes, additions and deletions while the daemon is down are picked up at start-up.
    std::fs::write(
        corpus.path().join("extra.py"),
        "def frobnicate_widgets(count):\n    return count * 2\n",
    )
    .unwrap();
    std::fs::remove_file(corpus.path().join("old.py")).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(corpus.path().join("pathutil.rs"))
        .unwrap();
    f.write_all(b"\n/// Counts the gremlins hiding in a path.\npub fn count_path_gremlins(p: &str) -> usize {\n    p.matches('~').count()\n}\n")
        .unwrap();
    drop(f);
    d.child = spawn(d.home.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "the restarted daemon never caught up"
        );
        if let Ok(s) = UnixStream::connect(d.socket()) {
            drop(s);
            let list = d.call("repo.list", json!(null));
            if list["result"][0]["state"] == "ready" && list["result"][0]["files"] == 2 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let found = d.call("search", json!({"query": "frobnicate widgets", "k": 1}));
    assert_eq!(found["result"]["results"][0]["path"], "extra.py", "{found}");
    let found = d.call(
        "search",
        json!({"query": "count the gremlins hiding in a path", "k": 1}),
    );
    assert_eq!(
        found["result"]["results"][0]["symbol"], "count_path_gremlins",
        "{found}"
    );
    let gone = d.call(
        "search",
        json!({"query": "defragment the warehouse", "k": 3, "paths": ["old.py"]}),
    );
    assert_eq!(gone["result"]["results"], json!([]), "{gone}");
}

#[test]
fn a_client_of_another_user_is_refused() {
    // The home is 0700 and the socket 0600, so another user cannot even connect;
    // the daemon's peer-uid check stands behind that. Runs the real client as
    // `nobody` through setpriv (util-linux), which needs root, as CI has.
    let d = Daemon::start();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("codesearch"))
        .args(["search", "anything"])
        .env("CODESEARCH_HOME", d.home.path())
        .env_remove("CODESEARCH_SOCKET")
        .output()
        .expect("setpriv (util-linux) runs the client as nobody");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Permission denied") || stderr.contains("permission denied"),
        "{stderr}"
    );
    // The daemon is unharmed.
    assert_eq!(
        d.call("models.list", json!({}))["result"][0]["name"],
        "minilm"
    );
}

#[test]
fn indexing_progress_is_pushed_to_subscribers() {
    let corpus = ignore_corpus();
    let root = corpus.path().canonicalize().unwrap().display().to_string();
    let d = Daemon::start();

    let bad = d.call("repo.subscribe", json!({"path": 5}));
    assert_eq!(bad["error"]["code"], -32602, "{bad}");

    // One connection: subscribe first (the repository need not exist yet), then add.
    let s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut next = || {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    writeln!(
        w,
        r#"{{"jsonrpc":"2.0","id":1,"method":"repo.subscribe","params":{{"path":"{root}"}}}}"#
    )
    .unwrap();
    let subscribed = next();
    let id = subscribed["result"].clone();
    assert!(id.is_u64() || id.is_string(), "{subscribed}");
    writeln!(
        w,
        r#"{{"jsonrpc":"2.0","id":2,"method":"repo.add","params":{{"path":"{root}"}}}}"#
    )
    .unwrap();

    let mut progress = Vec::new();
    let mut added = None;
    loop {
        let v = next();
        if v["id"] == 2 {
            added = Some(v);
            continue;
        }
        assert_eq!(
            (v["method"].as_str(), &v["params"]["subscription"]),
            (Some("repo.progress"), &id),
            "{v}"
        );
        let p: codesearch_proto::RepoProgress =
            serde_json::from_value(v["params"]["result"].clone()).unwrap();
        let end = p.state != codesearch_proto::RepoState::Indexing;
        progress.push(p);
        if end {
            break;
        }
    }
    assert_eq!(added.unwrap()["result"]["state"], "indexing");
    let last = progress.last().unwrap();
    assert_eq!(
        last.state,
        codesearch_proto::RepoState::Ready,
        "{progress:#?}"
    );
    assert_eq!((last.files_total, last.files_done), (2, 2), "{progress:#?}");
    assert!(
        last.chunks_written > 50 && last.chunks_embedded > 50,
        "{last:?}"
    );
    assert!(
        progress.iter().all(|p| p.path == root)
            && progress
                .windows(2)
                .all(|w| w[0].files_done <= w[1].files_done
                    && w[0].chunks_embedded <= w[1].chunks_embedded),
        "{progress:#?}"
    );
    let listed = d.call("repo.list", json!(null));
    assert_eq!(
        listed["result"][0]["chunks"], last.chunks_written,
        "{listed}"
    );

    writeln!(
        w,
        r#"{{"jsonrpc":"2.0","id":3,"method":"repo.unsubscribe","params":[{id}]}}"#
    )
    .unwrap();
    assert_eq!(next()["result"], true);
}

/// A full re-index is built beside the live index: every search made while it
/// runs answers from the complete index, exactly as before it started.
#[test]
fn a_full_reindex_searched_throughout_never_sees_an_empty_index() {
    let corpus = crate::util::eval_corpus("click");
    let root = corpus.canonicalize().unwrap().display().to_string();
    let d = Daemon::start();
    let added = d.call("repo.add", json!({"path": root}));
    assert!(added["result"].is_object(), "{added}");
    let deadline = Instant::now() + Duration::from_secs(900);
    let chunks = loop {
        let listed = d.call("repo.list", json!(null));
        if listed["result"][0]["state"] == "ready" {
            break listed["result"][0]["chunks"].clone();
        }
        assert_ne!(listed["result"][0]["state"], "error", "{listed}");
        assert!(
            Instant::now() < deadline,
            "the first index never ended: {listed}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Disk use after a pass, every file of the index folder counted (the daemon
    // holds it open: `-wal` and `-shm` too): at most 1.0 MB per 1,000 chunks.
    let index_dir = std::fs::read_dir(d.home.path().join("indexes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes: u64 = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let per_1k = bytes as f64 / 1e6 / (chunks.as_u64().unwrap() as f64 / 1000.0);
    assert!(
        per_1k <= 1.0,
        "{per_1k:.3} MB per 1,000 chunks ({bytes} bytes, {chunks} chunks)"
    );

    let queries = [
        ("format the help text of a command", "hybrid"),
        ("ParameterSource", "lexical"),
        ("prompt the user for confirmation", "semantic"),
    ];
    let top3 = |query: &str, mode: &str| -> Vec<String> {
        let found = d.call("search", json!({"query": query, "k": 3, "mode": mode}));
        let hits = found["result"]["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: {found}"));
        hits.iter()
            .map(|h| format!("{}:{}", h["path"], h["start_line"]))
            .collect()
    };
    let before: Vec<_> = queries.iter().map(|(q, m)| top3(q, m)).collect();
    assert!(before.iter().all(|hits| hits.len() == 3), "{before:?}");

    let started = d.call("repo.reindex", json!({"path": root, "full": true}));
    assert_eq!(started["result"]["state"], "indexing", "{started}");
    let (mut during, mut rounds) = (0, 0);
    loop {
        let listed = d.call("repo.list", json!(null));
        let state = listed["result"][0]["state"].clone();
        for ((query, mode), want) in queries.iter().zip(&before) {
            assert_eq!(&top3(query, mode), want, "{query} during the re-index");
        }
        rounds += 1;
        if state == "indexing" {
            during += 1;
        } else {
            assert_eq!(state, "ready", "{listed}");
            assert_eq!(listed["result"][0]["chunks"], chunks, "{listed}");
            break;
        }
        assert!(rounds < 100_000, "the re-index never ended");
    }
    assert!(during > 0, "no search ran while the index was rebuilt");

    // One writer: overlapping passes, full and incremental, run one at a time
    // and all end on the same complete index.
    std::thread::scope(|scope| {
        let runs: Vec<_> = [true, false, true, false]
            .into_iter()
            .map(|full| {
                let (d, root) = (&d, &root);
                scope.spawn(move || {
                    d.call(
                        "repo.reindex",
                        json!({"path": root, "full": full, "wait": true}),
                    )
                })
            })
            .collect();
        for run in runs {
            let done = run.join().unwrap();
            assert_eq!(
                (&done["result"]["state"], &done["result"]["chunks"]),
                (&json!("ready"), &chunks),
                "{done}"
            );
        }
    });
    for ((query, mode), want) in queries.iter().zip(&before) {
        assert_eq!(&top3(query, mode), want, "{query} after the re-indexes");
    }
    // The rebuild replaced the index folder whole; nothing is left beside it.
    let indexes = d.home.path().join("indexes");
    let names: Vec<_> = std::fs::read_dir(&indexes)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}
