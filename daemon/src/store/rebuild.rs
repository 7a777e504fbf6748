//! A full re-index built beside the live index and swapped in whole when
//! complete, so the live one answers searches throughout.

use super::*;

impl Store {
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
}
