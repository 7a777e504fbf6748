//! The live index: the real daemon and model follow edits on disk, with no
//! `repo.reindex`. Every wait polls with a deadline; none sleeps a fixed time.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::util::ignore_corpus;

/// Polls `f` every 50 ms until it returns `Some`, failing after `limit`.
fn within<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hits(d: &Daemon, query: &str, paths: &[&str]) -> Vec<codesearch_proto::Hit> {
    let mut params = json!({"query": query, "k": 5});
    if !paths.is_empty() {
        params["paths"] = json!(paths);
    }
    let v = d.call("search", params);
    serde_json::from_value(v["result"]["results"].clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

fn status(d: &Daemon) -> Value {
    d.call("repo.list", json!(null))["result"][0].clone()
}

#[test]
fn edits_deletes_renames_new_folders_and_ignore_rules_reach_the_index() {
    let corpus = ignore_corpus();
    let src = corpus.path().join("src");
    let root = corpus.path().canonicalize().unwrap();
    let d = Daemon::start();
    let added = d.call("repo.add", json!({"path": root, "wait": true}));
    assert_eq!(added["result"]["state"], "ready", "{added}");
    assert_eq!(status(&d)["watching"], true, "{}", status(&d));

    // Edit a function: the new text is found, the old one is gone, within 3 s.
    let file = src.join("gitignore.rs");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("fn expand_tilde("));
    std::fs::write(
        &file,
        text.replace("fn expand_tilde(", "fn expand_leading_home_marker(")
            .replace("expand_tilde(", "expand_leading_home_marker("),
    )
    .unwrap();
    let (found, took) = within(Duration::from_secs(3), "the edit is searchable", || {
        let h = hits(
            &d,
            "expand a leading tilde to the home directory",
            &["src/gitignore.rs"],
        );
        let symbols: Vec<_> = h.iter().filter_map(|h| h.symbol.clone()).collect();
        (symbols.iter().any(|s| s == "expand_leading_home_marker")
            && !symbols.iter().any(|s| s == "expand_tilde"))
        .then_some(symbols)
    });
    eprintln!("edit searchable after {took:?}: {found:?}");

    // Delete a file: its hits disappear.
    std::fs::remove_file(src.join("pathutil.rs")).unwrap();
    within(
        Duration::from_secs(10),
        "the deleted file leaves the results",
        || {
            hits(&d, "is this file hidden", &["src/pathutil.rs"])
                .is_empty()
                .then_some(())
        },
    );

    // Rename a file: hits move, and nothing is embedded.
    let embedded = status(&d)["chunks_embedded"].as_u64().unwrap();
    std::fs::rename(&file, src.join("ignore_rules.rs")).unwrap();
    within(
        Duration::from_secs(10),
        "the hits move with the file",
        || {
            (hits(&d, "expand a leading tilde", &["src/gitignore.rs"]).is_empty()
                && !hits(&d, "expand a leading tilde", &["src/ignore_rules.rs"]).is_empty())
            .then_some(())
        },
    );
    assert_eq!(
        status(&d)["chunks_embedded"],
        embedded,
        "a rename embedded chunks"
    );

    // A new folder with a file in it is found.
    let deep = root.join("audit/journal");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        deep.join("rotate.py"),
        "def rotate_audit_journal(path, quota):\n    \"\"\"Rotate the audit journal once it grows past its quota.\"\"\"\n    return path.stat().st_size > quota\n",
    )
    .unwrap();
    within(
        Duration::from_secs(10),
        "the new folder's file is found",
        || {
            let h = hits(&d, "rotate the audit journal when it is too big", &[]);
            (h.first().map(|h| h.path.as_str()) == Some("audit/journal/rotate.py")).then_some(())
        },
    );

    // A pattern added to .gitignore takes those files out.
    std::fs::write(root.join(".gitignore"), "audit/\n").unwrap();
    within(
        Duration::from_secs(10),
        "ignored files leave the index",
        || {
            hits(&d, "rotate the audit journal", &["audit/**"])
                .is_empty()
                .then_some(())
        },
    );

    // The root disappearing is an error on that repository; the daemon goes on.
    drop(corpus);
    let (s, _) = within(
        Duration::from_secs(10),
        "a vanished root is an error",
        || {
            let s = status(&d);
            (s["state"] == "error").then_some(s)
        },
    );
    assert!(
        s["error"]
            .as_str()
            .unwrap_or("")
            .contains(&*root.to_string_lossy()),
        "{s}"
    );
    assert!(d.call("models.list", json!(null))["result"].is_array());
}

/// The `(path, blake3)` rows of the repository's index, read beside the daemon.
fn indexed_hashes(home: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = std::fs::read_dir(home.join("indexes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let db = rusqlite::Connection::open_with_flags(
        dir.join("index.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare("SELECT path, hash FROM files WHERE skip IS NULL ORDER BY path")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// 2,000 small files in 20 folders; `variant` changes every file.
fn tree(variant: &str) -> Vec<(String, String)> {
    (0..2000)
        .map(|i| {
            (
                format!("pkg{:02}/handler_{i:04}.rs", i % 20),
                format!(
                    "/// Handles request kind {i} ({variant}).\npub fn handle_{i}_{variant}(x: u64) -> u64 {{\n    x * {i} + {}\n}}\n",
                    variant.len()
                ),
            )
        })
        .collect()
}

fn expected(files: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = files
        .iter()
        .map(|(p, t)| (p.clone(), blake3::hash(t.as_bytes()).as_bytes().to_vec()))
        .collect();
    v.sort();
    v
}

fn write_tree(root: &Path, files: &[(String, String)]) {
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

#[test]
fn a_storm_of_two_thousand_rewrites_converges_and_switching_back_embeds_nothing() {
    let corpus = tempfile::tempdir().unwrap();
    let root = corpus.path().canonicalize().unwrap();
    let (a, b) = (tree("alpha"), tree("beta"));
    write_tree(&root, &a);
    let d = Daemon::start();
    let added = d.call("repo.add", json!({"path": root, "wait": true}));
    assert_eq!(added["result"]["chunks"], 2000, "{added}");
    assert_eq!(indexed_hashes(d.home.path()), expected(&a));

    // "Switch branches": every file rewritten at once.
    write_tree(&root, &b);
    let converged = |want: &[(String, String)]| {
        let want = expected(want);
        within(Duration::from_secs(180), "every file converges", || {
            let s = status(&d);
            (s["state"] == "ready"
                && s["changes_pending"] == 0
                && indexed_hashes(d.home.path()) == want)
                .then_some(s)
        })
        .0
    };
    let s = converged(&b);
    assert_eq!(
        (s["files"].as_u64(), s["chunks"].as_u64()),
        (Some(2000), Some(2000)),
        "{s}"
    );
    let embedded = s["chunks_embedded"].as_u64().unwrap();
    assert!(embedded >= 4000, "both trees embedded once: {s}");

    // And back: every vector is cached, so nothing is embedded.
    write_tree(&root, &a);
    let s = converged(&a);
    assert_eq!(
        (s["files"].as_u64(), s["chunks"].as_u64()),
        (Some(2000), Some(2000)),
        "{s}"
    );
    assert_eq!(s["chunks_embedded"].as_u64(), Some(embedded), "{s}");
}
