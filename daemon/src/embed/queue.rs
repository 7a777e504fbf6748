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
//!
//! Queries that wait together are embedded together, in one forward pass (many
//! agents or an editor's keystrokes at once cost about as much as one query),
//! and the vectors of recent queries are kept: a repeated query needs no pass.
//!
//! A remote model is no single resource: [`EmbedWorker::spawn_lanes`] gives
//! its queries a thread of their own, so a query never waits for an indexing
//! request that is out on the network (or waiting out a 429).

use std::collections::{HashMap, VecDeque};
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
    recent: Mutex<RecentQueries>,
}

/// Vectors of recent query texts, the oldest dropped first.
#[derive(Default)]
struct RecentQueries {
    vectors: HashMap<String, Vec<f32>>,
    order: VecDeque<String>,
}

impl RecentQueries {
    /// Query texts kept.
    const CAPACITY: usize = 1024;
    /// Longer texts are not kept (a pasted file is rarely searched twice).
    const MAX_TEXT_BYTES: usize = 1024;

    /// The vectors of all of `texts`, if every one is known.
    fn get_all(&self, texts: &[String]) -> Option<Vec<Vec<f32>>> {
        texts.iter().map(|t| self.vectors.get(t).cloned()).collect()
    }

    fn insert(&mut self, text: &str, vector: &[f32]) {
        if text.len() > Self::MAX_TEXT_BYTES || self.vectors.contains_key(text) {
            return;
        }
        if self.order.len() >= Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.vectors.remove(&oldest);
        }
        self.order.push_back(text.to_owned());
        self.vectors.insert(text.to_owned(), vector.to_vec());
    }
}

/// Owns the model thread; dropping it closes the queue and joins the thread
/// (unless [`EmbedWorker::close_without_waiting`] let it go first).
pub struct EmbedWorker {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    handle: EmbedHandle,
}

/// Which jobs a thread takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// Both, queries first (one model, one thread).
    Both,
    /// Only queries.
    Queries,
    /// Only documents.
    Documents,
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
    identity: Option<String>,
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
        Self::spawn_threads(vec![(embedder, Lane::Both)])
    }

    /// Two threads: one embeds the documents, the other the queries; for
    /// models that can serve both at once (a remote API).
    pub fn spawn_lanes(
        documents: Box<dyn Embedder>,
        queries: Box<dyn Embedder>,
    ) -> std::io::Result<Self> {
        Self::spawn_threads(vec![(documents, Lane::Documents), (queries, Lane::Queries)])
    }

    fn spawn_threads(embedders: Vec<(Box<dyn Embedder>, Lane)>) -> std::io::Result<Self> {
        let Some((embedder, _)) = embedders.first() else {
            return Err(std::io::Error::other("no embedder to run"));
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            recent: Mutex::new(RecentQueries::default()),
        });
        let handle = EmbedHandle {
            shared: shared.clone(),
            cancel: None,
            model: embedder.model_name().to_owned(),
            dims: embedder.dims(),
            max_tokens: embedder.max_tokens(),
            device: embedder.device_name(),
            batch_size: embedder.batch_size(),
            identity: embedder.identity(),
        };
        let worker = Self {
            shared: shared.clone(),
            threads: Mutex::new(Vec::new()),
            handle,
        };
        for (embedder, lane) in embedders {
            let thread = std::thread::Builder::new()
                .name(format!("embed-{}", worker.handle.model))
                .spawn({
                    let shared = shared.clone();
                    move || run(embedder, &shared, lane)
                })?;
            worker.threads().push(thread);
        }
        Ok(worker)
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
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
        // Dropping the handles detaches the threads; `Drop` then has nothing to join.
        self.threads().clear();
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
        for t in std::mem::take(&mut *self.threads()) {
            let _ = t.join();
        }
    }
}

/// Closes the queue when the model thread ends, also by a panic: the jobs
/// waiting then get "no longer running" instead of waiting forever.
struct CloseOnExit<'a>(&'a Shared);

impl Drop for CloseOnExit<'_> {
    fn drop(&mut self) {
        let mut q = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        q.queries.clear();
        q.documents.clear();
        drop(q);
        self.0.ready.notify_all();
    }
}

