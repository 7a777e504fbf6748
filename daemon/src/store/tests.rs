//! Store tests on real SQLite and usearch files in temp dirs, with made-up vectors.

use super::*;

const DIMS: usize = 8;

fn manifest(model: &str) -> Manifest {
    Manifest {
        schema_version: SCHEMA_VERSION,
        model: model.to_owned(),
        dims: DIMS,
        source: None,
        root: PathBuf::from("/repo"),
    }
}

/// A unit vector pointing mostly along axis `i`.
fn unit(i: usize) -> Vec<f32> {
    let mut v = [0.05f32; DIMS];
    v[i % DIMS] = 1.0;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn key(i: u8) -> Key {
    [i; KEY_BYTES]
}

fn indexed(path: &str, keys: &[u8]) -> FileUpdate {
    FileUpdate::Indexed {
        file: FileRow {
            path: path.to_owned(),
            size: 10,
            mtime_ns: 1,
            hash: [0; 32],
            skip: None,
        },
        chunks: keys
            .iter()
            .enumerate()
            .map(|(n, &k)| NewChunk {
                key: key(k),
                start_line: n as u32 * 10 + 1,
                end_line: n as u32 * 10 + 5,
                symbol: Some(format!("f{k}")),
                kind: "function",
                language: "rust",
                text: LexicalText::new(&format!("fn f{k}() {{}}")),
            })
            .collect(),
        vectors: keys.iter().map(|&k| (key(k), unit(k as usize))).collect(),
    }
}

fn top(store: &Store, axis: usize) -> Vec<String> {
    store
        .nearest(&unit(axis), 3)
        .unwrap()
        .into_iter()
        .map(|(c, _)| format!("{}:{}", c.path, c.symbol.unwrap()))
        .collect()
}

#[test]
fn stores_searches_and_removes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2]), indexed("b.rs", &[3])])
        .unwrap();
    assert_eq!(
        (
            s.file_count().unwrap(),
            s.chunk_count().unwrap(),
            s.hnsw_len()
        ),
        (2, 3, 3)
    );
    assert_eq!(top(&s, 3)[0], "b.rs:f3");
    let (best, score) = &s.nearest(&unit(2), 1).unwrap()[0];
    assert_eq!((best.start_line, best.end_line), (11, 15));
    assert!(*score > 0.99, "{score}");

    s.apply(vec![FileUpdate::Removed {
        path: "b.rs".into(),
        skipped: None,
    }])
    .unwrap();
    assert_eq!(
        (
            s.file_count().unwrap(),
            s.chunk_count().unwrap(),
            s.hnsw_len()
        ),
        (1, 2, 2)
    );
    assert!(!top(&s, 3).iter().any(|h| h.starts_with("b.rs")));
    // The vector stays cached for a while: re-adding it needs no embedding.
    assert!(s.vectors(&[key(3)]).unwrap().contains_key(&key(3)));
}

#[test]
fn reindexing_a_file_replaces_its_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2])]).unwrap();
    s.apply(vec![indexed("a.rs", &[2, 4])]).unwrap();
    assert_eq!((s.chunk_count().unwrap(), s.hnsw_len()), (2, 2));
    assert_eq!(top(&s, 4)[0], "a.rs:f4");
    assert!(!top(&s, 1).contains(&"a.rs:f1".to_owned()));
}

#[test]
fn another_model_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(tmp.path(), &manifest("minilm")).unwrap());
    let err = Store::open(tmp.path(), &manifest("bge-small"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model `minilm`"), "{err}");
    assert!(err.contains("model `bge-small`"), "{err}");
    assert!(err.contains("codesearch remove"), "{err}");

    // One remote name, another server model or length: not the same vectors.
    let remote = |model: &str, dims: usize| Manifest {
        dims,
        source: Some(format!("openai API model `{model}`")),
        ..manifest("openai")
    };
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(tmp.path(), &remote("text-embedding-3-small", DIMS)).unwrap());
    drop(Store::open(tmp.path(), &remote("text-embedding-3-small", DIMS)).unwrap());
    let err = Store::open(tmp.path(), &remote("text-embedding-3-large", DIMS))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`text-embedding-3-small`") && err.contains("`text-embedding-3-large`"),
        "{err}"
    );
    let err = Store::open(tmp.path(), &remote("text-embedding-3-small", 2 * DIMS))
        .unwrap_err()
        .to_string();
    assert!(err.contains("8 dims") && err.contains("16 dims"), "{err}");
}

