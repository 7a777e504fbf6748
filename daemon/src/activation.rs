//! Socket activation: a listening socket handed over by the service manager
//! (systemd's `LISTEN_FDS`, launchd's `launch_activate_socket`), so the daemon
//! starts on the first connection and the socket outlives restarts.
//!
//! The one place the daemon takes a file descriptor it did not open, hence the
//! module's `unsafe`: each use says why the descriptor is ours to own.
//!
//! [`inherited`] also removes systemd's `LISTEN_*` variables from the
//! environment, which is only sound while no other thread runs: `main` calls it
//! before the tokio runtime (or any other thread) starts, and hands the result to
//! `server::run`.
#![allow(unsafe_code)]

use std::os::unix::net::UnixListener;

/// Who handed the socket over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// systemd (or `systemd-socket-activate`), through `LISTEN_FDS`.
    Systemd,
    /// launchd, through `launch_activate_socket`.
    Launchd,
}

impl Manager {
    /// The name shown in `daemon.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Systemd => "systemd",
            Self::Launchd => "launchd",
        }
    }
}

/// A listening socket the service manager passed, and who passed it.
#[derive(Debug)]
pub struct Activation {
    /// The socket, still in blocking mode.
    pub listener: UnixListener,
    /// Who handed it over.
    pub manager: Manager,
}

/// The listening socket the service manager passed, if it passed one.
///
/// # Safety
///
/// It reads and removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`
/// (`std::env::remove_var`), so it must be called while the process has a single
/// thread: before the async runtime, the logger's or any other thread starts,
/// and with nothing else reading the environment meanwhile. It takes ownership of
/// descriptor 3 when systemd says it is ours, so call it at most once.
pub unsafe fn inherited() -> std::io::Result<Option<Activation>> {
    // SAFETY: our caller guarantees that no other thread runs (see above).
    if let Some(listener) = unsafe { systemd()? } {
        return Ok(Some(Activation {
            listener,
            manager: Manager::Systemd,
        }));
    }
    launchd().map(|l| {
        l.map(|listener| Activation {
            listener,
            manager: Manager::Launchd,
        })
    })
}

/// The first socket of `LISTEN_FDS` when `LISTEN_PID` is this process (the
/// protocol of sd_listen_fds(3)); the variables are removed so that processes we
/// start do not take them as theirs.
///
/// # Safety
///
/// As [`inherited`]: only while the process has one thread.
unsafe fn systemd() -> std::io::Result<Option<UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    // SAFETY: `remove_var` is sound only when no other thread reads or writes
    // the environment at the same time; our caller runs us before any thread
    // other than `main` exists (the contract of `inherited`).
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if pid.parse::<u32>().ok() != Some(std::process::id()) || fds.parse::<u32>().unwrap_or(0) < 1 {
        return Ok(None);
    }
    /// The first descriptor sd_listen_fds passes.
    const SD_LISTEN_FDS_START: i32 = 3;
    // SAFETY: per sd_listen_fds(3), descriptor 3 was opened for this process
    // (LISTEN_PID is ours) and nothing else in it owns the descriptor.
    let listener =
        unsafe { <UnixListener as std::os::fd::FromRawFd>::from_raw_fd(SD_LISTEN_FDS_START) };
    // Not a Unix socket (a misconfigured unit): refuse rather than serve it.
    listener.local_addr().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("the socket passed by systemd (fd 3) is not a Unix socket: {e}"),
        )
    })?;
    Ok(Some(listener))
}

#[cfg(target_os = "macos")]
fn launchd() -> std::io::Result<Option<UnixListener>> {
    use std::ffi::{CString, c_char, c_int, c_void};
    unsafe extern "C" {
        fn launch_activate_socket(
            name: *const c_char,
            fds: *mut *mut c_int,
            cnt: *mut usize,
        ) -> c_int;
        fn free(ptr: *mut c_void);
    }
    // Not run by launchd with a `Sockets` entry named like this: bind our own.
    if std::env::var_os("XPC_SERVICE_NAME").is_none() {
        return Ok(None);
    }
    let name = CString::new("Listeners").map_err(std::io::Error::other)?;
    let mut fds: *mut c_int = std::ptr::null_mut();
    let mut count: usize = 0;
    // SAFETY: launch_activate_socket(3) fills `fds` with a malloc'd array of
    // `count` descriptors it opened for us, or returns an error and leaves them.
    let err = unsafe { launch_activate_socket(name.as_ptr(), &mut fds, &mut count) };
    if err != 0 || fds.is_null() || count == 0 {
        return Ok(None);
    }
    // SAFETY: `fds` holds `count` (≥ 1) descriptors; we own the first and the
    // array, which we free after reading it.
    let first = unsafe {
        let fd = *fds;
        free(fds.cast());
        fd
    };
    // SAFETY: launchd opened `first` for this process alone.
    let listener = unsafe { <UnixListener as std::os::fd::FromRawFd>::from_raw_fd(first) };
    Ok(Some(listener))
}

#[cfg(not(target_os = "macos"))]
fn launchd() -> std::io::Result<Option<UnixListener>> {
    Ok(None)
}
