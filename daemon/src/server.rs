//! `run(config, shutdown)`: the daemon's one entry point (mini-redis shape).
//!
//! Start-up claims the home (created 0700) with a lock file, so a second daemon on
//! the same home is refused with the pid that holds it; replaces a stale socket
//! left by a crash; binds the socket 0600, or serves the one a service manager
//! passed (`activation`, taken by `main` before the runtime starts). Every
//! connection's peer must have the daemon's uid.
//!
//! Shutdown (the future, or `daemon.shutdown`), in the mini-redis /
//! tokio-util shape: the service's one `CancellationToken` fires (passes commit
//! their current batch, save the HNSW file and stop; watch followers end), the
//! socket stops accepting and is removed, the `TaskTracker` of background tasks
//! gets [`TASKS_GRACE`], connections [`CONNECTIONS_GRACE`] to finish their
//! answer, then idle indexes save their HNSW file and the model threads are let
//! go without waiting for a call in flight.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::activation::Activation;
use crate::config::Config;
use crate::rpc;
use crate::service::Service;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon holds the home.
    #[error(
        "another codesearchd (pid {pid}) is running with home {home}; stop it with `codesearch daemon stop` or use another CODESEARCH_HOME",
        home = home.display()
    )]
    AlreadyRunning {
        /// Its pid, as written in the lock file.
        pid: String,
        /// The home.
        home: PathBuf,
    },
    /// A file or socket operation failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// What was being accessed.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ServerError + '_ {
    move |source| ServerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Serves until `shutdown` resolves or a client calls `daemon.shutdown`, on the
/// socket a service manager passed (`activation`, read by `main` before the
/// runtime started) or else on one it binds at `config.socket`.
pub async fn run(
    config: Config,
    activation: Option<Activation>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let home = config.home.clone();
    std::fs::create_dir_all(&home).map_err(io(&home))?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).map_err(io(&home))?;
    let _lock = lock_home(&home)?;

    let socket = config.socket.clone();
    let managed = activation.as_ref().map(|a| a.manager);
    let listener = match activation {
        Some(Activation { listener, manager }) => {
            tracing::info!(
                manager = manager.as_str(),
                "serving the socket the service manager passed"
            );
            listener.set_nonblocking(true).map_err(io(&socket))?;
            UnixListener::from_std(listener).map_err(io(&socket))?
        }
        None => bind(&socket)?,
    };
    let listening = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_owned))
        .unwrap_or_else(|| socket.clone());
    tracing::info!(socket = %listening.display(), home = %home.display(), pid = std::process::id(), "codesearchd listening");

    let chunker = crate::chunk::Chunker::new().map_err(|e| ServerError::Io {
        path: PathBuf::from("queries"),
        source: std::io::Error::other(e.to_string()),
    })?;
    let started_by = managed
        .map(|m| m.as_str().to_owned())
        .or_else(|| std::env::var(codesearch_proto::paths::STARTED_BY_ENV).ok());
    let service = Arc::new(Service::new(config, chunker).with_starter(started_by));
    // A service manager's socket stays: it starts the next daemon.
    let remove_on_close = managed.is_none().then_some(socket);
    serve(listener, service, shutdown, remove_on_close).await
}

