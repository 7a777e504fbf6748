//! The ranking layer over the two retrievals: reciprocal-rank fusion, then the
//! evidence a list of chunks alone does not weigh: for a query that is a name,
//! its definitions (found index-wide); query words in file and folder names;
//! and a first page that covers more than one file. Several matching chunks of
//! one file adding to the file's rank was measured and left out (docs/BENCHMARKS.md).
//! Every weight here was measured on both development sets (docs/BENCHMARKS.md).

use std::collections::HashMap;

use super::Mode;
use super::query::{Analysis, stems_of};
use crate::store::ChunkRow;

/// Reciprocal-rank-fusion constant: the usual 60 keeps one list's top from
/// drowning the other's.
const RRF_K: f32 = 60.0;

/// Weight of the definitions list in the fusion for a query that is names
/// alone. For sentences that mention names it was measured at 0.5 and 1.0 and
/// lost both times (semble split 0.796 → 0.791 and 0.811 → 0.816 without it,
/// Python 0.95 → 0.89): a sentence's capitalised words are often not the names
/// of its answer. Sentences get no definitions list.
const DEFINITION_WEIGHT_SYMBOL_QUERY: f32 = 3.0;

/// Score multiplier per query stem found in a file's name (at most two count)
/// and per stem found in its folders' names (likewise).
const FILE_NAME_BOOST: f32 = 0.3;
const FOLDER_BOOST: f32 = 0.1;

/// Each hit already listed from a file multiplies the next one's score by this,
/// so the first page covers more files. 0.5 scored best on the semble split
/// (0.816) but sank function-level answers that share a file with a better
/// match (public eval Recall@10 0.825 → 0.662); 0.9 keeps them (0.825) and most
/// of the gain (0.796; 1.0: 0.775).
const SAME_FILE_DECAY: f32 = 0.9;

/// The decay for a short, topical query ([`SHORT_QUERY_STEMS`] meaningful words
/// or fewer: "bash completion generation"), which asks which files deal with a
/// topic; a longer one describes one piece of code ("skip spaces, tabs, CR and
/// LF and return the next byte"), whose neighbours in its file are fair answers
/// too. Semble split 0.828 → 0.838, public eval unchanged (0.583 / 0.825);
/// 0.5 gave 0.840 but cost the public eval a query (MRR 0.580).
const SHORT_QUERY_DECAY: f32 = 0.7;
const SHORT_QUERY_STEMS: usize = 5;

/// Tests, docs, examples, benchmarks, vendored code and changelogs matched
/// queries better than the code they describe (their words are the query's
/// words): weighted 0.3 in the fusion (public eval MRR@10 0.530 → 0.564).
const SECONDARY_WEIGHT: f32 = 0.3;

/// Prose (Markdown, reStructuredText, plain text) outside the doc folders
/// (`site/content/`, a README) likewise, unless the query asks for docs: a
/// guide explains the code in the query's own words. Semble split 0.825 →
/// 0.828 (Go 0.84 → 0.86, Zig 0.94 → 0.96, no language lower), public eval
/// unchanged; 0.5 gave 0.823.
const PROSE_WEIGHT: f32 = 0.3;

/// The ranked candidates of `mode`, best first. Semantic and lexical modes are
/// the single retrievals as they come; hybrid fuses them (with the definitions
/// of the names a symbol query names) and ranks files as described above.
pub(super) fn rank(
    mode: Mode,
    analysis: &Analysis,
    semantic: Vec<(ChunkRow, f32)>,
    lexical: Vec<(ChunkRow, f32)>,
    symbols: Vec<ChunkRow>,
) -> Vec<(ChunkRow, f32)> {
    match mode {
        Mode::Semantic => semantic,
        Mode::Lexical => lexical,
        Mode::Hybrid => {
            let secondary_wanted = asks_for_secondary(analysis);
            let mut fused: Vec<(ChunkRow, f32)> = Vec::new();
            let mut at: HashMap<u64, usize> = HashMap::new();
            let mut add = |row: ChunkRow, score: f32| match at.get(&row.id) {
                Some(&i) => fused[i].1 += score,
                None => {
                    at.insert(row.id, fused.len());
                    fused.push((row, score));
                }
            };
            for list in [semantic, lexical] {
                for (rank, (row, _)) in list.into_iter().enumerate() {
                    let w = prior(&row, secondary_wanted);
                    add(row, w / (RRF_K + rank as f32 + 1.0));
                }
            }
            if analysis.symbol_query {
                for (rank, row) in definitions(analysis, symbols).into_iter().enumerate() {
                    let w = DEFINITION_WEIGHT_SYMBOL_QUERY * prior(&row, secondary_wanted);
                    add(row, w / (RRF_K + rank as f32 + 1.0));
                }
            }
            for (row, score) in fused.iter_mut() {
                *score *= path_match(analysis, &row.path);
            }
            diversify(fused, same_file_decay(analysis))
        }
    }
}

