//! Results sized for a context window (`codesearch search --max-tokens N
//! --context C`): hits packed by rank into at most N tokens, each hit's whole
//! lines (its definition) plus C lines around it, read from the file on disk;
//! overlapping or adjacent spans of one file merged; grouped by file in the
//! order of each file's best hit; a span that does not fit whole is cut at a
//! line and marked, and packing stops there.
//!
//! Tokens are estimated, not counted with a tokenizer: [`estimate_tokens`] is
//! one token per [`BYTES_PER_TOKEN`] bytes, rounded up. BPE tokenizers of
//! today's models (cl100k, o200k, Claude's) spend 3.5–4.5 bytes a token on
//! source code, so the estimate errs on the side of a smaller output.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use codesearch_proto::Hit;
use serde::Serialize;

/// Bytes of text counted as one token (see the module doc).
pub const BYTES_PER_TOKEN: usize = 3;

/// Most bytes read from one file for its spans; an indexed file is at most
/// the daemon's size cap (1 MiB), so a larger one changed since.
const READ_LIMIT: u64 = 4 * 1024 * 1024;

/// Fewest lines of a cut span worth showing.
const MIN_CUT_LINES: usize = 3;

/// The estimated tokens of `text`.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(BYTES_PER_TOKEN)
}

/// The lines of one or more merged hits of a file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    /// First line shown, 1-based.
    pub start_line: u32,
    /// Last line shown, inclusive.
    pub end_line: u32,
    /// The symbols of the hits in it, best hit first.
    pub symbols: Vec<String>,
    /// The best score of its hits.
    pub score: f32,
    /// The lines, as they are on disk.
    pub text: String,
    /// The span was cut to fit the budget: lines after `end_line` are left out.
    pub cut: bool,
}

/// A file's spans, in line order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileHits {
    /// The repository root.
    pub repo: String,
    /// Path relative to `repo`.
    pub path: String,
    /// Language name.
    pub language: String,
    /// The file changed after it was indexed: lines may have moved.
    pub stale: bool,
    /// Merged spans, in line order.
    pub spans: Vec<Span>,
}

/// How the packed hits are printed (and so counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header line per file and per span, then numbered lines.
    Text,
    /// One [`FileHits`] object per line.
    Json,
}

/// What [`pack`] chose.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// Files in the order of their best hit.
    pub files: Vec<FileHits>,
    /// Hits left out (budget spent, or their file could not be read).
    pub omitted: usize,
}

impl Packed {
    /// The output, as printed.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json => self
                .files
                .iter()
                .map(|f| serde_json::to_string(f).unwrap_or_default() + "\n")
                .collect(),
            Format::Text => {
                let mut out = String::new();
                for (i, f) in self.files.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    let stale = if f.stale {
                        " (changed since indexed)"
                    } else {
                        ""
                    };
                    let _ = writeln!(out, "{}{stale}", Path::new(&f.repo).join(&f.path).display());
                    for s in &f.spans {
                        let _ = writeln!(
                            out,
                            "@@ {}-{} {}",
                            s.start_line,
                            s.end_line,
                            s.symbols.join(", ")
                        );
                        for (n, line) in s.text.lines().enumerate() {
                            let _ = writeln!(out, "{:>5}  {line}", s.start_line as usize + n);
                        }
                        if s.cut {
                            let _ = writeln!(out, "      … (cut to fit --max-tokens)");
                        }
                    }
                }
                out
            }
        }
    }
}

/// A file's lines, read once.
struct Source {
    lines: Vec<String>,
}

/// Packs `hits` (best first) into at most `max_tokens` of `format` output,
/// each with `context` lines before and after; `read` gives a file's text
/// (`None`: unreadable, its hits are left out).
pub fn pack(
    hits: &[Hit],
    context: u32,
    max_tokens: usize,
    format: Format,
    read: impl Fn(&Path) -> Option<String>,
) -> Packed {
    let mut packed = Packed {
        files: Vec::new(),
        omitted: 0,
    };
    let mut sources: HashMap<(String, String), Option<Source>> = HashMap::new();
    for (i, hit) in hits.iter().enumerate() {
        let key = (hit.repo.clone(), hit.path.clone());
        let source = sources.entry(key).or_insert_with(|| {
            read(&Path::new(&hit.repo).join(&hit.path)).map(|t| Source {
                lines: t.lines().map(str::to_owned).collect(),
            })
        });
        let Some(source) = source.as_ref().filter(|s| !s.lines.is_empty()) else {
            packed.omitted += 1;
            continue;
        };
        let last = source.lines.len() as u32;
        let start = hit.start_line.saturating_sub(context).clamp(1, last);
        let end = hit.end_line.saturating_add(context).clamp(start, last);
        let mut tried = packed.clone();
        add(&mut tried, hit, source, start, end);
        if estimate_tokens(&tried.render(format)) <= max_tokens {
            packed = tried;
            continue;
        }
        // Whole, it does not fit: as many of its first lines as do, then stop.
        let mut fit = None;
        for cut_end in (start..end).rev() {
            if ((cut_end - start + 1) as usize) < MIN_CUT_LINES {
                break;
            }
            let mut cut = packed.clone();
            add(&mut cut, hit, source, start, cut_end);
            mark_cut(&mut cut, hit, cut_end);
            if estimate_tokens(&cut.render(format)) <= max_tokens {
                fit = Some(cut);
                break;
            }
        }
        if let Some(cut) = fit {
            packed = cut;
            packed.omitted += hits.len() - i - 1;
        } else {
            packed.omitted += hits.len() - i;
        }
        break;
    }
    packed
}