/// Serves `service` on `listener` until `shutdown` resolves or a client calls
/// `daemon.shutdown`, then shuts down in order (below); `remove_on_close` is
/// the socket file to delete once no longer accepting. Clients of other users
/// than the owner of the codesearch home are refused. The repositories of
/// `repos.json` are restored in the background.
///
/// `run` binds and calls this; tests call it with a listener on a temporary
/// socket, in their own runtime.
pub async fn serve(
    listener: UnixListener,
    service: Arc<Service>,
    shutdown: impl std::future::Future<Output = ()>,
    remove_on_close: Option<PathBuf>,
) -> Result<(), ServerError> {
    let home = service.config().home.clone();
    // The home was made (or checked) by this process's user: its owner is our
    // uid (the socket may belong to a service manager).
    let uid = std::fs::metadata(&home).map_err(io(&home))?.uid();
    // In the background: status answers at once; repository methods wait for it.
    service.spawn({
        let service = service.clone();
        async move { service.restore().await }
    });
    let module = Arc::new(rpc::module(service.clone()));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = service.shutdown_requested() => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(err) => {
                        tracing::warn!(%err, "accept failed");
                        continue;
                    }
                };
                let module = module.clone();
                connections.spawn(async move {
                    let peer = stream.peer_cred().map(|c| c.uid());
                    let (reader, mut writer) = stream.into_split();
                    match peer {
                        Ok(peer) if peer == uid => {
                            let reader = tokio::io::BufReader::new(reader);
                            if let Err(err) = rpc::transport::serve(&module, reader, writer).await {
                                tracing::debug!(%err, "connection closed");
                            }
                        }
                        other => {
                            tracing::warn!(peer = ?other.ok(), uid, "refused a client of another user");
                            let msg = rpc::refused_line(uid);
                            let _ = tokio::io::AsyncWriteExt::write_all(&mut writer, msg.as_bytes()).await;
                        }
                    }
                });
            }
        }
    }
    // 1. One token tells every pass, follower and subscription to stop; a
    //    pass commits the batch it has embedded and saves its HNSW file.
    tracing::info!("shutting down");
    let started = std::time::Instant::now();
    service.request_shutdown();
    // 2. No new connections.
    drop(listener);
    if let Some(socket) = remove_on_close {
        let _ = std::fs::remove_file(&socket);
    }
    // 3. The background tasks, a bounded time: a model call in flight can take
    //    seconds, and SQLite holds every committed batch whatever happens next.
    if !service.wait_for_tasks(TASKS_GRACE).await {
        tracing::info!(
            "background tasks still running after {TASKS_GRACE:?}; leaving them (the index keeps its committed batches)"
        );
    }
    // 4. Let in-flight requests finish their answer, but don't wait on idle clients.
    let _ = tokio::time::timeout(CONNECTIONS_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    // 5. Indexes no pass holds save their HNSW file; model threads are let go.
    service.close();
    tracing::info!(took_ms = started.elapsed().as_millis() as u64, "stopped");
    Ok(())
}

/// How long shutdown waits for background tasks (passes, followers) to stop.
/// With [`CONNECTIONS_GRACE`] and the runtime's own bound in `main`, the
/// process exits within 2 s of the signal or `daemon.shutdown`.
pub const TASKS_GRACE: std::time::Duration = std::time::Duration::from_millis(1200);

/// How long shutdown waits for connections to finish the request they serve.
pub const CONNECTIONS_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// Binds the socket at `socket` (0600), replacing one left by a crashed daemon.
fn bind(socket: &Path) -> Result<UnixListener, ServerError> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    if socket.exists() {
        // We hold the lock, so whatever listens there is not a daemon of this home.
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ServerError::Io {
                path: socket.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process answers on this socket; set CODESEARCH_SOCKET elsewhere",
                ),
            });
        }
        tracing::info!(socket = %socket.display(), "replacing a stale socket");
        std::fs::remove_file(socket).map_err(io(socket))?;
    }
    let listener = UnixListener::bind(socket).map_err(io(socket))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(io(socket))?;
    Ok(listener)
}

/// Takes `home/codesearchd.lock` for the life of the returned file and writes our pid in it.
fn lock_home(home: &Path) -> Result<File, ServerError> {
    let path = home.join("codesearchd.lock");
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(ServerError::AlreadyRunning {
                pid: pid.trim().to_owned(),
                home: home.to_owned(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
    }
    file.set_len(0).map_err(io(&path))?;
    write!(file, "{}", std::process::id()).map_err(io(&path))?;
    Ok(file)
}