#[test]
fn an_index_of_an_older_schema_is_built_again() {
    let tmp = tempfile::tempdir().unwrap();
    let mut old = manifest("minilm");
    old.schema_version = SCHEMA_VERSION - 1;
    std::fs::write(tmp.path().join(MANIFEST), serde_json::to_vec(&old).unwrap()).unwrap();
    std::fs::write(tmp.path().join(SQLITE), b"an older layout").unwrap();
    let mut s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    assert_eq!(s.chunk_count().unwrap(), 0);
    s.apply(vec![indexed("a.rs", &[1])]).unwrap();
    assert_eq!(top(&s, 1)[0], "a.rs:f1");
}

#[test]
fn an_older_schema_keeps_its_vectors_so_an_upgrade_embeds_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2])]).unwrap();
    drop(s);
    // Schema 9 keyed vectors by 128 bits of the same hash: today's key is their prefix.
    Connection::open(tmp.path().join(SQLITE))
        .unwrap()
        .execute(
            "UPDATE vectors SET key = CAST(key || x'0badf00d' AS BLOB)",
            [],
        )
        .unwrap();
    let long: i64 = Connection::open(tmp.path().join(SQLITE))
        .unwrap()
        .query_row(
            "SELECT min(length(key)) FROM vectors WHERE typeof(key) = 'blob'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(long, 16);
    let mut old = manifest("minilm");
    old.schema_version = SCHEMA_VERSION - 1;
    assert!(old.schema_version >= VECTORS_SINCE);
    std::fs::write(tmp.path().join(MANIFEST), serde_json::to_vec(&old).unwrap()).unwrap();

    let s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    assert_eq!(s.chunk_count().unwrap(), 0);
    let kept = s.vectors(&[key(1), key(2), key(3)]).unwrap();
    assert_eq!(kept.len(), 2);
    let v = &kept[&key(1)];
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let cos: f32 = v.iter().zip(unit(1)).map(|(a, b)| a * b).sum::<f32>() / norm;
    assert!(cos > 0.999, "{cos}");
}

#[test]
fn a_missing_corrupt_or_stale_hnsw_file_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2]), indexed("b.rs", &[3, 5])])
        .unwrap();
    // The nearest chunk along each axis that has one (other axes are ties).
    let firsts = |s: &Store| [1, 2, 3, 5].map(|i| top(s, i)[0].clone());
    let want = firsts(&s);
    drop(s);

    // Saved graph, vectors from SQLite.
    let s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    assert_eq!((s.hnsw_len(), firsts(&s)), (4, want.clone()));
    drop(s);

    std::fs::remove_file(tmp.path().join(HNSW)).unwrap();
    let s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    assert_eq!(firsts(&s), want);
    drop(s);

    std::fs::write(tmp.path().join(HNSW), b"not an index").unwrap();
    let mut s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    assert_eq!(firsts(&s), want);

    // A crash after a commit, before the HNSW file is saved: it is stale on open.
    s.apply(vec![indexed("c.rs", &[6])]).unwrap();
    std::mem::forget(s);
    let s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    assert_eq!(s.hnsw_len(), 5);
    assert_eq!(top(&s, 6)[0], "c.rs:f6");
}

/// The chunks whose full-text rows match `word`, and how many rows the
/// full-text index holds (one per live chunk).
fn text_rows(s: &Store, word: &str) -> (Vec<String>, i64) {
    let found = s
        .lexical(word, 10)
        .unwrap()
        .into_iter()
        .map(|(c, _)| format!("{}:{}", c.path, c.symbol.unwrap()))
        .collect();
    let rows =
        s.db.query_row("SELECT count(*) FROM chunks_fts_docsize", [], |r| r.get(0))
            .unwrap();
    (found, rows)
}

