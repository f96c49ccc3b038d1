//! Every decoder of untrusted bytes, and what it must do with any input.
//!
//! Bytes from outside (a hospital's ciphertext vector or decryption share, a key file, a signed
//! checkpoint, a ledger record, a model file, a researcher's job spec or TorchScript module, a
//! Merkle proof, a hospital's image file) reach one of these decoders before anything else looks at them. Each [`Target`] feeds its decoder arbitrary bytes and
//! panics if the decoder panics, or if it accepts bytes that do not re-encode to themselves (the
//! decoders are canonical, so a mutant they accept without complaint would be a second encoding
//! of one object, which digests and signatures over encodings must never meet).
//!
//! Two drivers use the same targets: `fuzz/` (cargo fuzz, coverage-guided libFuzzer with
//! AddressSanitizer, run by `make fuzz` for a bounded time in CI) and `tests/decoders.rs` (proptest
//! on stable Rust, mutating the valid encodings of [`seeds`], in every `cargo test`). The valid
//! encodings also seed the libFuzzer corpus (`fuzz-seeds`).

use std::path::Path;
use std::sync::OnceLock;

use fedchain_crypto::djn::{decode_ciphertexts, encode_ciphertexts, EncryptionTable};
use fedchain_crypto::keys::{deal, KeyShare, PublicKey};
use fedchain_crypto::threshold::{partial_decrypt, DecryptionShare};
use fedchain_crypto::BigInt;
use fedchain_ledger::merkle;
use fedchain_ledger::note::{self, Checkpoint, NoteSigner};
use fedchain_ledger::record::{Actor, Body, Outcome, Record, Role};
use fedchain_ledger::Hash;
use fedchain_model_core::torchscript::TorchScriptCode;
use fedchain_model_core::{init_params, ModelFile, ModelKind, ModelSpec};
use fedchain_proto::v1::{self as pb, JobSpec};
use prost::Message;
use rand::SeedableRng;

