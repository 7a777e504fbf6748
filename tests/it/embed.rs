//! The candle engine on the real all-MiniLM-L6-v2.

use codesearchd::embed_bench::{self, cosine};
use std::time::{Duration, Instant};

use codesearchd::embed::{self, EmbedOptions, EmbedWorker, Embedder, InputKind, ModelLocator};

use crate::util::{minilm, shared_dir};

#[test]
fn vectors_match_sentence_transformers() {
    let shared = shared_dir();
    let chunks = embed_bench::read_chunks(&shared.join("reference/chunks.jsonl")).unwrap();
    let reference =
        embed_bench::read_reference(&shared.join("reference/ref_first20.json")).unwrap();
    assert!(reference.ids.len() >= 20 && reference.query_embedding.is_some());
    let mut model = minilm();
    let cosines = embed_bench::compare_with_reference(&mut *model, &chunks, &reference).unwrap();
    assert_eq!(cosines.len(), reference.ids.len() + 1);
    let below: Vec<_> = cosines.iter().filter(|(_, c)| *c < 0.999).collect();
    assert!(
        below.is_empty(),
        "cosine < 0.999 against the reference: {below:?}"
    );
}

/// int8 documents (the default on CPUs with VNNI; forced here, so every CPU
/// runs its kernel): close to f32 on real chunks, and queries untouched.
#[test]
fn int8_documents_stay_close_to_f32_and_queries_stay_f32() {
    let shared = shared_dir();
    let chunks = embed_bench::read_chunks(&shared.join("reference/chunks.jsonl")).unwrap();
    let reference =
        embed_bench::read_reference(&shared.join("reference/ref_first20.json")).unwrap();
    let options = EmbedOptions {
        model: "minilm".into(),
        device: embed::DeviceChoice::Cpu,
        precision: Some(embed::Precision::Int8),
        ..Default::default()
    };
    let mut int8 = embed::load(&options, &ModelLocator::from_env()).unwrap();
    assert!(int8.int8_documents());
    let texts: Vec<&str> = chunks.iter().step_by(8).map(|c| c.text.as_str()).collect();
    let quantized = int8.embed(&texts, InputKind::Document).unwrap();
    let exact = minilm().embed(&texts, InputKind::Document).unwrap();
    let cosines: Vec<f32> = quantized
        .iter()
        .zip(&exact)
        .map(|(a, b)| cosine(a, b))
        .collect();
    let min = cosines.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
    assert!(
        min >= 0.995 && mean >= 0.998,
        "int8 vs f32 over {} chunks: min {min}, mean {mean}",
        texts.len()
    );
    // Not the f32 path in disguise: int8 sums do move the vectors a little.
    assert!(
        mean < 0.99999,
        "int8 documents equal f32 ones (mean {mean})"
    );
    // Against sentence-transformers too.
    let to_reference = embed_bench::compare_with_reference(&mut int8, &chunks, &reference).unwrap();
    for (id, c) in &to_reference {
        assert!(*c >= 0.995, "{id}: cosine {c} to sentence-transformers");
    }
    // Queries are f32 on the same weights: the same vector as the f32 engine's.
    let q = "parse http headers";
    let ours = int8.embed(&[q], InputKind::Query).unwrap();
    let theirs = minilm().embed(&[q], InputKind::Query).unwrap();
    assert_eq!(ours, theirs);
}

#[test]
fn a_text_gets_the_same_vector_alone_and_in_a_padded_batch() {
    let shared = shared_dir();
    let chunks = embed_bench::read_chunks(&shared.join("reference/chunks.jsonl")).unwrap();
    // Lengths from a few tokens to past the 256-token truncation, so padding and
    // truncation both happen inside one batch.
    let texts: Vec<&str> = chunks.iter().step_by(97).map(|c| c.text.as_str()).collect();
    let mut model = minilm();
    let together = model.embed(&texts, InputKind::Document).unwrap();
    for (text, v) in texts.iter().zip(&together) {
        let alone = model.embed(&[text], InputKind::Document).unwrap();
        let c = cosine(&alone[0], v);
        assert!(
            c > 0.9999,
            "batch changed a vector: cosine {c} for {text:?}"
        );
    }
}

#[test]
fn vectors_are_unit_length_and_model_sized() {
    let mut model = minilm();
    let texts = ["", "x", "fn main() {}", &"word ".repeat(2000)];
    let vectors = model.embed(&texts, InputKind::Document).unwrap();
    assert_eq!(model.dims(), 384);
    assert_eq!(model.max_tokens(), 256);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        assert!(v.iter().all(|x| x.is_finite()));
    }
    assert!(model.embed(&[], InputKind::Query).unwrap().is_empty());
}

#[test]
fn related_code_ranks_above_unrelated_code() {
    let mut model = minilm();
    let docs = [
        "def parse_headers(lines):\n    headers = {}\n    for line in lines:\n        k, v = line.split(':', 1)\n        headers[k.strip().lower()] = v.strip()\n    return headers",
        "def mean(xs):\n    return sum(xs) / len(xs)",
        "fn open_database(path: &Path) -> Connection { Connection::open(path).unwrap() }",
    ];
    let d = model.embed(&docs, InputKind::Document).unwrap();
    let q = model
        .embed(&["parse http headers"], InputKind::Query)
        .unwrap();
    let scores: Vec<f32> = d.iter().map(|v| cosine(&q[0], v)).collect();
    assert!(
        scores[0] > scores[1] && scores[0] > scores[2],
        "scores {scores:?}"
    );
}

#[test]
fn a_query_jumps_ahead_of_indexing() {
    let options = EmbedOptions {
        model: "minilm".into(),
        device: embed::DeviceChoice::Cpu,
        ..Default::default()
    };
    let model = embed::load(&options, &ModelLocator::from_env()).unwrap();
    let worker = EmbedWorker::spawn(Box::new(model)).unwrap();
    let chunks = embed_bench::read_chunks(&shared_dir().join("reference/chunks.jsonl")).unwrap();
    let docs: Vec<String> = chunks.iter().take(320).map(|c| c.text.clone()).collect();

    let mut indexer = worker.handle();
    let indexing = std::thread::spawn(move || {
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        indexer.embed(&refs, InputKind::Document).unwrap().len()
    });
    // Wait until the model thread has taken the indexing job (seconds of work).
    let handle = worker.handle();
    let deadline = Instant::now() + Duration::from_secs(60);
    std::thread::sleep(Duration::from_millis(300));
    while handle.queued() != (0, 0) {
        assert!(Instant::now() < deadline, "indexing never started");
        std::thread::yield_now();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let q = rt
        .block_on(handle.embed_async(vec!["parse http headers".into()], InputKind::Query))
        .unwrap();
    assert_eq!(q[0].len(), 384);
    assert!(
        !indexing.is_finished(),
        "the query waited for the whole indexing job"
    );
    assert_eq!(indexing.join().unwrap(), 320);
}