#[test]
fn full_text_rows_follow_a_file_indexed_and_dropped_in_one_commit() {
    // The full-text rows of a commit go in after its other rows: a file indexed
    // and then removed or indexed again within the same commit leaves no row
    // behind, and a chunk id reused within it gets its new text.
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    s.apply(vec![
        indexed("a.rs", &[1, 2]),
        FileUpdate::Removed {
            path: "a.rs".into(),
            skipped: None,
        },
        indexed("b.rs", &[3]),
        indexed("b.rs", &[4]),
    ])
    .unwrap();
    assert_eq!(s.chunk_count().unwrap(), 1);
    assert_eq!(text_rows(&s, "f1"), (vec![], 1));
    assert_eq!(text_rows(&s, "f3"), (vec![], 1));
    assert_eq!(text_rows(&s, "f4"), (vec!["b.rs:f4".to_owned()], 1));
    // b.rs's chunk has the highest id: removed, its id is free for c.rs's chunk.
    s.apply(vec![
        FileUpdate::Removed {
            path: "b.rs".into(),
            skipped: None,
        },
        indexed("c.rs", &[5]),
    ])
    .unwrap();
    assert_eq!(text_rows(&s, "f4"), (vec![], 1));
    assert_eq!(text_rows(&s, "f5"), (vec!["c.rs:f5".to_owned()], 1));
    // Nothing stale comes back after a reopen either.
    drop(s);
    let s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    assert_eq!(text_rows(&s, "f5"), (vec!["c.rs:f5".to_owned()], 1));
}

#[test]
fn lexical_search_stems_words_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &manifest("m")).unwrap();
    let mut update = indexed("src/eta.rs", &[1, 2]);
    if let FileUpdate::Indexed { chunks, .. } = &mut update {
        chunks[0].text = LexicalText::new("fn format_eta() { /* time remaining, in days */ }");
        chunks[1].text = LexicalText::new("fn render_bar() { /* the filled part */ }");
    }
    store.apply(vec![update]).unwrap();
    // "remain" and "day" are not in the text as such.
    let found = store.lexical("remain day", 5).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0.symbol.as_deref(), Some("f1"));
}

#[test]
fn camel_case_identifiers_and_file_names_match_their_words() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &manifest("m")).unwrap();
    let mut update = indexed("Source/Features/RetryPolicy.swift", &[1, 2]);
    if let FileUpdate::Indexed { chunks, .. } = &mut update {
        chunks[0].text =
            LexicalText::new("static int compressBlock(HTTPResponse *r) { return 0; }");
        chunks[1].text = LexicalText::new("func other() {}");
    }
    store
        .apply(vec![update, indexed("src/plain.rs", &[3])])
        .unwrap();
    let found = store.lexical("block response", 5).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0.symbol.as_deref(), Some("f1"));
    // The whole identifier is still a word of its own.
    assert_eq!(store.lexical("compressBlock", 5).unwrap().len(), 1);
    // A path's camelCase parts: both chunks of RetryPolicy.swift, not plain.rs.
    let by_path = store.lexical("policy", 5).unwrap();
    assert_eq!(by_path.len(), 2, "{by_path:?}");
    // The symbol column finds definitions by name, index-wide.
    let defs = store.symbols(&["f3".to_owned()], 5).unwrap();
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0].path, "src/plain.rs");
}

#[test]
fn hnsw_recall_is_measured_against_an_exact_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path(), &manifest("minilm")).unwrap();
    s.apply(vec![
        indexed("a.rs", &[0, 1, 2, 3]),
        indexed("b.rs", &[4, 5, 6, 7]),
    ])
    .unwrap();
    let r = s.hnsw_recall(&[unit(3), unit(5)], 4, 3).unwrap();
    assert_eq!((r.vectors, r.probes), (8, 6));
    assert_eq!((r.queries, r.chunks), (Some(1.0), Some(1.0)));
    let none = s.hnsw_recall(&[], 0, 3).unwrap();
    assert_eq!((none.queries, none.chunks, none.probes), (None, None, 0));
}

