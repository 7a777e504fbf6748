//! The model's own thread, fed by a two-priority queue: a query is never queued
//! behind indexing work.
//!
//! Exactly one thread touches the model. Callers hold an [`EmbedHandle`] (cheap to
//! clone): `embed_async` serves the daemon's tasks, and the handle is itself an
//! [`Embedder`] (blocking) for the synchronous index pipeline. A document job runs
//! through [`Embedder::embed_pausable`], and at every pause the thread embeds the
//! queries that arrived meanwhile: a query waits for half an encoder layer of
//! one batch at most, while indexing keeps full-size batches (small batches cost a
//! CPU a third of its throughput; see docs/BENCHMARKS.md).

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

/// Owns the model thread; dropping it closes the queue and joins the thread
/// (unless [`EmbedWorker::close_without_waiting`] let it go first).
pub struct EmbedWorker {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
    /// When it fires, a blocking [`Embedder::embed`] stops waiting for its answer.
    cancel: Option<tokio_util::sync::CancellationToken>,
    model: String,
    dims: usize,
    max_tokens: usize,
    device: String,
    batch_size: usize,
}

impl std::fmt::Debug for EmbedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbedHandle")
            .field("model", &self.model)
            .finish()
    }
}

impl EmbedWorker {
    /// Moves `embedder` onto a thread of its own.
    pub fn spawn(embedder: Box<dyn Embedder>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
        });
        let handle = EmbedHandle {
            shared: shared.clone(),
            cancel: None,
            model: embedder.model_name().to_owned(),
            dims: embedder.dims(),
            max_tokens: embedder.max_tokens(),
            device: embedder.device_name(),
            batch_size: embedder.batch_size(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("embed-{}", handle.model))
            .spawn({
                let shared = shared.clone();
                move || run(embedder, &shared)
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
            handle,
        })
    }

    /// A handle to the model thread.
    pub fn handle(&self) -> EmbedHandle {
        self.handle.clone()
    }

    /// Closes the queue (new calls fail, waiting jobs are dropped) without
    /// waiting for the job the thread may be running: at shutdown the process
    /// exits without it, since one call of an indexing pass can take seconds.
    pub fn close_without_waiting(&self) {
        self.close();
        // Dropping the handle detaches the thread; `Drop` then has nothing to join.
        drop(self.thread.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    fn close(&self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        // Their callers get `Closed` instead of waiting on a thread that is going.
        q.queries.clear();
        q.documents.clear();
        drop(q);
        self.shared.ready.notify_all();
    }
}

impl Drop for EmbedWorker {
    fn drop(&mut self) {
        self.close();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
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
        // Its caller stopped waiting (cancelled, or gone): no one wants the answer.
        if job.reply.is_closed() {
            continue;
        }
        let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
        let answer = match job.kind {
            InputKind::Query => embedder.embed(&texts, job.kind),
            InputKind::Document => {
                embedder.embed_pausable(&texts, job.kind, &mut |model| serve_queries(model, shared))
            }
        };
        // A caller that gave up (dropped its receiver) just loses the answer.
        let _ = job.reply.send(answer);
    }
}

/// Embeds every query waiting now.
fn serve_queries(model: &mut dyn Embedder, shared: &Shared) {
    loop {
        let Some(job) = shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queries
            .pop_front()
        else {
            return;
        };
        let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
        let _ = job.reply.send(model.embed(&texts, job.kind));
    }
}

impl EmbedHandle {
    /// The same handle, whose blocking [`Embedder::embed`] gives up with
    /// [`EmbedError::Cancelled`] as soon as `cancel` fires (the job is dropped
    /// from the queue if it has not started; a running one finishes unheard).
    pub fn cancelled_by(mut self, cancel: tokio_util::sync::CancellationToken) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Embeds `texts`; a query jumps ahead of every document job, even a running one.
    pub async fn embed_async(
        &self,
        texts: Vec<String>,
        kind: InputKind,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let pending = self.enqueue(texts, kind)?;
        pending.await.map_err(|_| self.closed())?
    }

    /// Queues `texts` as one job, ahead of every document job if it is a query.
    fn enqueue(&self, texts: Vec<String>, kind: InputKind) -> Result<Pending, EmbedError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job { texts, kind, reply };
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return Err(self.closed());
        }
        match kind {
            InputKind::Query => q.queries.push_back(job),
            InputKind::Document => q.documents.push_back(job),
        }
        drop(q);
        self.shared.ready.notify_one();
        Ok(rx)
    }

    /// Jobs waiting: (query jobs, document jobs).
    pub fn queued(&self) -> (usize, usize) {
        let q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        (q.queries.len(), q.documents.len())
    }

    fn closed(&self) -> EmbedError {
        EmbedError::Closed {
            model: self.model.clone(),
        }
    }

    fn cancelled(&self) -> EmbedError {
        EmbedError::Cancelled {
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

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn embed(&mut self, texts: &[&str], kind: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(self.cancelled());
        }
        let pending = self.enqueue(texts.iter().map(|t| (*t).to_owned()).collect(), kind)?;
        let runtime = tokio::runtime::Handle::try_current();
        match (&self.cancel, runtime) {
            // On a blocking thread of the runtime (an indexing pass): wait for
            // the answer or the token, whichever comes first.
            (Some(cancel), Ok(runtime)) => runtime.block_on(async {
                tokio::select! {
                    answer = pending => answer.map_err(|_| self.closed())?,
                    () = cancel.cancelled() => Err(self.cancelled()),
                }
            }),
            _ => pending.blocking_recv().map_err(|_| self.closed())?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs each text it embeds; pauses after every document text. A document
    /// job says on `entered` that it started, then waits for `gate`, so a test can
    /// queue a query while the job runs.
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        entered: std::sync::mpsc::Sender<()>,
        gate: Option<std::sync::mpsc::Receiver<()>>,
    }

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
            self.log
                .lock()
                .unwrap()
                .extend(texts.iter().map(|t| (*t).to_owned()));
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        }
        fn embed_pausable(
            &mut self,
            texts: &[&str],
            kind: InputKind,
            pause: &mut dyn FnMut(&mut dyn Embedder),
        ) -> Result<Vec<Vec<f32>>, EmbedError> {
            if let Some(gate) = self.gate.take() {
                self.entered.send(()).unwrap();
                gate.recv().unwrap();
            }
            let mut out = Vec::new();
            for t in texts {
                out.extend(self.embed(&[t], kind)?);
                pause(self);
            }
            Ok(out)
        }
    }

    fn wait_until(f: impl Fn() -> bool) {
        while !f() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_query_runs_at_the_next_pause_of_a_document_job() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = std::sync::mpsc::channel();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let recorder = Recorder {
            log: log.clone(),
            entered: entered_tx,
            gate: Some(gate),
        };
        let worker = EmbedWorker::spawn(Box::new(recorder)).unwrap();
        let mut docs = worker.handle();
        let docs = std::thread::spawn(move || docs.embed(&["a", "bb", "ccc"], InputKind::Document));
        entered.recv().unwrap();
        let mut query = worker.handle();
        let query = std::thread::spawn(move || query.embed(&["q"], InputKind::Query));
        wait_until(|| worker.handle().queued() == (1, 0));
        open.send(()).unwrap();
        assert_eq!(query.join().unwrap().unwrap(), [[1.0]]);
        assert_eq!(
            docs.join().unwrap().unwrap(),
            [[1.0], [2.0], [3.0]],
            "answers in input order"
        );
        assert_eq!(*log.lock().unwrap(), ["a", "q", "bb", "ccc"]);
        let mut handle = worker.handle();
        drop(worker);
        let err = handle
            .embed(&["x"], InputKind::Query)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no longer running"), "{err}");
    }
}
