//! Fault tests: a daemon that survives its users. A fuzzing raw-socket client
//! (fixed seed), pseudo-filesystems as roots, many concurrent clients (also
//! while another repository is fully re-indexed), and a hostile tree. Each
//! runs the real daemon on the real model, in well under a minute.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::Daemon;
use crate::util::{Home, bin, text};

/// A small, fixed-seed generator (splitmix64): the same lines every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Methods the fuzzer calls (never `daemon.shutdown`: that one is meant to stop it).
const METHODS: &[&str] = &[
    "search",
    "repo.add",
    "repo.remove",
    "repo.list",
    "repo.reindex",
    "repo.subscribe",
    "repo.unsubscribe",
    "daemon.status",
    "models.list",
    "embed",
    "benchmark.run",
    "no.such.method",
    "",
];

/// Values of the wrong type, absurd sizes and hostile paths.
fn odd_value(rng: &mut Rng, tree: &str) -> Value {
    match rng.below(16) {
        0 => json!(null),
        1 => json!(true),
        2 => json!(-1),
        3 => json!(1e300),
        4 => json!(u64::MAX),
        5 => json!(i64::MIN),
        6 => json!("/"),
        7 => json!("/proc/self"),
        8 => json!("/dev/null"),
        9 => json!("/proc"),
        10 => json!("/sys"),
        11 => json!(tree),
        12 => json!("relative/path"),
        13 => json!([1, "two", null, {"three": 3}]),
        14 => json!({"nested": {"deeper": [[], {}]}}),
        _ => json!("x".repeat(rng.below(70_000) as usize)),
    }
}

/// The params of a plausible call of `method`, some of them wrong.
fn params(rng: &mut Rng, method: &str, tree: &str) -> Value {
    let path = if rng.below(3) == 0 {
        odd_value(rng, tree)
    } else {
        json!(*rng.pick(&[
            "/",
            "/proc/self",
            "/dev/null",
            "/proc",
            "/sys",
            tree,
            "/nonexistent/x"
        ]))
    };
    match method {
        "search" => json!({
            "query": if rng.below(4) == 0 { odd_value(rng, tree) } else { json!("parse a path") },
            "k": rng.pick(&[json!(0), json!(1), json!(5), json!(1000), json!(1001), json!(u64::MAX), json!(-3), json!(2.5)]).clone(),
            "mode": rng.pick(&[json!("lexical"), json!("lexical"), json!("hybrid"), json!("nope"), json!(7)]).clone(),
            "repos": rng.pick(&[Value::Null, json!([tree]), json!(["/proc/self"]), json!(vec!["/x"; 1001])]).clone(),
            "paths": rng.pick(&[Value::Null, json!(["src/**"]), json!(["[unclosed"]), json!(vec!["*"; 1001])]).clone(),
            "languages": rng.pick(&[Value::Null, json!(["rust"]), json!(vec!["rust"; 1001])]).clone(),
        }),
        "repo.add" => json!({"path": path, "wait": rng.below(2) == 0}),
        "repo.remove" => json!({"path": if rng.below(8) == 0 { json!(tree) } else { path }}),
        "repo.reindex" => json!({"path": path, "full": odd_value(rng, tree)}),
        "repo.subscribe" => json!({"path": path}),
        "repo.unsubscribe" => json!([rng.next()]),
        "embed" => json!({
            "texts": rng.pick(&[json!(["a"]), json!(["x".repeat(100_000)]), json!(vec!["t"; 4097]), json!("not a list"), json!([1, 2])]).clone(),
            "kind": rng.pick(&[json!("query"), json!("document"), json!("other")]).clone(),
        }),
        "benchmark.run" => {
            json!({"repo": path, "queries": [{"id": "q", "query": "", "path": "/abs", "start_line": 0, "end_line": 0}]})
        }
        _ => odd_value(rng, tree),
    }
}

