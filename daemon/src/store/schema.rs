//! The SQLite schema and the row-level statements the store's transactions are
//! made of; vectors as stored.

use super::*;

pub(super) const SCHEMA: &str = "
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
-- FTS5 writes its pending terms out as a segment when they pass 'hashsize'
-- (1 MB by default), and merges those segments later: with 32 MB a GPU's commit
-- of 8,192 chunks goes out in fewer, larger segments, and the writer took 10 % less time
-- (examples/store-writer). Memory only while a commit runs; a persistent setting.
INSERT INTO chunks_fts(chunks_fts, rank) VALUES('hashsize', 33554432);
";

/// Every connection's plans are made once per statement, whatever is bound.
/// SQLite 3.54 re-prepares a statement on the next bind of a parameter the
/// planner looked at: our `LIMIT ?` on every search, and FTS5's own segment
/// lookup (`segid=? … ORDER BY term`) whenever segment 1 is involved. `perf`
/// put a sixth of a lexical search's time in parsing SQL again
/// (`sqlite3Reprepare`); the query-planner stability guarantee turns that off.
pub(super) fn stable_plans(db: &Connection) -> rusqlite::Result<()> {
    db.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

pub(super) fn meta_int(db: &Connection, key: &str) -> rusqlite::Result<i64> {
    db.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map(|v| v.unwrap_or(0))
}

pub(super) fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
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

pub(super) fn upsert_file(tx: &rusqlite::Transaction<'_>, f: &FileRow) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO files(path, size, mtime_ns, hash, skip) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
             hash = excluded.hash, skip = excluded.skip
         RETURNING id",
    )?
    .query_row(
        params![f.path, f.size as i64, f.mtime_ns, &f.hash[..], f.skip],
        |r| r.get(0),
    )
}

/// Deletes a file's chunks (and their full-text rows, or the rows `pending` has
/// yet to insert); returns their ids and marks vectors no chunk uses any more
/// as orphans.
pub(super) fn drop_chunks(
    tx: &rusqlite::Transaction<'_>,
    path: &str,
    now: i64,
    pending: &mut super::write::PendingText,
) -> rusqlite::Result<Vec<u64>> {
    let mut stmt = tx.prepare_cached(
        "SELECT c.id, c.vector_id FROM chunks c JOIN files f ON f.id = c.file_id WHERE f.path = ?1",
    )?;
    let old: Vec<(i64, i64)> = stmt
        .query_map([path], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut delete_text = tx.prepare_cached("DELETE FROM chunks_fts WHERE rowid = ?1")?;
    let mut delete_chunk = tx.prepare_cached("DELETE FROM chunks WHERE id = ?1")?;
    for (id, _) in &old {
        if !pending.forget(*id) {
            delete_text.execute([id])?;
        }
        delete_chunk.execute([id])?;
    }
    let mut orphan = tx.prepare_cached(
        "UPDATE vectors SET orphaned_at = ?2
         WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM chunks WHERE vector_id = ?1)",
    )?;
    for (_, vector_id) in &old {
        orphan.execute(params![vector_id, now])?;
    }
    Ok(old.into_iter().map(|(id, _)| id as u64).collect())
}

pub(super) fn encode_vector(v: &[f32]) -> Vec<u8> {
    quantize(v).into_iter().map(|x| x as u8).collect()
}

pub(super) fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&b| f32::from(b as i8)).collect()
}

/// The vector of every chunk, by chunk id, as stored.
pub(super) fn live_vectors(db: &Connection) -> rusqlite::Result<HashMap<u64, Vec<i8>>> {
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
pub(super) fn old_vectors(path: &Path) -> rusqlite::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let db = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // Keys are prefixes of one hash: an older, longer key cut is today's key.
    let mut stmt = db.prepare(&format!(
        "SELECT substr(key, 1, {KEY_BYTES}), vector FROM vectors"
    ))?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Carried vectors go in as orphans: the first pass finds them by content key.
pub(super) fn keep_vectors(
    db: &Connection,
    vectors: &[(Vec<u8>, Vec<u8>)],
) -> rusqlite::Result<()> {
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

/// Deletes all but the newest `?1` vectors no chunk uses.
pub(super) const PRUNE_ORPHANS: &str = "DELETE FROM vectors WHERE id IN (
    SELECT id FROM vectors WHERE orphaned_at IS NOT NULL
    ORDER BY orphaned_at DESC LIMIT -1 OFFSET ?1)";
