//! The indexing pipeline: walk → what changed → chunk → embed only new keys →
//! store, in batches that each commit, so an interrupted run keeps what it did.
//!
//! A file is re-read only when its size or mtime changed, re-chunked only when its
//! content hash changed, and a chunk is embedded only when no stored vector has its
//! key (the vectors of deleted chunks stay cached for a while, so moving code or
//! switching branches back costs nothing).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rayon::prelude::*;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::chunk::{ChunkOptions, Chunker};
use crate::embed::{EmbedError, Embedder, InputKind};
use crate::store::{
    FileRow, FileUpdate, GraphUpdate, Key, LexicalText, NewChunk, Store, StoreError, StoreReader,
};
use crate::walk::{self, Skips, WalkOptions};

/// Indexing failures.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The root cannot be walked.
    #[error("cannot index {root}: {source}", root = root.display())]
    Root {
        /// The repository root.
        root: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Embedding failed.
    #[error(transparent)]
    Embed(Box<EmbedError>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// [`IndexOptions::cancel`] fired: the batch in hand was committed (its
    /// files whose chunks all had vectors), the HNSW file saved, and the run
    /// stopped; the next run resumes from there.
    #[error("indexing was cancelled (the daemon is shutting down)")]
    Cancelled,
    /// The writer thread stopped taking batches; [`index`] returns the writer's
    /// own error instead whenever it has one.
    #[error("the index writer stopped")]
    WriterStopped,
}

/// What one indexing run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexStats {
    /// Files the walk found.
    pub files_seen: u64,
    /// Files skipped because size and mtime were unchanged.
    pub files_unchanged: u64,
    /// Files read whose content hash was unchanged.
    pub files_same_content: u64,
    /// Files chunked and stored.
    pub files_indexed: u64,
    /// Files removed from the index (deleted, ignored now, or skipped now).
    pub files_removed: u64,
    /// Files read in this run and left out (binary, too big, minified, unreadable).
    pub files_skipped: u64,
    /// Chunks written.
    pub chunks_written: u64,
    /// Chunks whose vector was computed by the model in this run.
    pub chunks_embedded: u64,
    /// Files left out, by reason.
    pub skips: Skips,
    /// Directories a whole walk entered (see [`walk::Walk::dirs`]); empty for
    /// [`index_dirs`].
    #[serde(skip)]
    pub dirs: Vec<String>,
    /// Where the run's time went (wall clock), for the benchmarks' breakdown.
    #[serde(skip)]
    pub times: StageTimes,
}

/// Wall-clock time of an indexing run's stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageTimes {
    /// Reading, hashing and chunking changed files (on every core).
    pub prepare: Duration,
    /// Waiting for the reading thread's next window (the embedding thread).
    pub read_wait: Duration,
    /// Looking up the vectors the store already has (the embedding thread).
    pub lookup: Duration,
    /// Waiting for the embedder.
    pub embed: Duration,
    /// Committing to SQLite, on the writer thread: it overlaps the next
    /// batch's reading and embedding.
    pub write: Duration,
    /// Updating the HNSW graph, on a thread of its own after the writer's.
    pub graph: Duration,
    /// Waiting for the writer: to take a batch while it still wrote the one
    /// before, and at the end for the last one.
    pub write_wait: Duration,
}

impl IndexStats {
    /// Files of the walk this run has dealt with so far.
    pub fn files_done(&self) -> u64 {
        self.files_unchanged + self.files_same_content + self.files_indexed + self.files_skipped
    }
}

/// Texts per embedding call within a batch of files on a CPU: between calls,
/// progress is reported, so a large batch is not seconds of silence.
const EMBED_GROUP: usize = 128;

/// Device batches per commit on a device with large batches (a GPU): 4 batches
/// of 512 are 2,048 texts, which scale the commits to 8,192 chunks.
const BATCHES_PER_COMMIT: usize = 4;

/// How many times a CPU's commit a device's commit holds: 1 on a CPU, 16 with
/// a GPU's batches of 512.
fn commit_scale(embedder: &dyn Embedder) -> usize {
    (embedder.batch_size() * BATCHES_PER_COMMIT / EMBED_GROUP).max(1)
}

