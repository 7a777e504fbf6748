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

mod hnsw;
mod readers;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub use hnsw::{Hnsw, quantize};
pub use readers::{Lent, Readers};

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
/// for a few insertions at most, not for a whole committed batch. One thread
/// inserts: concurrent inserts (usearch allows them) were faster but cost
/// recall@10 (tokio's 10,612 chunks: 0.9999 → 0.9949; docs/BENCHMARKS.md).
const HNSW_ADDS_PER_LOCK: usize = 16;

const MANIFEST: &str = "manifest.json";
const SQLITE: &str = "index.sqlite";
const HNSW: &str = "vectors.usearch";

/// Bytes of a content key. A `vectors` row is 384 B of vector, the key and
/// SQLite's ~10 B of framing: with 16-byte keys nine rows fit a 4 KiB page
/// (10 % of the table unused); with 12 ten do, up to 2^21 vectors.
pub const KEY_BYTES: usize = 12;

/// A content key: blake3 of a chunk's embedded text, first 96 bits.
pub type Key = [u8; KEY_BYTES];

/// What an index was built with. Opening it with anything else is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version.
    pub schema_version: u32,
    /// Canonical model name.
    pub model: String,
    /// Vector length.
    pub dims: usize,
    /// What else makes the vectors what they are, where the name does not
    /// say it: a remote model's API and server model (`openai API model
    /// \`text-embedding-3-small\``). Absent for local models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The repository root.
    pub root: PathBuf,
}

impl Manifest {
    /// The manifest of an index of `root` built with `embedder`, in this schema.
    pub fn of(embedder: &dyn crate::embed::Embedder, root: &Path) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            model: embedder.model_name().to_owned(),
            dims: embedder.dims(),
            source: embedder.identity(),
            root: root.to_owned(),
        }
    }
}

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
    pub text: String,
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

/// What [`Store::hnsw_recall`] measured: recall@k of the HNSW index, per kind of probe.
#[derive(Debug, Clone, Copy)]
pub struct Recall {
    /// For the query vectors given, if any.
    pub queries: Option<f64>,
    /// For stored chunks as probes, if any.
    pub chunks: Option<f64>,
    /// Probes in all.
    pub probes: usize,
    /// Median time of one HNSW search (probes run in parallel, one per core).
    pub search_ms_median: f64,
    /// Vectors scanned exactly.
    pub vectors: usize,
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

    /// The manifest the store was opened with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The index folder.
    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// A new, empty index beside this one (`<dir>.rebuild`), holding this one's
    /// vectors as a cache, for a full re-index: it is built while this index
    /// keeps answering, then [`Store::replace_with`] swaps it in. A leftover of
    /// a rebuild that did not finish is dropped first.
    pub fn rebuild_beside(&self) -> Result<Store, StoreError> {
        let side = sibling(&self.dir, REBUILD);
        remove_dir(&side)?;
        let mut store = Store::open(&side, &self.manifest)?;
        store.keep_orphans = true;
        let from = self.dir.join(SQLITE);
        // Streamed by SQLite itself: no vector passes through our memory.
        store
            .db
            .execute_batch(&format!(
                "ATTACH DATABASE '{}' AS live;
                 INSERT INTO vectors(key, vector, orphaned_at)
                   SELECT key, vector, {now} FROM live.vectors WHERE true
                   ON CONFLICT(key) DO NOTHING;
                 DETACH DATABASE live;",
                from.to_string_lossy().replace('\'', "''"),
                now = unix_now(),
            ))
            .map_err(|e| store.sql(e))?;
        Ok(store)
    }

