//! Running under a service manager: the unit files `codesearch daemon install`
//! writes (checked by `systemd-analyze` and by a real plist parser), and socket
//! activation for real through `systemd-socket-activate`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::util::{bin, ignore_corpus, text};

/// `codesearch ARGS` with a temp HOME and codesearch home.
fn client(home: &Path, args: &[&str]) -> Output {
    Command::new(bin("codesearch"))
        .args(args)
        .env("HOME", home)
        .env("CODESEARCH_HOME", home.join("cs"))
        .env_remove("CODESEARCH_SOCKET")
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap()
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is missing: install Debian's systemd package (.ci/run does)");
}

#[test]
fn systemd_units_pass_systemd_analyze_and_uninstall_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let o = client(home.path(), &["daemon", "install", "--manager", "systemd"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("systemctl --user enable --now codesearchd.socket"),
        "{}",
        text(&o)
    );
    let dir = home.path().join(".config/systemd/user");
    let service = std::fs::read_to_string(dir.join("codesearchd.service")).unwrap();
    let socket = std::fs::read_to_string(dir.join("codesearchd.socket")).unwrap();
    assert!(
        !service.contains('@') && !socket.contains('@'),
        "{service}\n{socket}"
    );
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let daemon = exec.strip_suffix(" serve").unwrap();
    assert!(
        Path::new(daemon).is_absolute() && Path::new(daemon).is_file(),
        "{exec}"
    );
    let sock_path = home.path().join("cs/codesearchd.sock");
    assert!(
        socket.contains(&format!("ListenStream={}", sock_path.display())),
        "{socket}"
    );

    let runtime = home.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let o = Command::new(tool("systemd-analyze"))
        .args([
            "--user",
            "verify",
            "codesearchd.socket",
            "codesearchd.service",
        ])
        .current_dir(&dir)
        .env("HOME", home.path())
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o));

    let o = client(
        home.path(),
        &["daemon", "uninstall", "--manager", "systemd"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!dir.join("codesearchd.service").exists() && !dir.join("codesearchd.socket").exists());
}

/// The keys of a plist, as JSON, read by Python's plistlib.
fn plist(path: &Path) -> serde_json::Value {
    let o = Command::new("python3")
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn launchd_agents_are_valid_plists_with_the_keys_launchd_needs() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../launchd");
    for template in [
        "com.codesearch.codesearchd.plist",
        "com.codesearch.codesearchd.socket.plist",
    ] {
        let v = plist(&repo.join(template));
        assert_eq!(v["Label"], "com.codesearch.codesearchd", "{template}: {v}");
    }
    let home = tempfile::tempdir().unwrap();
    let agent = home
        .path()
        .join("Library/LaunchAgents/com.codesearch.codesearchd.plist");
    let cs = home.path().join("cs");

    let o = client(home.path(), &["daemon", "install", "--manager", "launchd"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("launchctl bootstrap gui/"),
        "{}",
        text(&o)
    );
    let v = plist(&agent);
    let program = v["ProgramArguments"][0].as_str().unwrap();
    assert!(
        Path::new(program).is_file() && program.ends_with("codesearchd"),
        "{v}"
    );
    assert_eq!(v["ProgramArguments"][1], "serve");
    assert_eq!(
        (&v["RunAtLoad"], &v["KeepAlive"]["SuccessfulExit"]),
        (&serde_json::json!(true), &serde_json::json!(false))
    );
    assert_eq!(
        v["EnvironmentVariables"]["CODESEARCH_HOME"],
        cs.display().to_string()
    );
    assert_eq!(
        v["StandardErrorPath"],
        cs.join("logs/codesearchd.log").display().to_string()
    );

    let o = client(
        home.path(),
        &[
            "daemon",
            "install",
            "--manager",
            "launchd",
            "--socket-activation",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v = plist(&agent);
    let listener = &v["Sockets"]["Listeners"];
    assert_eq!(
        listener["SockPathName"],
        cs.join("codesearchd.sock").display().to_string(),
        "{v}"
    );
    assert_eq!(listener["SockPathMode"], 0o600);

    let o = client(
        home.path(),
        &["daemon", "uninstall", "--manager", "launchd"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!agent.exists());
}

#[test]
fn a_socket_activated_daemon_serves_search_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, sock) = (tmp.path().join("cs"), tmp.path().join("activation.sock"));
    std::fs::create_dir_all(&home).unwrap();
    let mut manager = Command::new(tool("systemd-socket-activate"))
        .arg("-l")
        .arg(&sock)
        .arg(format!("--setenv=CODESEARCH_HOME={}", home.display()))
        .args([
            "--setenv=HF_HUB_OFFLINE=1",
            "--setenv=CODESEARCH_EMBEDDING_DEVICE=cpu",
        ])
        .arg(format!("--setenv=HOME={}", std::env::var("HOME").unwrap()))
        .arg(bin("codesearchd"))
        .arg("serve")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "systemd-socket-activate never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = |args: &[&str]| {
        Command::new(bin("codesearch"))
            .args(args)
            .env("CODESEARCH_HOME", &home)
            .env("CODESEARCH_SOCKET", &sock)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    // The first connection starts the daemon on the socket the manager holds.
    let o = run(&["daemon", "status"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("runs under systemd (socket activation)"),
        "{}",
        text(&o)
    );
    let corpus = ignore_corpus();
    let o = run(&["index", corpus.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&[
        "search",
        "expand a leading tilde to the home directory",
        "-k",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("expand_tilde"),
        "{}",
        text(&o)
    );

    // systemd-socket-activate execs the daemon: its pid is the daemon's.
    let k = Command::new("kill")
        .args(["-TERM", &manager.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = manager.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        sock.exists(),
        "the manager's socket is the manager's to remove"
    );
}