/// One fuzz line (no `\n` inside).
fn fuzz_line(rng: &mut Rng, id: u64, tree: &str) -> Vec<u8> {
    let request = |rng: &mut Rng| {
        let method = *rng.pick(METHODS);
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params(rng, method, tree)})
    };
    match rng.below(14) {
        // Random bytes.
        0 => (0..rng.below(300))
            .map(|_| match rng.below(256) as u8 {
                b'\n' => b' ',
                b => b,
            })
            .collect(),
        // Truncated JSON.
        1 => {
            let full = request(rng).to_string();
            let cut = rng.below(full.len() as u64) as usize;
            full.as_bytes()[..cut].to_vec()
        }
        // Deeply nested JSON (serde_json stops at 128 levels), valid or not.
        2 => {
            let depth = 1 + rng.below(3000) as usize;
            let mut s = "[".repeat(depth);
            if rng.below(2) == 0 {
                s.push_str(&"]".repeat(depth));
            }
            s.into_bytes()
        }
        3 => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"search","params":{}}}"#,
            nest(1 + rng.below(300) as usize)
        )
        .into_bytes(),
        // Wrong envelope types.
        4 => rng.pick(&[
            json!({"jsonrpc": "1.0", "id": id, "method": "repo.list"}),
            json!({"jsonrpc": "2.0", "id": id, "method": 5}),
            json!({"jsonrpc": "2.0", "id": id}),
            json!({"jsonrpc": "2.0", "id": {"an": "object"}, "method": "repo.list"}),
            json!({"jsonrpc": "2.0", "id": [1], "method": "repo.list"}),
            json!({"jsonrpc": "2.0", "id": id, "method": "repo.list", "params": "string"}),
            json!(42),
            json!("a string"),
            json!(null),
        ])
        .to_string()
        .into_bytes(),
        // Absurd numbers.
        5 => format!(
            r#"{{"jsonrpc":"2.0","id":{},"method":"search","params":{{"query":"q","k":{}}}}}"#,
            rng.pick(&["1e999", "18446744073709551616", "-0", "1.5", id.to_string().as_str()]),
            rng.pick(&["1e999", "99999999999999999999999", "-1", "NaN", "0x10"])
        )
        .into_bytes(),
        // Batches: big, mixed, all notifications, empty.
        6 => {
            let n = *rng.pick(&[0u64, 1, 3, 50, 1000, 1001, 5000]);
            let items: Vec<Value> = (0..n)
                .map(|i| match i % 4 {
                    0 => json!({"jsonrpc": "2.0", "id": i, "method": "models.list"}),
                    1 => json!({"jsonrpc": "2.0", "method": "repo.list"}),
                    2 => json!(i),
                    _ => json!({"jsonrpc": "2.0", "id": i, "method": "daemon.status"}),
                })
                .collect();
            Value::Array(items).to_string().into_bytes()
        }
        7 => json!([{"jsonrpc": "2.0", "method": "repo.list"}, {"jsonrpc": "2.0", "method": "search", "params": {"query": "x", "mode": "lexical"}}])
            .to_string()
            .into_bytes(),
        // Notifications.
        8 => {
            let method = *rng.pick(METHODS);
            json!({"jsonrpc": "2.0", "method": method, "params": params(rng, method, tree)})
                .to_string()
                .into_bytes()
        }
        9 => b"   \t ".to_vec(),
        // Plausible requests, some params wrong.
        _ => request(rng).to_string().into_bytes(),
    }
}

fn nest(depth: usize) -> String {
    format!(
        "{}{}",
        r#"{"a":"#.repeat(depth),
        "1".to_owned() + &"}".repeat(depth)
    )
}

/// How many answer lines the daemon owes for `line` (JSON-RPC: none for
/// notifications and blank lines, one for everything else, a batch answered
/// with one array unless it holds only notifications).
fn answers_owed(line: &[u8]) -> usize {
    if line.iter().all(u8::is_ascii_whitespace) {
        return 0;
    }
    let Ok(value) = serde_json::from_slice::<Value>(line) else {
        return 1;
    };
    let owes = |v: &Value| v.as_object().is_none_or(|o| o.contains_key("id"));
    match &value {
        Value::Array(items) if items.is_empty() || items.len() > 1000 => 1,
        Value::Array(items) => usize::from(items.iter().any(owes)),
        other => usize::from(owes(other)),
    }
}