    /// Swaps `side` (made by [`Store::rebuild_beside`] and indexed since) in
    /// for this index: both are closed, `<dir>` and the side trade places in
    /// one atomic exchange (Linux `RENAME_EXCHANGE`, macOS `RENAME_SWAP`), so
    /// at every instant `<dir>` is one complete index; the replaced one, now
    /// under the side's name, is deleted and `self` reopens `<dir>`.
    /// Readers made before keep reading the replaced index until they are
    /// replaced (their files stay open; POSIX keeps deleted files readable).
    /// Where the file system cannot exchange, two renames through `<dir>.old`
    /// are used, and a crash between them is undone by the next [`Store::open`].
    pub fn replace_with(&mut self, mut side: Store) -> Result<(), StoreError> {
        side.prune_orphans()?;
        side.save_hnsw()?;
        let side_dir = side.dir.clone();
        drop(side);
        // The old graph is going away: never save it over the new one.
        self.hnsw_dirty = false;
        if !exchange(&side_dir, &self.dir)? {
            let old = sibling(&self.dir, OLD);
            remove_dir(&old)?;
            std::fs::rename(&self.dir, &old).map_err(|e| StoreError::io(&self.dir, e))?;
            if let Err(e) = std::fs::rename(&side_dir, &self.dir) {
                let _ = std::fs::rename(&old, &self.dir);
                return Err(StoreError::io(&side_dir, e));
            }
        }
        sync_dir(&self.dir)?;
        // After an exchange the side's name holds the replaced index.
        remove_dir(&side_dir)?;
        let fresh = Store::open(&self.dir, &self.manifest)?;
        drop(std::mem::replace(self, fresh));
        Ok(())
    }

    /// Drops a rebuild that did not finish (cancelled or failed), folder and all.
    pub fn discard(self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let mut this = self;
        this.hnsw_dirty = false;
        drop(this);
        remove_dir(&dir)
    }

    /// Keeps the newest [`ORPHAN_VECTORS_KEPT`] vectors no chunk uses.
    fn prune_orphans(&mut self) -> Result<(), StoreError> {
        self.keep_orphans = false;
        self.db
            .execute(PRUNE_ORPHANS, [ORPHAN_VECTORS_KEPT])
            .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Forgets every file and chunk (vectors stay cached).
    #[cfg(test)]
    pub fn clear(&mut self) -> Result<(), StoreError> {
        let now = unix_now();
        self.db
            .execute_batch(&format!(
                "BEGIN;
                 INSERT INTO chunks_fts(chunks_fts) VALUES ('delete-all');
                 DELETE FROM chunks;
                 DELETE FROM files;
                 UPDATE vectors SET orphaned_at = {now} WHERE orphaned_at IS NULL;
                 INSERT INTO meta(key, value) VALUES ('generation', 1)
                   ON CONFLICT(key) DO UPDATE SET value = value + 1;
                 COMMIT;"
            ))
            .map_err(|e| self.sql(e))?;
        self.generation = meta_int(&self.db, "generation").map_err(|e| self.sql(e))?;
        *self.hnsw_mut() = Hnsw::new(self.manifest.dims)?;
        self.hnsw_dirty = true;
        self.save_hnsw()
    }

    /// Rebuilds the HNSW index from the vectors in SQLite and saves it.
    pub fn rebuild_hnsw(&mut self) -> Result<(), StoreError> {
        let mut hnsw = Hnsw::new(self.manifest.dims)?;
        // Streamed in chunk order, a few thousand at a time: collecting every
        // vector as f32 first took 1.6 KB per chunk (0.9 GB at 563k chunks).
        const AT_ONCE: usize = 4096;
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
                hnsw.add(&items)?;
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

    /// Every file row, by path.
    pub fn files(&self) -> Result<HashMap<String, FileRow>, StoreError> {
        let mut stmt = self
            .db
            .prepare("SELECT path, size, mtime_ns, hash, skip FROM files")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], file_row)
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(rows.into_iter().map(|f| (f.path.clone(), f)).collect())
    }

