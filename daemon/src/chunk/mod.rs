//! Turning a file's text into chunks: tree-sitter entities where the language has
//! a grammar, line windows everywhere else. Pure: text in, chunks out.
//!
//! Entities are found by one query per language (`queries/<lang>.scm`), whose
//! top capture names the kind (`@function`, `@class`, …) and whose `@name` names
//! it. Functions and methods are leaves: whatever they nest stays inside them.
//! Containers (classes, impls, modules, …) give their members a qualified name
//! (`Config.from_pyfile`, `impl Parser::parse`) and keep their own head (the
//! declaration, fields, docstring) as a chunk of its own, so no line is embedded twice.
//!
//! The text that is embedded is the chunk's lines plus context the user does not
//! see in the snippet: the first line of each enclosing scope, and for the later
//! windows of a split entity, its signature. The path is never part of it, so a
//! rename embeds nothing new.

mod lang;

use std::fmt;

use serde::Serialize;
use tree_sitter::{Parser, Query, QueryCursor, StreamingIterator};

pub use lang::{LANGS, Lang, detect};

/// What a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A free function.
    Function,
    /// A function inside a class, impl, trait or interface.
    Method,
    /// A class.
    Class,
    /// A struct or union.
    Struct,
    /// An enum.
    Enum,
    /// A Rust trait.
    Trait,
    /// An interface (TypeScript, Java, Go).
    Interface,
    /// A Rust impl block.
    Impl,
    /// A module or namespace.
    Module,
    /// A type alias.
    Type,
    /// A macro definition.
    Macro,
    /// Lines that belong to no entity: top-level code, or a file without a grammar.
    Window,
}

impl Kind {
    /// The lowercase name used in `Hit.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Method => "method",
            Self::Class => "class",
            Self::Struct => "struct",
            Self::Enum => "enum",
            Self::Trait => "trait",
            Self::Interface => "interface",
            Self::Impl => "impl",
            Self::Module => "module",
            Self::Type => "type",
            Self::Macro => "macro",
            Self::Window => "window",
        }
    }

    fn from_capture(name: &str) -> Option<Self> {
        Some(match name {
            "function" => Self::Function,
            "method" => Self::Method,
            "class" => Self::Class,
            "struct" => Self::Struct,
            "enum" => Self::Enum,
            "trait" => Self::Trait,
            "interface" => Self::Interface,
            "impl" => Self::Impl,
            "module" => Self::Module,
            "type" => Self::Type,
            "macro" => Self::Macro,
            _ => return None,
        })
    }

    /// Functions and methods keep everything they nest.
    fn is_leaf(self) -> bool {
        matches!(self, Self::Function | Self::Method | Self::Macro)
    }

    /// A function directly inside one of these is a method.
    fn holds_methods(self) -> bool {
        matches!(
            self,
            Self::Class | Self::Struct | Self::Enum | Self::Trait | Self::Interface | Self::Impl
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of a file, ready to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Qualified name of the entity, if the chunk belongs to one.
    pub symbol: Option<String>,
    /// What the chunk is.
    pub kind: Kind,
    /// Language name (`rust`, `python`, `markdown`, `text`, …).
    pub language: &'static str,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, 1-based, inclusive.
    pub end_line: u32,
    /// The text to embed: scope context, then the chunk's lines.
    pub text: String,
}

impl Chunk {
    /// The chunk's identity: the first 96 bits of blake3 of the embedded text
    /// (a collision among a billion chunks is a one-in-10^11 event). Equal keys
    /// embed to the same vector, so a moved or renamed function costs no
    /// embedding. 96 bits, not 128, so ten vectors fit a page of the store.
    pub fn key(&self) -> [u8; 12] {
        let hash = blake3::hash(self.text.as_bytes());
        let mut key = [0; 12];
        key.copy_from_slice(&hash.as_bytes()[..12]);
        key
    }
}

/// Sizes of chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Most characters of source in one chunk; larger entities are split.
    pub max_chars: usize,
    /// Most lines in one window.
    pub max_lines: usize,
    /// Lines shared by consecutive windows of one entity or region.
    pub overlap_lines: usize,
}

impl ChunkOptions {
    /// Sizes for a model that reads `max_tokens` tokens: chunks it reads whole,
    /// at most [`MAX_CHUNK_TOKENS`]. all-MiniLM-L6-v2 (256) gets the default.
    pub fn for_model(max_tokens: usize) -> Self {
        Self::for_max_tokens(max_tokens.min(MAX_CHUNK_TOKENS))
    }