/// Writes `lines` on one connection (a thread writes while this one reads) and
/// checks that each owed answer comes, as one JSON line, in order; notification
/// lines pushed by subscriptions are left aside. Returns the answers.
fn fuzz_connection(socket: &Path, lines: Vec<Vec<u8>>) -> Vec<Value> {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let owed: usize = lines.iter().map(|l| answers_owed(l)).sum();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for l in &lines {
            writer.write_all(l).unwrap();
            writer.write_all(b"\n").unwrap();
        }
        // The end marker: answered after everything before it.
        writer
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"end\",\"method\":\"models.list\"}\n")
            .unwrap();
    });
    let mut reader = BufReader::new(stream);
    let mut answers = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("after {} of {owed} answers: {e}", answers.len()));
        assert!(
            n > 0,
            "the daemon closed the connection after {} of {owed} answers",
            answers.len()
        );
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "answer {} is not one JSON value: {e}: {line:?}",
                answers.len()
            )
        });
        if v.get("method").is_some() && v.get("id").is_none() {
            continue; // a subscription's notification
        }
        if v["id"] == "end" {
            break;
        }
        answers.push(v);
    }
    sender.join().unwrap();
    assert_eq!(
        answers.len(),
        owed,
        "answers other than one per request with an id"
    );
    answers
}

fn vm_hwm_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn canonical(p: &Path) -> String {
    p.canonicalize().unwrap().to_str().unwrap().to_owned()
}

fn small_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("paths.py"),
        "def parse_path(p):\n    \"\"\"Split a path into parts.\"\"\"\n    return p.split('/')\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_fuzzing_client_never_takes_the_daemon_down() {
    let mut d = Daemon::start();
    let tree = small_tree();
    let tree_path = canonical(tree.path());
    let mut rng = Rng(0x00c0_de5e_a4c4);
    let started = Instant::now();
    let mut total = 0;
    let mut errors = std::collections::BTreeMap::<i64, usize>::new();
    // Four connections of 500 lines; the last also hangs up mid-line.
    for conn in 0..4 {
        let lines: Vec<Vec<u8>> = (0..500)
            .map(|i| fuzz_line(&mut rng, conn * 1000 + i, &tree_path))
            .collect();
        total += lines.len();
        for a in fuzz_connection(&d.socket(), lines) {
            if let Some(code) = a["error"]["code"].as_i64() {
                *errors.entry(code).or_default() += 1;
            }
        }
        assert!(d.child.try_wait().unwrap().is_none(), "the daemon exited");
    }
    {
        let mut s = UnixStream::connect(d.socket()).unwrap();
        s.write_all(br#"{"jsonrpc":"2.0","id":1,"method":"sea"#)
            .unwrap();
    }
    assert_eq!(total, 2000);
    // Still serving, and every kind of bad input was met.
    let status = d.call("daemon.status", json!(null));
    assert!(status["result"]["pid"].as_u64().is_some(), "{status}");
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon exited");
    for code in [-32700, -32600, -32601, -32602, -32003, -32001] {
        assert!(errors.contains_key(&code), "no {code} in {errors:?}");
    }
    // Pseudo-filesystems and the root were never registered.
    let list = d.call("repo.list", json!(null));
    for r in list["result"].as_array().unwrap() {
        let p = r["path"].as_str().unwrap();
        assert!(p == tree_path || p.starts_with(&tree_path), "{list}");
    }
    eprintln!(
        "fuzz: {total} lines in {:.1} s, errors by code {errors:?}",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn caps_on_batches_subscriptions_and_search_params_are_clear_errors() {
    let d = Daemon::start();
    let s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut ask = |line: String| -> Value {
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
        let mut out = String::new();
        r.read_line(&mut out).unwrap();
        serde_json::from_str(&out).unwrap()
    };
    let batch: Vec<Value> = (0..1001)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "models.list"}))
        .collect();
    let v = ask(Value::Array(batch).to_string());
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1000")
    );
    for i in 0..16 {
        let v = ask(
            json!({"jsonrpc": "2.0", "id": i, "method": "repo.subscribe", "params": {}})
                .to_string(),
        );
        assert!(v["result"].is_u64() || v["result"].is_string(), "{v}");
    }
    let v = ask(
        json!({"jsonrpc": "2.0", "id": 99, "method": "repo.subscribe", "params": {}}).to_string(),
    );
    assert_eq!(v["error"]["code"], -32004, "{v}");
    let search = |params: Value| {
        json!({"jsonrpc": "2.0", "id": 5, "method": "search", "params": params}).to_string()
    };
    for (params, needle) in [
        (json!({"query": "x".repeat(70_000)}), "bytes"),
        (json!({"query": "x", "k": 1001}), "k must be"),
        (json!({"query": "x", "paths": vec!["*"; 1001]}), "`paths`"),
        (
            json!({"query": "x", "languages": vec!["rust"; 1001]}),
            "`languages`",
        ),
        (json!({"query": "x", "repos": vec!["/x"; 1001]}), "`repos`"),
    ] {
        let v = ask(search(params));
        assert_eq!(v["error"]["code"], -32602, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    // Another connection has room for its own subscriptions.
    let v = d.call("repo.subscribe", json!({}));
    assert!(v["result"].is_u64() || v["result"].is_string(), "{v}");
}

#[test]
fn pseudo_filesystems_and_the_root_are_refused_as_repositories() {
    let home = Home::new();
    for (path, needle) in [
        ("/proc", "pseudo-filesystem"),
        ("/proc/self", "pseudo-filesystem"),
        ("/dev", "pseudo-filesystem"),
        ("/dev/null", "is not a directory"),
        ("/", "filesystem root"),
    ] {
        let o = home.run(&["index", path]);
        assert_eq!(o.status.code(), Some(2), "{path}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{path}: {}", text(&o));
    }
    if Path::new("/sys/kernel").is_dir() {
        let o = home.run(&["index", "/sys"]);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("sysfs"),
            "{}",
            text(&o)
        );
    }
    let o = home.run(&["list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no repositories"),
        "{}",
        text(&o)
    );
}