    /// The stored vectors among `keys` (8-bit on disk, see [`quantize`]; f32 here).
    pub fn vectors(&self, keys: &[Key]) -> Result<HashMap<Key, Vec<f32>>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached("SELECT vector FROM vectors WHERE key = ?1")
            .map_err(|e| self.sql(e))?;
        let mut out = HashMap::new();
        for key in keys {
            if out.contains_key(key) {
                continue;
            }
            let v: Option<Vec<u8>> = stmt
                .query_row([&key[..]], |r| r.get(0))
                .optional()
                .map_err(|e| self.sql(e))?;
            if let Some(bytes) = v {
                out.insert(*key, decode_vector(&bytes));
            }
        }
        Ok(out)
    }

    /// Applies `updates` in one transaction, then mirrors them into the HNSW index.
    pub fn apply(&mut self, updates: Vec<FileUpdate>) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let now = unix_now();
        let mut removed_ids: Vec<u64> = Vec::new();
        let mut added: Vec<(u64, Key)> = Vec::new();
        let mut new_vectors: HashMap<Key, Vec<f32>> = HashMap::new();
        let keep_orphans = self.keep_orphans;
        let tx = self.db.transaction().map_err(|e| StoreError::Sqlite {
            path: self.dir.join(SQLITE),
            source: e,
        })?;
        let result = (|| -> rusqlite::Result<()> {
            for update in updates {
                match update {
                    FileUpdate::Touched(file) => upsert_file(&tx, &file).map(drop)?,
                    FileUpdate::Removed { path, skipped } => {
                        removed_ids.extend(drop_chunks(&tx, &path, now)?);
                        match skipped {
                            Some(file) => upsert_file(&tx, &file).map(drop)?,
                            None => tx
                                .execute("DELETE FROM files WHERE path = ?1", [&path])
                                .map(drop)?,
                        }
                    }
                    FileUpdate::Indexed {
                        file,
                        chunks,
                        vectors,
                    } => {
                        removed_ids.extend(drop_chunks(&tx, &file.path, now)?);
                        let file_id = upsert_file(&tx, &file)?;
                        for (key, v) in vectors {
                            tx.execute(
                                "INSERT INTO vectors(key, vector, orphaned_at) VALUES (?1, ?2, NULL)
                                 ON CONFLICT(key) DO NOTHING",
                                params![&key[..], encode_vector(&v)],
                            )?;
                            new_vectors.insert(key, v);
                        }
                        for c in chunks {
                            // Every key has a vector by now (new, or cached).
                            let vector_id: i64 = tx.query_row(
                                "SELECT id FROM vectors WHERE key = ?1",
                                [&c.key[..]],
                                |r| r.get(0),
                            )?;
                            tx.execute(
                                "INSERT INTO chunks(file_id, vector_id, start_line, end_line, symbol, kind, language)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                params![file_id, vector_id, c.start_line, c.end_line, c.symbol, c.kind, c.language],
                            )?;
                            let id = tx.last_insert_rowid();
                            tx.execute(
                                "INSERT INTO chunks_fts(rowid, text, path, symbol) VALUES (?1, ?2, ?3, ?4)",
                                params![
                                    id,
                                    crate::lexical::document_text(&c.text),
                                    crate::lexical::path_text(&file.path),
                                    c.symbol.as_deref().map(crate::lexical::document_text)
                                ],
                            )?;
                            tx.execute(
                                "UPDATE vectors SET orphaned_at = NULL WHERE id = ?1 AND orphaned_at IS NOT NULL",
                                [vector_id],
                            )?;
                            added.push((id as u64, c.key));
                        }
                    }
                }
            }
            // Keep a bounded cache of vectors no chunk uses, newest orphans first.
            if !keep_orphans {
                tx.execute(PRUNE_ORPHANS, [ORPHAN_VECTORS_KEPT])?;
            }
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('generation', 1)
                 ON CONFLICT(key) DO UPDATE SET value = value + 1",
                [],
            )?;
            Ok(())
        })();
        let commit = result.and_then(|()| tx.commit());
        commit.map_err(|e| self.sql(e))?;
        self.generation = meta_int(&self.db, "generation").map_err(|e| self.sql(e))?;

        // SQLite is committed; now the derived index.
        let missing: Vec<Key> = added
            .iter()
            .map(|(_, k)| *k)
            .filter(|k| !new_vectors.contains_key(k))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let cached = self.vectors(&missing)?;
        let items: Vec<(u64, Vec<f32>)> = added
            .into_iter()
            .filter_map(|(id, k)| {
                new_vectors
                    .get(&k)
                    .or_else(|| cached.get(&k))
                    .map(|v| (id, v.clone()))
            })
            .collect();
        // Small groups under the write lock: searches (readers) get in between.
        self.hnsw_mut().remove(&removed_ids)?;
        for group in items.chunks(HNSW_ADDS_PER_LOCK) {
            self.hnsw_mut().add(group)?;
        }
        self.hnsw_dirty = true;
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

    /// How well the HNSW index finds the `k` nearest neighbours, against an
    /// exact scan of the stored vectors: for `queries`, and for `chunk_probes`
    /// stored chunks spread over the index, each asking for its neighbours (itself
    /// left out of both lists). For `bench-index --recall`; it reads every vector.
    pub fn hnsw_recall(
        &self,
        queries: &[Vec<f32>],
        chunk_probes: usize,
        k: usize,
    ) -> Result<Recall, StoreError> {
        use rayon::prelude::*;
        let unit = |v: &[i8]| -> Vec<f32> {
            let n = v
                .iter()
                .map(|&x| f32::from(x).powi(2))
                .sum::<f32>()
                .sqrt()
                .max(1e-9);
            v.iter().map(|&x| f32::from(x) / n).collect()
        };
        // Sorted by id, so a vector is found by binary search.
        let mut matrix: Vec<(u64, Vec<f32>)> = live_vectors(&self.db)
            .map_err(|e| self.sql(e))?
            .into_iter()
            .map(|(id, v)| (id, unit(&v)))
            .collect();
        matrix.sort_unstable_by_key(|(id, _)| *id);
        let step = (matrix.len() / chunk_probes.max(1)).max(1);
        let probes: Vec<(Option<u64>, Vec<f32>)> = queries
            .iter()
            .map(|q| (None, unit(&hnsw::quantize(q))))
            .chain(
                matrix
                    .iter()
                    .step_by(step)
                    .take(chunk_probes)
                    .map(|(id, v)| (Some(*id), v.clone())),
            )
            .collect();
        let hnsw = hnsw_read(&self.hnsw);
        let found: Vec<(bool, usize, f64)> = probes
            .par_iter()
            .map(|(own, q)| -> Result<(bool, usize, f64), StoreError> {
                let skip = |id: &u64| Some(*id) != *own;
                let mut exact: Vec<(u64, f32)> = matrix
                    .iter()
                    .filter(|(id, _)| skip(id))
                    .map(|(id, v)| (*id, v.iter().zip(q).map(|(a, b)| a * b).sum()))
                    .collect();
                let cut = k.min(exact.len());
                if cut == 0 {
                    return Ok((own.is_none(), 0, 0.0));
                }
                exact.select_nth_unstable_by(cut - 1, |a, b| b.1.total_cmp(&a.1));
                // A hit is any vector as close as the k-th exact one: chunks of
                // equal text share a vector, and which of a tie comes first is arbitrary.
                let kth = exact[cut - 1].1 - 1e-5;
                let score = |id: &u64| {
                    matrix
                        .binary_search_by_key(id, |(i, _)| *i)
                        .map_or(f32::MIN, |i| {
                            matrix[i].1.iter().zip(q).map(|(a, b)| a * b).sum()
                        })
                };
                let t = std::time::Instant::now();
                let got = hnsw.search(q, k + 1)?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let hits = got
                    .iter()
                    .map(|(id, _)| id)
                    .filter(|id| skip(id))
                    .take(k)
                    .filter(|id| score(id) >= kth)
                    .count();
                Ok((own.is_none(), hits, ms))
            })
            .collect::<Result<_, _>>()?;
        let rate = |queries: bool| {
            let n = found.iter().filter(|(q, _, _)| *q == queries).count();
            (n > 0).then(|| {
                found
                    .iter()
                    .filter(|(q, _, _)| *q == queries)
                    .map(|(_, h, _)| *h)
                    .sum::<usize>() as f64
                    / (n * k) as f64
            })
        };
        let mut ms: Vec<f64> = found.iter().map(|(_, _, ms)| *ms).collect();
        ms.sort_by(f64::total_cmp);
        Ok(Recall {
            queries: rate(true),
            chunks: rate(false),
            search_ms_median: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
            probes: probes.len(),
            vectors: matrix.len(),
        })
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

    /// Vectors stored, the orphan cache included.
    pub fn vector_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM vectors")
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

/// Searches a store while its writer works (WAL lets SQLite readers run beside it).
#[derive(Debug)]
pub struct StoreReader {
    path: PathBuf,
    db: Connection,
    hnsw: Arc<RwLock<Hnsw>>,
    /// The SQLite file's (device, inode) that `hnsw` belongs to.
    file: (u64, u64),
}

/// A file's (device, inode): which file a path names right now.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl StoreReader {
    /// Another reader of the same index: its own SQLite connection, the same
    /// HNSW index. Fails with [`StoreError::Replaced`] when the file at the
    /// path is no longer this reader's (a full re-index was swapped in and
    /// the pool has not moved to it yet): a connection to the new file with
    /// the old HNSW graph would map vectors to the wrong chunks.
    pub fn reopen(&self) -> Result<StoreReader, StoreError> {
        let db = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        // Checked after opening: a swap in between shows as a change.
        let now = file_identity(&self.path).map_err(|e| StoreError::io(&self.path, e))?;
        if now != self.file {
            return Err(StoreError::Replaced {
                path: self.path.clone(),
            });
        }
        Ok(StoreReader {
            path: self.path.clone(),
            db,
            hnsw: self.hnsw.clone(),
            file: self.file,
        })
    }

    /// The `k` nearest chunks to `query`, with cosine similarity, best first.
    pub fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
        nearest(&self.db, &self.path, &self.hnsw, query, k)
    }

    /// The `k` best full-text matches of `query` (BM25, higher is better).
    pub fn lexical(&self, query: &str, k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
        lexical(&self.db, &self.path, query, k)
    }

    /// Files indexed (not skipped) and chunks, as committed so far: what
    /// `repo.list` shows while a pass runs.
    pub fn counts(&self) -> Result<(u64, u64), StoreError> {
        let count = |sql: &str| {
            self.db
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(|e| StoreError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                })
        };
        Ok((
            count("SELECT count(*) FROM files WHERE skip IS NULL")?,
            count("SELECT count(*) FROM chunks")?,
        ))
    }
}