/// How much each listed chunk of a file lowers the file's next one.
fn same_file_decay(analysis: &Analysis) -> f32 {
    if analysis.stems.len() <= SHORT_QUERY_STEMS {
        SHORT_QUERY_DECAY
    } else {
        SAME_FILE_DECAY
    }
}

/// The chunks among `symbols` that define one of the query's names (the last
/// part of their qualified symbol is the name): those in a file named after
/// the name first (`SqlMapper.cs` before the partial classes of
/// `SqlMapper.Async.cs`; C#, Java, Kotlin, Swift and TypeScript keep a type in
/// its own file; semble split 0.824 → 0.828, C# 0.72 → 0.78), then exact case.
fn definitions(analysis: &Analysis, symbols: Vec<ChunkRow>) -> Vec<ChunkRow> {
    let mut found: Vec<(bool, bool, ChunkRow)> = symbols
        .into_iter()
        .filter_map(|row| {
            let name = defined_name(row.symbol.as_deref()?)?.to_owned();
            let exact = analysis.names.contains(&name);
            let folded = analysis.names.iter().any(|n| n.eq_ignore_ascii_case(&name));
            let own_file = file_named_after(&row.path, &name);
            (exact || folded).then_some((!own_file, !exact, row))
        })
        .collect();
    found.sort_by_key(|(elsewhere, inexact, _)| (*elsewhere, *inexact));
    found.into_iter().map(|(_, _, r)| r).collect()
}