/// Adds lines `start..=end` of `hit`'s file to `packed`, merged with the
/// file's spans they overlap or touch.
fn add(packed: &mut Packed, hit: &Hit, source: &Source, start: u32, end: u32) {
    let at = match packed
        .files
        .iter()
        .position(|f| f.repo == hit.repo && f.path == hit.path)
    {
        Some(at) => at,
        None => {
            packed.files.push(FileHits {
                repo: hit.repo.clone(),
                path: hit.path.clone(),
                language: hit.language.clone(),
                stale: hit.stale,
                spans: Vec::new(),
            });
            packed.files.len() - 1
        }
    };
    let file = &mut packed.files[at];
    let (mut start, mut end) = (start, end);
    let mut symbols: Vec<String> = Vec::new();
    let mut score = hit.score;
    let mut cut = false;
    file.spans.retain(|s| {
        let touches =
            s.start_line <= end.saturating_add(1) && start <= s.end_line.saturating_add(1);
        if touches {
            start = start.min(s.start_line);
            end = end.max(s.end_line);
            symbols.extend(s.symbols.iter().cloned());
            score = score.max(s.score);
            cut |= s.cut;
        }
        !touches
    });
    if let Some(symbol) = &hit.symbol
        && !symbols.contains(symbol)
    {
        symbols.push(symbol.clone());
    }
    let text = source.lines[start as usize - 1..end as usize].join("\n");
    file.spans.push(Span {
        start_line: start,
        end_line: end,
        symbols,
        score,
        text,
        cut,
    });
    file.spans.sort_by_key(|s| s.start_line);
}

/// Marks the span of `hit`'s file that ends at `end` as cut.
fn mark_cut(packed: &mut Packed, hit: &Hit, end: u32) {
    if let Some(span) = packed
        .files
        .iter_mut()
        .filter(|f| f.repo == hit.repo && f.path == hit.path)
        .flat_map(|f| f.spans.iter_mut())
        .find(|s| s.end_line == end)
    {
        span.cut = true;
    }
}

/// Reads a file for [`pack`], at most [`READ_LIMIT`] bytes, lossily as UTF-8.
pub fn read_file(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(READ_LIMIT).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(path: &str, start: u32, end: u32, symbol: &str, score: f32) -> Hit {
        Hit {
            repo: "/r".to_owned(),
            path: path.to_owned(),
            start_line: start,
            end_line: end,
            symbol: Some(symbol.to_owned()),
            kind: "function".to_owned(),
            language: "rust".to_owned(),
            score,
            snippet: String::new(),
            stale: false,
        }
    }

    fn file_of(lines: usize) -> String {
        (1..=lines).map(|n| format!("line {n} of code\n")).collect()
    }

    fn read(path: &Path) -> Option<String> {
        match path.to_str()? {
            "/r/a.rs" => Some(file_of(100)),
            "/r/b.rs" => Some(file_of(40)),
            _ => None,
        }
    }

    #[test]
    fn overlapping_and_adjacent_hits_of_a_file_merge_and_files_keep_rank_order() {
        let hits = [
            hit("a.rs", 10, 20, "f", 0.9),
            hit("b.rs", 5, 8, "g", 0.8),
            hit("a.rs", 21, 30, "h", 0.7),
            hit("a.rs", 60, 62, "k", 0.6),
            hit("gone.rs", 1, 5, "x", 0.5),
        ];
        let p = pack(&hits, 0, usize::MAX, Format::Text, read);
        assert_eq!(p.omitted, 1, "the unreadable file");
        let paths: Vec<&str> = p.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.rs", "b.rs"]);
        let a: Vec<(u32, u32)> = p.files[0]
            .spans
            .iter()
            .map(|s| (s.start_line, s.end_line))
            .collect();
        assert_eq!(a, [(10, 30), (60, 62)]);
        assert_eq!(p.files[0].spans[0].symbols, ["f", "h"]);
        assert!(p.files[0].spans[0].text.starts_with("line 10 of code"));
        assert!(p.files[0].spans[0].text.ends_with("line 30 of code"));
    }

    #[test]
    fn context_lines_widen_each_span_within_the_file() {
        let p = pack(
            &[hit("b.rs", 2, 3, "g", 1.0)],
            5,
            usize::MAX,
            Format::Text,
            read,
        );
        let s = &p.files[0].spans[0];
        assert_eq!((s.start_line, s.end_line), (1, 8));
        let p = pack(
            &[hit("b.rs", 38, 40, "g", 1.0)],
            5,
            usize::MAX,
            Format::Text,
            read,
        );
        let s = &p.files[0].spans[0];
        assert_eq!((s.start_line, s.end_line), (33, 40));
    }

    #[test]
    fn the_budget_is_kept_and_a_span_that_does_not_fit_is_cut_and_marked() {
        let hits = [
            hit("a.rs", 1, 10, "f", 0.9),
            hit("b.rs", 1, 40, "g", 0.8),
            hit("a.rs", 50, 60, "h", 0.7),
        ];
        for format in [Format::Text, Format::Json] {
            let whole = pack(&hits[..1], 0, usize::MAX, format, read);
            let budget = estimate_tokens(&whole.render(format)) + 80;
            let p = pack(&hits, 0, budget, format, read);
            let out = p.render(format);
            assert!(estimate_tokens(&out) <= budget, "{format:?}: {out}");
            assert_eq!(p.files.len(), 2, "{format:?}");
            let cut = &p.files[1].spans[0];
            assert!(cut.cut && cut.end_line < 40, "{format:?}: {cut:?}");
            assert_eq!(p.omitted, 1, "{format:?}");
        }
        // Too small for even the first hit's first lines: nothing, all omitted.
        let p = pack(&hits, 0, 5, Format::Text, read);
        assert!(p.files.is_empty());
        assert_eq!(p.omitted, 3);
    }
}