/// Texts per embedding call for `embedder` out of a batch of `pending`: on a
/// CPU [`EMBED_GROUP`], so progress flows during a batch; on a device with
/// larger batches the whole batch in one call, so the engine tokenizes each
/// group while the device runs the one before and the device never idles
/// between calls (calls of 2,048 texts did not overlap the two: the pipeline
/// embedded 13,900 chunks/s on an H100 where the engine alone makes 26,600).
fn embed_group(embedder: &dyn Embedder, pending: usize) -> usize {
    if commit_scale(embedder) > 1 {
        pending.max(1)
    } else {
        EMBED_GROUP
    }
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Walk limits.
    pub walk: WalkOptions,
    /// Chunk sizes; `None` follows the embedder's input limit
    /// ([`ChunkOptions::for_model`]), so no chunk is longer than the model reads.
    pub chunk: Option<ChunkOptions>,
    /// Chunks per committed batch with a CPU's batches (a device with larger
    /// ones commits as many times more): big enough to keep the embedder's
    /// batches full, small enough that an interrupted run loses little.
    pub chunks_per_commit: usize,
    /// Checked between files and between embedding calls: once it fires, the run
    /// commits what it has embedded, saves the HNSW file and returns
    /// [`IndexError::Cancelled`]. A model call in flight is not waited for when
    /// the embedder gives up on the same token (`EmbedHandle::cancelled_by`).
    pub cancel: CancellationToken,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self {
            walk: WalkOptions::default(),
            chunk: None,
            chunks_per_commit: 512,
            cancel: CancellationToken::new(),
        }
    }
}

/// Brings the store in line with the files under `root`; `progress` is called
/// often (after the walk, per file, per embedding call) and should be cheap.
pub fn index(
    root: &Path,
    store: &mut Store,
    embedder: &mut dyn Embedder,
    chunker: &Chunker,
    options: &IndexOptions,
    progress: impl FnMut(&IndexStats),
) -> Result<IndexStats, IndexError> {
    if options.cancel.is_cancelled() {
        return Err(IndexError::Cancelled);
    }
    let walked = walk::walk(root, &options.walk).map_err(|source| IndexError::Root {
        root: root.to_owned(),
        source,
    })?;
    let known = store.files()?;
    let result = apply(walked, known, store, embedder, chunker, options, progress);
    let stats = saving_on_cancel(store, result)?;
    store.compact()?;
    store.save_hnsw()?;
    Ok(stats)
}

/// A cancelled run saves the HNSW file of what it committed before it returns.
fn saving_on_cancel(
    store: &mut Store,
    result: Result<IndexStats, IndexError>,
) -> Result<IndexStats, IndexError> {
    if let Err(IndexError::Cancelled) = result {
        store.save_hnsw()?;
    }
    result
}

/// Like [`index`] (but leaving the HNSW file to the caller to save), for the files directly inside `dirs` (relative to `root`)
/// only: what a watcher runs for a batch of changed paths. Subdirectories are
/// not entered; a directory that is gone loses its files.
pub fn index_dirs(
    root: &Path,
    dirs: &[String],
    store: &mut Store,
    embedder: &mut dyn Embedder,
    chunker: &Chunker,
    options: &IndexOptions,
    progress: impl FnMut(&IndexStats),
) -> Result<IndexStats, IndexError> {
    if !root.is_dir() {
        return Err(IndexError::Root {
            root: root.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the repository root is gone",
            ),
        });
    }
    let walked = walk::walk_dirs(root, dirs, &options.walk).map_err(|source| IndexError::Root {
        root: root.to_owned(),
        source,
    })?;
    let scope: HashSet<&str> = dirs.iter().map(String::as_str).collect();
    let mut known = store.files()?;
    known.retain(|path, _| scope.contains(parent_dir(path)));
    let result = apply(walked, known, store, embedder, chunker, options, progress);
    let stats = saving_on_cancel(store, result)?;
    store.compact()?;
    Ok(stats)
}

/// The folder part of a relative path: `""` for a file at the root.
pub fn parent_dir(rel: &str) -> &str {
    rel.rfind('/').map_or("", |i| &rel[..i])
}

