//! One repository's index on disk: SQLite (the source of truth: files, chunks,
//! vectors, full-text) plus a usearch HNSW file derived from it, plus a manifest.
//!
//! ```text
//! $CODESEARCH_HOME/indexes/<name>-<hash of root>/
//!   manifest.json    schema version, model, dims, root
//!   index.sqlite     WAL; files, chunks, vectors (8-bit, by content key), chunks_fts
//!   vectors.usearch  the HNSW graph over chunk ids, without vectors (SQLite has
//!                    them); rebuilt whenever it is not current
//! ```
//!
//! Every change is one SQLite transaction that bumps `generation`. The HNSW file
//! records the generation it was saved at (in SQLite, after the rename), so a
//! crash anywhere leaves either a current file or one that is rebuilt on open.
//! A store has exactly one writer: the `&mut self` methods.

mod folder;
mod hnsw;
mod manifest;
mod read;
mod readers;
mod rebuild;
mod recall;
mod schema;
mod write;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use folder::{
    OLD, REBUILD, exchange, recover_swap, remove_dir, remove_temporaries, sibling, sync_dir,
    write_atomic,
};
pub use hnsw::{Hnsw, quantize};
pub use manifest::Manifest;
use manifest::describe;
pub use read::{Retrieve, StoreReader};
use read::{file_identity, hnsw_read, lexical, nearest};
pub use readers::{Lent, Readers};
pub use recall::Recall;
use schema::{
    PRUNE_ORPHANS, SCHEMA, decode_vector, drop_chunks, encode_vector, file_row, keep_vectors,
    live_vectors, meta_int, old_vectors, stable_plans, upsert_file,
};
pub use write::{GraphUpdate, GraphWriter};

/// Bumped when the layout of the files below changes (3: the full-text index
/// stems words with Porter's stemmer; 8: it holds the camelCase parts of
/// identifiers and path components too; 9: ten more languages are chunked by
/// their grammars, so their chunks differ; 10: 96-bit content keys, so ten
/// vector rows fill a 4 KiB page where nine did; 4–7 were development layouts).
/// An index of an older schema is rebuilt on open, keeping its vectors.
pub const SCHEMA_VERSION: u32 = 10;

/// The first schema whose vectors (8-bit, scaled per vector, keyed by a prefix
/// of the chunk text's blake3) are stored as today: a migration from it keeps
/// them (under the first [`KEY_BYTES`] of their key).
const VECTORS_SINCE: u32 = 2;

/// Vectors no chunk uses are kept this many at most (oldest dropped first), so a
/// branch switched back costs no embedding.
pub const ORPHAN_VECTORS_KEPT: i64 = 50_000;

/// Vectors added to the HNSW index per hold of its write lock, so a search waits
/// for a few insertions at most, not for a whole committed batch.
const HNSW_ADDS_PER_LOCK: usize = 16;

/// From this many new vectors in one commit (a GPU's commits; a CPU's are 512),
/// the HNSW inserts run on every core ([`Hnsw::add_parallel`]), this many per
/// hold of the write lock: about 40 ms of a 16-core machine's time, so searches
/// still get in between. Plain concurrent inserts cost recall@10 (tokio's 10,612
/// chunks: 0.9999 → 0.9949; docs/BENCHMARKS.md) until the nodes they strand
/// were found and added again.
const HNSW_PARALLEL_ADDS: usize = 4096;

/// The writer connection's page cache, in KiB (SQLite's `cache_size` takes
/// negative numbers as KiB): allocated as it fills, so a small index pays for
/// what it uses.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

const MANIFEST: &str = "manifest.json";
const SQLITE: &str = "index.sqlite";
const HNSW: &str = "vectors.usearch";

/// Bytes of a content key. A `vectors` row is 384 B of vector, the key and
/// SQLite's ~10 B of framing: with 16-byte keys nine rows fit a 4 KiB page
/// (10 % of the table unused); with 12 ten do, up to 2^21 vectors.
pub const KEY_BYTES: usize = 12;

/// A content key: blake3 of a chunk's embedded text, first 96 bits.
pub type Key = [u8; KEY_BYTES];

/// Store failures, each naming the file or index involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A full re-index was swapped in while a search was opening a reader of
    /// the index it replaced (see [`StoreReader::reopen`]).
    #[error("the index {path} was replaced by a full re-index just now; search again", path = path.display())]
    Replaced {
        /// The index file.
        path: PathBuf,
    },
    /// The index was built with another model, dims or schema.
    #[error(
        "index {dir} was built with {have}, not {want}; to build it again with the new one, `codesearch remove` the repository (repo.remove) or delete {dir}, then index it",
        dir = dir.display()
    )]
    Mismatch {
        /// The index folder.
        dir: PathBuf,
        /// What it holds.
        have: String,
        /// What was asked for.
        want: String,
    },
    /// SQLite failed.
    #[error("{path}: {source}", path = path.display())]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// rusqlite's error.
        source: rusqlite::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("{path}: not a codesearch manifest: {reason}", path = path.display())]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// serde's message.
        reason: String,
    },
    /// usearch failed.
    #[error("HNSW index {op} failed: {reason}")]
    Hnsw {
        /// What was being done.
        op: &'static str,
        /// usearch's message.
        reason: String,
    },
}

