//! Connections for searches: one [`StoreReader`] per search running at once,
//! up to a limit, so concurrent searches of one repository run side by side
//! (SQLite WAL lets readers read beside each other and beside the writer; the
//! HNSW index is shared behind its read lock).
//!
//! A full re-index swaps a new index in: [`Readers::replace`] takes a reader
//! of it, and from then on every search gets one of the new index; a search
//! still running finishes on the old one, whose connection is closed when it
//! is handed back.

use std::ops::Deref;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{StoreError, StoreReader};

/// A pool of readers of one index.
#[derive(Debug)]
pub struct Readers {
    state: Mutex<State>,
    freed: Condvar,
    max: usize,
}

#[derive(Debug)]
struct State {
    /// A reader of the current index, from which more are opened.
    template: StoreReader,
    /// Bumped by [`Readers::replace`]; readers of older ones are closed on return.
    generation: u64,
    idle: Vec<StoreReader>,
    /// Readers of this generation, idle or lent (the template not counted).
    open: usize,
}

/// A reader lent to one search; handed back on drop.
#[derive(Debug)]
pub struct Lent<'a> {
    readers: &'a Readers,
    reader: Option<StoreReader>,
    generation: u64,
}

impl Readers {
    /// A pool that starts from `template` and opens at most `max` more readers.
    pub fn new(template: StoreReader, max: usize) -> Self {
        Self {
            state: Mutex::new(State {
                template,
                generation: 0,
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            max: max.max(1),
        }
    }

    /// As many readers as this machine runs searches at once.
    pub fn for_this_machine(template: StoreReader) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        // At most 4: each connection holds three files open (database, WAL,
        // shared memory), and a daemon serves many repositories.
        Self::new(template, cores.clamp(2, 4))
    }

    /// Readers lent at most at once.
    pub fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A reader for one search: an idle one, a new one while fewer than the
    /// limit are open, or the next one handed back. Blocking: call it from a
    /// blocking thread.
    pub fn get(&self) -> Result<Lent<'_>, StoreError> {
        self.take(true)
            .map(|lent| lent.expect("a waiting take always lends"))
    }

    /// A reader if one is free or may be opened now; `None` when every
    /// reader is lent (for work that can skip a turn, such as progress counts).
    pub fn try_get(&self) -> Result<Option<Lent<'_>>, StoreError> {
        self.take(false)
    }

    fn take(&self, wait: bool) -> Result<Option<Lent<'_>>, StoreError> {
        let mut state = self.lock();
        loop {
            let generation = state.generation;
            if let Some(reader) = state.idle.pop() {
                return Ok(Some(self.lend(reader, generation)));
            }
            if state.open < self.max {
                state.open += 1;
                let opened = state.template.reopen();
                if opened.is_err() {
                    state.open -= 1;
                }
                return opened.map(|reader| Some(self.lend(reader, generation)));
            }
            if !wait {
                return Ok(None);
            }
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lend(&self, reader: StoreReader, generation: u64) -> Lent<'_> {
        Lent {
            readers: self,
            reader: Some(reader),
            generation,
        }
    }

    /// From now on, searches read the index `template` reads.
    pub fn replace(&self, template: StoreReader) {
        let mut state = self.lock();
        state.template = template;
        state.generation += 1;
        state.idle.clear();
        state.open = 0;
        drop(state);
        self.freed.notify_all();
    }

    fn hand_back(&self, reader: StoreReader, generation: u64) {
        let mut state = self.lock();
        if generation == state.generation {
            state.idle.push(reader);
        }
        // A reader of a replaced index is dropped (closed) here; the new
        // generation's count never included it.
        drop(state);
        self.freed.notify_one();
    }
}

impl Deref for Lent<'_> {
    type Target = StoreReader;

    fn deref(&self) -> &StoreReader {
        self.reader
            .as_ref()
            .expect("a lent reader is there until dropped")
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            self.readers.hand_back(reader, self.generation);
        }
    }
}