/// Brings the store's `known` files in line with the `walked` ones.
///
/// Four stages run side by side: a reader thread reads and chunks the next
/// window of files ([`plan`]); this thread embeds a batch; a writer thread,
/// which owns the store meanwhile, commits the batch before to SQLite; a graph
/// thread adds the one before that to the HNSW graph (on a GPU the host side is
/// the limit, and reading, SQLite and the graph each took a large part of it).
/// One item waits between stages at most, so memory stays bounded; the run
/// returns once the writer and the graph thread have done all they were handed.
fn apply(
    walked: walk::Walk,
    known: HashMap<String, FileRow>,
    store: &mut Store,
    embedder: &mut dyn Embedder,
    chunker: &Chunker,
    options: &IndexOptions,
    progress: impl FnMut(&IndexStats),
) -> Result<IndexStats, IndexError> {
    // A reader of its own: the writer thread owns the store meanwhile.
    let vectors = store.reader()?;
    let graph = store.graph_writer();
    std::thread::scope(|scope| {
        let (send, receive) = std::sync::mpsc::sync_channel::<Vec<FileUpdate>>(1);
        let (to_graph, for_graph) = std::sync::mpsc::sync_channel::<GraphUpdate>(1);
        let writer = scope.spawn(move || -> Result<Duration, StoreError> {
            let mut busy = Duration::ZERO;
            for updates in receive {
                let started = Instant::now();
                let update = store.commit(updates)?;
                busy += started.elapsed();
                if to_graph.send(update).is_err() {
                    // The graph thread failed; its error is the run's.
                    break;
                }
            }
            Ok(busy)
        });
        let grapher = scope.spawn(move || -> Result<Duration, StoreError> {
            let mut busy = Duration::ZERO;
            for update in for_graph {
                let started = Instant::now();
                in_pool(&GRAPH_POOL, "hnsw", || graph.apply(update))?;
                busy += started.elapsed();
            }
            Ok(busy)
        });
        let batches = Batches {
            vectors: &vectors,
            send,
        };
        let result = plan(
            walked, known, &batches, embedder, chunker, options, progress,
        );
        // Closing the channel lets the writer, then the graph thread, finish
        // what they hold.
        drop(batches);
        let waited = Instant::now();
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let graphed = grapher
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (result, written, graphed) {
            (_, Err(e), _) | (_, _, Err(e)) => Err(e.into()),
            (Err(e), ..) => Err(e),
            (Ok(mut stats), Ok(sql), Ok(hnsw)) => {
                stats.times.write = sql;
                stats.times.graph = hnsw;
                stats.times.write_wait += waited.elapsed();
                Ok(stats)
            }
        }
    })
}

/// Where [`plan`] sends its batches: the writer thread, and the vectors it has
/// committed so far.
struct Batches<'a> {
    vectors: &'a StoreReader,
    send: std::sync::mpsc::SyncSender<Vec<FileUpdate>>,
}

impl Batches<'_> {
    /// Hands `updates` to the writer; blocks while it still writes the batch before.
    fn write(&self, updates: Vec<FileUpdate>, stats: &mut IndexStats) -> Result<(), IndexError> {
        let started = Instant::now();
        let sent = self.send.send(updates);
        stats.times.write_wait += started.elapsed();
        sent.map_err(|_| IndexError::WriterStopped)
    }
}

