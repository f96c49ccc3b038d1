//! Bounded fuzzing of every decoder of untrusted bytes, on stable Rust and in every CI run.
//!
//! `cargo fuzz` needs a nightly toolchain, which this project's machines do not have; these
//! property tests play its role for a short, bounded time: each decoder gets thousands of inputs,
//! both random bytes and valid encodings with bytes flipped, cut, repeated or appended, and must
//! return a value or an error, never panic, and never accept a mutated encoding as a different
//! valid object of the same length without its checks (the decoders re-encode canonically, so a
//! decoded mutant must re-encode to itself).

use fedchain_crypto::djn::{decode_ciphertexts, encode_ciphertexts, EncryptionTable};
use fedchain_crypto::keys::{deal, KeyShare, PublicKey};
use fedchain_crypto::threshold::{partial_decrypt, DecryptionShare};
use fedchain_crypto::BigInt;
use fedchain_ledger::note::{self, Checkpoint, NoteSigner};
use fedchain_ledger::record::{Actor, Body, Outcome, Record, Role};
use fedchain_models::{init_params, ModelFile, ModelKind, ModelSpec};
use fedchain_proto::v1::JobSpec;
use proptest::prelude::*;
use prost::Message;
use rand::SeedableRng;
use std::path::Path;
use std::sync::OnceLock;

struct Fixtures {
    pk: PublicKey,
    share: Vec<u8>,
    key_share: Vec<u8>,
    ciphertexts: Vec<u8>,
    decryption_share: Vec<u8>,
    note: String,
    record: Vec<u8>,
    model: Vec<u8>,
}

/// Valid encodings to mutate. A 512-bit key keeps generation quick; the decoders' checks do not
/// depend on the size.
fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let (pk, shares) = deal(512, 3, 2, &mut rng).unwrap();
        let table = EncryptionTable::new(&pk);
        let cts = table
            .encrypt_all(&[BigInt::from(5u32), BigInt::from(7u32)], &mut rng)
            .unwrap();
        let share = partial_decrypt(&pk, &shares[0], &cts, b"ctx", &mut rng).unwrap();
        let signer = NoteSigner::new("log", [3; 32]).unwrap();
        let cp = Checkpoint {
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
        let spec =
            ModelSpec::preset(ModelKind::Logreg, 4, fedchain_datasets::TaskKind::Binary).unwrap();
        let params = init_params(&spec, 1);
        Fixtures {
            share: share.to_bytes(&pk),
            key_share: shares[1].to_bytes(),
            ciphertexts: encode_ciphertexts(&pk, &cts),
            decryption_share: share.to_bytes(&pk),
            note: cp.sign(&[&signer]).unwrap(),
            record: record.encode().unwrap(),
            model: ModelFile::new(spec, params).unwrap().to_bytes().unwrap(),
            pk,
        }
    })
}

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

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1500,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ciphertext_vectors(bytes in mutant(fixtures().ciphertexts.clone())) {
        let f = fixtures();
        if let Ok(cts) = decode_ciphertexts(&f.pk, &bytes, None) {
            prop_assert_eq!(encode_ciphertexts(&f.pk, &cts), bytes);
        }
    }

    #[test]
    fn decryption_shares(bytes in mutant(fixtures().decryption_share.clone())) {
        let f = fixtures();
        if let Ok(s) = DecryptionShare::from_bytes(&f.pk, &bytes, 2) {
            prop_assert_eq!(s.to_bytes(&f.pk), bytes);
        }
        let _ = &f.share;
    }

    #[test]
    fn public_keys(bytes in mutant(fixtures().pk.to_bytes())) {
        if let Ok(pk) = PublicKey::from_bytes(&bytes) {
            prop_assert_eq!(pk.to_bytes(), bytes);
        }
    }

    #[test]
    fn key_shares(bytes in mutant(fixtures().key_share.clone())) {
        if let Ok(s) = KeyShare::from_bytes(&bytes) {
            prop_assert_eq!(s.to_bytes(), bytes);
        }
    }

    #[test]
    fn signed_notes_and_checkpoints(bytes in mutant(fixtures().note.clone().into_bytes())) {
        if let Ok(text) = String::from_utf8(bytes) {
            if let Ok(n) = note::parse(&text) {
                prop_assert_eq!(n.encode(), text.clone());
                let _ = Checkpoint::from_text(&n.text);
            }
            let _ = Checkpoint::from_text(&text);
        }
    }

    #[test]
    fn ledger_records(bytes in mutant(fixtures().record.clone())) {
        if let Ok(r) = Record::decode(&bytes) {
            prop_assert_eq!(r.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn model_files(bytes in mutant(fixtures().model.clone())) {
        let _ = ModelFile::from_bytes(&bytes, Path::new("fuzz"));
    }

    #[test]
    fn job_specs(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(spec) = JobSpec::decode(bytes.as_slice()) {
            let _ = fedchain_coordinator::job::validate(&spec);
        }
    }
}