/// `path`'s file name without its last extension is `name`, ignoring case,
/// `_` and a plural `s` (`retry_policy.rb` for `RetryPolicy`, `errors.ts` for
/// `Error`).
fn file_named_after(path: &str, name: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    let fold = |s: &str| {
        s.chars()
            .filter(|&c| c != '_')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let (stem, name) = (fold(stem), fold(name));
    !name.is_empty() && stem.trim_end_matches('s') == name.trim_end_matches('s')
}

/// The name a qualified symbol defines: `impl Parser::parse` → `parse`,
/// `Config.from_pyfile` → `from_pyfile`, `trait IntoResponse` → `IntoResponse`.
fn defined_name(symbol: &str) -> Option<&str> {
    symbol
        .rsplit(|c: char| c.is_whitespace() || c == '.' || c == ':')
        .find(|s| !s.is_empty())
}

/// File stems that name their folder's module rather than themselves.
const FOLDER_FILES: &[&str] = &["mod", "index", "__init__", "lib", "main", "init", "package"];

/// `1 +` the boosts of the query stems found in `path`'s file name (or, for
/// `mod.rs`-like files, their folder's name) and in its folders' names.
fn path_match(analysis: &Analysis, path: &str) -> f32 {
    if analysis.stems.is_empty() {
        return 1.0;
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    let mut stem = file.split('.').next().unwrap_or_default();
    if FOLDER_FILES.contains(&stem.to_ascii_lowercase().as_str())
        && let Some(folder) = parts.pop()
    {
        stem = folder;
    }
    let in_name = stems_of(stem);
    let in_folders: Vec<String> = parts
        .iter()
        .rev()
        .take(3)
        .flat_map(|d| stems_of(d))
        .collect();
    let count = |have: &[String]| {
        analysis
            .stems
            .iter()
            .filter(|s| have.contains(s))
            .count()
            .min(2) as f32
    };
    1.0 + FILE_NAME_BOOST * count(&in_name) + FOLDER_BOOST * count(&in_folders)
}

/// Best first, each file's later chunks decayed by `decay` per chunk of it
/// already placed.
fn diversify(mut pool: Vec<(ChunkRow, f32)>, decay: f32) -> Vec<(ChunkRow, f32)> {
    pool.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut placed: HashMap<String, i32> = HashMap::new();
    let mut out = Vec::with_capacity(pool.len());
    while !pool.is_empty() {
        let (best, _) = pool
            .iter()
            .enumerate()
            .map(|(i, (row, score))| {
                let n = placed.get(&row.path).copied().unwrap_or(0);
                (i, score * decay.powi(n))
            })
            .fold((0, f32::MIN), |acc, x| if x.1 > acc.1 { x } else { acc });
        let (row, score) = pool.remove(best);
        let n = placed.entry(row.path.clone()).or_insert(0);
        let decayed = score * decay.powi(*n);
        *n += 1;
        out.push((row, decayed));
    }
    out
}

/// Weight of a candidate in the fusion: the repository's own code first;
/// tests, docs, examples, vendored code and prose after it unless the query
/// asks for them. Lines outside definitions (windows) keep weight 1: weighting
/// them 0.7 won one eval query but sank module doc comments and scripts.
fn prior(row: &ChunkRow, secondary_wanted: bool) -> f32 {
    if secondary_wanted {
        1.0
    } else if is_secondary(&row.path) || row.symbol.as_deref().is_some_and(in_test_module) {
        SECONDARY_WEIGHT
    } else if is_prose(&row.language) {
        PROSE_WEIGHT
    } else {
        1.0
    }
}

/// A symbol inside a test module of a source file: Rust keeps unit tests in
/// `#[cfg(test)] mod tests` beside the code (`tests::expand_tilde_leading`),
/// where the path alone ([`is_secondary`]) does not see them. Neutral on both
/// development sets (their targets are never next to such tests); it puts
/// `expand_tilde` above its own test for "expand a leading tilde to the home
/// directory" in `ignore`'s sources.
fn in_test_module(symbol: &str) -> bool {
    symbol.starts_with("tests::") || symbol.starts_with("test::") || symbol.contains("::tests::")
}

/// Languages of documents rather than code (`chunk::lang`'s names).
fn is_prose(language: &str) -> bool {
    matches!(language, "markdown" | "text")
}

/// The query asks for tests, examples, benchmarks or docs themselves.
fn asks_for_secondary(analysis: &Analysis) -> bool {
    analysis.stems.iter().any(|s| {
        matches!(
            s.as_str(),
            "test"
                | "tests"
                | "spec"
                | "exampl"
                | "example"
                | "benchmark"
                | "bench"
                | "doc"
                | "fixtur"
        )
    }) || analysis.docs_wanted
}

/// Folders whose code is not the repository's own implementation.
const SECONDARY_DIRS: &[&str] = &[
    "test",
    "tests",
    "__tests__",
    "spec",
    "specs",
    "testdata",
    "fixtures",
    "e2e",
    "doc",
    "docs",
    "example",
    "examples",
    "vendor",
    "third_party",
    "bench",
    "benches",
    "benchmarks",
];

/// Languages whose test runners find tests by a `test_` prefix or a `_test`
/// suffix of the file name (pytest, go test, minitest, ExUnit, GoogleTest, Rust).
const TEST_NAMING_EXTENSIONS: &[&str] = &["py", "go", "rb", "exs", "cc", "cpp", "rs"];

/// Tests (by folder or by the naming conventions of common test runners),
/// docs, examples, benchmarks, vendored code and changelogs.
pub(crate) fn is_secondary(path: &str) -> bool {
    let mut parts = path.split('/');
    let file = parts.next_back().unwrap_or_default();
    if parts.any(|d| SECONDARY_DIRS.contains(&d.to_ascii_lowercase().as_str())) {
        return true;
    }
    let lower = file.to_ascii_lowercase();
    let stem = lower.split('.').next().unwrap_or_default();
    let ext = lower.rsplit('.').next().unwrap_or_default();
    // `test_x` / `x_test` name tests only where the test runner says so:
    // bats-core's `test_functions.bash` is the framework itself.
    let named_test = TEST_NAMING_EXTENSIONS.contains(&ext)
        && (stem.starts_with("test_") || stem.ends_with("_test") || stem.ends_with("_tests"));
    named_test
        || stem == "conftest"
        || lower.contains(".test.")
        || lower.contains(".spec.")
        || file.ends_with("Test.java")
        || file.ends_with("Tests.java")
        || stem.starts_with("changes")
        || stem.starts_with("changelog")
}

#[cfg(test)]
mod tests {
    use super::super::query::analyse;
    use super::*;

    fn row(id: u64, path: &str, symbol: Option<&str>) -> ChunkRow {
        ChunkRow {
            id,
            path: path.to_owned(),
            start_line: id as u32 * 10,
            end_line: id as u32 * 10 + 5,
            symbol: symbol.map(str::to_owned),
            kind: "function".to_owned(),
            language: "rust".to_owned(),
            file_size: 0,
            file_mtime_ns: 0,
        }
    }

    #[test]
    fn tests_docs_examples_and_vendored_code_are_secondary() {
        for path in [
            "tests/test.rs",
            "src/tests/parse.rs",
            "docs/api.rst",
            "examples/termui/termui.py",
            "vendor/lib/x.go",
            "tests/test_options.py",
            "pkg/server_test.go",
            "src/app.test.ts",
            "src/app.spec.tsx",
            "conftest.py",
            "src/main/java/FooTest.java",
            "CHANGES.rst",
            "CHANGELOG.md",
        ] {
            assert!(is_secondary(path), "{path}");
        }
        for path in [
            "src/click/testing.py",
            "src/de.rs",
            "src/latest.rs",
            "contest/main.go",
            "README.md",
            "src/docstring.py",
            "lib/bats-core/test_functions.bash",
        ] {
            assert!(!is_secondary(path), "{path}");
        }
    }

    #[test]
    fn fusion_ranks_a_test_below_code_that_both_lists_agree_on_less() {
        let a = analyse("parse a number");
        let lists = || {
            (
                vec![
                    (row(1, "tests/test.rs", None), 0.9),
                    (row(2, "src/de.rs", None), 0.8),
                ],
                vec![
                    (row(1, "tests/test.rs", None), 9.0),
                    (row(2, "src/de.rs", None), 8.0),
                ],
            )
        };
        let (s, l) = lists();
        let fused = rank(Mode::Hybrid, &a, s, l, Vec::new());
        assert_eq!(fused[0].0.id, 2);
        assert_eq!(fused[1].0.id, 1);
        // Unless the query asks for tests.
        let (s, l) = lists();
        let fused = rank(
            Mode::Hybrid,
            &analyse("tests that parse a number"),
            s,
            l,
            Vec::new(),
        );
        assert_eq!(fused[0].0.id, 1);
        // The single rankings are left as they are.
        let (s, _) = lists();
        assert_eq!(
            rank(Mode::Semantic, &a, s, Vec::new(), Vec::new())[0].0.id,
            1
        );
    }

    #[test]
    fn a_definition_of_a_named_type_outranks_its_uses() {
        let a = analyse("IntoResponse");
        let uses = vec![
            (row(1, "src/handler.rs", Some("impl Handler::call")), 0.9),
            (row(2, "src/routing.rs", Some("route")), 0.8),
        ];
        // Found index-wide, in neither list.
        let symbols = vec![
            row(3, "src/response/mod.rs", Some("trait IntoResponse")),
            row(4, "src/body.rs", Some("into_response_body")),
        ];
        let ranked = rank(Mode::Hybrid, &a, uses.clone(), uses, symbols);
        assert_eq!(ranked[0].0.id, 3, "{ranked:?}");
        assert!(ranked.iter().all(|(r, _)| r.id != 4));
    }

    #[test]
    fn file_names_that_carry_the_query_words_rank_first() {
        let a = analyse("how request retrying is implemented with backoff");
        let list = vec![
            (row(1, "Source/Core/Request.swift", None), 0.9),
            (row(2, "Source/Features/RetryPolicy.swift", None), 0.8),
            (row(3, "Source/Core/Session.swift", None), 0.7),
        ];
        let ranked = rank(Mode::Hybrid, &a, list.clone(), list, Vec::new());
        // Both carry a query word; RetryPolicy also "retrying", Request "request".
        assert_eq!(path_match(&a, "Source/Core/Session.swift"), 1.0);
        assert!(path_match(&a, "Source/Features/RetryPolicy.swift") > 1.0);
        assert_ne!(ranked[0].0.id, 3);
        // A mod.rs file takes its folder's name.
        let a = analyse("Path extractor for capturing URL parameters");
        assert!(path_match(&a, "axum/src/extract/path/mod.rs") > path_match(&a, "axum/src/lib.rs"));
    }

    #[test]
    fn a_definition_in_the_file_named_after_it_comes_first() {
        assert!(file_named_after("Dapper/SqlMapper.cs", "SqlMapper"));
        assert!(file_named_after("lib/retry_policy.rb", "RetryPolicy"));
        assert!(file_named_after("src/v4/core/errors.ts", "Error"));
        assert!(!file_named_after("Dapper/SqlMapper.Async.cs", "SqlMapper"));
        assert!(!file_named_after("src/lib.rs", "Parser"));
        let a = analyse("SqlMapper");
        let partial = |id, path| row(id, path, Some("class SqlMapper"));
        let symbols = vec![
            partial(1, "Dapper/SqlMapper.Async.cs"),
            partial(2, "Dapper/SqlMapper.Identity.cs"),
            partial(3, "Dapper/SqlMapper.cs"),
        ];
        let ranked = rank(Mode::Hybrid, &a, Vec::new(), Vec::new(), symbols);
        assert_eq!(ranked[0].0.path, "Dapper/SqlMapper.cs", "{ranked:?}");
    }

    #[test]
    fn a_rust_test_module_in_a_source_file_ranks_below_the_code() {
        assert!(in_test_module("tests::expand_tilde_leading"));
        assert!(in_test_module("walk::tests::skips_links"));
        assert!(!in_test_module("testing::CliRunner.invoke"));
        let list = vec![
            (
                row(1, "src/gitignore.rs", Some("tests::expand_tilde_leading")),
                0.9,
            ),
            (row(2, "src/gitignore.rs", Some("expand_tilde")), 0.8),
        ];
        let ranked = rank(
            Mode::Hybrid,
            &analyse("expand a leading tilde"),
            list.clone(),
            list,
            Vec::new(),
        );
        assert_eq!(ranked[0].0.id, 2);
    }

    #[test]
    fn prose_ranks_below_code_unless_the_query_asks_for_docs() {
        let prose = |id, path: &str| ChunkRow {
            language: "markdown".to_owned(),
            ..row(id, path, None)
        };
        let lists = || {
            let list = vec![
                (prose(1, "site/content/guide.md"), 0.9),
                (row(2, "src/shell.go", None), 0.8),
            ];
            (list.clone(), list)
        };
        let (s, l) = lists();
        let ranked = rank(
            Mode::Hybrid,
            &analyse("bash completion generation"),
            s,
            l,
            Vec::new(),
        );
        assert_eq!(ranked[0].0.id, 2);
        let (s, l) = lists();
        let ranked = rank(
            Mode::Hybrid,
            &analyse("documentation of bash completion"),
            s,
            l,
            Vec::new(),
        );
        assert_eq!(ranked[0].0.id, 1);
    }

    #[test]
    fn a_short_topical_query_spreads_over_more_files_than_a_long_one() {
        let list = vec![
            (row(1, "src/a.rs", None), 0.9),
            (row(2, "src/a.rs", None), 0.8),
            (row(3, "src/b.rs", None), 0.7),
        ];
        let ranked = rank(
            Mode::Hybrid,
            &analyse("number parsing"),
            list.clone(),
            list,
            Vec::new(),
        );
        let order: Vec<u64> = ranked.iter().map(|(r, _)| r.id).collect();
        assert_eq!(order, [1, 3, 2]);
        let long = "skip spaces tabs and newlines then return the next byte without consuming it";
        assert_eq!(same_file_decay(&analyse(long)), SAME_FILE_DECAY);
        assert_eq!(
            same_file_decay(&analyse("number parsing")),
            SHORT_QUERY_DECAY
        );
    }

    #[test]
    fn later_chunks_of_a_listed_file_make_way_for_other_files() {
        let a = analyse("parse numbers");
        let list = vec![
            (row(1, "src/a.rs", None), 0.9),
            (row(2, "src/a.rs", None), 0.8),
            (row(3, "src/a.rs", None), 0.7),
            (row(4, "src/b.rs", None), 0.6),
        ];
        let ranked = rank(Mode::Hybrid, &a, list.clone(), list, Vec::new());
        let order: Vec<u64> = ranked.iter().map(|(r, _)| r.id).collect();
        assert_eq!(order[0], 1);
        assert!(order.iter().position(|&i| i == 4) < order.iter().position(|&i| i == 3));
    }
}