/// [`apply`]'s planning side: what changed, chunked and embedded, in batches.
fn plan(
    walked: walk::Walk,
    mut known: HashMap<String, FileRow>,
    store: &Batches<'_>,
    embedder: &mut dyn Embedder,
    chunker: &Chunker,
    options: &IndexOptions,
    mut progress: impl FnMut(&IndexStats),
) -> Result<IndexStats, IndexError> {
    let mut stats = IndexStats {
        files_seen: walked.files.len() as u64,
        skips: walked.skips,
        dirs: walked.dirs,
        ..IndexStats::default()
    };
    // Unset: what the model reads, for full passes and watched folders alike.
    let chunk_options = options
        .chunk
        .unwrap_or_else(|| ChunkOptions::for_model(embedder.max_tokens()));
    let mut pending: Vec<(FileRow, Vec<crate::chunk::Chunk>)> = Vec::new();
    let mut pending_chunks = 0;
    // Scaled with the embedding calls, so a GPU's calls stay full.
    let per_commit = options.chunks_per_commit * commit_scale(&*embedder);
    let mut updates: Vec<FileUpdate> = Vec::new();
    progress(&stats);
    let cancel = &options.cancel;
    let files = &walked.files[..];
    std::thread::scope(|scope| -> Result<IndexStats, IndexError> {
        // The next window of files is checked, read and chunked on a thread of
        // its own while this one embeds the last (on a GPU, chunking took a
        // fifth of the run when it waited for the embedder and back).
        let (send, windows) = std::sync::mpsc::sync_channel::<Window<'_>>(1);
        let chunk_options = &chunk_options;
        let reader = scope.spawn(move || {
            for window in files.chunks(PREPARE_WINDOW) {
                if cancel.is_cancelled()
                    || send
                        .send(read_window(
                            window,
                            &mut known,
                            chunker,
                            chunk_options,
                            options,
                        ))
                        .is_err()
                {
                    break;
                }
            }
            known
        });
        let mut waited = Instant::now();
        for window in windows {
            stats.times.read_wait += waited.elapsed();
            if cancel.is_cancelled() {
                break;
            }
            stats.files_unchanged += window.unchanged;
            for (reason, rel) in window.skips {
                stats.skips.add(reason, rel);
            }
            stats.times.prepare += window.took;
            for ((entry, previous, _), file) in window.changed.iter().zip(window.prepared) {
                progress(&stats);
                match file {
                    Prepared::Unreadable(err) => {
                        tracing::debug!(path = %entry.path.display(), %err, "unreadable");
                        stats.skips.add(walk::SkipReason::Unreadable, &entry.rel);
                        stats.files_skipped += 1;
                    }
                    Prepared::Skipped(row, reason) => {
                        stats.skips.add(reason, &entry.rel);
                        stats.files_skipped += 1;
                        if previous.as_ref().is_some_and(|p| p.skip.is_none()) {
                            stats.files_removed += 1;
                        }
                        updates.push(FileUpdate::Removed {
                            path: entry.rel.clone(),
                            skipped: Some(row),
                        });
                    }
                    Prepared::SameContent(row) => {
                        stats.files_same_content += 1;
                        updates.push(FileUpdate::Touched(row));
                    }
                    Prepared::Chunked(row, chunks) => {
                        pending_chunks += chunks.len();
                        pending.push((row, chunks));
                    }
                }
                if pending_chunks >= per_commit || cancel.is_cancelled() {
                    flush(
                        store,
                        embedder,
                        &mut pending,
                        &mut updates,
                        &mut stats,
                        &mut progress,
                        cancel,
                    )?;
                    pending_chunks = 0;
                }
            }
            waited = Instant::now();
        }
        if cancel.is_cancelled() {
            return flush(
                store,
                embedder,
                &mut pending,
                &mut updates,
                &mut stats,
                &mut progress,
                cancel,
            )
            .and(Err(IndexError::Cancelled));
        }
        let known = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // Whatever the walk no longer finds is gone (deleted, or ignored now).
        for (path, row) in known {
            if row.skip.is_none() {
                stats.files_removed += 1;
            }
            updates.push(FileUpdate::Removed {
                path,
                skipped: None,
            });
        }
        flush(
            store,
            embedder,
            &mut pending,
            &mut updates,
            &mut stats,
            &mut progress,
            cancel,
        )?;
        progress(&stats);
        Ok(stats)
    })
}

/// A window of the walk, checked and read ahead of the embedder.
struct Window<'a> {
    /// Files whose size and mtime changed, with their rows and mtimes…
    changed: Vec<(&'a walk::FileEntry, Option<FileRow>, i64)>,
    /// …and what reading each gave, in the same order.
    prepared: Vec<Prepared>,
    /// Files whose size and mtime match their rows.
    unchanged: u64,
    /// Skip reasons those rows record.
    skips: Vec<(walk::SkipReason, &'a str)>,
    /// Time spent reading and chunking.
    took: Duration,
}

/// Cheap checks in walk order (taking each file's row out of `known`); the files
/// that changed are then read, hashed and chunked in parallel (tree-sitter is
/// most of the host's work when a GPU embeds).
fn read_window<'a>(
    window: &'a [walk::FileEntry],
    known: &mut HashMap<String, FileRow>,
    chunker: &Chunker,
    chunk_options: &ChunkOptions,
    options: &IndexOptions,
) -> Window<'a> {
    let mut changed = Vec::new();
    let mut unchanged = 0;
    let mut skips = Vec::new();
    for entry in window {
        let previous = known.remove(&entry.rel);
        let mtime_ns = entry
            .mtime
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        if let Some(p) = &previous
            && p.size == entry.size
            && p.mtime_ns == mtime_ns
        {
            unchanged += 1;
            if let Some(reason) = &p.skip {
                skips.push((
                    walk::SkipReason::from_name(reason).unwrap_or(walk::SkipReason::Unreadable),
                    entry.rel.as_str(),
                ));
            }
            continue;
        }
        changed.push((entry, previous, mtime_ns));
    }
    let started = Instant::now();
    let prepared = in_pool(&READ_POOL, "read", || {
        changed
            .par_iter()
            .map(|(entry, previous, mtime_ns)| {
                prepare(
                    entry,
                    previous.as_ref(),
                    *mtime_ns,
                    chunker,
                    chunk_options,
                    options,
                )
            })
            .collect()
    });
    Window {
        changed,
        prepared,
        unchanged,
        skips,
        took: started.elapsed(),
    }
}

