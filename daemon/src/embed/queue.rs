//! The model's own thread, fed by a two-priority queue: a query is never queued
//! behind indexing work.
//!
//! Exactly one thread touches the model. Callers hold an [`EmbedHandle`] (cheap to
//! clone): `embed_async` serves the daemon's tasks, and the handle is itself an
//! [`Embedder`] (blocking) for the synchronous index pipeline. Document requests
//! are cut into slices of at most `slice` texts, each queued on its own, so a
//! query waits for one slice at most, never for a whole indexing batch.

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
    slice: usize,
}

impl std::fmt::Debug for EmbedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedHandle")
            .field("model", &self.model)
            .finish()
    }
}

impl EmbedWorker {
    /// Moves `embedder` onto a thread of its own. `slice` bounds the texts of one
    /// document job, and so how long a query can wait.
    pub fn spawn(embedder: Box<dyn Embedder>, slice: usize) -> std::io::Result<Self> {
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
            slice: slice.max(1),
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
        let receivers = self.enqueue(texts, kind)?;
        let mut out = Vec::new();
        for rx in receivers {
            out.extend(rx.await.map_err(|_| self.closed())??);
        }
        Ok(out)
    }

    fn enqueue(&self, texts: Vec<String>, kind: InputKind) -> Result<Vec<Pending>, EmbedError> {
        let slice = match kind {
            InputKind::Query => texts.len().max(1),
            InputKind::Document => self.slice,
        };
        let mut receivers = Vec::new();
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(self.closed());
        }
        let mut texts = texts.into_iter().peekable();
        while texts.peek().is_some() {
            let part: Vec<String> = texts.by_ref().take(slice).collect();
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
            receivers.push(rx);
        }
        drop(q);
        self.shared.ready.notify_one();
        Ok(receivers)
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
        let receivers = self.enqueue(texts.iter().map(|t| (*t).to_owned()).collect(), kind)?;
        let mut out = Vec::with_capacity(texts.len());
        for rx in receivers {
            out.extend(rx.blocking_recv().map_err(|_| self.closed())??);
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
    fn document_jobs_are_sliced_in_order_and_a_closed_queue_says_so() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let worker = EmbedWorker::spawn(Box::new(Recorder(log.clone())), 2).unwrap();
        let mut handle = worker.handle();
        let v = handle
            .embed(&["a", "bb", "ccc", "dddd", "eeeee"], InputKind::Document)
            .unwrap();
        assert_eq!(v, [[1.0], [2.0], [3.0], [4.0], [5.0]]);
        assert_eq!(*log.lock().unwrap(), ["a,bb", "ccc,dddd", "eeeee"]);
        drop(worker);
        let err = handle
            .embed(&["x"], InputKind::Query)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no longer running"), "{err}");
    }
}
