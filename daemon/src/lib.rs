//! `codesearchd`: the daemon that keeps an embedding model resident and the
//! indexes of registered repositories fresh.
//!
//! # Layout
//!
//! One module per stage of the data's path (see docs/ARCHITECTURE.md):
//!
//! - [`walk`]: a repository's files under its ignore rules, with every skip counted.
//! - [`chunk`]: a file's text to tree-sitter entities and line windows (pure).
//! - [`embed`]: text to vectors (model registry, weights, devices, batching, candle).
//! - [`store`]: one repository's SQLite + HNSW index on disk.
//! - [`index`]: the incremental pipeline walk → chunk → embed new keys → store.
//! - [`lexical`]: the words identifiers hide, for the full-text index and its queries.
//! - [`search`]: the one search path: query → HNSW, BM25 and symbols, ranked → hits with snippets and `stale`.
//! - [`watch`]: one OS file watcher; each repository's changed paths, coalesced.
//! - [`server`]: `run(config, activation, shutdown)`: home, lock, socket; `serve`: connections and the shutdown.
//! - [`activation`]: a listening socket passed by systemd or launchd.
//! - [`rpc`]: the methods on a jsonrpsee `RpcModule`, and the NDJSON transport.
//! - [`service`]: the state the methods act on (loaded models, repositories, shutdown).
//! - [`repos`]: a registered repository: its store's writer, a reader for searches, its status.
//! - [`config`]: flags > environment > `config.yaml` > defaults, resolved once.
//! - `durable`: the one atomic file write (temporary file, sync, rename, sync of the folder).
//! - [`embed_bench`]: the embedding benchmark behind `codesearchd bench-embed`.
//! - [`index_bench`]: the cold-index benchmark behind `codesearchd bench-index`.
//! - [`benchmark`]: `benchmark.run`, a cold index and labelled queries (`codesearch benchmark`).
//! - [`memory`]: the process's resident memory, for status and the benchmarks.

#![warn(unreachable_pub)]

pub mod activation;
mod benchmark;
pub mod chunk;
pub mod config;
mod durable;
pub mod embed;
pub mod embed_bench;
pub mod index;
pub mod index_bench;
mod lexical;
mod memory;
mod repos;
mod rpc;
pub mod search;
pub mod server;
pub mod service;
pub mod store;
mod walk;
mod watch;