/// `n` small files of the same three functions: a full re-index re-reads,
/// re-chunks and rewrites them all, while the model embeds three texts once.
fn same_files(n: usize, topic: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "def load_{topic}(path):\n    return open(path).read()\n\n\ndef save_{topic}(path, text):\n    open(path, 'w').write(text)\n\n\ndef merge_{topic}(a, b):\n    return {{**a, **b}}\n"
    );
    for i in 0..n {
        let sub = dir.path().join(format!("pkg{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("{topic}_{i}.py")), &text).unwrap();
    }
    dir
}

#[test]
fn many_concurrent_clients_search_without_errors_during_a_full_reindex() {
    let d = Daemon::start();
    let corpus = same_files(40, "glob");
    let root = canonical(corpus.path());
    let added = d.call("repo.add", json!({"path": root, "wait": true}));
    assert_eq!(added["result"]["state"], "ready", "{added}");
    let other = same_files(300, "settings");
    let other_root = canonical(other.path());
    let added = d.call("repo.add", json!({"path": other_root, "wait": true}));
    assert_eq!(added["result"]["state"], "ready", "{added}");

    let done = Arc::new(AtomicBool::new(false));
    let reindexer = {
        let socket = d.socket();
        let done = done.clone();
        let other_root = other_root.clone();
        std::thread::spawn(move || {
            let s = UnixStream::connect(&socket).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut passes = 0;
            while !done.load(Ordering::SeqCst) {
                let line = json!({"jsonrpc": "2.0", "id": passes, "method": "repo.reindex",
                    "params": {"path": other_root, "full": true, "wait": true}});
                writeln!(w, "{line}").unwrap();
                let mut out = String::new();
                r.read_line(&mut out).unwrap();
                let v: Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["result"]["state"], "ready", "{v}");
                passes += 1;
            }
            passes
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..32)
        .map(|c| {
            let socket = d.socket();
            let root = root.clone();
            let other_root = other_root.clone();
            std::thread::spawn(move || {
                let s = UnixStream::connect(&socket).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                let mut errors = Vec::new();
                let mut empty = 0;
                for i in 0..150 {
                    // One search in five embeds its query; the others are lexical
                    // (the model thread is one, and 2 cores run all 32 clients).
                    // Every third asks only the repository being re-indexed: the
                    // full re-index is built beside the live one, so it never
                    // answers empty.
                    let mode = if (c + i) % 5 == 0 {
                        "hybrid"
                    } else {
                        "lexical"
                    };
                    let params = if i % 3 == 1 {
                        json!({"query": "merge settings", "k": 5, "mode": mode, "repos": [other_root]})
                    } else {
                        json!({"query": "merge two globs", "k": 5, "mode": mode})
                    };
                    let line = json!({"jsonrpc": "2.0", "id": i, "method": "search", "params": params});
                    writeln!(w, "{line}").unwrap();
                    let mut out = String::new();
                    r.read_line(&mut out).unwrap();
                    let v: Value = serde_json::from_str(&out).unwrap();
                    if v.get("error").is_some() || v["id"] != i {
                        errors.push(v);
                    } else if v["result"]["results"].as_array().unwrap().is_empty() {
                        empty += 1;
                    } else {
                        // Every hit stays in a registered root.
                        for h in v["result"]["results"].as_array().unwrap() {
                            let repo = h["repo"].as_str().unwrap();
                            assert!(repo == root || repo == other_root, "{h}");
                        }
                    }
                }
                (errors, empty)
            })
        })
        .collect();
    let mut errors = Vec::new();
    let mut empty = 0;
    for c in clients {
        let (e, n) = c.join().unwrap();
        errors.extend(e);
        empty += n;
    }
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let passes = reindexer.join().unwrap();
    eprintln!(
        "32 × 150 searches in {:.1} s beside {passes} full re-indexes; {empty} empty answers",
        took.as_secs_f64()
    );
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    assert_eq!(
        empty, 0,
        "neither repository ever answers empty, the one being re-indexed included"
    );
    assert!(passes >= 1);
}

/// Random bytes, lies and traps in one tree.
fn hostile_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut rng = Rng(7);
    let random: Vec<u8> = (0..8192).map(|_| rng.next() as u8).collect();
    std::fs::write(root.join("random.py"), &random).unwrap();
    let no_nul: Vec<u8> = random.iter().map(|&b| b.max(1)).collect();
    std::fs::write(root.join("random_no_nul.py"), no_nul).unwrap();
    // 50 MB (sparse: the size is what lies) and a 5 MB line.
    let huge = std::fs::File::create(root.join("huge.py")).unwrap();
    huge.set_len(50_000_000).unwrap();
    std::fs::write(root.join("long_line.py"), vec![b'x'; 5_000_000]).unwrap();
    std::fs::write(
        root.join("minified.js"),
        format!("var a={};\n", "1,".repeat(400_000)),
    )
    .unwrap();
    std::fs::write(root.join("latin1.py"), b"# caf\xe9\ndef f():\n    pass\n").unwrap();
    std::fs::write(root.join("nul.rs"), b"fn a() {}\0\0\0fn b() {}\n").unwrap();
    let fifo = root.join("pipe.py");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    std::os::unix::fs::symlink(root.join("loop_b.py"), root.join("loop_a.py")).unwrap();
    std::os::unix::fs::symlink(root.join("loop_a.py"), root.join("loop_b.py")).unwrap();
    std::os::unix::fs::symlink(root, root.join("self_dir")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd.py")).unwrap();
    std::os::unix::fs::symlink("/proc/self", root.join("proc_self")).unwrap();
    std::os::unix::fs::symlink("/proc/self/pagemap", root.join("pagemap.py")).unwrap();
    let mut deep = root.to_owned();
    for _ in 0..150 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        deep.join("deep.py"),
        "def deep_down_function():\n    return 'far below the root'\n",
    )
    .unwrap();
    std::fs::write(
        root.join("new\nline.py"),
        "def newline_in_the_name():\n    return 1\n",
    )
    .unwrap();
    // 20,000 functions in one file (each its own chunk; the same text, so one embedding).
    std::fs::write(
        root.join("many.py"),
        "def f():\n    return 1\n".repeat(20_000),
    )
    .unwrap();
    std::fs::write(
        root.join("ok.py"),
        "def rotate_audit_journal(quota):\n    \"\"\"Rotate the audit journal once it exceeds its quota.\"\"\"\n    return quota > 0\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_hostile_tree_is_indexed_with_every_skip_counted_and_nothing_outside_it() {
    let d = Daemon::start();
    let tree = hostile_tree();
    let root = canonical(tree.path());
    let started = Instant::now();
    let added = d.call("repo.add", json!({"path": root, "wait": true}));
    let took = started.elapsed();
    let status = &added["result"];
    assert_eq!(status["state"], "ready", "{added}");
    let skipped = &status["skipped"]["counts"];
    for (reason, at_least) in [
        ("binary", 1),
        ("not_utf8", 2),
        ("too_large", 2),
        ("generated", 1),
        ("symlink_outside_root", 4),
        ("unreadable", 1),
    ] {
        assert!(
            skipped[reason].as_u64().unwrap_or(0) >= at_least,
            "{reason}: {}",
            status["skipped"]
        );
    }
    assert!(status["chunks"].as_u64().unwrap() >= 20_000, "{status}");

    // Searches find what is inside and nothing outside.
    for (query, mode) in [
        ("root:x:0:0", "lexical"),
        ("root", "lexical"),
        ("rotate the audit journal", "hybrid"),
        ("deep down function far below the root", "hybrid"),
        ("newline in the name", "lexical"),
    ] {
        let v = d.call("search", json!({"query": query, "k": 20, "mode": mode}));
        for h in v["result"]["results"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
        {
            assert_eq!(h["repo"], root.as_str(), "{h}");
            let p = h["path"].as_str().unwrap();
            assert!(!p.starts_with('/') && !p.contains(".."), "{h}");
            assert!(
                Path::new(&root)
                    .join(p)
                    .canonicalize()
                    .unwrap()
                    .starts_with(&root),
                "{h}"
            );
            assert!(
                !h["snippet"].as_str().unwrap().contains("root:x:0:0"),
                "{h}"
            );
        }
    }
    let v = d.call(
        "search",
        json!({"query": "deep down function far below the root", "k": 3}),
    );
    assert!(v.to_string().contains("deep.py"), "{v}");

    // A file indexed inside the root and then replaced by a link to outside it:
    // its hits stay (stale until the watcher catches up) but nothing is read
    // through the link.
    let ok = Path::new(&root).join("ok.py");
    std::fs::remove_file(&ok).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &ok).unwrap();
    let v = d.call(
        "search",
        json!({"query": "rotate the audit journal", "k": 5, "mode": "lexical"}),
    );
    for h in v["result"]["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
    {
        assert!(!h["snippet"].as_str().unwrap().contains("root:"), "{h}");
    }

    // `codesearch list` shows why files are missing.
    let o = Command::new(bin("codesearch"))
        .arg("list")
        .env("CODESEARCH_HOME", d.home.path())
        .env_remove("CODESEARCH_SOCKET")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("skipped") && out.contains("too_large"),
        "{}",
        text(&o)
    );
    let o = Command::new(bin("codesearch"))
        .args(["status", "--json"])
        .env("CODESEARCH_HOME", d.home.path())
        .env_remove("CODESEARCH_SOCKET")
        .output()
        .unwrap();
    let v: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert!(
        v["repos"][0]["skipped"]["total"].as_u64().unwrap() >= 10,
        "{v}"
    );

    let hwm = vm_hwm_bytes(d.child.id());
    eprintln!(
        "hostile tree: {} in {:.1} s, peak RSS {} MB",
        status["skipped"],
        took.as_secs_f64(),
        hwm >> 20
    );
    assert!(hwm < 1_500_000_000, "peak RSS {hwm} bytes");
}

#[test]
fn files_and_chunks_count_up_while_a_pass_runs() {
    // 2,000 files of the same three functions: 6,000 chunks in a dozen commits,
    // three embeddings.
    let d = Daemon::start();
    let corpus = same_files(2000, "counting");
    let root = canonical(corpus.path());
    let started = d.call("repo.add", json!({"path": root}));
    assert_eq!(started["result"]["state"], "indexing", "{started}");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = d.call("repo.list", json!(null));
        let r = &list["result"][0];
        let (files, chunks) = (r["files"].as_u64().unwrap(), r["chunks"].as_u64().unwrap());
        if r["state"] != "indexing" {
            assert_eq!((files, chunks), (2000, 6000), "{r}");
            break;
        }
        seen.push((files, chunks));
        assert!(Instant::now() < deadline, "the pass never ended: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen.iter()
            .any(|&(f, c)| f > 0 && f < 2000 && c > 0 && c < 6000),
        "never a count between 0 and the end while indexing: {seen:?}"
    );
}
