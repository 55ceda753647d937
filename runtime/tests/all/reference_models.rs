//! The committed reference models and splits agree with their model cards
//! (`models/README.md`), measured through the runtime's own tract backend.

use std::collections::HashMap;

use cascade_runtime::{
    Backend, BackendError, Digits, Precision, ReferenceModel, Split, TractBackend, reference,
};
use sha2::{Digest, Sha256};

/// The cells of each model's row in the card table, by column header.
fn card_rows() -> HashMap<String, HashMap<String, String>> {
    let text = std::fs::read_to_string(reference::default_models_dir().join("README.md")).unwrap();
    let mut lines =
        text.lines().skip_while(|l| !l.starts_with("| model |")).take_while(|l| l.starts_with('|'));
    let cells = |l: &str| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect::<Vec<_>>();
    let header = cells(lines.next().expect("a table whose header starts with `| model |`"));
    lines
        .map(cells)
        .filter(|row| ReferenceModel::ALL.iter().any(|m| row[0] == format!("`{}`", m.key())))
        .map(|row| (row[0].trim_matches('`').to_string(), header.iter().cloned().zip(row).collect()))
        .collect()
}

#[test]
fn splits_are_the_documented_sizes_and_stratified() {
    let dir = reference::default_models_dir();
    for split in [Split::Calib, Split::Test] {
        let d = Digits::load_split(&dir, split).unwrap();
        assert_eq!(d.len(), 2000, "{split:?}");
        assert_eq!(d.image_shape(), [28, 28]);
        let mut per_class = [0usize; 10];
        d.labels().iter().for_each(|&l| per_class[usize::from(l)] += 1);
        // 10,000 digits with 863..1127 per class, a fifth of each class in each split.
        assert!(per_class.iter().all(|&n| (170..=227).contains(&n)), "{split:?}: {per_class:?}");
    }
}

#[test]
fn models_match_their_cards() {
    let dir = reference::default_models_dir();
    let test = Digits::load_split(&dir, Split::Test).unwrap();
    let cards = card_rows();
    for key in ReferenceModel::ALL {
        let card = cards.get(key.key()).unwrap_or_else(|| panic!("no card row for {}", key.key()));
        let bytes = std::fs::read(key.path(&dir)).unwrap();
        assert_eq!(card["bytes"], bytes.len().to_string(), "{}", key.key());
        assert_eq!(card["sha256"], format!("`{}`", hex::encode(Sha256::digest(&bytes))), "{}", key.key());

        let model = TractBackend::new().prepare(key.key(), &bytes).unwrap();
        assert_eq!(card["MACs"], model.info().macs_per_item.to_string(), "{}", key.key());
        let measured = reference::accuracy(&*model, &test, 100).unwrap() * 100.0;
        let carded: f64 = card["test accuracy (tract)"].trim_end_matches('%').parse().unwrap();
        assert!(
            (measured - carded).abs() <= 0.1,
            "{}: tract measures {measured:.2}%, the card says {carded:.2}%",
            key.key()
        );
    }
}

#[test]
fn both_int8_edge_models_run_as_int8_and_the_others_as_fp32() {
    let dir = reference::default_models_dir();
    let precision = |m: ReferenceModel| {
        let bytes = std::fs::read(m.path(&dir)).unwrap();
        TractBackend::new().prepare(m.key(), &bytes).unwrap().info().precision
    };
    assert_eq!(precision(ReferenceModel::EdgeInt8), Precision::Int8);
    // The QDQ file runs as int8 too: its QDQ patterns are folded into integer ops at load.
    assert_eq!(precision(ReferenceModel::EdgeInt8Qdq), Precision::Int8);
    assert_eq!(precision(ReferenceModel::EdgeFp32), Precision::Fp32);
    assert_eq!(precision(ReferenceModel::CentralFp32), Precision::Fp32);
}

#[test]
fn batch_of_n_equals_n_single_runs() {
    let dir = reference::default_models_dir();
    let test = Digits::load_split(&dir, Split::Test).unwrap();
    for key in ReferenceModel::ALL {
        let model = TractBackend::new().prepare(key.key(), &std::fs::read(key.path(&dir)).unwrap()).unwrap();
        let batched = model.run(&[reference::images_to_input(test.images(0..7)).unwrap()]).unwrap()[0]
            .to_f32()
            .unwrap();
        for i in 0..7 {
            let single = model.run(&[reference::images_to_input(test.image(i)).unwrap()]).unwrap()[0]
                .to_f32()
                .unwrap();
            for (a, b) in single.iter().zip(&batched[i * 10..(i + 1) * 10]) {
                assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{}: image {i}: {a} vs {b}", key.key());
            }
        }
    }
}

#[test]
fn broken_model_files_are_refused_with_the_model_named() {
    let backend = TractBackend::new();
    let err = backend.prepare("garbage", b"this is not an onnx file").unwrap_err();
    assert!(matches!(err, BackendError::Parse { .. }), "{err}");
    assert!(err.to_string().starts_with("model garbage: cannot parse"), "{err}");

    let dir = reference::default_models_dir();
    let bytes = std::fs::read(ReferenceModel::EdgeFp32.path(&dir)).unwrap();
    let err = backend.prepare("truncated", &bytes[..bytes.len() / 2]).unwrap_err();
    assert!(err.to_string().contains("model truncated"), "{err}");

    let model = backend.prepare("edge", &bytes).unwrap();
    let wrong = cascade_runtime::Tensor::from_f32(vec![1, 1, 27, 28], &[0.0; 27 * 28]).unwrap();
    let err = model.run(&[wrong]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model edge: bad input: input input must be shaped [batch, 1, 28, 28], got [1, 1, 27, 28]"
    );
}
