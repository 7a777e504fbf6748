//! `codesearch`: the thin client of `codesearchd`.
//!
//! It never links the model stack (candle, usearch, tree-sitter); it talks to the
//! daemon over the socket that `codesearch_proto::paths` names.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "codesearch",
    version,
    about = "Semantic code search that stays warm",
    long_about = "Semantic code search that stays warm.\n\nThe daemon commands (index, search, status) arrive with the daemon; today the embedding engine is exercised through `codesearchd bench-embed`."
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    let socket = codesearch_proto::paths::socket();
    eprintln!(
        "codesearch: no commands yet; the daemon's socket will be {}",
        socket.map_or_else(
            || "unresolved (set CODESEARCH_HOME)".to_owned(),
            |p| p.display().to_string()
        )
    );
}
