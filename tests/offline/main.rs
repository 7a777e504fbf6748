//! The offline tier: the daemon in this process, serving a temporary socket,
//! on a deterministic embedder (`embed::hash`) instead of the model; real
//! files, real SQLite, a real socket, the real file watcher. A plain
//! `cargo test` runs it with no model in the cache and no corpora fetched.
//!
//! What only the model can tell (ranking quality, the engine against
//! sentence-transformers) is in the real-model tier (`tests/it`, feature `real`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use codesearchd::chunk::Chunker;
use codesearchd::config::{self, Overrides};
use codesearchd::embed::hash::HashEmbedder;
use codesearchd::service::Service;
use serde_json::{Value, json};

/// A daemon in a thread of this process, on a socket in a temp home; shut
/// down and joined on drop.
struct Daemon {
    home: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Daemon {
    fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap())
    }

    /// A daemon on `home`, which may hold a `config.yaml` and a `repos.json`.
    fn start_in(home: tempfile::TempDir) -> Self {
        let socket = home.path().join("codesearchd.sock");
        let vars = [
            ("CODESEARCH_HOME", home.path().display().to_string()),
            ("HOME", home.path().display().to_string()),
        ];
        let config = config::resolve_with(
            &|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.embedding.model, "minilm");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let path = socket.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let service = Service::new(config, Chunker::new().map_err(|e| e.to_string())?);
                // The default model's name, so indexes and searches take it.
                service
                    .preload(Box::new(HashEmbedder::new("minilm", 384)))
                    .map_err(|e| e.to_string())?;
                let listener = tokio::net::UnixListener::bind(&path).map_err(|e| e.to_string())?;
                ready_tx.send(()).map_err(|e| e.to_string())?;
                codesearchd::server::serve(
                    listener,
                    Arc::new(service),
                    async {
                        let _ = stopped.await;
                    },
                    Some(path),
                )
                .await
                .map_err(|e| e.to_string())
            })
        });
        ready
            .recv_timeout(Duration::from_secs(30))
            .expect("the daemon did not start");
        Self {
            home,
            socket,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// One request, its answer.
    fn call(&self, method: &str, params: Value) -> Value {
        let line = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        self.raw(&format!("{line}\n")).pop().unwrap()
    }

    /// Writes `text` on one connection and reads an answer per line sent.
    fn raw(&self, text: &str) -> Vec<Value> {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s.write_all(text.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        (0..text.lines().count())
            .map(|_| {
                let mut answer = String::new();
                reader.read_line(&mut answer).unwrap();
                serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
            })
            .collect()
    }

    /// The files of the hits of `query` in `root`, best first.
    fn search(&self, root: &Path, query: &str) -> Vec<String> {
        let answer = self.call(
            "search",
            json!({"query": query, "k": 5, "repos": [root.display().to_string()]}),
        );
        answer["result"]["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"))
            .iter()
            .map(|h| h["path"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take()
            && !std::thread::panicking()
        {
            thread.join().unwrap().unwrap();
        }
    }
}

/// A small repository of real-looking code in three languages.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        (
            "src/config.rs",
            "/// Reads the settings file and fills in defaults.\npub fn load_settings(path: &str) -> Settings {\n    let text = std::fs::read_to_string(path).unwrap_or_default();\n    parse_settings(&text)\n}\n\nfn parse_settings(text: &str) -> Settings {\n    Settings { verbose: text.contains(\"verbose\") }\n}\n\npub struct Settings {\n    pub verbose: bool,\n}\n",
        ),
        (
            "lib/retry.py",
            "import time\n\n\ndef retry_with_backoff(call, attempts=5):\n    \"\"\"Calls `call` until it succeeds, sleeping longer after each failure.\"\"\"\n    delay = 0.5\n    for _ in range(attempts):\n        try:\n            return call()\n        except IOError:\n            time.sleep(delay)\n            delay *= 2\n    raise RuntimeError(\"gave up\")\n",
        ),
        (
            "web/render.ts",
            "export function renderWidget(el: HTMLElement, label: string): void {\n  const button = document.createElement('button');\n  button.textContent = label;\n  el.appendChild(button);\n}\n",
        ),
    ];
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn indexes_searches_and_follows_edits_over_the_socket() {
    let d = Daemon::start();
    let repo = repository();
    let root = repo.path().canonicalize().unwrap();
    let added = d.call(
        "repo.add",
        json!({"path": root.display().to_string(), "wait": true}),
    );
    assert_eq!(added["result"]["state"], "ready", "{added}");
    assert_eq!(added["result"]["files"], 3, "{added}");
    assert_eq!(added["result"]["model"], "minilm");

    assert_eq!(d.search(&root, "retry with backoff")[0], "lib/retry.py");
    assert_eq!(
        d.search(&root, "load the settings file")[0],
        "src/config.rs"
    );
    assert_eq!(
        d.search(&root, "render a widget button")[0],
        "web/render.ts"
    );

    // An edit is picked up by the watcher, a deletion too.
    std::fs::write(
        root.join("src/cache.rs"),
        "/// Evicts the least recently used entry.\npub fn evict_least_recently_used(cache: &mut Vec<u64>) {\n    cache.remove(0);\n}\n",
    )
    .unwrap();
    wait_until("a new file is indexed", Duration::from_secs(30), || {
        d.search(&root, "evict least recently used")
            .first()
            .map(String::as_str)
            == Some("src/cache.rs")
    });
    std::fs::remove_file(root.join("web/render.ts")).unwrap();
    wait_until(
        "a deleted file leaves the index",
        Duration::from_secs(30),
        || {
            !d.search(&root, "render widget button")
                .contains(&"web/render.ts".to_owned())
        },
    );
    let list = d.call("repo.list", json!({}));
    assert_eq!(list["result"][0]["files"], 3, "{list}");
}