/// Thread pools of their own for the reading thread's parsing and the graph
/// thread's HNSW inserts, each as wide as the machine. In rayon's global pool
/// (where the tokenizer and the CPU model run) their tasks queue ahead of the
/// tokenizer's: a worker takes injected work only once its own queue is empty,
/// so each commit's parallel inserts (about 0.4 s on an H100's 16 cores) held
/// back the tokenizing of the next embedding group while the GPU waited. In
/// pools of their own the threads share the cores through the OS scheduler.
static GRAPH_POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
static READ_POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();

/// Runs `work` in `pool` (made on first use), or in the global pool when no
/// thread could be started for it.
fn in_pool<T: Send>(
    pool: &std::sync::OnceLock<Option<rayon::ThreadPool>>,
    name: &'static str,
    work: impl FnOnce() -> T + Send,
) -> T {
    let pool = pool.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(move |i| format!("{name}-{i}"))
            .build()
            .inspect_err(|err| tracing::warn!(%err, pool = name, "no thread pool of its own; sharing rayon's"))
            .ok()
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Files read and chunked in parallel at a time: enough to keep every core busy
/// on files of mixed sizes, few enough that their chunks are a small part of memory.
const PREPARE_WINDOW: usize = 256;

/// What reading a changed file gave.
enum Prepared {
    Unreadable(std::io::Error),
    /// Binary, too large, generated, …: its row records why.
    Skipped(FileRow, walk::SkipReason),
    /// Touched, but its bytes are the ones indexed.
    SameContent(FileRow),
    Chunked(FileRow, Vec<crate::chunk::Chunk>),
}

/// Reads, hashes, classifies and chunks one changed file (on a worker thread).
fn prepare(
    entry: &walk::FileEntry,
    previous: Option<&FileRow>,
    mtime_ns: i64,
    chunker: &Chunker,
    chunk_options: &ChunkOptions,
    options: &IndexOptions,
) -> Prepared {
    // Bounded whatever the metadata said at walk time: procfs-like files report
    // 0 bytes and never end, and a file can grow between the walk and now.
    let bytes = match walk::read_at_most(&entry.path, options.walk.max_file_bytes) {
        Ok(walk::Bounded::Bytes(b)) => b,
        Ok(walk::Bounded::TooLarge) => {
            let row = FileRow {
                path: entry.rel.clone(),
                size: entry.size,
                mtime_ns,
                hash: [0; 32],
                skip: Some(walk::SkipReason::TooLarge.as_str().to_owned()),
            };
            return Prepared::Skipped(row, walk::SkipReason::TooLarge);
        }
        Err(err) => return Prepared::Unreadable(err),
    };
    let hash = *blake3::hash(&bytes).as_bytes();
    let mut row = FileRow {
        path: entry.rel.clone(),
        size: bytes.len() as u64,
        mtime_ns,
        hash,
        skip: None,
    };
    match walk::classify(&bytes, &options.walk) {
        Err(reason) => {
            row.skip = Some(reason.as_str().to_owned());
            Prepared::Skipped(row, reason)
        }
        Ok(_) if previous.is_some_and(|p| p.hash == hash && p.skip.is_none()) => {
            Prepared::SameContent(row)
        }
        Ok(text) => {
            let chunks = chunker.chunk(&entry.rel, text, chunk_options);
            Prepared::Chunked(row, chunks)
        }
    }
}

/// Embeds the keys the store lacks and commits the pending files in one transaction.
///
/// When `cancel` fires (before a call, or during one the embedder gives up on),
/// it stops embedding, commits the files whose chunks all have a vector by then
/// (with every other update in hand) and returns [`IndexError::Cancelled`]; the
/// files left out keep their old rows, so the next run picks them up again.
fn flush(
    store: &Batches<'_>,
    embedder: &mut dyn Embedder,
    pending: &mut Vec<(FileRow, Vec<crate::chunk::Chunk>)>,
    updates: &mut Vec<FileUpdate>,
    stats: &mut IndexStats,
    progress: &mut dyn FnMut(&IndexStats),
    cancel: &CancellationToken,
) -> Result<(), IndexError> {
    let keys: Vec<Key> = pending
        .iter()
        .flat_map(|(_, chunks)| chunks.iter().map(|c| c.key()))
        .collect();
    let started = Instant::now();
    let cached = store.vectors.vectors(&keys)?;
    stats.times.lookup += started.elapsed();
    // Each missing key once.
    let mut seen = HashSet::new();
    let mut to_embed: Vec<(Key, &str)> = Vec::new();
    for (_, chunks) in pending.iter() {
        for c in chunks {
            let k = c.key();
            if !cached.contains_key(&k) && seen.insert(k) {
                to_embed.push((k, c.text.as_str()));
            }
        }
    }
    // Longest first, so each group holds texts of similar length and packs into
    // batches as well as the whole set would.
    to_embed.sort_by_key(|(_, t)| std::cmp::Reverse(t.len()));
    let texts: Vec<&str> = to_embed.iter().map(|(_, t)| *t).collect();
    let mut vectors = Vec::with_capacity(texts.len());
    let mut cancelled = false;
    for group in texts.chunks(embed_group(&*embedder, texts.len())) {
        if cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let started = Instant::now();
        let answer = embedder.embed(group, InputKind::Document);
        stats.times.embed += started.elapsed();
        match answer {
            Ok(v) => vectors.extend(v),
            Err(_) if cancel.is_cancelled() => {
                cancelled = true;
                break;
            }
            Err(e) => return Err(e.into()),
        }
        stats.chunks_embedded += group.len() as u64;
        progress(stats);
    }
    cancelled |= cancel.is_cancelled();
    // `zip` stops at the vectors computed: when cancelled, a prefix of the keys.
    // The cached vectors go along too: the writer may prune an orphan between
    // this lookup and the batch's commit, and the batch then stores it again.
    let mut have: HashMap<Key, Vec<f32>> = to_embed.iter().map(|(k, _)| *k).zip(vectors).collect();
    if cancelled {
        pending.retain(|(_, chunks)| {
            chunks.iter().all(|c| {
                let k = c.key();
                cached.contains_key(&k) || have.contains_key(&k)
            })
        });
    }
    have.extend(cached);
    // The full-text form of every chunk, on every core: the writer only inserts it.
    let texts: Vec<Vec<LexicalText>> = pending
        .par_iter()
        .map(|(_, chunks)| chunks.iter().map(|c| LexicalText::new(&c.text)).collect())
        .collect();
    for ((row, chunks), texts) in pending.drain(..).zip(texts) {
        // Hand each vector to the first file that uses it.
        let mine: Vec<(Key, Vec<f32>)> = chunks
            .iter()
            .filter_map(|c| have.remove_entry(&c.key()))
            .collect();
        stats.files_indexed += 1;
        stats.chunks_written += chunks.len() as u64;
        updates.push(FileUpdate::Indexed {
            file: row,
            chunks: chunks
                .into_iter()
                .zip(texts)
                .map(|(c, text)| NewChunk {
                    key: c.key(),
                    start_line: c.start_line,
                    end_line: c.end_line,
                    kind: c.kind.as_str(),
                    language: c.language,
                    symbol: c.symbol,
                    text,
                })
                .collect(),
            vectors: mine,
        });
    }
    store.write(std::mem::take(updates), stats)?;
    if cancelled {
        return Err(IndexError::Cancelled);
    }
    Ok(())
}

impl From<EmbedError> for IndexError {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Cancelled { .. } => Self::Cancelled,
            e => Self::Embed(Box::new(e)),
        }
    }
}
