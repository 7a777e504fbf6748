//! What an indexing pass writes: the files and chunks of a batch in one
//! transaction, the vectors of new content keys, and the rows it reads back to
//! decide what changed (`files`, `vectors`).

use std::collections::BTreeMap;
use std::rc::Rc;

use super::*;

/// What a commit leaves for the HNSW graph: chunk ids to remove, then vectors
/// to add (see [`Store::commit`]).
#[derive(Debug, Default)]
pub struct GraphUpdate {
    removed: Vec<u64>,
    items: Vec<(u64, Vec<f32>)>,
}

/// Updates a store's HNSW graph, from any thread (see [`Store::graph_writer`]).
#[derive(Debug, Clone)]
pub struct GraphWriter {
    hnsw: Arc<RwLock<Hnsw>>,
}

impl GraphWriter {
    /// Removes and adds what one commit changed. A CPU's commits insert on one
    /// thread, a few vectors per hold of the write lock, so searches get in
    /// between; a GPU's large ones on every core.
    pub fn apply(&self, update: GraphUpdate) -> Result<(), StoreError> {
        let hnsw = || self.hnsw.write().unwrap_or_else(|p| p.into_inner());
        hnsw().remove(&update.removed)?;
        let items = update.items;
        if items.len() >= HNSW_PARALLEL_ADDS && parallel_inserts() {
            let mut stranded = 0;
            for group in items.chunks(HNSW_PARALLEL_ADDS) {
                stranded += hnsw().add_parallel(group)?;
            }
            tracing::debug!(added = items.len(), stranded, "HNSW inserts on every core");
        } else {
            for group in items.chunks(HNSW_ADDS_PER_LOCK) {
                hnsw().add(group)?;
            }
        }
        Ok(())
    }
}

/// Whether large commits insert into the HNSW graph on every core: yes, unless
/// [`crate::config::ENV_HNSW_INSERTS`] says `serial` (for measuring).
pub(super) fn parallel_inserts() -> bool {
    static PARALLEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PARALLEL.get_or_init(|| {
        let serial = std::env::var(crate::config::ENV_HNSW_INSERTS).is_ok_and(|v| v == "serial");
        if serial {
            tracing::info!(
                "HNSW inserts on one thread ({}=serial)",
                crate::config::ENV_HNSW_INSERTS
            );
        }
        !serial
    })
}

/// The vectors among `keys` that `db` holds, each once.
pub(super) fn vectors_of(
    db: &Connection,
    keys: &[Key],
) -> rusqlite::Result<HashMap<Key, Vec<f32>>> {
    let mut stmt = db.prepare_cached("SELECT vector FROM vectors WHERE key = ?1")?;
    let mut out = HashMap::new();
    for key in keys {
        if out.contains_key(key) {
            continue;
        }
        let v: Option<Vec<u8>> = stmt.query_row([&key[..]], |r| r.get(0)).optional()?;
        if let Some(bytes) = v {
            out.insert(*key, decode_vector(&bytes));
        }
    }
    Ok(out)
}

impl Store {
    /// Keeps the newest [`ORPHAN_VECTORS_KEPT`] vectors no chunk uses.
    pub(super) fn prune_orphans(&mut self) -> Result<(), StoreError> {
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
        vectors_of(&self.db, keys).map_err(|e| self.sql(e))
    }

    /// Applies `updates` in one transaction, then mirrors them into the HNSW index.
    pub fn apply(&mut self, updates: Vec<FileUpdate>) -> Result<(), StoreError> {
        let graph = self.commit(updates)?;
        self.graph_writer().apply(graph)
    }

