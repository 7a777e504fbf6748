//! `codesearch benchmark` end to end on a slice of the public eval: the real
//! client, a daemon it starts, the real model, click's sources and five of the
//! eval's hand-written queries. The full run is a benchmark (docs/BENCHMARKS.md).

use std::path::Path;

use codesearch_proto::benchmark::Metrics;

use crate::util::{Home, eval_corpus, shared_dir, text};

/// Queries of `../shared/eval/queries.jsonl` whose targets are in `src/click`.
const SLICE: &[&str] = &[
    "click-002",
    "click-003",
    "click-009",
    "click-011",
    "click-022",
];

/// The slice's target files and two others of click's sources, under the paths
/// the queries name.
fn click_sources() -> tempfile::TempDir {
    let repo = tempfile::Builder::new().prefix("click").tempdir().unwrap();
    let from = eval_corpus("click").join("src/click");
    let to = repo.path().join("src/click");
    std::fs::create_dir_all(&to).unwrap();
    for file in FILES {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    repo
}

const FILES: &[&str] = &[
    "_termui_impl.py",
    "core.py",
    "parser.py",
    "utils.py",
    "exceptions.py",
];

/// The slice as a queries file, without the `corpus` field (one repository).
fn slice_file(dir: &Path) -> std::path::PathBuf {
    let all = std::fs::read_to_string(shared_dir().join("eval/queries.jsonl")).unwrap();
    let mut out = String::new();
    for line in all.lines().filter(|l| !l.trim().is_empty()) {
        let mut q: serde_json::Value = serde_json::from_str(line).unwrap();
        if SLICE.contains(&q["id"].as_str().unwrap()) {
            q.as_object_mut().unwrap().remove("corpus");
            out.push_str(&q.to_string());
            out.push('\n');
        }
    }
    assert_eq!(out.lines().count(), SLICE.len());
    let path = dir.join("slice.jsonl");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn benchmark_answers_a_slice_of_the_public_eval() {
    let repo = click_sources();
    let work = tempfile::tempdir().unwrap();
    let queries = slice_file(work.path());
    let results = work.path().join("results.jsonl");
    let home = Home::new();
    let root = repo.path().to_str().unwrap();

    let o = home.run(&[
        "benchmark",
        "--repo",
        root,
        "--queries",
        queries.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let run = &report["runs"][0];
    assert_eq!(run["model"], "minilm", "{run}");
    assert_eq!(run["files"], FILES.len(), "{run}");
    assert!(run["chunks"].as_u64().unwrap() > 200, "{run}");
    for field in ["chunks_per_s", "storage_mb_per_1k", "query_ms_median"] {
        assert!(run[field].as_f64().unwrap() > 0.0, "{field}: {run}");
    }
    assert!(
        run["peak_rss_bytes"].as_u64().unwrap() > 50_000_000,
        "{run}"
    );

    // The quality is what the ranks say, and the ranks are what the hits say.
    let outcomes = run["queries"].as_array().unwrap();
    assert_eq!(outcomes.len(), SLICE.len());
    let mut ranks = Vec::new();
    for o in outcomes {
        let hits = o["results"].as_array().unwrap();
        assert!(!hits.is_empty() && hits.len() <= 10, "{o}");
        assert_eq!(o["language"], "python");
        ranks.push(o["rank"].as_u64().map(|r| r as u32));
    }
    let quality: Metrics = serde_json::from_value(run["quality"].clone()).unwrap();
    assert_eq!(quality, Metrics::from_ranks(&ranks, 0));
    // Hand-picked queries the hybrid ranking answers first; most must be found.
    assert!(quality.recall_at_10 >= 0.6, "{quality:?}");
    let summary = &report["models"][0];
    assert_eq!(summary["by_language"]["python"]["n"], 5, "{summary}");

    // --results writes what the eval's score.py reads.
    let lines = std::fs::read_to_string(&results).unwrap();
    assert_eq!(lines.lines().count(), SLICE.len());
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(SLICE.contains(&v["id"].as_str().unwrap()), "{line}");
        assert!(
            v["results"][0]["path"]
                .as_str()
                .unwrap()
                .starts_with("src/click/")
        );
    }

    // The scratch index is gone; nothing is registered.
    let leftovers: Vec<_> = std::fs::read_dir(home.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("benchmark-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let o = home.run(&["status"]);
    let status = String::from_utf8_lossy(&o.stdout);
    assert!(!status.contains(root), "{}", text(&o));
    // The default model stays loaded for the searches to come.
    assert!(status.contains("model minilm on cpu"), "{}", text(&o));

    // The CLI's search gives the same hits for the same queries: the benchmark
    // measures the path users run.
    let o = home.run(&["index", root]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = std::fs::read_to_string(&queries).unwrap();
    for (line, outcome) in all.lines().zip(outcomes) {
        let q: serde_json::Value = serde_json::from_str(line).unwrap();
        let o = home.run(&[
            "search",
            "--json",
            "-k",
            "10",
            "--repo",
            root,
            "--",
            q["query"].as_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let cli: Vec<(String, u64, u64)> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let h: serde_json::Value = serde_json::from_str(l).unwrap();
                let p = h["path"].as_str().unwrap().to_owned();
                (
                    p,
                    h["start_line"].as_u64().unwrap(),
                    h["end_line"].as_u64().unwrap(),
                )
            })
            .collect();
        let bench: Vec<(String, u64, u64)> = outcome["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let p = h["path"].as_str().unwrap().to_owned();
                (
                    p,
                    h["start_line"].as_u64().unwrap(),
                    h["end_line"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(cli, bench, "{}", q["id"]);
    }

    // The table, on the same slice with the lexical ranking.
    let o = home.run(&[
        "benchmark",
        "--repo",
        root,
        "--queries",
        queries.to_str().unwrap(),
        "--mode",
        "lexical",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Samples/s",
        "Storage/1K entities",
        "MRR@10",
        "lexical ranking",
        "OVERALL",
    ] {
        assert!(table.contains(want), "{want}:\n{table}");
    }
}

/// Runs `codesearch ARGS…`, which must exit 2 and say `needle` on stderr.
fn fails_with(home: &Home, args: &[&str], needle: &str) -> std::process::Output {
    let o = home.run(args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(needle),
        "want `{needle}`\n{}",
        text(&o)
    );
    o
}

#[test]
fn benchmark_input_errors_name_the_file_and_the_fix() {
    let home = Home::new();
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("repo");
    let other = work.path().join("other");
    for dir in [&repo, &other] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let (repo, other) = (repo.to_str().unwrap(), other.to_str().unwrap());
    let file = work.path().join("bad.jsonl");
    let queries = file.to_str().unwrap();
    let line = |id: &str, start: u32| {
        format!(
            "{{\"id\": \"{id}\", \"query\": \"x\", \"path\": \"a.py\", \"start_line\": {start}, \"end_line\": 2}}\n"
        )
    };

    // A line that is not JSON: the file and line number.
    std::fs::write(&file, line("a", 1) + "not json\n").unwrap();
    let args = ["benchmark", "--repo", repo, "--queries", queries];
    fails_with(&home, &args, "bad.jsonl:2: not a query line");

    // A query without "corpus", with two repositories given.
    std::fs::write(&file, line("a", 1)).unwrap();
    let two = [
        "benchmark",
        "--repo",
        repo,
        "--repo",
        other,
        "--queries",
        queries,
    ];
    fails_with(&home, &two, "has no \"corpus\" field");

    // Hostile values reach the daemon's checks too: a target line 0.
    std::fs::write(&file, line("z", 0)).unwrap();
    fails_with(&home, &args, "query `z`: `start_line`");

    // A model that cannot run is reported; the others still are.
    let models = [
        "benchmark",
        "--models",
        "no-such-model,minilm",
        "--repo",
        repo,
    ];
    let o = fails_with(&home, &models, "1 of 2 models could not run");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("minilm"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no-such-model"),
        "{}",
        text(&o)
    );

    // A repository that is not there.
    let missing = ["benchmark", "--repo", "/nonexistent/repo"];
    fails_with(&home, &missing, "cannot benchmark /nonexistent/repo");
}