    /// Sizes for a model that reads `max_tokens` tokens (code runs about five
    /// characters a token with BERT's word pieces).
    pub fn for_max_tokens(max_tokens: usize) -> Self {
        Self {
            max_chars: (max_tokens * 5).max(200),
            max_lines: 60,
            overlap_lines: 3,
        }
    }
}

/// Longest chunk, in model tokens, whatever the model reads: a search hit is
/// a place in a file, and a model with 8,192 positions would otherwise make
/// chunks of whole files.
pub const MAX_CHUNK_TOKENS: usize = 512;

impl Default for ChunkOptions {
    fn default() -> Self {
        Self::for_max_tokens(256)
    }
}

/// A definitions query failed to compile (a bug in a `.scm` file).
#[derive(Debug, thiserror::Error)]
#[error("queries/{language}.scm: {source}")]
pub struct QueryError {
    language: &'static str,
    source: tree_sitter::QueryError,
}

/// Compiled queries for every language; cheap to share across threads.
#[derive(Debug)]
pub struct Chunker {
    queries: Vec<Option<CompiledQuery>>,
}

#[derive(Debug)]
struct CompiledQuery {
    query: Query,
    language: tree_sitter::Language,
    /// Capture index → kind, for the top captures.
    kinds: Vec<Option<Kind>>,
    name: Option<u32>,
    trait_name: Option<u32>,
    receiver: Option<u32>,
}

