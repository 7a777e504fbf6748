//! `benchmark.run`: index a repository with one model into a scratch index, then
//! answer a set of labelled queries, and report speed, memory, storage and
//! retrieval quality. The metrics are those of `../shared/eval/score.py`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Ranks at or below this count (MRR@10, Recall@10, nDCG@10).
pub const K: u32 = 10;

/// `benchmark.run` parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkParams {
    /// Absolute path of the repository (the corpus).
    pub repo: String,
    /// Model name or alias; the daemon's default when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Labelled queries to answer against the repository.
    #[serde(default)]
    pub queries: Vec<BenchmarkQuery>,
    /// `hybrid` (default), `semantic` or `lexical`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// One labelled query: the definition at `path` lines `start_line..=end_line`
/// is the answer (the format of `../shared/eval/queries.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkQuery {
    /// The query's id, echoed in the outcome.
    pub id: String,
    /// What a user would type.
    pub query: String,
    /// The target's path, relative to the repository root.
    pub path: String,
    /// The target's first line, 1-based.
    pub start_line: u32,
    /// The target's last line, inclusive.
    pub end_line: u32,
}

/// One line of a queries file (the format of `../shared/eval/queries.jsonl`;
/// other fields are ignored). Read by `codesearch benchmark` and
/// `codesearchd bench-index`.
#[derive(Debug, Clone, Deserialize)]
pub struct QueryLine {
    /// A string or a number; [`QueryLine::query`] makes it a string.
    pub id: serde_json::Value,
    /// The repository folder name the query is for; may be left out with one repository.
    #[serde(default)]
    pub corpus: Option<String>,
    /// What a user would type.
    pub query: String,
    /// The target's path, relative to the repository root.
    pub path: String,
    /// The target's first line, 1-based.
    pub start_line: u32,
    /// The target's last line, inclusive.
    pub end_line: u32,
}

impl QueryLine {
    /// The labelled query, its id as a string (the eval's are strings; other files' may be numbers).
    pub fn query(&self) -> BenchmarkQuery {
        BenchmarkQuery {
            id: match &self.id {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            query: self.query.clone(),
            path: self.path.clone(),
            start_line: self.start_line,
            end_line: self.end_line,
        }
    }
}

/// A line of a queries file that is not a query line (its Display leaves
/// the file and line number to the caller: `file:line: …`).
#[derive(Debug)]
pub struct BadQueryLine {
    /// 1-based line number.
    pub line: usize,
    /// What the JSON parser said.
    pub reason: String,
}

impl std::fmt::Display for BadQueryLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not a query line ({}; want {{\"id\", \"query\", \"path\", \"start_line\", \"end_line\"}}, and \"corpus\" with several repositories)",
            self.reason
        )
    }
}

/// The query lines of a queries file's text; blank lines are skipped.
pub fn parse_queries(text: &str) -> Result<Vec<QueryLine>, BadQueryLine> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| BadQueryLine {
                line: n + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The results file `score.py` reads: one `{"id", "results": [{path,
/// start_line, end_line}]}` line per query.
pub fn results_lines<'a>(outcomes: impl IntoIterator<Item = &'a QueryOutcome>) -> String {
    let mut text = String::new();
    for q in outcomes {
        text.push_str(&serde_json::json!({"id": q.id, "results": q.results}).to_string());
        text.push('\n');
    }
    text
}

/// `benchmark.run` result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchmarkResult {
    /// Canonical model name.
    pub model: String,
    /// Where the model ran, e.g. `cpu` or `cuda:0`.
    pub device: String,
    /// The repository's absolute path.
    pub repo: String,
    /// The ranking used for the queries.
    pub mode: String,
    /// Files indexed.
    pub files: u64,
    /// Chunks (entities and windows) in the index.
    pub chunks: u64,
    /// Seconds the cold index took (walk, chunk, embed, write).
    pub index_s: f64,
    /// Chunks embedded and written per second.
    pub chunks_per_s: f64,
    /// Bytes of the index on disk.
    pub storage_bytes: u64,
    /// Megabytes of index per 1,000 chunks.
    pub storage_mb_per_1k: f64,
    /// The daemon's peak resident memory during the run, where the OS reports it.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    /// Median seconds of a search (query embedding, both rankings, snippets), in ms.
    pub query_ms_median: f64,
    /// 95th percentile of the same, in ms.
    pub query_ms_p95: f64,
    /// Retrieval quality over `queries` (absent when none were given).
    #[serde(default)]
    pub quality: Option<Metrics>,
    /// Per query: where its target ranked, and the hits.
    #[serde(default)]
    pub queries: Vec<QueryOutcome>,
}

/// What one labelled query got.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryOutcome {
    /// The query's id.
    pub id: String,
    /// The target's language (from its path), e.g. `python`.
    pub language: String,
    /// 1-based rank of the first hit overlapping the target, if within the top 10.
    pub rank: Option<u32>,
    /// The top hits in order, as `path` + line range.
    pub results: Vec<HitRange>,
}