/// What a search reads from an index: the writer's [`Store`] and a
/// [`StoreReader`] answer alike, so every search runs one code path.
pub trait Retrieve {
    /// The `k` nearest chunks to `query`, with cosine similarity, best first.
    fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError>;
    /// The `k` best full-text matches of `query` (BM25, higher is better).
    fn lexical(&self, query: &str, k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError>;
    /// Chunks whose symbol mentions one of `names` (full-text match on the
    /// symbol column, at most `k`); the caller decides which are definitions.
    fn symbols(&self, names: &[String], k: usize) -> Result<Vec<ChunkRow>, StoreError>;
}

impl Retrieve for Store {
    fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
        Store::nearest(self, query, k)
    }
    fn lexical(&self, query: &str, k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
        Store::lexical(self, query, k)
    }
    fn symbols(&self, names: &[String], k: usize) -> Result<Vec<ChunkRow>, StoreError> {
        symbols(&self.db, &self.dir.join(SQLITE), names, k)
    }
}

impl Retrieve for StoreReader {
    fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
        StoreReader::nearest(self, query, k)
    }
    fn lexical(&self, query: &str, k: usize) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
        StoreReader::lexical(self, query, k)
    }
    fn symbols(&self, names: &[String], k: usize) -> Result<Vec<ChunkRow>, StoreError> {
        symbols(&self.db, &self.path, names, k)
    }
}

