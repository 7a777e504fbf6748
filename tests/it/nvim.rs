//! The Neovim plugin (`editors/nvim`) in headless Neovim against the real daemon:
//! `tests/nvim/test_plugin.lua` starts the daemon through `:CodesearchIndex`,
//! searches a real corpus into the quickfix list, and feeds the plugin malformed
//! answers and dead sockets, which must give messages, not Lua errors.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, test_corpus_file};

/// The corpus, the query and where its answer is (`func Wrap` at line 184).
const CORPUS: &str = "golang-github-pkg-errors-0.9.1";
const QUERY: &str = "wrap an error with a message";
const EXPECT_FILE: &str = "usr/share/gocode/src/github.com/pkg/errors/errors.go";
const EXPECT_LINE: u32 = 184;

/// How long the whole Lua test may take (it bounds its own waits to less).
const LIMIT: Duration = Duration::from_secs(300);

/// Stops the daemon of `home` on drop, whatever the test did.
struct StopDaemon<'a> {
    home: &'a Path,
}

impl Drop for StopDaemon<'_> {
    fn drop(&mut self) {
        let _ = Command::new(bin("codesearch"))
            .args(["daemon", "stop"])
            .env("CODESEARCH_HOME", self.home)
            .env_remove("CODESEARCH_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `nvim` from PATH; a missing one fails the test (it is part of the set-up).
fn nvim() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nvim"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nvim is not on PATH: the plugin's test needs Neovim 0.7 or later \
                 (Debian's `neovim` package); run the test set-up, scripts/fetch-test-corpora.sh"
            )
        })
}

#[test]
fn plugin_searches_starts_the_daemon_and_reports_errors() {
    let nvim = nvim();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let corpus = test_corpus_file(&format!("{CORPUS}/{EXPECT_FILE}"))
        .ancestors()
        .nth(EXPECT_FILE.split('/').count())
        .unwrap()
        .to_owned();
    let home = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let _stop = StopDaemon { home: home.path() };
    let out_path = scratch.path().join("nvim.out");
    let out = File::create(&out_path).unwrap();

    let start = Instant::now();
    let mut child = Command::new(&nvim)
        .current_dir(&root)
        .args([
            "--headless",
            "-u",
            "NONE",
            "-i",
            "NONE",
            "--cmd",
            "set rtp+=editors/nvim",
            "-c",
            "luafile tests/nvim/test_plugin.lua",
            // Reached only when the file stopped short of its own exit.
            "-c",
            "cquit 2",
        ])
        .env("CODESEARCH_HOME", home.path())
        .env_remove("CODESEARCH_SOCKET")
        .env("CODESEARCH_EMBEDDING_DEVICE", "cpu")
        .env("HF_HUB_OFFLINE", "1")
        .env("NO_COLOR", "1")
        .env("CODESEARCH_TEST_CMD", bin("codesearch"))
        .env("CODESEARCH_TEST_CORPUS", &corpus)
        .env("CODESEARCH_TEST_QUERY", QUERY)
        .env("CODESEARCH_TEST_EXPECT_FILE", EXPECT_FILE)
        .env("CODESEARCH_TEST_EXPECT_LINE", EXPECT_LINE.to_string())
        // Neovim's own log and state stay out of the user's.
        .env("NVIM_LOG_FILE", scratch.path().join("nvim.log"))
        .env("XDG_STATE_HOME", scratch.path().join("state"))
        .env("XDG_DATA_HOME", scratch.path().join("data"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvim.display()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let Some(status) = status else {
        panic!("headless Neovim did not finish within {LIMIT:?}\n{output}");
    };
    assert!(
        status.success(),
        "the plugin's test failed ({status}; 1: a check failed, 2: the Lua file stopped short)\n{output}"
    );
    assert!(output.contains(" checks, 0 failed"), "{output}");
    for bad in [
        "not ok",
        "stack traceback",
        "Error executing",
        "E5108",
        "E5113",
    ] {
        assert!(!output.contains(bad), "`{bad}` in the output:\n{output}");
    }
}
