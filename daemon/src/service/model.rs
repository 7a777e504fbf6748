//! Models: names resolved against the registry and the remote models, each
//! loaded once on first use (a local one on its thread, a remote one on two),
//! and the `models.list` rows.

use std::collections::HashMap;

use super::{Service, ServiceError};
use crate::embed::{
    self, EmbedHandle, EmbedOptions, EmbedWorker, ModelChoice, ModelLocator, RemoteEmbedder,
};

impl Service {
    /// A model name (or alias) as the registry and the remote models know it.
    pub fn resolve_model(&self, name: &str) -> Result<ModelChoice<'_>, ServiceError> {
        embed::resolve(name, &self.config.remote).map_err(|e| ServiceError::Model(Box::new(e)))
    }

    /// The `models.list` rows: every registered model with whether its weights
    /// are here, then the remote ones; loaded models say their device.
    pub fn models(&self) -> Vec<codesearch_proto::ModelInfo> {
        let locator = ModelLocator::from_env();
        // A remote model's dims are known once it has answered, if its
        // config does not give them.
        let loaded: HashMap<String, (String, usize)> = self
            .loaded()
            .into_iter()
            .map(|(name, device, dims)| (name, (device, dims)))
            .collect();
        let e = &self.config.embedding;
        let local = embed::registry::MODELS.iter().map(|spec| {
            let mut info = spec.info();
            let model_path = e.model_path.as_deref().filter(|_| spec.name == e.model);
            let (availability, location) = if !spec.arch.is_supported() {
                ("unsupported", None)
            } else {
                match locator.find_local(spec, model_path) {
                    Some(dir) => ("local", Some(dir.display().to_string())),
                    None if locator.offline || model_path.is_some() => ("missing", None),
                    None => ("download", None),
                }
            };
            info.availability = Some(availability.to_owned());
            info.location = location;
            info
        });
        let remote = self.config.remote.iter().map(|spec| spec.info());
        local
            .chain(remote)
            .map(|mut info| {
                if let Some((device, dims)) = loaded.get(&info.name) {
                    info.device = Some(device.clone());
                    info.dims = *dims;
                }
                info
            })
            .collect()
    }

    /// The model `name` (or the default), loading it on first use.
    ///
    /// Callers of one model that is loading wait for that load (and a failed
    /// load is tried again by the next caller); nobody else waits.
    pub async fn embedder(&self, name: Option<&str>) -> Result<EmbedHandle, ServiceError> {
        let choice = self.resolve_model(name.unwrap_or(&self.config.embedding.model))?;
        let slot = self
            .workers()
            .entry(choice.name().to_owned())
            .or_default()
            .clone();
        let worker = slot.get_or_try_init(|| self.load(choice)).await?;
        // Indexing passes block on this handle: at shutdown they stop waiting.
        Ok(worker.handle().cancelled_by(self.cancel.clone()))
    }

    /// Loads a model onto its thread: a local one on one thread; a remote one
    /// on two, documents and queries, sharing the endpoint's client and rate limit.
    async fn load(&self, choice: ModelChoice<'_>) -> Result<EmbedWorker, ServiceError> {
        let thread_error = |e: std::io::Error| {
            ServiceError::Internal(format!("cannot start the model thread: {e}"))
        };
        let panicked = |e: tokio::task::JoinError| {
            ServiceError::Internal(format!("model loader panicked: {e}"))
        };
        let model_error = |e| ServiceError::Model(Box::new(e));
        match choice {
            ModelChoice::Local(spec) => {
                let e = &self.config.embedding;
                let options = EmbedOptions {
                    model: spec.name.to_owned(),
                    device: e.device,
                    // A folder given for the default model does not hold other models.
                    model_path: e.model_path.clone().filter(|_| spec.name == e.model),
                    batch_size: e.batch_size,
                    token_budget: None,
                    precision: e.precision,
                };
                tracing::info!(model = spec.name, "loading model");
                let model = tokio::task::spawn_blocking(move || {
                    embed::load(&options, &ModelLocator::from_env())
                })
                .await
                .map_err(panicked)?
                .map_err(model_error)?;
                EmbedWorker::spawn(Box::new(model)).map_err(thread_error)
            }
            ModelChoice::Remote(spec) => {
                tracing::info!(model = %spec.name, url = %spec.display_url(), "connecting to remote model");
                let spec = spec.clone();
                let documents = tokio::task::spawn_blocking(move || RemoteEmbedder::connect(&spec))
                    .await
                    .map_err(panicked)?
                    .map_err(model_error)?;
                let queries = documents.clone();
                EmbedWorker::spawn_lanes(Box::new(documents), Box::new(queries))
                    .map_err(thread_error)
            }
        }
    }

    /// Serves `embedder` under its name from now on, as if that model had
    /// loaded (the offline test tier runs the daemon on a deterministic embedder).
    #[cfg(any(test, feature = "test-support"))]
    pub fn preload(&self, embedder: Box<dyn embed::Embedder>) -> std::io::Result<()> {
        let name = embedder.model_name().to_owned();
        let worker = EmbedWorker::spawn(embedder)?;
        let slot = std::sync::Arc::new(tokio::sync::OnceCell::new_with(Some(worker)));
        self.workers().insert(name, slot);
        Ok(())
    }

    /// Whether the model `name` (canonical) is loaded; `false` while it loads.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.workers()
            .get(name)
            .is_some_and(|slot| slot.initialized())
    }

    /// `(name, device)` of every loaded model (not those still loading).
    pub fn loaded_models(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .loaded()
            .into_iter()
            .map(|(name, device, _)| (name, device))
            .collect();
        out.sort();
        out
    }

    /// `(name, device, dims)` of every loaded model.
    fn loaded(&self) -> Vec<(String, String, usize)> {
        self.workers()
            .values()
            .filter_map(|slot| slot.get())
            .map(|w| {
                let h = w.handle();
                (
                    embed::Embedder::model_name(&h).to_owned(),
                    embed::Embedder::device_name(&h),
                    embed::Embedder::dims(&h),
                )
            })
            .collect()
    }
}