    /// Applies `updates` in one transaction and returns what the HNSW graph
    /// must do to match ([`GraphWriter::apply`], which may run on another
    /// thread: the index pipeline overlaps the two).
    pub fn commit(&mut self, updates: Vec<FileUpdate>) -> Result<GraphUpdate, StoreError> {
        if updates.is_empty() {
            return Ok(GraphUpdate::default());
        }
        let now = unix_now();
        let mut removed_ids: Vec<u64> = Vec::new();
        let mut added: Vec<(u64, Key)> = Vec::new();
        let mut new_vectors: HashMap<Key, Vec<f32>> = HashMap::new();
        let mut texts = PendingText::default();
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
                        removed_ids.extend(drop_chunks(&tx, &path, now, &mut texts)?);
                        match skipped {
                            Some(file) => upsert_file(&tx, &file).map(drop)?,
                            None => tx
                                .prepare_cached("DELETE FROM files WHERE path = ?1")?
                                .execute([&path])
                                .map(drop)?,
                        }
                    }
                    FileUpdate::Indexed {
                        file,
                        chunks,
                        vectors,
                    } => {
                        removed_ids.extend(drop_chunks(&tx, &file.path, now, &mut texts)?);
                        let file_id = upsert_file(&tx, &file)?;
                        let mut insert_vector = tx.prepare_cached(
                            "INSERT INTO vectors(key, vector, orphaned_at) VALUES (?1, ?2, NULL)
                             ON CONFLICT(key) DO NOTHING",
                        )?;
                        for (key, v) in vectors {
                            insert_vector.execute(params![&key[..], encode_vector(&v)])?;
                            new_vectors.insert(key, v);
                        }
                        let mut vector_id =
                            tx.prepare_cached("SELECT id FROM vectors WHERE key = ?1")?;
                        let mut insert_chunk = tx.prepare_cached(
                            "INSERT INTO chunks(file_id, vector_id, start_line, end_line, symbol, kind, language)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        )?;
                        let mut claim_vector = tx.prepare_cached(
                            "UPDATE vectors SET orphaned_at = NULL WHERE id = ?1 AND orphaned_at IS NOT NULL",
                        )?;
                        let path_text: Rc<str> = crate::lexical::path_text(&file.path).into();
                        for c in chunks {
                            // Every key has a vector by now (new, or cached).
                            let vector_id: i64 = vector_id.query_row([&c.key[..]], |r| r.get(0))?;
                            let id = insert_chunk.insert(params![
                                file_id,
                                vector_id,
                                c.start_line,
                                c.end_line,
                                c.symbol,
                                c.kind,
                                c.language
                            ])?;
                            let symbol = c.symbol.as_deref().map(crate::lexical::document_text);
                            texts.push(id, c.text, &path_text, symbol);
                            claim_vector.execute([vector_id])?;
                            added.push((id as u64, c.key));
                        }
                    }
                }
            }
            texts.insert(&tx)?;
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
        // The graph file no longer matches SQLite, whoever updates the graph.
        self.hnsw_dirty = true;
        Ok(GraphUpdate {
            removed: removed_ids,
            items,
        })
    }

    /// A handle that updates this store's HNSW graph (shared with its readers)
    /// from another thread.
    pub fn graph_writer(&self) -> GraphWriter {
        GraphWriter {
            hnsw: Arc::clone(&self.hnsw),
        }
    }
}

/// The full-text rows of a commit's new chunks, inserted together after every
/// other row. FTS5 writes its in-memory terms out as a new segment whenever a
/// statement opens a savepoint inside the transaction (`fts5SavepointMethod`),
/// and inserting into `chunks` (foreign keys) opens one: interleaved, every
/// chunk's terms became a segment of their own and the merges of those tiny
/// segments were a third of the writer's time. Inserted last, a commit's terms
/// reach the disk in segments of `hashsize` (see the schema).
#[derive(Default)]
pub(super) struct PendingText {
    /// `chunk id → (text, path, symbol)`, in id order (the order they were made).
    rows: BTreeMap<i64, (LexicalText, Rc<str>, Option<String>)>,
}

impl PendingText {
    /// A chunk id deleted and reused within the commit takes its new text.
    fn push(&mut self, id: i64, text: LexicalText, path: &Rc<str>, symbol: Option<String>) {
        self.rows.insert(id, (text, Rc::clone(path), symbol));
    }

    /// Forgets chunk `id` if its row is still pending: `false` when its row is
    /// in the full-text index and must be deleted there.
    pub(super) fn forget(&mut self, id: i64) -> bool {
        self.rows.remove(&id).is_some()
    }

    fn insert(self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        let mut insert = tx.prepare_cached(
            "INSERT INTO chunks_fts(rowid, text, path, symbol) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (id, (text, path, symbol)) in &self.rows {
            insert.execute(params![id, text.as_str(), &**path, symbol])?;
        }
        Ok(())
    }
}