#[test]
fn a_full_rebuild_is_built_beside_the_live_index_and_swapped_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo-index");
    let mut s = Store::open(&dir, &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2]), indexed("b.rs", &[3])])
        .unwrap();
    let before = s.reader().unwrap();
    assert_eq!(before.nearest(&unit(3), 1).unwrap()[0].0.path, "b.rs");

    let mut side = s.rebuild_beside().unwrap();
    // Empty, but holding every vector of the live index: nothing is embedded again.
    assert_eq!(side.chunk_count().unwrap(), 0);
    assert_eq!(side.vectors(&[key(1), key(2), key(3)]).unwrap().len(), 3);
    side.apply(vec![indexed("a.rs", &[1, 2])]).unwrap(); // b.rs is gone now
    // The live index answers in full all the while.
    assert_eq!(s.chunk_count().unwrap(), 3);
    assert_eq!(top(&s, 3)[0], "b.rs:f3");

    s.replace_with(side).unwrap();
    assert_eq!((s.chunk_count().unwrap(), s.hnsw_len()), (2, 2));
    assert!(top(&s, 3).iter().all(|hit| !hit.starts_with("b.rs")));
    // A reader made before the swap keeps its index until it is replaced.
    assert_eq!(before.nearest(&unit(3), 1).unwrap()[0].0.path, "b.rs");
    drop(before);
    let after = s.reader().unwrap();
    assert_eq!(after.nearest(&unit(1), 1).unwrap()[0].0.path, "a.rs");
    drop((s, after));
    assert!(!sibling(&dir, OLD).exists() && !sibling(&dir, REBUILD).exists());

    let s = Store::open(&dir, &manifest("minilm")).unwrap();
    assert_eq!(
        (
            s.file_count().unwrap(),
            s.chunk_count().unwrap(),
            s.hnsw_len()
        ),
        (1, 2, 2)
    );
}

#[test]
fn a_cancelled_rebuild_is_discarded_and_the_live_index_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo-index");
    let mut s = Store::open(&dir, &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2])]).unwrap();
    let mut side = s.rebuild_beside().unwrap();
    side.apply(vec![indexed("c.rs", &[4])]).unwrap();
    side.discard().unwrap();
    assert!(!sibling(&dir, REBUILD).exists());
    assert_eq!(s.chunk_count().unwrap(), 2);
}

#[test]
fn a_crash_during_a_full_rebuild_or_its_swap_is_undone_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo-index");
    let mut s = Store::open(&dir, &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2])]).unwrap();
    // Killed while rebuilding: the rebuild is left beside the live index.
    let mut side = s.rebuild_beside().unwrap();
    side.apply(vec![indexed("c.rs", &[4])]).unwrap();
    drop((side, s));
    let s = Store::open(&dir, &manifest("minilm")).unwrap();
    assert_eq!(s.chunk_count().unwrap(), 2);
    assert!(!sibling(&dir, REBUILD).exists());
    drop(s);

    // Killed between the swap's two renames: only `<dir>.old` is there.
    std::fs::rename(&dir, sibling(&dir, OLD)).unwrap();
    let s = Store::open(&dir, &manifest("minilm")).unwrap();
    assert_eq!((s.chunk_count().unwrap(), s.hnsw_len()), (2, 2));
    assert!(!sibling(&dir, OLD).exists());
    drop(s);

    // Killed after the swap, before the replaced index was removed.
    let mut s = Store::open(&dir, &manifest("minilm")).unwrap();
    let mut side = s.rebuild_beside().unwrap();
    side.apply(vec![indexed("c.rs", &[4])]).unwrap();
    drop(side);
    let rebuilt = sibling(&dir, REBUILD);
    s.hnsw_dirty = false;
    drop(s);
    std::fs::rename(&dir, sibling(&dir, OLD)).unwrap();
    std::fs::rename(&rebuilt, &dir).unwrap();
    let s = Store::open(&dir, &manifest("minilm")).unwrap();
    assert_eq!(top(&s, 4)[0], "c.rs:f4");
    assert_eq!(s.chunk_count().unwrap(), 1);
    assert!(!sibling(&dir, OLD).exists());
    drop(s);

    // Killed after the atomic exchange, before the replaced index (now under
    // the rebuild's name) was removed: `<dir>` is the new index, kept.
    let mut s = Store::open(&dir, &manifest("minilm")).unwrap();
    let mut side = s.rebuild_beside().unwrap();
    side.apply(vec![indexed("d.rs", &[5, 6, 7])]).unwrap();
    side.save_hnsw().unwrap();
    drop(side);
    s.hnsw_dirty = false;
    drop(s);
    if exchange(&rebuilt, &dir).unwrap() {
        let s = Store::open(&dir, &manifest("minilm")).unwrap();
        assert_eq!((s.chunk_count().unwrap(), s.hnsw_len()), (3, 3));
        assert_eq!(top(&s, 5)[0], "d.rs:f5");
        assert!(!rebuilt.exists());
    }
}

