//! A deterministic embedder for tests of the stages around the model (feature
//! `test-support`): no weights, no download, microseconds a text.
//!
//! Each word (a run of letters and digits, lower-cased; camelCase and
//! snake_case split) adds a pseudo-random unit vector drawn from its blake3
//! hash, so texts that share words point the same way: a query finds the
//! chunks that use its words, as a keyword search would. That is enough to
//! test indexing, search, watching and the protocol; quality needs the real model.

use super::{EmbedError, Embedder, InputKind};

/// Bag-of-hashed-words vectors under a model name and length of the caller's choice.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    name: String,
    dims: usize,
}

impl HashEmbedder {
    /// An embedder that calls itself `name` (a registry name, so indexes and
    /// searches accept it) and makes vectors of `dims`.
    pub fn new(name: &str, dims: usize) -> Self {
        Self {
            name: name.to_owned(),
            dims: dims.max(1),
        }
    }

    fn vector(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        let mut words = 0;
        for word in crate::lexical::identifier_parts(text) {
            words += 1;
            add_hashed(&mut v, word.as_bytes());
        }
        if words == 0 {
            add_hashed(&mut v, text.as_bytes());
        }
        let norm = v
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

/// Adds the pseudo-random vector of `key` (entries in [-1, 1]) to `v`.
fn add_hashed(v: &mut [f32], key: &[u8]) {
    let mut bytes = vec![0u8; v.len()];
    blake3::Hasher::new()
        .update(key)
        .finalize_xof()
        .fill(&mut bytes);
    for (x, b) in v.iter_mut().zip(bytes) {
        *x += f32::from(b) / 127.5 - 1.0;
    }
}

impl Embedder for HashEmbedder {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn max_tokens(&self) -> usize {
        256
    }

    fn device_name(&self) -> String {
        "cpu".to_owned()
    }

    fn embed(&mut self, texts: &[&str], _: InputKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn shared_words_point_the_same_way_and_vectors_are_stable() {
        let mut e = HashEmbedder::new("minilm", 64);
        let v = e
            .embed(
                &[
                    "parse the config file",
                    "fn parse_config_file()",
                    "render a widget",
                ],
                InputKind::Document,
            )
            .unwrap();
        assert!(cos(&v[0], &v[1]) > cos(&v[0], &v[2]) + 0.3);
        assert!((cos(&v[0], &v[0]) - 1.0).abs() < 1e-5);
        assert_eq!(
            e.embed(&["parse the config file"], InputKind::Query)
                .unwrap()[0],
            v[0]
        );
    }
}
