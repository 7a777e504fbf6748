//! `codesearch mcp` driven by a real MCP client: the official SDK for Python
//! (`mcp` from PyPI, in the venv `scripts/fetch-test-corpora.sh` makes), on a
//! real corpus (Go's pkg/errors from Debian) and the real model. The client's
//! checks are in `tests/mcp/agent.py`; each scenario is one run of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Home, bin, pkg_errors_corpus, text};

const QUERY: &str = "wrap an error with a message and a stack trace";
const EXPECT: &str = "errors.go";

/// The venv's python, with the SDK in it.
fn python() -> PathBuf {
    let python = std::env::var_os("CODESEARCH_TEST_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-tools/mcp/bin/python")
        });
    assert!(
        python.is_file(),
        "{} is missing: run scripts/fetch-test-corpora.sh (it installs the MCP SDK for Python)",
        python.display()
    );
    python
}

fn scenario(name: &str, home: &Home, corpus: &Path, alone: &Path) {
    let o = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mcp/agent.py"))
        .arg(name)
        .env("CODESEARCH_TEST_BIN", bin("codesearch"))
        .env("CODESEARCH_TEST_ALONE", alone)
        .env("CODESEARCH_TEST_CORPUS", corpus.canonicalize().unwrap())
        .env("CODESEARCH_TEST_QUERY", QUERY)
        .env("CODESEARCH_TEST_EXPECT", EXPECT)
        .env("CODESEARCH_HOME", home.dir.path())
        .env_remove("CODESEARCH_SOCKET")
        .env("CODESEARCH_EMBEDDING_DEVICE", "cpu")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let log =
        std::fs::read_to_string(home.dir.path().join("logs/codesearchd.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert!(
        o.status.success(),
        "scenario {name}: {}\ndaemon log (tail):\n{}",
        text(&o),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn agents_search_through_the_official_mcp_sdk() {
    let corpus = pkg_errors_corpus();
    let home = Home::new();
    // `codesearch` alone in a folder: a bridge that cannot start the daemon.
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = alone_dir.path().join("codesearch");
    std::fs::copy(bin("codesearch"), &alone).unwrap();

    // initialize, tools/list, index, a search that finds the answer, budgets
    // kept, bad arguments refused while the bridge keeps serving.
    scenario("basics", &home, corpus.path(), &alone);
    // Four sessions at once: one daemon, one model.
    scenario("sessions", &home, corpus.path(), &alone);
    // The daemon stopped mid-session: a clear error, then it comes back.
    scenario("restart", &home, corpus.path(), &alone);
}
