//! The model's own thread, fed by a two-priority queue: a query is never queued
//! behind indexing work.
//!
//! Exactly one thread touches the model. Callers hold an [`EmbedHandle`] (cheap to
//! clone): `embed_async` serves the daemon's tasks, and the handle is itself an
//! [`Embedder`] (blocking) for the synchronous index pipeline. Document requests
//! are sorted by length and cut into slices of at most `slice_chars` characters,
//! each queued on its own, so a query waits for one short slice at most, never for
//! a whole indexing batch; sorting first keeps the padding of small slices low.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{EmbedError, Embedder, InputKind};

type Answer = Result<Vec<Vec<f32>>, EmbedError>;
type Reply = tokio::sync::oneshot::Sender<Answer>;
type Pending = tokio::sync::oneshot::Receiver<Answer>;

struct Job {
    texts: Vec<String>,
    kind: InputKind,
    reply: Reply,
}

#[derive(Default)]
struct Queue {
    queries: VecDeque<Job>,
    documents: VecDeque<Job>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// Owns the model thread; dropping it closes the queue and joins the thread.
pub struct EmbedWorker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    handle: EmbedHandle,
}

impl std::fmt::Debug for EmbedWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedWorker")
            .field("model", &self.handle.model)
            .finish()
    }
}

/// A way to reach the model thread.
#[derive(Clone)]
pub struct EmbedHandle {
    shared: Arc<Shared>,
    model: String,
    dims: usize,
    max_tokens: usize,
    device: String,
    slice_chars: usize,
}

impl std::fmt::Debug for EmbedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedHandle")
            .field("model", &self.model)
            .finish()
    }
}

impl EmbedWorker {
    /// Moves `embedder` onto a thread of its own. `slice_chars` bounds the text of
    /// one document job, and so how long a query can wait behind indexing.
    pub fn spawn(embedder: Box<dyn Embedder>, slice_chars: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let handle = EmbedHandle {
            shared: shared.clone(),
            model: embedder.model_name().to_owned(),
            dims: embedder.dims(),
            max_tokens: embedder.max_tokens(),
            device: embedder.device_name(),
            slice_chars: slice_chars.max(1),
        };
        let thread = std::thread::Builder::new()
            .name(format!("embed-{}", handle.model))
            .spawn({
                let shared = shared.clone();
                move || run(embedder, &shared)
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
            handle,
        })
    }

    /// A handle to the model thread.
    pub fn handle(&self) -> EmbedHandle {
        self.handle.clone()
    }
}

impl Drop for EmbedWorker {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed = true;
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut embedder: Box<dyn Embedder>, shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(job) = q.queries.pop_front().or_else(|| q.documents.pop_front()) {
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
        // A caller that gave up (dropped its receiver) just loses the answer.
        let _ = job.reply.send(embedder.embed(&texts, job.kind));
    }
}

impl EmbedHandle {
    /// Embeds `texts`; queries jump ahead of every queued document slice.
    pub async fn embed_async(
        &self,
        texts: Vec<String>,
        kind: InputKind,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = texts.len();
        let pending = self.enqueue(texts, kind)?;
        let mut out = vec![Vec::new(); n];
        for (indices, rx) in pending {
            let vectors = rx.await.map_err(|_| self.closed())??;
            for (i, v) in indices.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Queues `texts` as one query job, or as length-sorted document slices; each
    /// receiver comes with the input positions of its texts.
    fn enqueue(
        &self,
        texts: Vec<String>,
        kind: InputKind,
    ) -> Result<Vec<(Vec<usize>, Pending)>, EmbedError> {
        let groups: Vec<Vec<usize>> = match kind {
            InputKind::Query => vec![(0..texts.len()).collect()],
            InputKind::Document => {
                let mut order: Vec<usize> = (0..texts.len()).collect();
                order.sort_by_key(|&i| std::cmp::Reverse(texts[i].len()));
                let mut groups: Vec<Vec<usize>> = Vec::new();
                let mut chars = 0;
                for i in order {
                    let len = texts[i].len();
                    match groups.last_mut() {
                        Some(g) if chars + len <= self.slice_chars => g.push(i),
                        _ => {
                            groups.push(vec![i]);
                            chars = 0;
                        }
                    }
                    chars += len;
                }
                groups
            }
        };
        let mut texts: Vec<Option<String>> = texts.into_iter().map(Some).collect();
        let mut pending = Vec::with_capacity(groups.len());
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(self.closed());
        }
        for indices in groups {
            let part: Vec<String> = indices.iter().filter_map(|&i| texts[i].take()).collect();
            let (reply, rx) = tokio::sync::oneshot::channel();
            let job = Job {
                texts: part,
                kind,
                reply,
            };
            match kind {
                InputKind::Query => q.queries.push_back(job),
                InputKind::Document => q.documents.push_back(job),
            }
            pending.push((indices, rx));
        }
        drop(q);
        self.shared.ready.notify_one();
        Ok(pending)
    }

    /// Jobs waiting: (query jobs, document slices).
    pub fn queued(&self) -> (usize, usize) {
        let q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        (q.queries.len(), q.documents.len())
    }

    fn closed(&self) -> EmbedError {
        EmbedError::Closed {
            model: self.model.clone(),
        }
    }
}

/// Blocking use from synchronous code (the index pipeline on a blocking thread).
/// Must not be called from inside an async task.
impl Embedder for EmbedHandle {
    fn model_name(&self) -> &str {
        &self.model
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn device_name(&self) -> String {
        self.device.clone()
    }

    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let pending = self.enqueue(texts.iter().map(|t| (*t).to_owned()).collect(), kind)?;
        let mut out = vec![Vec::new(); texts.len()];
        for (indices, rx) in pending {
            let vectors = rx.blocking_recv().map_err(|_| self.closed())??;
            for (i, v) in indices.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the order of the jobs it runs; vectors are the text lengths.
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Embedder for Recorder {
        fn model_name(&self) -> &str {
            "recorder"
        }
        fn dims(&self) -> usize {
            1
        }
        fn max_tokens(&self) -> usize {
            8
        }
        fn device_name(&self) -> String {
            "cpu".into()
        }
        fn embed(&mut self, texts: &[&str], _: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.lock().unwrap().push(texts.join(","));
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
    }

    #[test]
    fn document_jobs_are_sorted_and_sliced_and_a_closed_queue_says_so() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let worker = EmbedWorker::spawn(Box::new(Recorder(log.clone())), 7).unwrap();
        let mut handle = worker.handle();
        let v = handle
            .embed(&["a", "bb", "ccc", "dddd", "eeeee"], InputKind::Document)
            .unwrap();
        assert_eq!(
            v,
            [[1.0], [2.0], [3.0], [4.0], [5.0]],
            "answers in input order"
        );
        // Longest first, at most 7 characters a slice (a longer text goes alone).
        assert_eq!(*log.lock().unwrap(), ["eeeee", "dddd,ccc", "bb,a"]);
        drop(worker);
        let err = handle
            .embed(&["x"], InputKind::Query)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no longer running"), "{err}");
    }
}