/// Where a hit is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HitRange {
    /// Path relative to the repository root.
    pub path: String,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
}

/// Retrieval metrics over a set of queries, each with one target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Queries scored.
    pub n: usize,
    /// Mean reciprocal rank of the first hit within 10.
    pub mrr_at_10: f64,
    /// Share of queries with the target first.
    pub recall_at_1: f64,
    /// Share with the target within 5.
    pub recall_at_5: f64,
    /// Share with the target within 10.
    pub recall_at_10: f64,
    /// nDCG@10 with binary relevance and the first hit counted.
    pub ndcg_at_10: f64,
    /// Queries that got no hits at all.
    pub no_results: usize,
}

impl Metrics {
    /// Scores ranks (`None`: not within 10); `empty` counts queries with no hits.
    pub fn from_ranks(ranks: &[Option<u32>], empty: usize) -> Self {
        let n = ranks.len();
        let mean = |f: &dyn Fn(u32) -> f64| {
            if n == 0 {
                return 0.0;
            }
            ranks
                .iter()
                .map(|r| r.filter(|r| (1..=K).contains(r)).map_or(0.0, f))
                .sum::<f64>()
                / n as f64
        };
        Self {
            n,
            mrr_at_10: mean(&|r| 1.0 / f64::from(r)),
            recall_at_1: mean(&|r| f64::from(u8::from(r <= 1))),
            recall_at_5: mean(&|r| f64::from(u8::from(r <= 5))),
            recall_at_10: mean(&|_| 1.0),
            ndcg_at_10: mean(&|r| 1.0 / (f64::from(r) + 1.0).log2()),
            no_results: empty,
        }
    }

    /// Metrics of every language among `outcomes`.
    pub fn by_language<'a>(
        outcomes: impl IntoIterator<Item = &'a QueryOutcome>,
    ) -> BTreeMap<String, Self> {
        let mut groups: BTreeMap<String, (Vec<Option<u32>>, usize)> = BTreeMap::new();
        for o in outcomes {
            let g = groups.entry(o.language.clone()).or_default();
            g.0.push(o.rank);
            g.1 += usize::from(o.results.is_empty());
        }
        groups
            .into_iter()
            .map(|(lang, (ranks, empty))| (lang, Self::from_ranks(&ranks, empty)))
            .collect()
    }

    /// Metrics of `outcomes` as one set.
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a QueryOutcome>) -> Self {
        let (ranks, empty) = outcomes
            .into_iter()
            .fold((Vec::new(), 0), |(mut ranks, empty), o| {
                ranks.push(o.rank);
                (ranks, empty + usize::from(o.results.is_empty()))
            });
        Self::from_ranks(&ranks, empty)
    }
}

impl HitRange {
    /// Whether this hit answers `q`: same path, overlapping lines (score.py's rule).
    pub fn answers(&self, q: &BenchmarkQuery) -> bool {
        self.path == q.path && self.start_line <= q.end_line && q.start_line <= self.end_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_score_py_on_a_hand_computed_case() {
        // Ranks 1, 2, 10, miss: MRR = (1 + 1/2 + 1/10 + 0) / 4.
        let m = Metrics::from_ranks(&[Some(1), Some(2), Some(10), None], 1);
        assert_eq!(m.n, 4);
        assert!((m.mrr_at_10 - 1.6 / 4.0).abs() < 1e-12);
        assert!((m.recall_at_1 - 0.25).abs() < 1e-12);
        assert!((m.recall_at_5 - 0.5).abs() < 1e-12);
        assert!((m.recall_at_10 - 0.75).abs() < 1e-12);
        let ndcg = (1.0 + 1.0 / 3f64.log2() + 1.0 / 11f64.log2()) / 4.0;
        assert!((m.ndcg_at_10 - ndcg).abs() < 1e-12);
        assert_eq!(m.no_results, 1);
        // A rank past 10 counts as a miss.
        assert_eq!(Metrics::from_ranks(&[Some(11)], 0).mrr_at_10, 0.0);
        assert_eq!(Metrics::from_ranks(&[], 0).mrr_at_10, 0.0);
    }

    #[test]
    fn a_hit_answers_when_path_matches_and_lines_overlap() {
        let q = BenchmarkQuery {
            id: "q".into(),
            query: "x".into(),
            path: "src/a.rs".into(),
            start_line: 10,
            end_line: 20,
        };
        let hit = |path: &str, s, e| HitRange {
            path: path.into(),
            start_line: s,
            end_line: e,
        };
        assert!(hit("src/a.rs", 20, 30).answers(&q));
        assert!(hit("src/a.rs", 1, 10).answers(&q));
        assert!(!hit("src/a.rs", 21, 30).answers(&q));
        assert!(!hit("src/b.rs", 10, 20).answers(&q));
    }
}