/// The fixed key every target decodes against, and valid encodings to start from.
pub struct Fixtures {
    /// A 512-bit threshold key (3 parties, threshold 2) dealt from a fixed seed, so every run and
    /// every fuzzing process has the same one. The decoders' checks do not depend on the size.
    pub pk: PublicKey,
    seeds: Vec<(&'static str, Vec<u8>)>,
}

/// The fixtures, built once per process (deterministically).
pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let (pk, shares) = deal(512, 3, 2, &mut rng).expect("deal a 512-bit key");
        let table = EncryptionTable::new(&pk);
        let cts = table
            .encrypt_all(&[BigInt::from(5u32), BigInt::from(7u32)], &mut rng)
            .expect("encrypt");
        let share = partial_decrypt(&pk, &shares[0], &cts, b"ctx", &mut rng).expect("share");
        let signer = NoteSigner::new("log", [3; 32]).expect("signer");
        let checkpoint = Checkpoint {
            origin: "log".into(),
            size: 3,
            root: [9; 32],
            extensions: Vec::new(),
        };
        let record = Record::new(
            0,
            1,
            Actor {
                id: "h1".into(),
                role: Role::Hospital,
            },
            Outcome::Success,
            Body::UpdateSubmitted {
                job: 1,
                round: 2,
                hospital: "h1".into(),
                ciphertexts: [1; 32],
                signature: [2; 64],
            },
        );
        let spec = ModelSpec::preset(ModelKind::Logreg, 4, fedchain_datasets::TaskKind::Binary)
            .expect("spec");
        let params = init_params(&spec, 1);
        let features: Vec<String> = (0..4).map(|i| format!("x{i}")).collect();
        let job = JobSpec {
            torchscript_module: Vec::new(),
            privacy: None,
            spread_decryption: true,
            schema: Some(pb::DatasetSchema {
                features,
                target: "y".into(),
                task: Some(pb::dataset_schema::Task::Binary(
                    pb::dataset_schema::Binary {},
                )),
                image: None,
            }),
            model: Some(pb::ModelSpec {
                canonical_json: spec.canonical_json(),
            }),
            rounds: 3,
            local_epochs: 1,
            learning_rate: 0.01,
            batch_size: 32,
            min_participants: 2,
            round_deadline_seconds: 60,
            credit_budget: 100,
            quantization: Some(pb::Quantization {
                frac_bits: 16,
                clip: 1.0,
                quant_bits: 0,
            }),
            seed: 1,
        };
        assert!(
            fedchain_protocol::validate(&job).is_ok(),
            "the job spec seed must be valid"
        );
        let seeds = vec![
            ("ciphertext_vectors", encode_ciphertexts(&pk, &cts)),
            ("decryption_shares", share.to_bytes(&pk)),
            ("public_keys", pk.to_bytes()),
            ("key_shares", shares[1].to_bytes()),
            (
                "signed_notes",
                checkpoint.sign(&[&signer]).expect("sign").into_bytes(),
            ),
            ("ledger_records", record.encode().expect("encode")),
            (
                "model_files",
                ModelFile::new(spec.clone(), params)
                    .and_then(|f| f.to_bytes())
                    .expect("model file"),
            ),
            ("job_specs", job.encode_to_vec()),
            ("torchscript_code", torchscript_archive()),
            ("image_files", {
                let px: Vec<f32> = (0..16).map(|v| v as f32).collect();
                fedchain_datasets::dicom_bytes(image_shape(), &px, "seed").expect("a DICOM file")
            }),
            ("png_images", {
                let px: Vec<f32> = (0..16).map(|v| (v * 16) as f32).collect();
                fedchain_datasets::png_bytes(image_shape(), &px).expect("a PNG file")
            }),
            ("torchscript_pickles", {
                use fedchain_model_core::pickle::Writer;
                Writer::module(|w| {
                    w.op(b'(')
                        .tensor("0", 16, 0, &[4, 4], &[4, 1])
                        .tensor("0", 16, 4, &[2, 2], &[1, 2])
                        .op(b'l')
                })
            }),
            ("merkle_proofs", {
                let mut b = [3u64.to_le_bytes(), 7u64.to_le_bytes()].concat();
                for i in 0..7u8 {
                    b.extend_from_slice(&merkle::leaf_hash(&[i]));
                }
                b
            }),
        ];
        Fixtures { pk, seeds }
    })
}

/// One decoder under test.
pub struct Target {
    /// The target's name (its cargo-fuzz binary and corpus folder).
    pub name: &'static str,
    /// Feeds `bytes` to the decoder; panics if it misbehaves.
    pub check: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "ciphertext_vectors",
        check: ciphertext_vectors,
    },
    Target {
        name: "decryption_shares",
        check: decryption_shares,
    },
    Target {
        name: "public_keys",
        check: public_keys,
    },
    Target {
        name: "key_shares",
        check: key_shares,
    },
    Target {
        name: "signed_notes",
        check: signed_notes,
    },
    Target {
        name: "ledger_records",
        check: ledger_records,
    },
    Target {
        name: "model_files",
        check: model_files,
    },
    Target {
        name: "job_specs",
        check: job_specs,
    },
    Target {
        name: "merkle_proofs",
        check: merkle_proofs,
    },
    Target {
        name: "torchscript_code",
        check: torchscript_code,
    },
    Target {
        name: "torchscript_pickles",
        check: torchscript_pickles,
    },
    Target {
        name: "image_files",
        check: image_files,
    },
    Target {
        name: "png_images",
        check: png_images,
    },
];

fn image_shape() -> fedchain_datasets::ImageShape {
    fedchain_datasets::ImageShape::new(1, 4, 4).expect("a 4x4 grayscale shape")
}

/// A hospital's image file, declared 4x4 grayscale, through the decoders without their panic
/// guard (so a decoder's panic is found): what they accept has exactly that many values, all
/// finite. Bytes are read by content, so both targets reach every decoder; their seeds differ
/// (DICOM here, PNG in [`png_images`]).
pub fn image_files(bytes: &[u8]) {
    let shape = image_shape();
    if let Ok(px) = fedchain_datasets::decode_unguarded(bytes, Path::new("fuzz"), shape) {
        assert_eq!(px.len(), shape.len(), "an image of another size accepted");
        assert!(px.iter().all(|v| v.is_finite()), "a non-finite pixel");
    }
}