fn run(mut embedder: Box<dyn Embedder>, shared: &Shared, lane: Lane) {
    let _close = CloseOnExit(shared);
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if lane != Lane::Documents && !q.queries.is_empty() {
                    break Work::Queries(q.queries.drain(..).collect());
                }
                if lane != Lane::Queries
                    && let Some(job) = q.documents.pop_front()
                {
                    break Work::Documents(job);
                }
                if q.closed {
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        match job {
            Work::Queries(jobs) => embed_queries(embedder.as_mut(), jobs, shared),
            Work::Documents(job) => {
                // Its caller stopped waiting (cancelled, or gone): no one wants the answer.
                if job.reply.is_closed() {
                    continue;
                }
                let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
                let answer = embedder.embed_pausable(&texts, job.kind, &mut |model| {
                    // With a query lane, that thread has them already.
                    if lane == Lane::Both {
                        serve_queries(model, shared);
                    }
                });
                // A caller that gave up (dropped its receiver) just loses the answer.
                let _ = job.reply.send(answer);
            }
        }
    }
}

/// What the model thread takes next: every waiting query, or one document job.
enum Work {
    Queries(Vec<Job>),
    Documents(Job),
}

/// Embeds every query waiting now.
fn serve_queries(model: &mut dyn Embedder, shared: &Shared) {
    let jobs: Vec<Job> = shared
        .queue
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .queries
        .drain(..)
        .collect();
    if !jobs.is_empty() {
        embed_queries(model, jobs, shared);
    }
}

