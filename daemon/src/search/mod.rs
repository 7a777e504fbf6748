//! Query → embedding → HNSW, query → BM25 over the full-text index, and the
//! query's names → definitions in the symbol column; fused and ranked
//! (`rank`: definitions, file names, coherence, per-file diversity) → collapse
//! overlapping chunks → hits with snippets read from disk, marked `stale` when
//! the file changed since it was indexed. `query` analyses the query.

use std::path::Path;
use std::time::UNIX_EPOCH;

mod query;
mod rank;

use crate::embed::{EmbedError, Embedder, InputKind};
use crate::store::{ChunkRow, Retrieve, StoreError};

/// Lines of a hit's snippet at most.
pub const SNIPPET_LINES: usize = 12;

/// Most bytes read from a hit's file for its snippet: indexed files are at most
/// the walk's size cap (1 MiB); one that grew past this is stale anyway.
const SNIPPET_READ_LIMIT: u64 = 4 * 1024 * 1024;

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

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hybrid => "hybrid",
            Self::Semantic => "semantic",
            Self::Lexical => "lexical",
        })
    }
}

/// The `k` best hits for `query` in the repository at `root`, the query
/// embedded with `embedder` (for the benchmarks; the daemon embeds on its
/// model thread and calls [`ranked`] itself).
pub fn search(
    root: &Path,
    store: &dyn Retrieve,
    embedder: &mut dyn Embedder,
    query: &str,
    k: usize,
    mode: Mode,
) -> Result<Vec<Hit>, SearchError> {
    let vector = if mode == Mode::Lexical {
        None
    } else {
        embedder.embed(&[query], InputKind::Query)?.pop()
    };
    let req = Request {
        text: query,
        vector: vector.as_deref(),
        k,
        mode,
        keep: None,
    };
    Ok(hits(root, ranked(store, &req)?, k))
}

/// What one search asks of one repository.
pub struct Request<'a> {
    /// The query as typed.
    pub text: &'a str,
    /// Its embedding, for modes that use the vector ranking.
    pub vector: Option<&'a [f32]>,
    /// Hits wanted.
    pub k: usize,
    /// Which rankings.
    pub mode: Mode,
    /// Candidates to keep (languages, path globs); `None` keeps all.
    pub keep: Option<&'a (dyn Fn(&ChunkRow) -> bool + Sync)>,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("text", &self.text)
            .field("k", &self.k)
            .field("mode", &self.mode)
            .field("filtered", &self.keep.is_some())
            .finish_non_exhaustive()
    }
}

/// Index-wide symbol matches looked at for a query's names.
const SYMBOL_CANDIDATES: usize = 64;

/// The one search path: both retrievals (and, for a query that is a name, the
/// symbol lookup), the filters, then [`rank::rank`]. The daemon's `search`
/// method, `benchmark.run` and `bench-index` all come through here.
pub fn ranked(src: &dyn Retrieve, req: &Request<'_>) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
    let text = text_side(src, req)?;
    ranked_with(src, req, text)
}

/// What a search finds from the query's words alone: the full-text matches and
/// the symbol lookup. It needs no query vector, so the daemon runs it while the
/// model embeds the query.
#[derive(Debug)]
pub struct TextSide {
    lexical: Vec<(ChunkRow, f32)>,
    symbols: Vec<ChunkRow>,
    analysis: query::Analysis,
}

/// The first half of [`ranked`]: everything `req.vector` is not needed for.
pub fn text_side(src: &dyn Retrieve, req: &Request<'_>) -> Result<TextSide, StoreError> {
    let lexical = if req.mode == Mode::Semantic {
        Vec::new()
    } else {
        keep(req, src.lexical(req.text, want(req))?)
    };
    let analysis = query::analyse(req.text);
    let symbols = if req.mode == Mode::Hybrid && analysis.symbol_query {
        let rows = src.symbols(&analysis.names, SYMBOL_CANDIDATES)?;
        match req.keep {
            Some(f) => rows.into_iter().filter(|r| f(r)).collect(),
            None => rows,
        }
    } else {
        Vec::new()
    };
    Ok(TextSide {
        lexical,
        symbols,
        analysis,
    })
}