impl StoreError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn hnsw(op: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Hnsw {
            op,
            reason: e.to_string(),
        }
    }
}

/// What the store knows of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// Path relative to the root.
    pub path: String,
    /// Size when indexed.
    pub size: u64,
    /// Modification time when indexed, in nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// blake3 of the contents.
    pub hash: [u8; 32],
    /// Why the file is not indexed, if it is not.
    pub skip: Option<String>,
}

/// One chunk to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    /// Content key of the embedded text.
    pub key: Key,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
    /// Qualified symbol.
    pub symbol: Option<String>,
    /// Kind name.
    pub kind: &'static str,
    /// Language name.
    pub language: &'static str,
    /// Text for the full-text index.
    pub text: LexicalText,
}

/// A chunk's text as the full-text index stores it: the text, then the parts of
/// its camelCase identifiers. Made before the write (the index pipeline makes a
/// batch's in parallel), so the one SQLite writer only inserts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexicalText(String);

impl LexicalText {
    /// `text` with the parts of its camelCase identifiers after it.
    pub fn new(text: &str) -> Self {
        Self(crate::lexical::document_text(text))
    }

    /// What the full-text index stores.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A change to one file, applied with others in one transaction.
#[derive(Debug, Clone)]
pub enum FileUpdate {
    /// New contents, chunked; vectors for keys the store lacks come along.
    Indexed {
        /// The file's row.
        file: FileRow,
        /// Its chunks in order.
        chunks: Vec<NewChunk>,
        /// Vectors of keys not yet stored.
        vectors: Vec<(Key, Vec<f32>)>,
    },
    /// Same contents, new size or mtime: only the row changes.
    Touched(FileRow),
    /// The file is no longer indexed (deleted, ignored, or skipped now).
    Removed {
        /// Path relative to the root.
        path: String,
        /// Why it is kept as a skipped row, if it still exists.
        skipped: Option<FileRow>,
    },
}

/// A stored chunk, as search returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRow {
    /// Chunk id (the HNSW key).
    pub id: u64,
    /// File path relative to the root.
    pub path: String,
    /// First line, 1-based.
    pub start_line: u32,
    /// Last line, inclusive.
    pub end_line: u32,
    /// Qualified symbol.
    pub symbol: Option<String>,
    /// Kind name.
    pub kind: String,
    /// Language name.
    pub language: String,
    /// The file's size and mtime when indexed, to tell stale hits.
    pub file_size: u64,
    /// See `file_size`.
    pub file_mtime_ns: i64,
}

/// A repository's index.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    db: Connection,
    /// Shared with [`StoreReader`]s: searches read it while the writer indexes.
    hnsw: Arc<RwLock<Hnsw>>,
    manifest: Manifest,
    generation: i64,
    hnsw_dirty: bool,
    /// A rebuild beside the live index holds all of the live index's vectors as
    /// orphans until its pass has claimed them: none is pruned before the swap.
    keep_orphans: bool,
}

impl Store {
    /// The index folder for `root` under `indexes`: readable name plus a hash of the path.
    pub fn dir_for(indexes: &Path, root: &Path) -> PathBuf {
        let name: String = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".to_owned())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let hash = blake3::hash(root.as_os_str().as_encoded_bytes()).to_hex();
        indexes.join(format!("{name}-{}", &hash[..16]))
    }