/// [`image_files`], grown from a PNG.
pub fn png_images(bytes: &[u8]) {
    image_files(bytes)
}

/// A valid encoding for target `name` (the corpus seed and the proptest mutation base).
pub fn seed(name: &str) -> Vec<u8> {
    fixtures()
        .seeds
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b.clone())
        .unwrap_or_default()
}

/// Every target's valid encoding, by name.
pub fn seeds() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    fixtures().seeds.iter().map(|(n, b)| (*n, b.as_slice()))
}

/// A Paillier ciphertext vector as submitted by a hospital (fixed width, `0 < c < N^2`,
/// `gcd(c, N) = 1`, no duplicates).
pub fn ciphertext_vectors(bytes: &[u8]) {
    let f = fixtures();
    if let Ok(cts) = decode_ciphertexts(&f.pk, bytes, None) {
        assert_eq!(
            encode_ciphertexts(&f.pk, &cts),
            bytes,
            "non-canonical ciphertexts"
        );
    }
}

/// A decryption share with its batched proof.
pub fn decryption_shares(bytes: &[u8]) {
    let f = fixtures();
    if let Ok(s) = DecryptionShare::from_bytes(&f.pk, bytes, 2) {
        assert_eq!(s.to_bytes(&f.pk), bytes, "non-canonical share");
    }
}

/// The consortium's public key file.
pub fn public_keys(bytes: &[u8]) {
    if let Ok(pk) = PublicKey::from_bytes(bytes) {
        assert_eq!(pk.to_bytes(), bytes, "non-canonical public key");
    }
}

/// A hospital's key share file.
pub fn key_shares(bytes: &[u8]) {
    if let Ok(s) = KeyShare::from_bytes(bytes) {
        assert_eq!(s.to_bytes(), bytes, "non-canonical key share");
    }
}

/// A signed note, and the checkpoint in it (or the bytes read as a bare checkpoint).
pub fn signed_notes(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(n) = note::parse(text) {
        assert_eq!(n.encode(), text, "non-canonical note");
        let _ = Checkpoint::from_text(&n.text);
    }
    let _ = Checkpoint::from_text(text);
}

/// A ledger record (canonical JSON).
pub fn ledger_records(bytes: &[u8]) {
    if let Ok(r) = Record::decode(bytes) {
        assert_eq!(
            r.encode().expect("re-encode"),
            bytes,
            "non-canonical record"
        );
    }
}

/// A safetensors model file with its fedchain metadata.
pub fn model_files(bytes: &[u8]) {
    let _ = ModelFile::from_bytes(bytes, Path::new("fuzz"));
}

/// A researcher's TorchScript file as a hospital reads it before loading anything: any bytes are
/// refused or read without a panic, and every operator reported is named in the code read (none
/// is made up, none comes from elsewhere in the archive).
pub fn torchscript_code(bytes: &[u8]) {
    if let Ok(code) = TorchScriptCode::read(bytes) {
        let named = |text: &str| code.sources.iter().any(|(_, s)| s.contains(text));
        for op in &code.operators {
            // As written (`torch.add`, `ops.ns.f`, a bare call), or a method of something that is
            // not the archive's own (`x.pf(`), which is reported as `torch.pf`.
            let method = op.strip_prefix("torch.").is_some_and(named);
            assert!(named(op) || method, "{op} is reported but not in the code");
        }
        let _ = code.check();
    }
}

/// A TorchScript module's pickle (its tensors and state), as a hospital checks it before libtorch
/// builds anything from it: any bytes are refused or accepted without a panic, and a pickle
/// accepted once is accepted again (the check keeps no state between files). Records `0` to `9`
/// exist, 64 bytes each.
pub fn torchscript_pickles(bytes: &[u8]) {
    use fedchain_model_core::pickle::check_pickle;
    let records = |key: &str| (key.len() == 1 && key.as_bytes()[0].is_ascii_digit()).then_some(64);
    let first = check_pickle("data.pkl", bytes, &records, &mut Default::default());
    let again = check_pickle("data.pkl", bytes, &records, &mut Default::default());
    assert_eq!(first, again, "the same pickle, two verdicts");
}