impl Chunker {
    /// Compiles the query of every language.
    pub fn new() -> Result<Self, QueryError> {
        let queries = LANGS
            .iter()
            .map(|l| {
                l.grammar
                    .as_ref()
                    .map(|g| {
                        let language = (g.language)();
                        let query =
                            Query::new(&language, g.query).map_err(|source| QueryError {
                                language: l.name,
                                source,
                            })?;
                        let names = query.capture_names();
                        let index = |n: &str| names.iter().position(|c| *c == n).map(|i| i as u32);
                        Ok(CompiledQuery {
                            kinds: names.iter().map(|n| Kind::from_capture(n)).collect(),
                            name: index("name"),
                            trait_name: index("trait_name"),
                            receiver: index("receiver"),
                            language,
                            query,
                        })
                    })
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { queries })
    }

    /// Splits `text`, the contents of the file at `path`, into chunks in line order.
    pub fn chunk(&self, path: &str, text: &str, options: &ChunkOptions) -> Vec<Chunk> {
        let lang = detect(path);
        let lines: Vec<&str> = text.lines().collect();
        let compiled = LANGS
            .iter()
            .position(|l| std::ptr::eq(l, lang))
            .and_then(|i| self.queries[i].as_ref());
        let defs = match (compiled, &lang.grammar) {
            (Some(q), Some(g)) => definitions(q, g, text, &lines),
            _ => None,
        };
        let mut out = Vec::new();
        match defs {
            Some(defs) => emit_entities(lang, &defs, &lines, options, &mut out),
            None => windows(
                lang,
                &lines,
                0,
                lines.len(),
                None,
                Kind::Window,
                "",
                options,
                &mut out,
            ),
        }
        out
    }
}

/// A definition found by a query, 0-based inclusive lines.
#[derive(Debug, Clone)]
struct Def {
    kind: Kind,
    name: String,
    start: usize,
    end: usize,
    start_byte: usize,
    end_byte: usize,
    parent: Option<usize>,
}

fn definitions(
    q: &CompiledQuery,
    g: &lang::Grammar,
    text: &str,
    lines: &[&str],
) -> Option<Vec<Def>> {
    let mut parser = Parser::new();
    parser.set_language(&q.language).ok()?;
    let tree = parser.parse(text, None)?;
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(&q.query, tree.root_node(), text.as_bytes());
    let mut defs = Vec::new();
    let node_text = |n: tree_sitter::Node| text.get(n.byte_range()).unwrap_or("").trim();
    while let Some(m) = matches.next() {
        let mut item = None;
        let (mut name, mut trait_name, mut receiver) = (None, None, None);
        for c in m.captures() {
            if Some(c.index) == q.name {
                name = Some(node_text(c.node));
            } else if Some(c.index) == q.trait_name {
                trait_name = Some(node_text(c.node));
            } else if Some(c.index) == q.receiver {
                receiver = Some(node_text(c.node));
            } else if let Some(kind) = q.kinds[c.index as usize] {
                item = Some((kind, c.node));
            }
        }
        let (Some((kind, node)), Some(name)) = (item, name) else {
            continue;
        };
        let name = match (kind, trait_name, receiver) {
            (Kind::Impl, Some(t), _) => format!("impl {} for {}", one_line(t), one_line(name)),
            (Kind::Impl, None, _) => format!("impl {}", one_line(name)),
            (_, _, Some(r)) => format!("{r}{}{name}", g.separator),
            _ => one_line(name).to_owned(),
        };
        let start = node.start_position().row;
        let end_pos = node.end_position();
        let end = if end_pos.column == 0 && end_pos.row > start {
            end_pos.row - 1
        } else {
            end_pos.row
        };
        defs.push(Def {
            kind,
            name,
            start,
            end: end.min(lines.len().saturating_sub(1)),
            start_byte: node.start_byte(),
            end_byte: node.end_byte(),
            parent: None,
        });
    }
    // Outer first; of two matches for one definition (a decorated def and the
    // def inside it), keep the outer, which includes the decorators.
    defs.sort_by_key(|d| (d.start_byte, std::cmp::Reverse(d.end_byte)));
    defs.dedup_by(|inner, outer| inner.end_byte == outer.end_byte && inner.name == outer.name);
    // Parents by containment; drop what nests inside a leaf.
    let mut stack: Vec<usize> = Vec::new();
    let mut kept: Vec<Def> = Vec::new();
    for mut d in defs {
        while let Some(&top) = stack.last() {
            if kept[top].end_byte >= d.end_byte && kept[top].start_byte <= d.start_byte {
                break;
            }
            stack.pop();
        }
        if let Some(&top) = stack.last() {
            if kept[top].kind.is_leaf() {
                continue;
            }
            d.parent = Some(top);
            if d.kind == Kind::Function && kept[top].kind.holds_methods() {
                d.kind = Kind::Method;
            }
            d.name = format!("{}{}{}", kept[top].name, g.separator, d.name);
        }
        stack.push(kept.len());
        kept.push(d);
    }
    if g.clauses {
        kept = merge_clauses(kept, lines, g.leading);
    }
    // Doc comments, attributes and decorators directly above belong to the definition.
    let mut floor = 0;
    for i in 0..kept.len() {
        let limit = match kept[i].parent {
            Some(p) => kept[p].start + 1,
            None => floor,
        };
        let mut start = kept[i].start;
        while start > limit && is_leading(lines[start - 1], g.leading) {
            start -= 1;
        }
        // Never reach back into the previous sibling.
        if let Some(prev) = kept[..i].iter().rev().find(|p| p.parent == kept[i].parent) {
            start = start.max(prev.end + 1).min(kept[i].start);
        }
        kept[i].start = start;
        if kept[i].parent.is_none() {
            floor = kept[i].end + 1;
        }
    }
    Some(kept)
}

/// Joins a function to the one before it when both have one name and one scope
/// and nothing but blanks, comments and attributes lies between: the clauses of
/// one definition (a Haskell signature and its equations, Elixir's `def` heads).
/// Leaves have no children, so a leaf's next sibling comes right after it.
fn merge_clauses(defs: Vec<Def>, lines: &[&str], leading: &[&str]) -> Vec<Def> {
    let mut index = Vec::with_capacity(defs.len());
    let mut out: Vec<Def> = Vec::with_capacity(defs.len());
    for mut d in defs {
        d.parent = d.parent.map(|p| index[p]);
        if let Some(last) = out.last_mut()
            && last.kind.is_leaf()
            && last.kind == d.kind
            && last.name == d.name
            && last.parent == d.parent
            && last.end < d.start
            && lines[last.end + 1..d.start]
                .iter()
                .all(|l| l.trim().is_empty() || is_leading(l, leading))
        {
            last.end = d.end;
            last.end_byte = d.end_byte;
            index.push(out.len() - 1);
            continue;
        }
        index.push(out.len());
        out.push(d);
    }
    out
}

/// Blank, punctuation only (`}`, `});`) or Ruby's `end`: nothing to search for.
fn is_closer(line: &str) -> bool {
    let t = line.trim();
    t == "end" || !t.chars().any(char::is_alphanumeric)
}

fn is_leading(line: &str, prefixes: &[&str]) -> bool {
    let t = line.trim_start();
    !t.is_empty() && prefixes.iter().any(|p| t.starts_with(p))
}

fn one_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Emits chunks for definitions and windows for the code between them.
fn emit_entities(
    lang: &'static Lang,
    defs: &[Def],
    lines: &[&str],
    options: &ChunkOptions,
    out: &mut Vec<Chunk>,
) {
    // Lines [from, to) not covered by any top-level definition become windows.
    let mut cursor = 0;
    for (i, d) in defs.iter().enumerate().filter(|(_, d)| d.parent.is_none()) {
        windows(
            lang,
            lines,
            cursor,
            d.start,
            None,
            Kind::Window,
            "",
            options,
            out,
        );
        emit_def(lang, defs, i, lines, options, out);
        cursor = d.end + 1;
    }
    windows(
        lang,
        lines,
        cursor,
        lines.len(),
        None,
        Kind::Window,
        "",
        options,
        out,
    );
}

fn emit_def(
    lang: &'static Lang,
    defs: &[Def],
    i: usize,
    lines: &[&str],
    options: &ChunkOptions,
    out: &mut Vec<Chunk>,
) {
    let d = &defs[i];
    let context = scope_context(defs, i, lines);
    let children: Vec<usize> = (i + 1..defs.len())
        .filter(|&c| defs[c].parent == Some(i))
        .collect();
    if children.is_empty() {
        windows(
            lang,
            lines,
            d.start,
            d.end + 1,
            Some(&d.name),
            d.kind,
            &context,
            options,
            out,
        );
        return;
    }
    // The container's own lines: its head, the gaps between members, its tail.
    let mut cursor = d.start;
    for &c in &children {
        windows(
            lang,
            lines,
            cursor,
            defs[c].start,
            Some(&d.name),
            d.kind,
            &context,
            options,
            out,
        );
        emit_def(lang, defs, c, lines, options, out);
        cursor = defs[c].end + 1;
    }
    windows(
        lang,
        lines,
        cursor,
        d.end + 1,
        Some(&d.name),
        d.kind,
        &context,
        options,
        out,
    );
}

/// The first line of each enclosing definition, outermost first.
fn scope_context(defs: &[Def], i: usize, lines: &[&str]) -> String {
    let mut heads = Vec::new();
    let mut p = defs[i].parent;
    while let Some(j) = p {
        heads.push(header_line(&defs[j], lines));
        p = defs[j].parent;
    }
    heads.reverse();
    heads.join("\n")
}

/// The line that declares `d`, skipping its leading comments and attributes.
fn header_line<'a>(d: &Def, lines: &[&'a str]) -> &'a str {
    lines[d.start..=d.end]
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && !["//", "/*", "*", "#", "@"].iter().any(|p| l.starts_with(p)))
        .unwrap_or_else(|| lines[d.start].trim())
}