    /// Opens (or creates) the index in `dir` for `want`; a different model, dims or
    /// a newer schema is [`StoreError::Mismatch`]. An index of an older schema (same
    /// model) is a cache of the repository made by an older codesearch: it is
    /// dropped and built again. A missing, corrupt or stale HNSW file is rebuilt.
    pub fn open(dir: &Path, want: &Manifest) -> Result<Self, StoreError> {
        recover_swap(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        remove_temporaries(dir);
        let manifest_path = dir.join(MANIFEST);
        let mut manifest = std::fs::read_to_string(&manifest_path);
        let mut carried: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if let Ok(text) = &manifest
            && let Ok(have) = serde_json::from_str::<Manifest>(text)
            && have.schema_version < want.schema_version
            && have.model == want.model
            && have.dims == want.dims
        {
            // The vectors are still good (same model, same encoding): keep them, so
            // an upgrade re-chunks and re-indexes the text but embeds nothing.
            let kept = if have.schema_version >= VECTORS_SINCE {
                old_vectors(&dir.join(SQLITE)).unwrap_or_else(|err| {
                    tracing::warn!(dir = %dir.display(), %err, "vectors of the older index unreadable; embedding again");
                    Vec::new()
                })
            } else {
                Vec::new()
            };
            tracing::warn!(dir = %dir.display(), from = have.schema_version, to = want.schema_version, vectors_kept = kept.len(), "index of an older codesearch; building it again");
            std::fs::remove_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
            manifest = Err(std::io::ErrorKind::NotFound.into());
            carried = kept;
        }
        match manifest {
            Ok(text) => {
                let have: Manifest =
                    serde_json::from_str(&text).map_err(|e| StoreError::BadManifest {
                        path: manifest_path.clone(),
                        reason: e.to_string(),
                    })?;
                if have.schema_version != want.schema_version
                    || have.model != want.model
                    || have.dims != want.dims
                    || have.source != want.source
                {
                    return Err(StoreError::Mismatch {
                        dir: dir.to_owned(),
                        have: describe(&have),
                        want: describe(want),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(
                    &manifest_path,
                    &serde_json::to_vec_pretty(want).unwrap_or_default(),
                )?;
            }
            Err(e) => return Err(StoreError::io(&manifest_path, e)),
        }
        let db_path = dir.join(SQLITE);
        let sql = |source| StoreError::Sqlite {
            path: db_path.clone(),
            source,
        };
        let db = Connection::open(&db_path).map_err(sql)?;
        stable_plans(&db).map_err(sql)?;
        // `apply` keeps a dozen statements prepared across commits; rusqlite's
        // cache holds 16 by default, shared with the reads on this connection.
        db.set_prepared_statement_cache_capacity(64);
        // The writer's page cache: SQLite's default 2 MB made a large commit
        // re-read the pages of the random-keyed vector index and the full-text
        // segments it merges, again and again.
        db.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(sql)?;
        db.execute_batch(SCHEMA).map_err(sql)?;
        if !carried.is_empty() {
            keep_vectors(&db, &carried).map_err(sql)?;
        }
        let generation = meta_int(&db, "generation").map_err(sql)?;
        let saved = meta_int(&db, "hnsw_generation").map_err(sql)?;
        let hnsw_path = dir.join(HNSW);
        let loaded = if saved == generation && hnsw_path.is_file() {
            let vectors = live_vectors(&db).map_err(sql)?;
            match Hnsw::load(&hnsw_path, want.dims, &vectors) {
                Ok(h) => Some(h),
                Err(err) => {
                    tracing::warn!(path = %hnsw_path.display(), %err, "HNSW file unusable; rebuilding from SQLite");
                    None
                }
            }
        } else {
            None
        };
        let mut store = Self {
            dir: dir.to_owned(),
            db,
            hnsw: Arc::new(RwLock::new(Hnsw::new(want.dims)?)),
            manifest: want.clone(),
            generation,
            hnsw_dirty: false,
            keep_orphans: false,
        };
        let chunks = store.chunk_count()?;
        match loaded {
            Some(h) if h.len() as u64 == chunks => *store.hnsw_mut() = h,
            _ => store.rebuild_hnsw()?,
        }
        Ok(store)
    }

    /// Deletes the index folder. The store stays usable only for dropping: it will
    /// not save its HNSW file again.
    pub fn delete_files(&mut self) -> std::io::Result<()> {
        self.hnsw_dirty = false;
        // SQLite may remove its -wal/-shm files while we walk the folder: retry.
        let mut result = Ok(());
        for _ in 0..3 {
            result = std::fs::remove_dir_all(&self.dir);
            match &result {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                Ok(()) => break,
            }
        }
        if matches!(&result, Err(e) if e.kind() != std::io::ErrorKind::NotFound) {
            return result;
        }
        // And whatever a full re-index left beside it.
        for suffix in [REBUILD, OLD] {
            match std::fs::remove_dir_all(sibling(&self.dir, suffix)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.dir.join(SQLITE),
            source,
        }
    }

    /// Rebuilds the HNSW index from the vectors in SQLite and saves it.
    pub fn rebuild_hnsw(&mut self) -> Result<(), StoreError> {
        let mut hnsw = Hnsw::new(self.manifest.dims)?;
        // Streamed in chunk order, a few thousand at a time: collecting every
        // vector as f32 first took 1.6 KB per chunk (0.9 GB at 563k chunks).
        const AT_ONCE: usize = HNSW_PARALLEL_ADDS;
        let mut stmt = self
            .db
            .prepare("SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.id = c.vector_id ORDER BY c.id")
            .map_err(|e| self.sql(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.sql(e))?;
        let mut items: Vec<(u64, Vec<f32>)> = Vec::with_capacity(AT_ONCE);
        let mut total = 0;
        loop {
            let row = rows.next().map_err(|e| self.sql(e))?;
            if let Some(row) = row {
                let id = row.get::<_, i64>(0).map_err(|e| self.sql(e))? as u64;
                let vector = row.get_ref(1).map_err(|e| self.sql(e))?;
                let bytes = vector.as_blob().map_err(|e| self.sql(e.into()))?;
                items.push((id, bytes.iter().map(|&b| f32::from(b as i8)).collect()));
            }
            if items.len() == AT_ONCE || (row.is_none() && !items.is_empty()) {
                if write::parallel_inserts() {
                    hnsw.add_parallel(&items)?;
                } else {
                    hnsw.add(&items)?;
                }
                total += items.len();
                items.clear();
            }
            if row.is_none() {
                break;
            }
        }
        drop(rows);
        drop(stmt);
        tracing::info!(dir = %self.dir.display(), vectors = total, "HNSW index rebuilt");
        *self.hnsw_mut() = hnsw;
        self.hnsw_dirty = true;
        self.save_hnsw()
    }

    /// Gives the pages SQLite freed (replaced chunks, merged full-text segments)
    /// back to the file system; without it they are a quarter of a fresh index.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let free: i64 = self
            .db
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        if free > 0 {
            // Each step of the statement frees one page: run it to the end.
            let mut stmt = self
                .db
                .prepare("PRAGMA incremental_vacuum")
                .map_err(|e| self.sql(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.sql(e))?;
            while rows.next().map_err(|e| self.sql(e))?.is_some() {}
        }
        // After a pass the WAL held most of the data (1.9 MB beside a 1.05 MB
        // database): write it back and truncate it, so the index takes the disk
        // it needs. A reader in the middle of a search can keep part of it for
        // now (`busy`); the next pass, or closing, finishes the job.
        let busy: i64 = self
            .db
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        if busy != 0 {
            tracing::debug!(dir = %self.dir.display(), "WAL checkpoint deferred: a search is reading");
        }
        Ok(())
    }

    /// Saves the HNSW index if it changed since the last save.
    pub fn save_hnsw(&mut self) -> Result<(), StoreError> {
        if !self.hnsw_dirty {
            return Ok(());
        }
        hnsw_read(&self.hnsw).save(&self.dir.join(HNSW))?;
        self.db
            .execute(
                "INSERT INTO meta(key, value) VALUES ('hnsw_generation', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![self.generation],
            )
            .map_err(|e| self.sql(e))?;
        self.hnsw_dirty = false;
        Ok(())
    }

    /// The `k` nearest chunks to `query`, with cosine similarity, best first.
    pub fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
        nearest(&self.db, &self.dir.join(SQLITE), &self.hnsw, query, k)
    }

    /// The `k` best full-text matches of `query` (BM25, higher is better).
    pub fn lexical(&self, query: &str, k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
        lexical(&self.db, &self.dir.join(SQLITE), query, k)
    }

    /// Sets how many candidates an HNSW search keeps, for `bench-index --ef-search`.
    pub fn set_search_expansion(&self, ef: usize) {
        self.hnsw_mut().set_expansion_search(ef);
    }

    /// A read-only view with its own SQLite connection and the shared HNSW index,
    /// for searches that must not wait for this writer.
    pub fn reader(&self) -> Result<StoreReader, StoreError> {
        let path = self.dir.join(SQLITE);
        let db = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.sql(e))?;
        stable_plans(&db).map_err(|e| self.sql(e))?;
        // The writer swaps index files (a full re-index) only through this
        // Store, so the file at the path now is the one its HNSW belongs to.
        let file = file_identity(&path).map_err(|e| StoreError::io(&path, e))?;
        Ok(StoreReader {
            path,
            db,
            hnsw: self.hnsw.clone(),
            file,
        })
    }

    fn hnsw_mut(&self) -> RwLockWriteGuard<'_, Hnsw> {
        self.hnsw.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Chunks stored.
    pub fn chunk_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM chunks")
    }

    /// Files indexed (not skipped).
    pub fn file_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM files WHERE skip IS NULL")
    }

    /// Vectors in the HNSW index.
    pub fn hnsw_len(&self) -> usize {
        hnsw_read(&self.hnsw).len()
    }

    /// The HNSW index's memory in bytes and its capacity in vectors ([`Hnsw::memory`]).
    pub fn hnsw_memory(&self) -> (usize, usize) {
        hnsw_read(&self.hnsw).memory()
    }

    fn count(&self, sql: &str) -> Result<u64, StoreError> {
        self.db
            .query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(err) = self.save_hnsw() {
            tracing::warn!(dir = %self.dir.display(), %err, "HNSW index not saved; it will be rebuilt on open");
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests;
