//! The chunker on real code from the registries, checked against snapshots.
//!
//! Each case is a file of a crate in `Cargo.lock`, read from cargo's registry
//! cache (`.ci/run` runs `cargo fetch` so all of them are there), or of an npm,
//! Debian or PyPI package that `scripts/fetch-test-corpora.sh` unpacks. A snapshot is
//! one line per chunk, `start-end kind symbol`; run with `UPDATE_SNAPSHOTS=1` to
//! rewrite them after a deliberate change, and review the diff.

use std::path::PathBuf;

use codesearchd::chunk::{ChunkOptions, Chunker};

use crate::util::{check_snapshot, registry_file, test_corpus_file};

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

#[test]
fn typescript_file_from_npm() {
    let file = test_corpus_file("tiny-invariant-1.3.3/src/tiny-invariant.ts");
    check_snapshot("chunk_typescript_tiny_invariant", &render(&file));
}

#[test]
fn java_file_from_npm() {
    let file =
        test_corpus_file("react-native-fs-2.20.0/android/src/main/java/com/rnfs/Downloader.java");
    check_snapshot("chunk_java_rnfs_downloader", &render(&file));
}

#[test]
fn go_file_from_debian() {
    let file = test_corpus_file(
        "golang-github-pkg-errors-0.9.1/usr/share/gocode/src/github.com/pkg/errors/errors.go",
    );
    check_snapshot("chunk_go_pkg_errors", &render(&file));
}

#[test]
fn ruby_file_from_debian() {
    let file = test_corpus_file(
        "ruby-rainbow-3.1.1/usr/share/rubygems-integration/all/gems/rainbow-3.1.1/lib/rainbow/presenter.rb",
    );
    check_snapshot("chunk_ruby_rainbow_presenter", &render(&file));
}

#[test]
fn csharp_file_from_debian() {
    let file = test_corpus_file(
        "gtk-sharp3-examples-2.99.3/usr/share/gtk-sharp3-examples/CustomWidget.cs",
    );
    check_snapshot("chunk_csharp_gtk_sharp_custom_widget", &render(&file));
}

#[test]
fn php_file_from_debian() {
    let file = test_corpus_file("php-psr-log-1.1.4/usr/share/php/Psr/Log/LoggerTrait.php");
    check_snapshot("chunk_php_psr_log_logger_trait", &render(&file));
}

#[test]
fn kotlin_and_swift_files_from_npm() {
    let file = test_corpus_file(
        "expo-haptics-57.0.3/android/src/main/java/expo/modules/haptics/HapticsModule.kt",
    );
    check_snapshot("chunk_kotlin_expo_haptics_module", &render(&file));
    let file = test_corpus_file("expo-haptics-57.0.3/ios/HapticsModule.swift");
    check_snapshot("chunk_swift_expo_haptics_module", &render(&file));
}

#[test]
fn scala_elixir_and_zig_files_from_pypi() {
    // Pygments' sdist ships example files for its lexers' tests.
    let examples = "pygments-2.19.1/tests/examplefiles";
    let file = test_corpus_file(&format!("{examples}/scala/declarations.scala"));
    check_snapshot("chunk_scala_pygments_declarations", &render(&file));
    let file = test_corpus_file(&format!("{examples}/elixir/example_elixir.ex"));
    check_snapshot("chunk_elixir_pygments_example", &render(&file));
    let file = test_corpus_file(&format!("{examples}/zig/example.zig"));
    check_snapshot("chunk_zig_pygments_example", &render(&file));
}

#[test]
fn haskell_file_from_debian() {
    let file = test_corpus_file(
        "libhugs-mtl-98.200609.21/usr/lib/hugs/packages/mtl/Control/Monad/State.hs",
    );
    check_snapshot("chunk_haskell_hugs_mtl_state", &render(&file));
}

#[test]
fn lua_file_from_debian() {
    let file = test_corpus_file("lua-inspect-3.1.1/usr/share/lua/5.1/inspect.lua");
    check_snapshot("chunk_lua_inspect", &render(&file));
}

#[test]
fn bash_file_from_crates_io() {
    let file = registry_file("zerocopy", "ci/check_versions.sh");
    check_snapshot("chunk_bash_zerocopy_check_versions", &render(&file));
}