#[test]
fn temporaries_a_crash_left_are_removed_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo-index");
    let mut s = Store::open(&dir, &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2])]).unwrap();
    s.save_hnsw().unwrap();
    drop(s);
    for name in [
        "vectors.full.tmp.4242",
        "vectors.usearch.tmp.4242",
        "manifest.tmp",
    ] {
        std::fs::write(dir.join(name), b"half written").unwrap();
    }
    let s = Store::open(&dir, &manifest("minilm")).unwrap();
    assert_eq!((s.chunk_count().unwrap(), s.hnsw_len()), (2, 2));
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("index.sqlite-"))
        .collect();
    names.sort();
    assert_eq!(names, ["index.sqlite", "manifest.json", "vectors.usearch"]);
}

#[test]
fn searches_borrow_readers_side_by_side_and_move_to_a_swapped_in_index() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo-index");
    let mut s = Store::open(&dir, &manifest("minilm")).unwrap();
    s.apply(vec![indexed("a.rs", &[1, 2]), indexed("b.rs", &[3])])
        .unwrap();
    let readers = Readers::new(s.reader().unwrap(), 2);
    // Two at once, each with its own connection.
    let (one, two) = (readers.get().unwrap(), readers.get().unwrap());
    assert_eq!(one.counts().unwrap(), (2, 3));
    assert_eq!(two.nearest(&unit(3), 1).unwrap()[0].0.path, "b.rs");
    // A third waits until one is handed back.
    std::thread::scope(|scope| {
        let third = scope.spawn(|| readers.get().unwrap().counts().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!third.is_finished(), "the limit is 2 readers");
        drop(one);
        assert_eq!(third.join().unwrap(), (2, 3));
    });

    // A full re-index swapped in: new searches read it; the one still
    // running finishes on the old index.
    let before_swap = s.reader().unwrap();
    let mut side = s.rebuild_beside().unwrap();
    side.apply(vec![indexed("a.rs", &[1, 2])]).unwrap();
    s.replace_with(side).unwrap();
    // Between the swap and the pool's move to the new index, no reader pairs
    // the new file with the old HNSW graph.
    let err = before_swap.reopen().unwrap_err().to_string();
    assert!(err.contains("replaced by a full re-index"), "{err}");
    readers.replace(s.reader().unwrap());
    assert_eq!(two.counts().unwrap(), (2, 3), "the running search's index");
    drop(two);
    let (r1, r2) = (readers.get().unwrap(), readers.get().unwrap());
    assert_eq!(
        (r1.counts().unwrap(), r2.counts().unwrap()),
        ((1, 2), (1, 2))
    );
    assert!(
        r1.nearest(&unit(3), 3)
            .unwrap()
            .iter()
            .all(|(c, _)| c.path == "a.rs")
    );
}
