//! The `codesearchd` binary, run for real.

use std::process::Command;

use crate::util::{bin, shared_dir};

#[test]
fn missing_weights_exit_2_with_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(bin("codesearchd"))
        .args(["bench-embed", "--device", "cpu", "--chunks"])
        .arg(shared_dir().join("reference/chunks.jsonl"))
        .env("HF_HOME", empty.path())
        .env_remove("HF_HUB_CACHE")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("weights for model `minilm`"), "{stderr}");
    assert!(
        stderr.contains(&empty.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/fetch-model.sh"), "{stderr}");
}

#[test]
fn unknown_model_and_device_are_one_line_errors() {
    for (args, wants) in [
        (&["--model", "nope"][..], "valid names: minilm"),
        (&["--device", "tpu"][..], "auto, cpu, cuda, metal"),
        #[cfg(not(feature = "cuda"))]
        (&["--device", "cuda"][..], "--features cuda"),
    ] {
        let out = Command::new(bin("codesearchd"))
            .arg("bench-embed")
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(wants), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn bench_embed_reports_the_four_figures() {
    // A small slice keeps this a test of the code path, not a benchmark.
    let shared = shared_dir();
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shared.join("reference/chunks.jsonl")).unwrap();
    let slice: String = text.lines().take(40).map(|l| format!("{l}\n")).collect();
    let chunks = tmp.path().join("chunks.jsonl");
    std::fs::write(&chunks, slice).unwrap();
    let out = Command::new(bin("codesearchd"))
        .args(["bench-embed", "--device", "cpu", "--json", "--chunks"])
        .arg(&chunks)
        .arg("--reference")
        .arg(shared.join("reference/ref_first20.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["chunks"], 40);
    for key in ["chunks_per_s", "tokens_per_s", "query_ms_median"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert!(
        report["peak_rss_bytes"].as_u64().unwrap() > 10_000_000,
        "{report}"
    );
    // The default precision: int8 documents on a CPU with VNNI or AVX-VNNI (held
    // to the 0.995, against sentence-transformers and our own f32), f32
    // elsewhere (0.999).
    let int8 = report["int8_documents"].as_bool().unwrap();
    let floor = if int8 { 0.995 } else { 0.999 };
    assert!(
        report["min_cos_vs_reference"].as_f64().unwrap() >= floor,
        "{report}"
    );
    if int8 {
        assert!(
            report["min_cos_vs_f32"].as_f64().unwrap() >= floor,
            "{report}"
        );
    }
}