/// A minimal TorchScript archive as `torch.jit.save` lays it out (stored entries): the module's
/// code, one allowed and one forbidden operator.
fn torchscript_archive() -> Vec<u8> {
    let bytes = torchscript_archive_of(
        b"class M(Module):\n  def forward(self, x: Tensor) -> Tensor:\n    \
          y = torch.from_file(\"f\", None, 4)\n    return torch.add(x, torch.sum(y))\n",
    );
    let code = TorchScriptCode::read(&bytes).expect("the TorchScript seed must be readable");
    assert_eq!(code.forbidden(), ["torch.from_file"]);
    bytes
}

/// A TorchScript archive (stored, not compressed) whose one source file is `code`.
pub fn torchscript_archive_of(code: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("m/code/__torch__.py", stored)
        .expect("start the code file");
    zip.write_all(code).expect("write the code");
    zip.start_file("m/data.pkl", stored)
        .expect("start data.pkl");
    zip.write_all(b"\x80\x02}q\x00.").expect("write data.pkl");
    zip.finish().expect("finish the archive").into_inner()
}

/// A researcher's job spec (protobuf), then its validation.
pub fn job_specs(bytes: &[u8]) {
    if let Ok(spec) = JobSpec::decode(bytes) {
        let _ = fedchain_protocol::validate(&spec);
    }
}

/// Merkle inclusion and consistency proofs as an untrusted coordinator serves them: any claimed
/// index, sizes, roots and audit path are refused without a panic. The same bytes, read as
/// leaves, also check the honest side: the proofs the ledger makes verify, and a flipped bit in
/// one does not.
pub fn merkle_proofs(bytes: &[u8]) {
    let num = |i: usize| {
        bytes
            .get(i..i + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let (a, b) = (num(0), num(8));
    let hashes: Vec<Hash> = bytes
        .get(16..)
        .unwrap_or_default()
        .chunks_exact(32)
        .filter_map(|c| Hash::try_from(c).ok())
        .collect();
    let h = |i: usize| hashes.get(i).copied().unwrap_or([0; 32]);
    let path = hashes.get(2..).unwrap_or_default();
    let _ = merkle::verify_inclusion(&h(0), a, b, path, &h(1));
    let _ = merkle::verify_consistency(a, b, &h(0), &h(1), path);

    if hashes.is_empty() || hashes.len() > 64 {
        return;
    }
    let n = hashes.len() as u64;
    let (index, old) = (a % n, b % n + 1);
    let root = merkle::root(&hashes);
    let proof = merkle::inclusion_proof(&hashes, index, n).expect("an honest inclusion proof");
    let leaf = &hashes[index as usize];
    assert!(
        merkle::verify_inclusion(leaf, index, n, &proof, &root).is_ok(),
        "an honest inclusion proof does not verify"
    );
    let old_root = merkle::root(&hashes[..old as usize]);
    let consistency =
        merkle::consistency_proof(&hashes, old, n).expect("an honest consistency proof");
    assert!(
        merkle::verify_consistency(old, n, &old_root, &root, &consistency).is_ok(),
        "an honest consistency proof does not verify"
    );
    if let Some(bit) = bytes.last() {
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let k = usize::from(*bit) % bad.len();
            bad[k][usize::from(*bit) % 32] ^= 1 << (bit % 8);
            assert!(
                merkle::verify_inclusion(leaf, index, n, &bad, &root).is_err(),
                "a corrupted inclusion proof verifies"
            );
        }
        if !consistency.is_empty() {
            let mut bad = consistency.clone();
            let k = usize::from(*bit) % bad.len();
            bad[k][usize::from(*bit) % 32] ^= 1 << (bit % 8);
            assert!(
                merkle::verify_consistency(old, n, &old_root, &root, &bad).is_err(),
                "a corrupted consistency proof verifies"
            );
        }
    }
}
