//! The JSON-RPC methods of design.md, registered on a jsonrpsee `RpcModule`, and
//! the one function that maps daemon errors to JSON-RPC codes.
//!
//! `transport` carries newline-delimited JSON over the Unix socket into the module.

pub(crate) mod transport;

use std::sync::Arc;

use codesearch_proto::{
    DaemonStatus, EmbedKind, EmbedResult, LoadedModel, Method, RepoSubscribeParams, code, method,
};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::{PendingSubscriptionSink, RpcModule, SubscriptionMessage};
use tokio::sync::broadcast::error::RecvError;

use crate::embed::{self, InputKind};
use crate::service::{Service, ServiceError};

/// Most texts one `embed` call may carry.
pub(crate) const MAX_EMBED_TEXTS: usize = codesearch_proto::limits::MAX_EMBED_TEXTS;

/// Every method, bound to `service`.
pub(crate) fn module(service: Arc<Service>) -> RpcModule<Arc<Service>> {
    let mut m = RpcModule::new(service);
    register(&mut m);
    m
}

fn register(m: &mut RpcModule<Arc<Service>>) {
    typed::<method::ModelsList, _, _>(m, |_, svc| async move {
        // Looking for weights reads the disk.
        tokio::task::spawn_blocking(move || svc.models())
            .await
            .map_err(|e| to_rpc(ServiceError::Internal(format!("models.list panicked: {e}"))))
    });
    typed::<method::DaemonStatus, _, _>(m, |_, svc| async move {
        let models = svc
            .loaded_models()
            .into_iter()
            .map(|(name, device)| LoadedModel { name, device })
            .collect();
        Ok(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_s: svc.uptime_s(),
            models,
            repos: svc.repos_now().await,
            rss_bytes: crate::memory::rss_bytes(),
            started_by: svc.starter().map(str::to_owned),
            protocol_version: codesearch_proto::PROTOCOL_VERSION,
        })
    });
    typed::<method::DaemonShutdown, _, _>(m, |_, svc| async move {
        svc.request_shutdown();
        Ok(())
    });
    typed::<method::BenchmarkRun, _, _>(m, |p, svc| async move {
        svc.benchmark(p).await.map_err(to_rpc)
    });
    typed::<method::Embed, _, _>(m, |mut p, svc| async move {
        if p.texts.len() > MAX_EMBED_TEXTS {
            return Err(to_rpc(ServiceError::InvalidParams(format!(
                "{} texts in one call; send at most {MAX_EMBED_TEXTS}",
                p.texts.len()
            ))));
        }
        for t in &mut p.texts {
            cut(t, codesearch_proto::limits::MAX_EMBED_TEXT_BYTES);
        }
        let handle = svc.embedder(p.model.as_deref()).await.map_err(to_rpc)?;
        let kind = match p.kind {
            EmbedKind::Document => InputKind::Document,
            EmbedKind::Query => InputKind::Query,
        };
        let vectors = handle
            .embed_async(p.texts, kind)
            .await
            .map_err(|e| to_rpc(ServiceError::Model(Box::new(e))))?;
        Ok(EmbedResult {
            model: embed::Embedder::model_name(&handle).to_owned(),
            dims: embed::Embedder::dims(&handle),
            vectors,
        })
    });
    typed::<method::Search, _, _>(
        m,
        |p, svc| async move { svc.search(p).await.map_err(to_rpc) },
    );
    typed::<method::RepoAdd, _, _>(m, |p, svc| async move {
        svc.add_repo(&p.path, p.model.as_deref(), p.wait)
            .await
            .map_err(to_rpc)
    });
    typed::<method::RepoRemove, _, _>(m, |p, svc| async move {
        svc.remove_repo(&p.path).await.map_err(to_rpc)
    });
    typed::<method::RepoList, _, _>(m, |_, svc| async move { Ok(svc.list_repos().await) });
    typed::<method::RepoReindex, _, _>(m, |p, svc| async move {
        svc.reindex(&p.path, p.full, p.wait).await.map_err(to_rpc)
    });
    m.register_subscription(
        method::REPO_SUBSCRIBE,
        method::REPO_PROGRESS,
        method::REPO_UNSUBSCRIBE,
        |params: Params<'static>, pending, svc, _| {
            subscribe_progress(params, pending, svc.progress_events(), svc.shutdown_token())
        },
    )
    .expect("method names are unique");
}

/// Registers method `M`: its params parsed into `M::Params` (a mismatch is
/// `INVALID_PARAMS` with serde's message), its handler's `M::Result` answered.
fn typed<M, F, Fut>(m: &mut RpcModule<Arc<Service>>, handler: F)
where
    M: Method,
    F: Fn(M::Params, Arc<Service>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<M::Result, ErrorObjectOwned>> + Send + 'static,
{
    // Names are compile-time constants; a clash is a bug caught by every test.
    m.register_async_method(M::NAME, move |params: Params<'static>, svc, _| {
        let handler = handler.clone();
        async move {
            let p: M::Params = params.parse()?;
            handler(p, Arc::clone(&svc)).await
        }
    })
    .expect("method names are unique");
}

/// `repo.subscribe`: forwards `repo.progress` events (of one root, or all) until
/// the client unsubscribes or goes away, or the daemon shuts down. A client too
/// slow to read skips events.
async fn subscribe_progress(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    mut events: tokio::sync::broadcast::Receiver<codesearch_proto::RepoProgress>,
    shutdown: tokio_util::sync::CancellationToken,
) -> jsonrpsee::core::SubscriptionResult {
    let p: RepoSubscribeParams = if params.as_str().is_none() {
        RepoSubscribeParams::default()
    } else {
        match params.parse() {
            Ok(p) => p,
            Err(e) => {
                pending.reject(e).await;
                return Ok(());
            }
        }
    };
    // The repository need not be registered yet: subscribe, then `repo.add`.
    let root = p.path.map(|path| {
        std::path::Path::new(&path)
            .canonicalize()
            .map_or(path, |p| p.display().to_string())
    });
    let sink = pending.accept().await?;
    loop {
        tokio::select! {
            () = sink.closed() => return Ok(()),
            () = shutdown.cancelled() => return Ok(()),
            event = events.recv() => match event {
                Ok(progress) => {
                    if root.as_ref().is_some_and(|r| *r != progress.path) {
                        continue;
                    }
                    let raw = serde_json::value::to_raw_value(&progress)?;
                    if sink.send(SubscriptionMessage::from(raw)).await.is_err() {
                        return Ok(());
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Ok(()),
            },
        }
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The line a client of another user gets before its connection is closed.
pub(crate) fn refused_line(uid: u32) -> String {
    let refused = serde_json::json!({
        "jsonrpc": "2.0",
        "error": {
            "code": code::INVALID_REQUEST,
            "message": format!("permission denied: this daemon serves uid {uid} only"),
        },
        "id": null,
    });
    format!("{refused}\n")
}

/// The one place daemon errors become JSON-RPC error objects.
pub(crate) fn to_rpc(err: ServiceError) -> ErrorObjectOwned {
    let code = match &err {
        ServiceError::Model(_) => code::MODEL_UNAVAILABLE,
        ServiceError::InvalidParams(_) => code::INVALID_PARAMS,
        ServiceError::UnknownRepo(_) => code::UNKNOWN_REPO,
        ServiceError::BadPath(_) => code::BAD_PATH,
        ServiceError::Internal(_) => code::INTERNAL_ERROR,
    };
    ErrorObjectOwned::owned(code, err.to_string(), None::<()>)
}
