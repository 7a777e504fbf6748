//! `codesearchd`: the daemon that keeps an embedding model resident and the
//! indexes of registered repositories fresh.
//!
//! # Layout
//!
//! One module per stage of the data's path (see docs/ARCHITECTURE.md):
//!
//! - [`embed`]: text to vectors (model registry, weights, devices, batching, candle).
//! - [`bench`]: the embedding benchmark behind `codesearchd bench-embed`.
//!
//! Walk, chunk, store, index, watch, search and rpc arrive with later issues.

pub mod bench;
pub mod embed;