/// Chunks whose symbol column matches any of `names` as a phrase.
fn symbols(
    db: &Connection,
    db_path: &Path,
    names: &[String],
    k: usize,
) -> Result<Vec<ChunkRow>, StoreError> {
    let phrases: Vec<String> = names
        .iter()
        .map(|n| n.replace('"', ""))
        .filter(|n| !n.trim().is_empty())
        .map(|n| format!("\"{n}\""))
        .collect();
    if phrases.is_empty() {
        return Ok(Vec::new());
    }
    let expr = format!("symbol : ({})", phrases.join(" OR "));
    let sql = |source| StoreError::Sqlite {
        path: db_path.to_owned(),
        source,
    };
    let found: Vec<(u64, f32)> = (|| {
        let mut stmt = db.prepare_cached(
            "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?1 ORDER BY rank LIMIT ?2",
        )?;
        stmt.query_map(params![expr, k as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, 0.0))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })()
    .map_err(sql)?;
    Ok(rows_for(db, found)
        .map_err(sql)?
        .into_iter()
        .map(|(r, _)| r)
        .collect())
}

/// BM25 over the chunk text, its path and its symbol (weighted 1, 2 and 4: a
/// word in a name says more than one in a body). Words are stemmed (Porter) on
/// both sides, so "remaining" finds `remain` and "deserializes" `deserialize`.
fn lexical(
    db: &Connection,
    db_path: &Path,
    query: &str,
    k: usize,
) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
    let Some(expr) = crate::lexical::match_query(query) else {
        return Ok(Vec::new());
    };
    let sql = |source| StoreError::Sqlite {
        path: db_path.to_owned(),
        source,
    };
    let found: Vec<(u64, f32)> = (|| {
        let mut stmt = db.prepare_cached(
            "SELECT rowid, -bm25(chunks_fts, 1.0, 2.0, 4.0) AS score FROM chunks_fts
             WHERE chunks_fts MATCH ?1 ORDER BY score DESC LIMIT ?2",
        )?;
        stmt.query_map(params![expr, k as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, f64>(1)? as f32))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })()
    .map_err(sql)?;
    rows_for(db, found).map_err(sql)
}

