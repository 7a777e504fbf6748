//! Reading an index: [`StoreReader`] beside the writer, and the searches both
//! answer alike ([`Retrieve`]).

use super::*;

/// Searches a store while its writer works (WAL lets SQLite readers run beside it).
#[derive(Debug)]
pub struct StoreReader {
    pub(super) path: PathBuf,
    pub(super) db: Connection,
    pub(super) hnsw: Arc<RwLock<Hnsw>>,
    /// The SQLite file's (device, inode) that `hnsw` belongs to.
    pub(super) file: (u64, u64),
}

/// A file's (device, inode): which file a path names right now.
pub(super) fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
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
        .and_then(|db| stable_plans(&db).map(|()| db))
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

    /// The stored vectors among `keys`, as [`Store::vectors`]: what the writer
    /// has committed (the index pipeline looks them up here while it writes).
    pub fn vectors(&self, keys: &[Key]) -> Result<HashMap<Key, Vec<f32>>, StoreError> {
        super::write::vectors_of(&self.db, keys).map_err(|e| StoreError::Sqlite {
            path: self.path.clone(),
            source: e,
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
pub(super) fn symbols(
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
pub(super) fn lexical(
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

pub(super) fn hnsw_read(hnsw: &RwLock<Hnsw>) -> RwLockReadGuard<'_, Hnsw> {
    hnsw.read().unwrap_or_else(|p| p.into_inner())
}

/// HNSW candidates joined with their rows. An id the HNSW still has but SQLite
/// dropped (a reader between a commit and the HNSW update) is skipped.
pub(super) fn nearest(
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

pub(super) fn rows_for(
    db: &Connection,
    found: Vec<(u64, f32)>,
) -> rusqlite::Result<Vec<(ChunkRow, f32)>> {
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