/// Windows over lines `[from, to)`, skipping regions with nothing but blanks and
/// closers (a closing brace is not worth a vector).
#[allow(clippy::too_many_arguments)]
fn windows(
    lang: &'static Lang,
    lines: &[&str],
    from: usize,
    to: usize,
    symbol: Option<&str>,
    kind: Kind,
    context: &str,
    options: &ChunkOptions,
    out: &mut Vec<Chunk>,
) {
    let to = to.min(lines.len());
    if from >= to || lines[from..to].iter().all(|l| is_closer(l)) {
        return;
    }
    // Trim blank lines at both ends so line ranges point at code.
    let from = (from..to)
        .find(|&i| !lines[i].trim().is_empty())
        .unwrap_or(from);
    let to = (from..to)
        .rev()
        .find(|&i| !lines[i].trim().is_empty())
        .map_or(to, |i| i + 1);
    let signature = lines[from].trim();
    let mut start = from;
    loop {
        let mut end = start;
        let mut chars = 0;
        while end < to && end - start < options.max_lines {
            let len = lines[end].len() + 1;
            if end > start && chars + len > options.max_chars {
                break;
            }
            chars += len;
            end += 1;
        }
        let body = lines[start..end].join("\n");
        let mut text = String::with_capacity(context.len() + signature.len() + body.len() + 2);
        if !context.is_empty() {
            text.push_str(context);
            text.push('\n');
        }
        if start > from && kind != Kind::Window {
            // A later window of a split entity: say which entity it is.
            text.push_str(signature);
            text.push('\n');
        }
        text.push_str(&body);
        if !lines[start..end].iter().all(|l| is_closer(l)) {
            out.push(Chunk {
                symbol: symbol.map(str::to_owned),
                kind,
                language: lang.name,
                start_line: start as u32 + 1,
                end_line: end as u32,
                text,
            });
        }
        if end >= to {
            break;
        }
        start = end.saturating_sub(options.overlap_lines).max(start + 1);
    }
}

#[cfg(test)]
mod tests;