fn hnsw_read(hnsw: &RwLock<Hnsw>) -> RwLockReadGuard<'_, Hnsw> {
    hnsw.read().unwrap_or_else(|p| p.into_inner())
}

/// HNSW candidates joined with their rows. An id the HNSW still has but SQLite
/// dropped (a reader between a commit and the HNSW update) is skipped.
fn nearest(
    db: &Connection,
    db_path: &Path,
    hnsw: &RwLock<Hnsw>,
    query: &[f32],
    k: usize,
) -> Result<Vec<(ChunkRow, f32)>, StoreError> {
    let found = hnsw_read(hnsw).search(query, k)?;
    let sql = |source| StoreError::Sqlite {
        path: db_path.to_owned(),
        source,
    };
    rows_for(db, found).map_err(sql)
}

fn rows_for(db: &Connection, found: Vec<(u64, f32)>) -> rusqlite::Result<Vec<(ChunkRow, f32)>> {
    let mut stmt = db.prepare_cached(
        "SELECT c.id, f.path, c.start_line, c.end_line, c.symbol, c.kind, c.language, f.size, f.mtime_ns
         FROM chunks c JOIN files f ON f.id = c.file_id WHERE c.id = ?1",
    )?;
    let mut out = Vec::with_capacity(found.len());
    for (id, score) in found {
        let row = stmt
            .query_row([id as i64], |r| {
                Ok(ChunkRow {
                    id: r.get::<_, i64>(0)? as u64,
                    path: r.get(1)?,
                    start_line: r.get(2)?,
                    end_line: r.get(3)?,
                    symbol: r.get(4)?,
                    kind: r.get(5)?,
                    language: r.get(6)?,
                    file_size: r.get::<_, i64>(7)? as u64,
                    file_mtime_ns: r.get(8)?,
                })
            })
            .optional()?;
        if let Some(row) = row {
            out.push((row, score));
        }
    }
    Ok(out)
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(err) = self.save_hnsw() {
            tracing::warn!(dir = %self.dir.display(), %err, "HNSW index not saved; it will be rebuilt on open");
        }
    }
}

