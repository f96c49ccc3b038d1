//! Bounded fuzzing of every decoder of untrusted bytes on stable Rust, in every `cargo test`: each
//! target of [`fedchain_fuzzing::TARGETS`] gets thousands of inputs, random bytes and its valid
//! encoding with bytes flipped, cut or appended. The coverage-guided run of the same targets is
//! `make fuzz` (cargo fuzz, `fuzz/`).

use fedchain_fuzzing::{seed, TARGETS};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// A valid encoding with a few edits, or random bytes.
fn mutant(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len().max(1);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2 * n),
        (0..n, any::<u8>()).prop_map({
            let v = valid.clone();
            move |(i, b)| {
                let mut v = v.clone();
                if let Some(x) = v.get_mut(i) {
                    *x ^= b | 1;
                }
                v
            }
        }),
        (0..=n).prop_map({
            let v = valid.clone();
            move |k| v[..k.min(v.len())].to_vec()
        }),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map({
            let v = valid.clone();
            move |tail| [v.clone(), tail].concat()
        }),
        Just(valid),
    ]
}

fn fuzz(name: &str) {
    let target = TARGETS
        .iter()
        .find(|t| t.name == name)
        .expect("a known target");
    let valid = seed(name);
    assert!(!valid.is_empty(), "{name} has no seed");
    // The valid encoding itself must pass its own check.
    (target.check)(&valid);
    let mut runner = TestRunner::new(Config {
        cases: 1500,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&mutant(valid), |bytes| {
            (target.check)(&bytes);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn ciphertext_vectors() {
    fuzz("ciphertext_vectors");
}

#[test]
fn decryption_shares() {
    fuzz("decryption_shares");
}

#[test]
fn public_keys() {
    fuzz("public_keys");
}

#[test]
fn key_shares() {
    fuzz("key_shares");
}

#[test]
fn signed_notes() {
    fuzz("signed_notes");
}

#[test]
fn ledger_records() {
    fuzz("ledger_records");
}

#[test]
fn model_files() {
    fuzz("model_files");
}

#[test]
fn job_specs() {
    fuzz("job_specs");
}

#[test]
fn merkle_proofs() {
    fuzz("merkle_proofs");
}

#[test]
fn torchscript_code() {
    fuzz("torchscript_code");
}

/// Found by `make fuzz`: a method of a name the module does not own (`data.pf(`) is reported as
/// `torch.pf`, which the code does not spell out; the target took that for an invented operator.
#[test]
fn torchscript_code_reports_a_method_by_its_name() {
    let bytes = fedchain_fuzzing::torchscript_archive_of(
        b"class M(Module):\n  def forward(self, x: Tensor) -> Tensor:\n    return data.pf(x)\n",
    );
    let code = fedchain_model_core::torchscript::TorchScriptCode::read(&bytes).unwrap();
    assert!(code.operators.contains("torch.pf"), "{:?}", code.operators);
    fedchain_fuzzing::torchscript_code(&bytes);
}

#[test]
fn torchscript_pickles() {
    fuzz("torchscript_pickles");
}

#[test]
fn image_files() {
    fuzz("image_files");
}

#[test]
fn png_images() {
    fuzz("png_images");
}

/// The seeds of the image targets are images, decoded to their pixels: the targets start from
/// inputs the decoders accept, not from noise.
#[test]
fn image_seeds_decode() {
    let shape = fedchain_datasets::ImageShape::new(1, 4, 4).unwrap();
    for (name, scale) in [("image_files", 1.0), ("png_images", 16.0)] {
        let px = fedchain_datasets::decode_bytes(&seed(name), std::path::Path::new(name), shape)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let want: Vec<f32> = (0..16).map(|v| v as f32 * scale).collect();
        assert_eq!(px, want, "{name}");
    }
}

/// Every target has a test above, a cargo-fuzz binary in `fuzz/` and a seed; none is forgotten
/// when a decoder is added.
#[test]
fn every_target_is_fuzzed_both_ways() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = std::fs::read_to_string(here.join("tests/decoders.rs")).unwrap();
    let manifest = std::fs::read_to_string(here.join("../fuzz/Cargo.toml")).unwrap();
    for t in TARGETS {
        assert!(
            tests.contains(&format!("fuzz(\"{}\")", t.name)),
            "{}: no proptest",
            t.name
        );
        assert!(
            here.join(format!("../fuzz/fuzz_targets/{}.rs", t.name))
                .exists(),
            "{}: no fuzz/fuzz_targets/{}.rs",
            t.name,
            t.name
        );
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "{}: not a [[bin]] of fuzz/Cargo.toml",
            t.name
        );
        assert!(!seed(t.name).is_empty(), "{}: no seed", t.name);
    }
}