/// The second half of [`ranked`]: the vector ranking, then the fusion with
/// `text` (made by [`text_side`] for the same request).
pub fn ranked_with(
    src: &dyn Retrieve,
    req: &Request<'_>,
    text: TextSide,
) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
    let semantic = match (req.mode, req.vector) {
        (Mode::Lexical, _) | (_, None) => Vec::new(),
        (_, Some(v)) => keep(req, src.nearest(v, want(req))?),
    };
    Ok(rank::rank(
        req.mode,
        &text.analysis,
        semantic,
        text.lexical,
        text.symbols,
    ))
}

/// Candidates to ask each retrieval for: filters drop some after the probes.
fn want(req: &Request<'_>) -> usize {
    overfetch(if req.keep.is_some() { req.k * 8 } else { req.k })
}

fn keep(req: &Request<'_>, rows: Vec<(ChunkRow, f32)>) -> Vec<(ChunkRow, f32)> {
    match req.keep {
        Some(f) => rows.into_iter().filter(|(r, _)| f(r)).collect(),
        None => rows,
    }
}

/// How many candidates to ask the HNSW index for, to fill `k` hits after collapsing.
pub fn overfetch(k: usize) -> usize {
    (k * 4).max(20)
}

/// Candidates (best first) → at most `k` hits: overlapping chunks of one file
/// collapse into the best of them; snippets and `stale` come from the disk.
pub fn hits(root: &Path, found: Vec<(ChunkRow, f32)>, k: usize) -> Vec<Hit> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let root = root.as_path();
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
    // Only a file inside the root is read (a file indexed there may have been
    // replaced by a link to elsewhere since), and only so much of it.
    let path = match root.join(rel).canonicalize() {
        Ok(p) if p.starts_with(root) => p,
        _ => return (String::new(), true),
    };
    let stale = std::fs::metadata(&path).map_or(true, |m| {
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        m.len() != size || mtime != mtime_ns
    });
    let bytes = match crate::walk::read_at_most(&path, SNIPPET_READ_LIMIT) {
        Ok(crate::walk::Bounded::Bytes(b)) => b,
        _ => return (String::new(), true),
    };
    let count = (end.saturating_sub(start) as usize + 1).min(SNIPPET_LINES);
    (
        lines_of(&bytes, start.saturating_sub(1) as usize, count),
        stale,
    )
}

/// `count` lines from the 0-based line `first` of a file's bytes, as
/// `str::lines` splits them (`\n`, or `\r\n`), joined by `\n`. Only those
/// lines are decoded: a hit late in a large file skips the rest with memchr,
/// where decoding the whole file as UTF-8 was a tenth of a lexical search.
fn lines_of(bytes: &[u8], first: usize, count: usize) -> String {
    let mut at = 0;
    for _ in 0..first {
        match memchr::memchr(b'\n', &bytes[at..]) {
            Some(i) => at += i + 1,
            None => return String::new(),
        }
    }
    let mut out = String::new();
    for n in 0..count {
        if at >= bytes.len() {
            break;
        }
        let stop = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i);
        let line = &bytes[at..stop];
        let line = line
            .strip_suffix(b"\r")
            .filter(|_| stop < bytes.len())
            .unwrap_or(line);
        if n > 0 {
            out.push('\n');
        }
        out.push_str(&String::from_utf8_lossy(line));
        at = stop + 1;
    }
    out
}

impl From<EmbedError> for SearchError {
    fn from(e: EmbedError) -> Self {
        Self::Embed(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::lines_of;

    #[test]
    fn snippet_lines_split_as_str_lines_does() {
        let texts: [&[u8]; 6] = [
            b"one\ntwo\r\nthree\n\nfive\r",
            b"no newline at all",
            b"ends\n",
            b"\n\n\n",
            b"caf\xc3\xa9\r\nbad \xff byte\nlast",
            b"",
        ];
        for bytes in texts {
            let text = String::from_utf8_lossy(bytes);
            let total = text.lines().count();
            for first in 0..=total + 1 {
                for count in [0, 1, 2, 12] {
                    let want: Vec<&str> = text.lines().skip(first).take(count).collect();
                    assert_eq!(
                        lines_of(bytes, first, count),
                        want.join("\n"),
                        "{text:?} from line {first}, {count} lines"
                    );
                }
            }
        }
    }
}
