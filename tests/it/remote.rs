//! The `openai` remote embedder against a real OpenAI-compatible server:
//! infinity-emb (PyPI, in the venv `scripts/fetch-test-corpora.sh` makes)
//! serving the local all-MiniLM-L6-v2 folder, behind a proxy
//! (`tests/remote/flaky_proxy.py`) that answers the first requests with 429.
//! The same corpus indexed with the local engine must give the same top hits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codesearchd::embed::{ModelLocator, registry};
use serde_json::Value;

use crate::util::{Home, pkg_errors_corpus, text};

const MODEL: &str = "infinity-minilm";
/// Requests the proxy answers 429 before it forwards any.
const BUSY: u64 = 2;
const QUERIES: &[&str] = &[
    "wrap an error with a message and a stack trace",
    "find the underlying cause of an error",
    "format a stack frame for printing",
    "annotate an error with context but no stack",
];

/// A child process killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn infinity_bin() -> PathBuf {
    let bin = std::env::var_os("CODESEARCH_TEST_INFINITY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/test-tools/infinity/bin/infinity_emb")
        });
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/fetch-test-corpora.sh (it installs infinity-emb)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on a local port: the status and body, or `None` if nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn wait_for(what: &str, child: &mut Child, within: Duration, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before it was ready: {status}");
        }
        assert!(
            started.elapsed() < within,
            "{what} not ready within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// infinity serving the MiniLM folder of the Hugging Face cache on `port`.
fn start_infinity(port: u16, log: &Path) -> Server {
    let spec = registry::lookup("minilm").unwrap();
    let folder = ModelLocator::from_env()
        .find_local(spec, None)
        .expect("all-MiniLM-L6-v2 is not in the Hugging Face cache: run scripts/fetch-model.sh");
    let log = std::fs::File::create(log).unwrap();
    let mut child = Command::new(infinity_bin())
        .args([
            "v2",
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--url-prefix",
            "/v1",
        ])
        .arg("--model-id")
        .arg(&folder)
        .args(["--served-model-name", "all-MiniLM-L6-v2", "--port"])
        .arg(port.to_string())
        .env("HF_HUB_OFFLINE", "1")
        .env("INFINITY_ANONYMOUS_USAGE_STATS", "0")
        .env("DO_NOT_TRACK", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for("infinity", &mut child, Duration::from_secs(300), || {
        http_get(port, "/v1/models").is_some_and(|(s, _)| s == 200)
    });
    Server(child)
}

/// The 429-then-forward proxy in front of `upstream`; its port.
fn start_proxy(upstream: &str, dir: &Path) -> (Server, u16) {
    let port_file = dir.join("proxy.port");
    let mut child = Command::new("python3")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("remote/flaky_proxy.py"))
        .arg(&port_file)
        .arg(upstream)
        .arg(BUSY.to_string())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the proxy", &mut child, Duration::from_secs(30), || {
        port_file.is_file()
    });
    let port = std::fs::read_to_string(&port_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (Server(child), port)
}

/// The top three hits of `query` as (file, first line).
fn top_hits(home: &Home, corpus: &Path, query: &str) -> Vec<(String, u64)> {
    let o = home.run(&[
        "search",
        "--json",
        "-k",
        "3",
        "--repo",
        &corpus.display().to_string(),
        query,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let hit: Value = serde_json::from_str(l).unwrap();
            (
                hit["path"].as_str().unwrap().to_owned(),
                hit["start_line"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn chunks(home: &Home) -> u64 {
    let o = home.run(&["list", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    list[0]["chunks"].as_u64().unwrap()
}

#[test]
fn an_openai_compatible_server_indexes_and_searches_like_the_local_model() {
    let scratch = tempfile::tempdir().unwrap();
    let infinity_port = free_port();
    let mut infinity = Some(start_infinity(
        infinity_port,
        &scratch.path().join("infinity.log"),
    ));
    let (proxy, proxy_port) = start_proxy(
        &format!("http://127.0.0.1:{infinity_port}/v1"),
        scratch.path(),
    );
    let mut proxy = Some(proxy);
    let corpus = pkg_errors_corpus();
    let root = corpus.path().canonicalize().unwrap();
    let root_arg = root.display().to_string();

    let local = Home::new();
    let o = local.run(&["index", &root_arg]);
    assert!(o.status.success(), "{}", text(&o));

    let remote = Home::new();
    std::fs::write(
        remote.dir.path().join("config.yaml"),
        format!(
            "remote:\n  {MODEL}:\n    api: openai\n    base_url: http://127.0.0.1:{proxy_port}/v1\n    model: all-MiniLM-L6-v2\n    batch_size: 8\n    concurrency: 2\n    max_retries: 4\n    max_tokens: 256\n"
        ),
    )
    .unwrap();
    let o = remote.run(&["index", &root_arg, "--model", MODEL]);
    assert!(o.status.success(), "{}", text(&o));
    let (_, stats) = http_get(proxy_port, "/stats").unwrap();
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["busy"], BUSY, "the 429s were answered: {stats}");
    assert!(stats["forwarded"].as_u64().unwrap() >= 2, "{stats}");

    let models = remote.run(&["models"]);
    let listing = String::from_utf8_lossy(&models.stdout);
    let row = listing
        .lines()
        .find(|l| l.starts_with(MODEL))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        row.contains("384")
            && row.contains("remote")
            && row.contains(&format!("127.0.0.1:{proxy_port}")),
        "{row}"
    );

    for query in QUERIES {
        let want = top_hits(&local, &root, query);
        assert_eq!(want.len(), 3, "{query}");
        assert_eq!(top_hits(&remote, &root, query), want, "{query}");
    }

    // The server dies; an edit is indexed. The pass fails with a message
    // that names the model and says why, and the index keeps what it had.
    let before = chunks(&remote);
    drop(infinity.take());
    drop(proxy.take());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("errors.go"))
        .unwrap();
    f.write_all(b"\n// Gremlins counts the gremlins in a message.\nfunc Gremlins(msg string) int { return len(msg) }\n")
        .unwrap();
    drop(f);
    let o = remote.run(&["index", &root_arg]);
    let said = text(&o);
    assert!(!o.status.success(), "{said}");
    assert!(
        said.contains(MODEL) && said.contains("cannot reach the server"),
        "{said}"
    );
    assert_eq!(chunks(&remote), before, "the index lost chunks");
    let o = remote.run(&[
        "search",
        "--mode",
        "lexical",
        "--json",
        "--repo",
        &root_arg,
        "WithStack",
    ]);
    assert!(o.status.success() && !o.stdout.is_empty(), "{}", text(&o));
    let o = remote.run(&["search", "--repo", &root_arg, "wrap an error"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(MODEL) && text(&o).contains(&format!("127.0.0.1:{proxy_port}")),
        "{}",
        text(&o)
    );
}
