//! The index's SQLite writer alone: a corpus is read, chunked and given hash
//! vectors up front, then committed into a fresh store in batches of a GPU's
//! size, and only the commits (`Store::commit`: SQLite and FTS5, no HNSW) are
//! timed. On a GPU the one writer thread is a limit of the cold index; here it
//! is measured on its own, without the other stages sharing the cores.
//!
//!   cargo run --release -p codesearchd --features test-support \
//!       --example store-writer -- [--commit CHUNKS] ROOT...

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use codesearchd::chunk::{ChunkOptions, Chunker};
use codesearchd::embed::hash::HashEmbedder;
use codesearchd::embed::{Embedder, InputKind};
use codesearchd::store::{FileRow, FileUpdate, LexicalText, Manifest, NewChunk, Store};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files_under(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let mut roots = Vec::new();
    let mut per_commit = 8192;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--commit" => {
                per_commit = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--commit needs a number"))?
                    .parse()?
            }
            flag if flag.starts_with("--") => anyhow::bail!("unknown flag {flag}"),
            root => roots.push(PathBuf::from(root)),
        }
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "usage: store-writer [--commit CHUNKS] ROOT..."
    );
    let chunker = Chunker::new()?;
    let options = ChunkOptions::for_model(256);
    let mut embedder = HashEmbedder::new("minilm", 384);
    let mut paths = Vec::new();
    for root in &roots {
        files_under(root, &mut paths)?;
    }
    // Every update up front, in commits of about `per_commit` chunks.
    let started = Instant::now();
    let mut commits: Vec<Vec<FileUpdate>> = vec![Vec::new()];
    let (mut in_commit, mut chunks_total) = (0, 0);
    for path in &paths {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        if bytes.len() > 1 << 20 {
            continue;
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let rel = path.to_string_lossy().into_owned();
        let chunks = chunker.chunk(&rel, text, &options);
        if chunks.is_empty() {
            continue;
        }
        let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
        let vectors = embedder.embed(&texts, InputKind::Document)?;
        let mut seen = std::collections::HashSet::new();
        let vectors = chunks
            .iter()
            .zip(vectors)
            .filter(|(c, _)| seen.insert(c.key()))
            .map(|(c, v)| (c.key(), v))
            .collect();
        in_commit += chunks.len();
        chunks_total += chunks.len();
        commits
            .last_mut()
            .expect("one commit")
            .push(FileUpdate::Indexed {
                file: FileRow {
                    path: rel,
                    size: bytes.len() as u64,
                    mtime_ns: 0,
                    hash: *blake3::hash(&bytes).as_bytes(),
                    skip: None,
                },
                chunks: chunks
                    .iter()
                    .map(|c| NewChunk {
                        key: c.key(),
                        start_line: c.start_line,
                        end_line: c.end_line,
                        symbol: c.symbol.clone(),
                        kind: c.kind.as_str(),
                        language: c.language,
                        text: LexicalText::new(&c.text),
                    })
                    .collect(),
                vectors,
            });
        if in_commit >= per_commit {
            commits.push(Vec::new());
            in_commit = 0;
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} files, {chunks_total} chunks in {} commits prepared in {:.1} s",
        paths.len(),
        commits.len(),
        started.elapsed().as_secs_f64()
    )?;
    let dir = tempfile::tempdir()?;
    let manifest = Manifest::of(&embedder, &roots[0]);
    let mut store = Store::open(dir.path(), &manifest)?;
    let mut times: Vec<Duration> = Vec::new();
    for commit in commits {
        let started = Instant::now();
        store.commit(commit)?;
        times.push(started.elapsed());
    }
    let total: Duration = times.iter().sum();
    let quarter = times.len().div_ceil(4);
    let last: Duration = times.iter().rev().take(quarter).sum();
    writeln!(
        out,
        "commits: {:.2} s for {chunks_total} chunks, {:.1} µs a chunk; the last quarter of the commits {:.2} s",
        total.as_secs_f64(),
        total.as_secs_f64() * 1e6 / chunks_total.max(1) as f64,
        last.as_secs_f64()
    )?;
    Ok(())
}
