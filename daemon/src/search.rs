//! Query → embedding → HNSW, and query → BM25 over the full-text index, fused
//! by reciprocal rank → collapse overlapping chunks → hits with snippets read
//! from disk, marked `stale` when the file changed since it was indexed.

use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::embed::{EmbedError, Embedder, InputKind};
use crate::store::{ChunkRow, Store, StoreError};

/// Lines of a hit's snippet at most.
pub const SNIPPET_LINES: usize = 12;

/// One search result, with the fields of design.md's `Hit` (the rpc layer adds `repo`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// Path relative to the repository root.
    pub path: String,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
    /// Qualified symbol, when the chunk is an entity.
    pub symbol: Option<String>,
    /// `function`, `method`, `class`, …, or `window`.
    pub kind: String,
    /// Language name.
    pub language: String,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The first lines of the chunk, as they are on disk now.
    pub snippet: String,
    /// The file changed after it was indexed: lines may have moved.
    pub stale: bool,
}

/// Search failures.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Embedding the query failed.
    #[error(transparent)]
    Embed(Box<EmbedError>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which rankings a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Vector and BM25 rankings fused by reciprocal rank.
    #[default]
    Hybrid,
    /// The vector ranking alone.
    Semantic,
    /// BM25 alone.
    Lexical,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "semantic" => Ok(Self::Semantic),
            "lexical" => Ok(Self::Lexical),
            other => Err(format!(
                "unknown mode `{other}`; use hybrid, semantic or lexical"
            )),
        }
    }
}

/// Reciprocal-rank-fusion constant: the usual 60 keeps one list's top from
/// drowning the other's.
const RRF_K: f32 = 60.0;

/// The `k` best hits for `query` in the repository at `root`.
pub fn search(
    root: &Path,
    store: &Store,
    embedder: &mut dyn Embedder,
    query: &str,
    k: usize,
    mode: Mode,
) -> Result<Vec<Hit>, SearchError> {
    // Over-fetch: overlapping windows of one entity collapse into one hit.
    let want = overfetch(k);
    let semantic = if mode == Mode::Lexical {
        Vec::new()
    } else {
        let vector = embedder
            .embed(&[query], InputKind::Query)?
            .pop()
            .unwrap_or_default();
        store.nearest(&vector, want)?
    };
    let lexical = if mode == Mode::Semantic {
        Vec::new()
    } else {
        store.lexical(query, want)?
    };
    Ok(hits(root, fuse(mode, semantic, lexical), k))
}

/// One ranking out of the two a mode uses: the one it names, or both fused by
/// reciprocal rank (the score is then the fused one, higher is better).
pub fn fuse(
    mode: Mode,
    semantic: Vec<(ChunkRow, f32)>,
    lexical: Vec<(ChunkRow, f32)>,
) -> Vec<(ChunkRow, f32)> {
    match mode {
        Mode::Semantic => semantic,
        Mode::Lexical => lexical,
        Mode::Hybrid => {
            let mut fused: Vec<(ChunkRow, f32)> = Vec::new();
            for list in [semantic, lexical] {
                for (rank, (row, _)) in list.into_iter().enumerate() {
                    let add = 1.0 / (RRF_K + rank as f32 + 1.0);
                    match fused.iter_mut().find(|(r, _)| r.id == row.id) {
                        Some((_, score)) => *score += add,
                        None => fused.push((row, add)),
                    }
                }
            }
            fused.sort_by(|a, b| b.1.total_cmp(&a.1));
            fused
        }
    }
}

/// How many candidates to ask the HNSW index for, to fill `k` hits after collapsing.
pub fn overfetch(k: usize) -> usize {
    (k * 4).max(20)
}

/// Candidates (best first) → at most `k` hits: overlapping chunks of one file
/// collapse into the best of them; snippets and `stale` come from the disk.
pub fn hits(root: &Path, found: Vec<(ChunkRow, f32)>, k: usize) -> Vec<Hit> {
    let mut hits: Vec<Hit> = Vec::with_capacity(k);
    for (row, score) in found {
        if hits.len() == k {
            break;
        }
        let overlaps = hits.iter().any(|h| {
            h.path == row.path && h.start_line <= row.end_line && row.start_line <= h.end_line
        });
        if overlaps {
            continue;
        }
        let (snippet, stale) = snippet(
            root,
            &row.path,
            row.start_line,
            row.end_line,
            row.file_size,
            row.file_mtime_ns,
        );
        hits.push(Hit {
            path: row.path,
            start_line: row.start_line,
            end_line: row.end_line,
            symbol: row.symbol,
            kind: row.kind,
            language: row.language,
            score,
            snippet,
            stale,
        });
    }
    hits
}

/// The chunk's first lines from disk, and whether the file changed since indexing.
fn snippet(
    root: &Path,
    rel: &str,
    start: u32,
    end: u32,
    size: u64,
    mtime_ns: i64,
) -> (String, bool) {
    let path = root.join(rel);
    let stale = std::fs::metadata(&path).map_or(true, |m| {
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        m.len() != size || mtime != mtime_ns
    });
    let text = std::fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let count = (end.saturating_sub(start) as usize + 1).min(SNIPPET_LINES);
    let snippet = text
        .lines()
        .skip(start.saturating_sub(1) as usize)
        .take(count)
        .collect::<Vec<_>>()
        .join("\n");
    (snippet, stale)
}

impl From<EmbedError> for SearchError {
    fn from(e: EmbedError) -> Self {
        Self::Embed(Box::new(e))
    }
}