/// Embeds the texts of several query jobs in one call (the engine batches
/// them by length), answers each job with its own vectors and keeps them as
/// recent. If the joint call fails, each job is tried alone, so each caller
/// gets its own answer or its own error.
fn embed_queries(model: &mut dyn Embedder, jobs: Vec<Job>, shared: &Shared) {
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
    let texts: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.texts.iter().map(String::as_str))
        .collect();
    if texts.is_empty() {
        for job in jobs {
            let _ = job.reply.send(Ok(Vec::new()));
        }
        return;
    }
    let answer = model.embed(&texts, InputKind::Query);
    let vectors = match answer {
        Ok(v) if v.len() == texts.len() => v,
        answer if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(answer);
            }
            return;
        }
        _ => {
            for job in jobs {
                let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
                let answer = model.embed(&texts, InputKind::Query);
                let _ = job.reply.send(answer);
            }
            return;
        }
    };
    {
        let mut recent = shared.recent.lock().unwrap_or_else(|p| p.into_inner());
        for (text, vector) in texts.iter().zip(&vectors) {
            recent.insert(text, vector);
        }
    }
    let mut vectors = vectors.into_iter();
    for job in jobs {
        let mine: Vec<Vec<f32>> = vectors.by_ref().take(job.texts.len()).collect();
        let _ = job.reply.send(Ok(mine));
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
        if kind == InputKind::Query
            && !texts.is_empty()
            && let Some(known) = self
                .shared
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_all(&texts)
        {
            let _ = reply.send(Ok(known));
            return Ok(rx);
        }
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
        // All: with lanes, the thread that takes this kind may not be the one
        // `notify_one` would wake.
        self.shared.ready.notify_all();
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

    fn identity(&self) -> Option<String> {
        self.identity.clone()
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
        /// The texts of each call to `embed`, one entry a call.
        log: Calls,
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
                .push(texts.iter().map(|t| (*t).to_owned()).collect());
            if texts.contains(&"bad") {
                return Err(EmbedError::Cancelled {
                    model: "recorder".into(),
                });
            }
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
        assert_eq!(*log.lock().unwrap(), [["a"], ["q"], ["bb"], ["ccc"]]);
        let mut handle = worker.handle();
        drop(worker);
        let err = handle
            .embed(&["x"], InputKind::Query)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no longer running"), "{err}");
    }

    #[test]
    fn with_lanes_a_query_is_answered_while_a_document_job_is_stuck() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = std::sync::mpsc::channel();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let documents = Recorder {
            log: log.clone(),
            entered: entered_tx.clone(),
            gate: Some(gate),
        };
        let queries = Recorder {
            log: log.clone(),
            entered: entered_tx,
            gate: None,
        };
        let worker = EmbedWorker::spawn_lanes(Box::new(documents), Box::new(queries)).unwrap();
        let mut docs = worker.handle();
        let docs = std::thread::spawn(move || docs.embed(&["a", "bb"], InputKind::Document));
        entered.recv().unwrap();
        // The document job holds its thread (a request out on the network);
        // the query is answered without waiting for it.
        assert_eq!(
            worker.handle().embed(&["qq"], InputKind::Query).unwrap(),
            [[2.0]]
        );
        assert_eq!(*log.lock().unwrap(), [["qq"]]);
        open.send(()).unwrap();
        assert_eq!(docs.join().unwrap().unwrap(), [[1.0], [2.0]]);
        assert_eq!(*log.lock().unwrap(), [["qq"], ["a"], ["bb"]]);
    }

    /// Panics on every call, as a model bug would.
    struct Panics;

    impl Embedder for Panics {
        fn model_name(&self) -> &str {
            "panics"
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
        fn embed(&mut self, _: &[&str], _: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
            panic!("a bug in the model")
        }
    }

    #[test]
    fn a_panic_on_the_model_thread_fails_the_waiting_jobs_instead_of_hanging_them() {
        let worker = EmbedWorker::spawn(Box::new(Panics)).unwrap();
        let mut h = worker.handle();
        assert!(h.embed(&["q"], InputKind::Query).is_err());
        let err = h
            .embed(&["again"], InputKind::Document)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no longer running"), "{err}");
        drop(worker);
    }

    type Calls = Arc<Mutex<Vec<Vec<String>>>>;

    /// A worker whose first document job holds until `open` is sent: the
    /// worker, its calls, `open`, and `entered` (the job has started).
    fn gated() -> (
        EmbedWorker,
        Calls,
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<()>,
    ) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = std::sync::mpsc::channel();
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let recorder = Recorder {
            log: log.clone(),
            entered: entered_tx,
            gate: Some(gate),
        };
        (
            EmbedWorker::spawn(Box::new(recorder)).unwrap(),
            log,
            open,
            entered,
        )
    }

    #[test]
    fn queries_that_wait_together_share_one_call_and_each_gets_its_own_vectors() {
        let (worker, log, open, entered) = gated();
        let mut docs = worker.handle();
        let docs = std::thread::spawn(move || docs.embed(&["d"], InputKind::Document));
        entered.recv().unwrap();
        let queries: Vec<_> = [&["q1"][..], &["q22", "q333"], &["bad"], &["q4444"]]
            .into_iter()
            .map(|texts| {
                let mut h = worker.handle();
                let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
                let t = std::thread::spawn(move || {
                    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                    h.embed(&texts, InputKind::Query)
                });
                // In this order in the queue.
                let n = worker.handle().queued().0 + 1;
                wait_until(|| worker.handle().queued().0 == n);
                t
            })
            .collect();
        open.send(()).unwrap();
        let answers: Vec<_> = queries.into_iter().map(|t| t.join().unwrap()).collect();
        docs.join().unwrap().unwrap();
        assert_eq!(answers[0].as_ref().unwrap(), &[[2.0]]);
        assert_eq!(answers[1].as_ref().unwrap(), &[[3.0], [4.0]]);
        assert!(answers[2].is_err(), "the failing job gets its error");
        assert_eq!(answers[3].as_ref().unwrap(), &[[5.0]]);
        // One joint call (which failed on "bad"), then one call a job.
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                vec!["d"],
                vec!["q1", "q22", "q333", "bad", "q4444"],
                vec!["q1"],
                vec!["q22", "q333"],
                vec!["bad"],
                vec!["q4444"],
            ]
        );
    }

    #[test]
    fn a_repeated_query_needs_no_call_and_the_oldest_are_forgotten() {
        let (worker, log, _open, _entered) = gated();
        let mut h = worker.handle();
        assert_eq!(
            h.embed(&["q", "rr"], InputKind::Query).unwrap(),
            [[1.0], [2.0]]
        );
        assert_eq!(
            h.embed(&["rr", "q"], InputKind::Query).unwrap(),
            [[2.0], [1.0]]
        );
        assert_eq!(
            h.embed(&["q", "new"], InputKind::Query).unwrap(),
            [[1.0], [3.0]]
        );
        assert_eq!(log.lock().unwrap().len(), 2, "{:?}", log.lock().unwrap());
        let mut recent = RecentQueries::default();
        for n in 0..RecentQueries::CAPACITY + 1 {
            recent.insert(&n.to_string(), &[n as f32]);
        }
        assert!(
            recent.get_all(&["0".to_owned()]).is_none(),
            "the oldest went"
        );
        assert_eq!(recent.get_all(&["1".to_owned()]), Some(vec![vec![1.0]]));
        recent.insert(&"x".repeat(RecentQueries::MAX_TEXT_BYTES + 1), &[0.0]);
        assert_eq!(recent.vectors.len(), RecentQueries::CAPACITY);
    }
}
