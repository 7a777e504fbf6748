//! The `codesearch` client end to end: it starts the daemon itself, indexes a real
//! corpus, searches it in every output format, and exits like grep.

use std::process::Command;

use codesearch_proto::Hit;

use crate::util::{Home, ignore_corpus, text};

#[test]
fn index_then_search_like_grep() {
    let corpus = ignore_corpus();
    let root = corpus.path().to_str().unwrap();
    let home = Home::new();

    // The first command starts the daemon, with its log in the home.
    let o = home.run(&["index", root]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ready  2 files"),
        "{}",
        text(&o)
    );
    assert!(home.dir.path().join("logs/codesearchd.log").is_file());

    // Indexing again after an edit picks the edit up; flags that only shape a
    // starting daemon say that they do not apply to the running one.
    let added = "\n/// Rotates the audit journal once it exceeds its quota.\npub fn rotate_audit_journal(quota: u64) -> bool {\n    quota > 0\n}\n";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(corpus.path().join("src/pathutil.rs"))
        .unwrap();
    std::io::Write::write_all(&mut f, added.as_bytes()).unwrap();
    drop(f);
    let o = home.run(&["index", root, "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already running"),
        "{}",
        text(&o)
    );
    let o = home.run(&["search", "rotate the audit journal", "-k", "1", "--json"]);
    let hit: Hit =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(
        hit.symbol.as_deref(),
        Some("rotate_audit_journal"),
        "{hit:?}"
    );

    let o = home.run(&[
        "search",
        "expand a leading tilde to the home directory",
        "-k",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("src/gitignore.rs:") && out.contains("expand_tilde"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no color when not a terminal");

    let o = home.run(&[
        "search",
        "expand a leading tilde to the home directory",
        "-k",
        "3",
        "--json",
    ]);
    let hits: Vec<Hit> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hits.len(), 3, "{}", text(&o));
    assert!(
        hits.iter()
            .any(|h| h.symbol.as_deref() == Some("expand_tilde")),
        "{hits:#?}"
    );

    let o = home.run(&["search", "tilde", "-k", "2", "--vimgrep"]);
    let first = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    let parts: Vec<&str> = first.splitn(4, ':').collect();
    assert!(
        parts.len() == 4 && parts[1].parse::<u32>().is_ok() && parts[2] == "1",
        "{first}"
    );

    // Whole hits packed into a token budget (3 bytes a token, as documented),
    // grouped by file, in text and in JSON; with context lines around them.
    let query = "expand a leading tilde to the home directory";
    for budget in [120usize, 400, 2000] {
        let args = [
            "search",
            query,
            "-k",
            "8",
            "--max-tokens",
            &budget.to_string(),
        ];
        let o = home.run(&args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            out.len().div_ceil(3) <= budget,
            "{budget}: {} bytes\n{out}",
            out.len()
        );
        assert_eq!(o.status.code(), Some(0), "{budget}: {}", text(&o));
        assert!(
            out.contains("src/gitignore.rs") && out.contains("@@ "),
            "{out}"
        );
        let mut json_args = args.to_vec();
        json_args.push("--json");
        let o = home.run(&json_args);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(out.len().div_ceil(3) <= budget, "{budget}: {out}");
        let files: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert!(
            !files.is_empty() && files.iter().all(|f| f["spans"].is_array()),
            "{out}"
        );
        let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
        let mut unique = paths.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(paths.len(), unique.len(), "one entry per file: {paths:?}");
    }
    // A large budget holds the hits about expand_tilde whole, as on disk.
    let o = home.run(&["search", query, "-k", "3", "--max-tokens", "4000", "--json"]);
    let source = std::fs::read_to_string(corpus.path().join("src/gitignore.rs")).unwrap();
    let span = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .flat_map(|f| f["spans"].as_array().cloned().unwrap_or_default())
        .find(|s| s["symbols"].to_string().contains("expand_tilde"))
        .unwrap_or_else(|| panic!("{}", text(&o)));
    assert!(source.contains(span["text"].as_str().unwrap()), "{span}");
    assert_eq!(span["cut"], false);
    // Too small for anything: exit 1 and say what to do.
    let o = home.run(&["search", query, "--max-tokens", "3"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("raise --max-tokens"),
        "{}",
        text(&o)
    );
    // grep's -C: two more lines each side of the best hit.
    let o = home.run(&["search", query, "-k", "1", "-C", "2", "--json"]);
    let file: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o1 = home.run(&["search", query, "-k", "1", "--json"]);
    let hit: Hit = serde_json::from_slice(&o1.stdout).unwrap();
    assert_eq!(
        file["spans"][0]["start_line"],
        hit.start_line.saturating_sub(2).max(1)
    );

    // Nothing found: 1. An error: 2, with a message that says what to do.
    let o = home.run(&["search", "tilde", "--lang", "cobol"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = home.run(&["search", "tilde", "--repo", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("codesearch index /nonexistent"),
        "{}",
        text(&o)
    );

    let o = home.run(&["list"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("ready"),
        "{}",
        text(&o)
    );
    let o = home.run(&["daemon", "status"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("model minilm on cpu"),
        "{}",
        text(&o)
    );
    let o = home.run(&["daemon", "stop"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = home.run(&["daemon", "status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn the_client_never_links_the_model_stack() {
    let o = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "codesearch",
            "-e",
            "normal,build",
            "-i",
            "candle-core",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.trim().is_empty(),
        "the client depends on candle-core:\n{stdout}"
    );
}