const SCHEMA: &str = "
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    hash BLOB NOT NULL,
    skip TEXT
);
-- A rowid table, appended to in order, packs its pages full; keyed by content
-- hash instead (random order) its pages were a quarter empty.
CREATE TABLE IF NOT EXISTS vectors (
    id INTEGER PRIMARY KEY,
    key BLOB NOT NULL UNIQUE,
    vector BLOB NOT NULL,
    orphaned_at INTEGER
);
CREATE INDEX IF NOT EXISTS vectors_orphaned ON vectors(orphaned_at) WHERE orphaned_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    vector_id INTEGER NOT NULL REFERENCES vectors(id),
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    symbol TEXT,
    kind TEXT NOT NULL,
    language TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_file ON chunks(file_id);
CREATE INDEX IF NOT EXISTS chunks_vector ON chunks(vector_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, path, symbol, content = '', contentless_delete = 1,
    tokenize = 'porter unicode61'
);
";

fn meta_int(db: &Connection, key: &str) -> rusqlite::Result<i64> {
    db.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map(|v| v.unwrap_or(0))
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let hash: Vec<u8> = r.get(3)?;
    let mut key = [0u8; 32];
    if hash.len() == 32 {
        key.copy_from_slice(&hash);
    }
    Ok(FileRow {
        path: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        mtime_ns: r.get(2)?,
        hash: key,
        skip: r.get(4)?,
    })
}

fn upsert_file(tx: &rusqlite::Transaction<'_>, f: &FileRow) -> rusqlite::Result<i64> {
    tx.query_row(
        "INSERT INTO files(path, size, mtime_ns, hash, skip) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
             hash = excluded.hash, skip = excluded.skip
         RETURNING id",
        params![f.path, f.size as i64, f.mtime_ns, &f.hash[..], f.skip],
        |r| r.get(0),
    )
}

/// Deletes a file's chunks (and their full-text rows); returns their ids and marks
/// vectors no chunk uses any more as orphans.
fn drop_chunks(tx: &rusqlite::Transaction<'_>, path: &str, now: i64) -> rusqlite::Result<Vec<u64>> {
    let mut stmt = tx.prepare_cached(
        "SELECT c.id, c.vector_id FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.path = ?1",
    )?;
    let old: Vec<(i64, i64)> = stmt
        .query_map([path], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, _) in &old {
        tx.execute("DELETE FROM chunks_fts WHERE rowid = ?1", [id])?;
        tx.execute("DELETE FROM chunks WHERE id = ?1", [id])?;
    }
    for (_, vector_id) in &old {
        tx.execute(
            "UPDATE vectors SET orphaned_at = ?2
             WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM chunks WHERE vector_id = ?1)",
            params![vector_id, now],
        )?;
    }
    Ok(old.into_iter().map(|(id, _)| id as u64).collect())
}

fn encode_vector(v: &[f32]) -> Vec<u8> {
    quantize(v).into_iter().map(|x| x as u8).collect()
}

fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&b| f32::from(b as i8)).collect()
}

/// The vector of every chunk, by chunk id, as stored.
fn live_vectors(db: &Connection) -> rusqlite::Result<HashMap<u64, Vec<i8>>> {
    let mut stmt =
        db.prepare("SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.id = c.vector_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, Vec<u8>>(1)?
                .into_iter()
                .map(|b| b as i8)
                .collect(),
        ))
    })?;
    rows.collect()
}

