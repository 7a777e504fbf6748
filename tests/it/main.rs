//! The one integration-test binary: real model, real files, real binaries.
//!
//! Modules, one per capability:
//! - `benchmark`: `codesearch benchmark` on a slice of the public eval, and its input errors.
//! - `chunk`: the chunker on real files from the registries, as snapshots.
//! - `index`: indexing and searching a real corpus, incrementally, on the real model.
//! - `layout`: ARCHITECTURE.md's layout invariants, on the sources and the dependency graph.
//! - `mcp`: `codesearch mcp` driven by the official MCP SDK for Python on a real corpus.
//! - `nvim`: the Neovim plugin in headless Neovim against the real daemon: quickfix, auto-start, malformed answers, dead sockets.
//! - `lifecycle`: shutdown within 2 s mid-pass, 20 `kill -9`s that converge, Ctrl-C in a terminal, status while a model loads.
//! - `daemon`: the real daemon over its socket: methods, bad input, permissions, one per home.
//! - `embed`: the candle engine against sentence-transformers' reference vectors.
//! - `models`: BERT with CLS pooling, RoBERTa and XLM-RoBERTa against transformers on tiny checked-in checkpoints.
//! - `remote`: the `openai` remote embedder against infinity-emb (a real OpenAI-compatible server): same hits as the local engine, 429s retried, a killed server.
//! - `fault`: a fuzzing client, pseudo-filesystems, 32 concurrent clients, a hostile tree.
//! - `client`: the `codesearch` client end to end, exit codes and output formats.
//! - `cli`: the `codesearchd` binary's benchmark and its error messages.
//! - `service`: unit files for systemd and launchd, and socket activation for real.
//! - `watch`: the live index: edits, deletes, renames, new folders, ignore rules, storms.

mod benchmark;
mod chunk;
mod cli;
mod client;
mod daemon;
mod embed;
mod fault;
mod index;
mod layout;
mod lifecycle;
mod mcp;
mod models;
mod nvim;
mod remote;
mod service;
mod util;
mod watch;