#[test]
fn bad_requests_get_their_error_codes_and_the_connection_keeps_serving() {
    let d = Daemon::start();
    let answers = d.raw(concat!(
        "{not json\n",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"no.such.method\"}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"search\",\"params\":{\"query\":\"x\",\"k\":0}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"repo.add\",\"params\":{\"path\":\"relative/path\"}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"search\",\"params\":{\"query\":\"x\",\"repos\":[\"/no/such/repo\"]}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"daemon.status\"}\n",
    ));
    let codes: Vec<i64> = answers[..5]
        .iter()
        .map(|a| a["error"]["code"].as_i64().unwrap_or_else(|| panic!("{a}")))
        .collect();
    assert_eq!(codes, [-32700, -32601, -32602, -32003, -32001]);
    let status = &answers[5]["result"];
    assert_eq!(status["models"][0]["name"], "minilm", "{status}");
    assert_eq!(
        status["protocol_version"],
        codesearch_proto::PROTOCOL_VERSION
    );
    assert!(
        answers[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an absolute path")
    );
    // The home holds the socket while serving; it is gone after shutdown.
    assert!(d.home.path().join("codesearchd.sock").exists());
}

#[test]
fn daemon_shutdown_stops_serving_and_removes_the_socket() {
    let mut d = Daemon::start();
    let answer = d.call("daemon.shutdown", json!({}));
    assert!(answer.get("error").is_none(), "{answer}");
    let started = Instant::now();
    d.thread.take().unwrap().join().unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(!d.socket.exists(), "the socket is left behind");
}

#[test]
fn a_repository_whose_model_cannot_load_at_start_stays_registered() {
    let home = tempfile::tempdir().unwrap();
    // A remote model whose key variable is never set: it cannot load, with no network.
    std::fs::write(
        home.path().join("config.yaml"),
        "remote:\n  broken:\n    api: openai\n    base_url: http://127.0.0.1:9/v1\n    model: m\n    dimensions: 8\n    api_key_env: CODESEARCH_TEST_KEY_NEVER_SET\n",
    )
    .unwrap();
    let stuck = repository();
    let stuck_root = stuck.path().canonicalize().unwrap();
    let entry = json!([{"path": stuck_root, "model": "broken"}]);
    std::fs::write(home.path().join("repos.json"), entry.to_string()).unwrap();
    let d = Daemon::start_in(home);
    let listed = |d: &Daemon| -> Vec<String> {
        let text = std::fs::read_to_string(d.home.path().join("repos.json")).unwrap();
        let list: Value = serde_json::from_str(&text).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_owned())
            .collect()
    };
    // Another repository is added: repos.json is written again, and keeps
    // the one that could not be opened.
    let other = repository();
    let other_root = other.path().canonicalize().unwrap();
    let added = d.call(
        "repo.add",
        json!({"path": other_root.display().to_string(), "wait": true}),
    );
    assert_eq!(added["result"]["state"], "ready", "{added}");
    // repo.list shows it, with the reason and the fix.
    let list = d.call("repo.list", json!({}));
    let row = list["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == stuck_root.display().to_string())
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(row["state"], "error", "{row}");
    let why = row["error"].as_str().unwrap();
    assert!(
        why.contains("CODESEARCH_TEST_KEY_NEVER_SET") && why.contains("codesearch remove"),
        "{why}"
    );
    let mut paths = listed(&d);
    paths.sort();
    let mut want = vec![
        stuck_root.display().to_string(),
        other_root.display().to_string(),
    ];
    want.sort();
    assert_eq!(paths, want);
    // Removing it settles it.
    let removed = d.call(
        "repo.remove",
        json!({"path": stuck_root.display().to_string()}),
    );
    assert!(removed.get("error").is_none(), "{removed}");
    assert_eq!(listed(&d), [other_root.display().to_string()]);
    assert_eq!(
        d.call("repo.list", json!({}))["result"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let again = d.call(
        "repo.remove",
        json!({"path": stuck_root.display().to_string()}),
    );
    assert_eq!(again["error"]["code"], -32001, "{again}");
}