/// Every `(key, vector)` of an index file of an older schema, as stored.
fn old_vectors(path: &Path) -> rusqlite::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // Keys are prefixes of one hash: an older, longer key cut is today's key.
    let mut stmt = db.prepare(&format!(
        "SELECT substr(key, 1, {KEY_BYTES}), vector FROM vectors"
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Carried vectors go in as orphans: the first pass finds them by content key.
fn keep_vectors(db: &Connection, vectors: &[(Vec<u8>, Vec<u8>)]) -> rusqlite::Result<()> {
    let tx = db.unchecked_transaction()?;
    {
        let now = unix_now();
        let mut stmt = tx.prepare(
            "INSERT INTO vectors(key, vector, orphaned_at) VALUES (?1, ?2, ?3) ON CONFLICT(key) DO NOTHING",
        )?;
        for (key, vector) in vectors {
            stmt.execute(params![key, vector, now])?;
        }
    }
    tx.commit()
}

fn describe(m: &Manifest) -> String {
    let source = m
        .source
        .as_ref()
        .map_or(String::new(), |s| format!(", {s}"));
    format!(
        "model `{}` ({} dims{source}, schema {})",
        m.model, m.dims, m.schema_version
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Deletes all but the newest `?1` vectors no chunk uses.
const PRUNE_ORPHANS: &str = "DELETE FROM vectors WHERE id IN (
    SELECT id FROM vectors WHERE orphaned_at IS NOT NULL
    ORDER BY orphaned_at DESC LIMIT -1 OFFSET ?1)";

/// Suffix of the index a full re-index builds beside the live one.
const REBUILD: &str = "rebuild";
/// Suffix the live index takes for a moment while a rebuilt one replaces it.
const OLD: &str = "old";

/// `<dir>.<suffix>`, beside `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(suffix);
    dir.with_file_name(name)
}

/// Trades the names of two folders in one atomic step; `Ok(false)` where the
/// platform or file system has no such call (the caller then renames twice).
fn exchange(a: &Path, b: &Path) -> Result<bool, StoreError> {
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        use rustix::io::Errno;
        match renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE) {
            Ok(()) => Ok(true),
            // No exchange here (ENOTSUP and EOPNOTSUPP are one code on Linux).
            Err(e)
                if [Errno::INVAL, Errno::NOSYS, Errno::NOTSUP, Errno::OPNOTSUPP].contains(&e) =>
            {
                Ok(false)
            }
            Err(e) => Err(StoreError::io(a, e.into())),
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android", target_vendor = "apple")))]
    {
        let _ = (a, b);
        Ok(false)
    }
}

/// Removes a folder and everything in it; a missing one is fine.
fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(dir, e)),
        _ => Ok(()),
    }
}

/// Makes a rename inside `dir`'s parent durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(parent, e))
}

/// Deletes what a crash left of an atomic write (`*.tmp`, `*.tmp.<pid>`): a
/// half-saved graph would otherwise take disk for ever. One daemon owns a home.
fn remove_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") || name.contains(".tmp.") {
            tracing::debug!(file = %entry.path().display(), "removing a leftover temporary file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Finishes what a crash left of a full re-index: a swap stopped between its
/// two renames gets the live index back; an unfinished rebuild and a replaced
/// index are dropped.
fn recover_swap(dir: &Path) -> Result<(), StoreError> {
    let old = sibling(dir, OLD);
    if !dir.exists() && old.is_dir() {
        tracing::warn!(dir = %dir.display(), "a full re-index was interrupted while swapping; keeping the index from before it");
        std::fs::rename(&old, dir).map_err(|e| StoreError::io(&old, e))?;
    }
    remove_dir(&old)?;
    // Not the rebuild's own open (`dir` is never a `.rebuild` of itself).
    let side = sibling(dir, REBUILD);
    if side.is_dir() {
        tracing::info!(dir = %side.display(), "dropping an unfinished full re-index");
        remove_dir(&side)?;
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}

#[cfg(test)]
mod tests;
