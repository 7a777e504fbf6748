//! The chunker on real code from the registries, checked against snapshots.
//!
//! Each case is a file of a crate in `Cargo.lock`, read from cargo's registry
//! cache (`.ci/run` runs `cargo fetch` so all of them are there). A snapshot is
//! one line per chunk, `start-end kind symbol`; run with `UPDATE_SNAPSHOTS=1` to
//! rewrite them after a deliberate change, and review the diff.

use std::path::PathBuf;

use codesearchd::chunk::{ChunkOptions, Chunker};

use crate::util::{check_snapshot, registry_file};

fn render(path: &PathBuf) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.to_string_lossy();
    Chunker::new()
        .unwrap()
        .chunk(&name, &text, &ChunkOptions::default())
        .iter()
        .map(|c| {
            format!(
                "{}-{} {} {} {}\n",
                c.start_line,
                c.end_line,
                c.language,
                c.kind,
                c.symbol.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

#[test]
fn rust_file_from_crates_io() {
    let file = registry_file("ignore", "src/pathutil.rs");
    check_snapshot("chunk_rust_ignore_pathutil", &render(&file));
}

#[test]
fn c_and_cpp_files_from_crates_io() {
    let file = registry_file("blake3", "c/blake3_dispatch.c");
    check_snapshot("chunk_c_blake3_dispatch", &render(&file));
    let file = registry_file("blake3", "c/blake3_tbb.cpp");
    check_snapshot("chunk_cpp_blake3_tbb", &render(&file));
}

#[test]
fn python_file_from_crates_io() {
    let file = registry_file("blake3", "c/test.py");
    check_snapshot("chunk_python_blake3_test", &render(&file));
}

#[test]
fn javascript_file_from_crates_io() {
    let file = registry_file("wasm-streams", "tests/js/readable_stream.js");
    check_snapshot("chunk_javascript_wasm_streams", &render(&file));
}
