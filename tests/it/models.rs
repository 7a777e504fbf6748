//! Every architecture the engine runs, against `transformers` and
//! `sentence-transformers` on tiny random-weight checkpoints (a few layers, a
//! 600-word tokenizer trained on real code) and real code chunks, batched and
//! padded, the longest cut at the model's limit. The checkpoints and their
//! reference vectors are made by `scripts/make-model-fixtures.py` and checked
//! in (`tests/fixtures/models/`): CI needs no torch.
//!
//! Each loads through the registry name a user types (`bge-small` for BERT
//! with CLS pooling and a query instruction, `codebert` for RoBERTa, `bge-m3`
//! for XLM-RoBERTa, `nomic` for NomicBert), with `model_path` pointing at the fixture, so the
//! registry's pooling fallback, prefixes and the config's position numbering
//! are what is tested.

use std::path::PathBuf;

use codesearchd::embed::{
    self, DeviceChoice, EmbedOptions, Embedder, InputKind, ModelLocator, Precision,
};
use codesearchd::embed_bench::cosine;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    model: String,
    max_seq_length: usize,
    texts: Vec<String>,
    queries: Vec<String>,
    documents: Vec<Vec<f32>>,
    query_vectors: Vec<Vec<f32>>,
}

fn check(fixture: &str) {
    check_in(fixture, Precision::F32, 0.9999);
    // Half precision on the CPU takes the path GPUs take (candle's generic
    // attention, the query scale folded into the weights) instead of the
    // fused f32 kernels.
    check_in(fixture, Precision::F16, 0.999);
    // int8 dense layers for documents (queries stay f32). Random weights drawn
    // wide (initializer_range 0.4) and CLS pooling of one token lose more to
    // rounding than trained ones; MiniLM's own bar (0.995) is in embed.rs.
    check_in(fixture, Precision::Int8, 0.99);
}

fn check_in(fixture: &str, precision: Precision, tolerance: f32) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(fixture);
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let options = EmbedOptions {
        model: reference.model.clone(),
        device: DeviceChoice::Cpu,
        model_path: Some(dir.clone()),
        // Several batches, each padded to its longest text.
        batch_size: Some(5),
        precision: Some(precision),
        ..Default::default()
    };
    let mut model = embed::load(&options, &ModelLocator::from_env())
        .unwrap_or_else(|e| panic!("{fixture}: {e}"));
    assert_eq!(
        model.int8_documents(),
        precision == Precision::Int8,
        "{fixture}: int8 documents"
    );
    assert_eq!(model.max_tokens(), reference.max_seq_length, "{fixture}");
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let docs = model.embed(&texts, InputKind::Document).unwrap();
    let queries: Vec<&str> = reference.queries.iter().map(String::as_str).collect();
    let query_vectors = model.embed(&queries, InputKind::Query).unwrap();
    for (i, (ours, theirs)) in docs.iter().zip(&reference.documents).enumerate() {
        let c = cosine(ours, theirs);
        assert!(
            c >= tolerance,
            "{fixture} ({precision:?}): chunk {i} has cosine {c} to sentence-transformers: {:?}",
            &texts[i][..texts[i].len().min(80)]
        );
    }
    for (i, (ours, theirs)) in query_vectors
        .iter()
        .zip(&reference.query_vectors)
        .enumerate()
    {
        let c = cosine(ours, theirs);
        assert!(
            c >= tolerance,
            "{fixture} ({precision:?}): query {i} has cosine {c}"
        );
    }
    // The comparison can fail: the chunks' vectors differ from each other far
    // more than the tolerance.
    let spread = docs
        .iter()
        .skip(1)
        .map(|v| cosine(v, &docs[0]))
        .fold(f32::INFINITY, f32::min);
    assert!(spread < 0.95, "{fixture}: vectors too alike ({spread})");
}

#[test]
fn bert_with_cls_pooling_and_a_query_instruction_matches_sentence_transformers() {
    check("bert-cls");
}

#[test]
fn roberta_matches_sentence_transformers() {
    check("roberta");
}

/// The same RoBERTa as older hub checkpoints ship it: `pytorch_model.bin`
/// (with a `roberta.` prefix) and `vocab.json` + `merges.txt`.
#[test]
fn roberta_from_pytorch_weights_and_a_bpe_vocabulary_matches_too() {
    check("roberta-legacy");
}

#[test]
fn xlm_roberta_matches_sentence_transformers() {
    check("xlm-roberta");
}

/// nomic-embed-text-v1.5's architecture, as its hub checkpoint names things,
/// against transformers' own NomicBert (5.x).
#[test]
fn nomic_bert_matches_transformers_own_implementation() {
    check("nomic");
}
