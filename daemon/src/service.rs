//! The daemon's state behind the RPC methods: configuration, loaded models and the
//! shutdown signal. Methods call into this; only `rpc` turns its types into protocol types.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::Config;
use crate::embed::{self, EmbedError, EmbedHandle, EmbedOptions, EmbedWorker, ModelLocator};

/// Texts per document slice on the model thread: how long a query can wait.
const EMBED_SLICE: usize = 64;

/// Failures of daemon operations, mapped to JSON-RPC codes in `rpc`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The model cannot be used (unknown, unsupported, weights missing, device).
    #[error(transparent)]
    Model(Box<EmbedError>),
    /// The request is well-formed but its values are not acceptable.
    #[error("{0}")]
    InvalidParams(String),
    /// Something on the daemon's side failed.
    #[error("{0}")]
    Internal(String),
}

/// Shared daemon state.
#[derive(Debug)]
pub struct Service {
    config: Config,
    started: Instant,
    /// One model thread per loaded model, by canonical name.
    workers: tokio::sync::Mutex<HashMap<String, EmbedWorker>>,
    shutdown: tokio::sync::Notify,
    stopping: AtomicBool,
}

impl Service {
    /// State for a daemon with `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            started: Instant::now(),
            workers: tokio::sync::Mutex::new(HashMap::new()),
            shutdown: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// The configuration the daemon runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The model `name` (or the default), loading it on first use.
    pub async fn embedder(&self, name: Option<&str>) -> Result<EmbedHandle, ServiceError> {
        let wanted = name.unwrap_or(&self.config.embedding.model);
        let spec = embed::registry::lookup(wanted).map_err(|e| ServiceError::Model(Box::new(e)))?;
        let mut workers = self.workers.lock().await;
        if let Some(w) = workers.get(spec.name) {
            return Ok(w.handle());
        }
        let e = &self.config.embedding;
        let options = EmbedOptions {
            model: spec.name.to_owned(),
            device: e.device,
            // A folder given for the default model does not hold other models.
            model_path: e.model_path.clone().filter(|_| spec.name == e.model),
            batch: embed::BatchPolicy {
                max_batch: e.batch_size,
                ..embed::BatchPolicy::default()
            },
            precision: None,
        };
        let model =
            tokio::task::spawn_blocking(move || embed::load(&options, &ModelLocator::from_env()))
                .await
                .map_err(|e| ServiceError::Internal(format!("model loader panicked: {e}")))?
                .map_err(|e| ServiceError::Model(Box::new(e)))?;
        let worker = EmbedWorker::spawn(Box::new(model), EMBED_SLICE)
            .map_err(|e| ServiceError::Internal(format!("cannot start the model thread: {e}")))?;
        let handle = worker.handle();
        workers.insert(spec.name.to_owned(), worker);
        Ok(handle)
    }

    /// `(name, device)` of every loaded model.
    pub async fn loaded_models(&self) -> Vec<(String, String)> {
        let workers = self.workers.lock().await;
        let mut out: Vec<(String, String)> = workers
            .values()
            .map(|w| {
                let h = w.handle();
                (
                    embed::Embedder::model_name(&h).to_owned(),
                    embed::Embedder::device_name(&h),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Asks the accept loop to stop.
    pub fn request_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.shutdown.notify_waiters();
    }

    /// Resolves once shutdown was requested.
    pub async fn shutdown_requested(&self) {
        loop {
            let notified = self.shutdown.notified();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}
