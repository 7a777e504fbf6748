//! docs/ARCHITECTURE.md's layout invariants, checked on the sources and on the
//! dependency graph, so a change that breaks one fails here.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, with its code lines (comments left out).
fn sources(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text
                    .lines()
                    .map(str::trim_start)
                    .filter(|l| !l.starts_with("//"))
                    .map(str::to_owned)
                    .collect();
                out.push((path, code));
            }
        }
    }
    assert!(!out.is_empty(), "no sources under {}", dir.display());
    out
}

/// The files and lines under `dir` (minus `except`) that contain any of `needles`.
fn offenders(dir: &str, except: &[&str], needles: &[&str]) -> Vec<String> {
    let root = workspace().join(dir);
    let mut found = Vec::new();
    for (path, lines) in sources(&root) {
        let rel = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if except.iter().any(|e| rel.starts_with(e)) {
            continue;
        }
        for l in lines {
            if needles.iter().any(|n| l.contains(n)) {
                found.push(format!("{dir}/{rel}: {l}"));
            }
        }
    }
    found
}

/// The packages `package` depends on (normal and build edges), by name.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            package,
            "-e",
            "normal,build",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(names.iter().any(|n| n == package), "{text}");
    names
}

#[test]
fn proto_knows_nothing_of_the_runtime_the_model_or_the_index() {
    let deps = dependencies("codesearch-proto");
    for heavy in ["tokio", "candle-core", "usearch", "tree-sitter", "rusqlite"] {
        assert!(
            !deps.iter().any(|d| d == heavy),
            "codesearch-proto depends on {heavy}"
        );
    }
}

#[test]
fn the_client_never_links_the_model_stack() {
    let deps = dependencies("codesearch");
    assert!(deps.iter().any(|d| d == "codesearch-proto"), "{deps:?}");
    for heavy in ["candle-core", "tokenizers", "hf-hub", "usearch"] {
        assert!(
            !deps.iter().any(|d| d == heavy),
            "the client depends on {heavy}"
        );
    }
}

#[test]
fn only_embed_touches_candle() {
    let found = offenders(
        "daemon/src",
        &["embed/"],
        &["candle_core", "candle_nn", "use candle"],
    );
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn the_pipeline_stages_never_depend_on_the_protocol() {
    for stage in [
        "walk.rs",
        "chunk",
        "store",
        "index.rs",
        "search",
        "lexical.rs",
    ] {
        let dir = workspace().join("daemon/src").join(stage);
        let files = if dir.is_dir() {
            sources(&dir)
        } else {
            let text = std::fs::read_to_string(&dir).unwrap();
            vec![(dir.clone(), text.lines().map(str::to_owned).collect())]
        };
        for (path, lines) in files {
            let bad: Vec<_> = lines
                .iter()
                .filter(|l| l.contains("codesearch_proto"))
                .collect();
            assert!(bad.is_empty(), "{}: {bad:?}", path.display());
        }
    }
}

/// Whether `line` holds a JSON-RPC error code as a literal (`-32xxx`).
fn has_code_literal(line: &str) -> bool {
    let b = line.as_bytes();
    (0..b.len().saturating_sub(5)).any(|i| {
        b[i] == b'-'
            && (i == 0 || !b[i - 1].is_ascii_digit())
            && b[i + 1..i + 6].iter().all(u8::is_ascii_digit)
            && b[i + 1..i + 3] == *b"32"
            && b.get(i + 6).is_none_or(|c| !c.is_ascii_digit())
    })
}

#[test]
fn only_rpc_picks_error_codes() {
    assert!(has_code_literal(r#"{"code":-32600}"#) && !has_code_literal("32-32 enum"));
    let root = workspace().join("daemon/src");
    let mut found = offenders("daemon/src", &["rpc/"], &["code::"]);
    for (path, lines) in sources(&root) {
        if path.starts_with(root.join("rpc")) {
            continue;
        }
        found.extend(
            lines
                .iter()
                .filter(|l| has_code_literal(l))
                .map(|l| format!("{}: {l}", path.display())),
        );
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn chunk_is_pure() {
    let found = offenders(
        "daemon/src/chunk",
        &["tests.rs"],
        &[
            "std::fs",
            "File::",
            "tokio",
            "std::net",
            "std::process",
            "rusqlite",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
}
