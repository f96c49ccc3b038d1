//! Replay of hospitals' declines of a job against a coordinator that records lies: a decline
//! forged in a hospital's name, recorded as someone else's act, naming another spec, from an
//! enrolled hospital, repeated, beyond the limit, after the job's end. Each is reported where it
//! is; honest declines count.

mod support;
use std::collections::BTreeMap;

use fedchain_audit::replay;
use fedchain_consortium::folder::EnrolledHospital;
use fedchain_crypto::keys::deal;
use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::record::{Body, JobStatus, Role};
use fedchain_ledger::store::{Entry, Store};
use fedchain_ledger::Hash;
use fedchain_model_core::ModelSpec;
use fedchain_proto::v1 as pb;
use prost::Message;
use rand::SeedableRng;
use support::entry;

const HOSPITALS: [&str; 3] = ["h1", "h2", "h3"];

fn key(h: &str) -> NoteSigner {
    let i = HOSPITALS.iter().position(|x| *x == h).unwrap();
    NoteSigner::new(h, [70 + i as u8; 32]).unwrap()
}

fn spec() -> pb::JobSpec {
    pb::JobSpec {
        torchscript_module: Vec::new(),
        privacy: None,
        spread_decryption: true,
        schema: Some(pb::DatasetSchema {
            features: vec!["a".into(), "b".into()],
            target: "y".into(),
            task: Some(pb::dataset_schema::Task::Binary(
                pb::dataset_schema::Binary {},
            )),
            image: None,
        }),
        model: Some(pb::ModelSpec {
            canonical_json: ModelSpec::LogisticRegression {
                inputs: 2,
                outputs: 1,
            }
            .canonical_json(),
        }),
        rounds: 1,
        local_epochs: 1,
        learning_rate: 1e-2,
        batch_size: 8,
        min_participants: 2,
        round_deadline_seconds: 60,
        credit_budget: 0,
        seed: 1,
        quantization: Some(pb::Quantization {
            frac_bits: 16,
            clip: 1.0,
            quant_bits: 0,
        }),
    }
}

/// `h`'s decline of job 1 for `reason`, signed by `signer`'s key, naming `spec`, recorded as
/// `actor`'s act.
fn decline(h: &str, reason: &str, spec: Hash, signer: &str, actor: &str) -> Entry {
    let signature = key(signer).sign_message(&Body::decline_message(1, &spec, h, reason));
    entry(
        actor,
        Role::Hospital,
        Body::JobDeclined {
            job: 1,
            spec,
            hospital: h.into(),
            reason: reason.into(),
            signature,
        },
    )
}

#[test]
fn replay_reports_every_lie_about_a_decline_and_counts_the_honest_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), "fedchain.declines-test").unwrap();
    let spec_digest = store.put_blob(&spec().encode_to_vec()).unwrap();
    let identity = |h: &str| key(h).verifier().public_key();
    let mut entries = vec![
        entry(
            "ada",
            Role::Researcher,
            Body::JobSubmitted {
                job: 1,
                spec: spec_digest,
                researcher: "ada".into(),
                budget: 0,
            },
        ),
        entry(
            "h1",
            Role::Hospital,
            Body::HospitalEnrolled {
                job: 1,
                hospital: "h1".into(),
                identity_key: identity("h1"),
                samples: 10,
                deposit: 0,
            },
        ),
    ];
    let lies = [
        // Honest.
        (
            decline("h2", "no column \"a\"", spec_digest, "h2", "h2"),
            None,
        ),
        // Signed by another hospital's key.
        (
            decline("h3", "forged", spec_digest, "h2", "h3"),
            Some("decline signature"),
        ),
        // Recorded as another party's act.
        (
            decline("h3", "not mine", spec_digest, "h3", "h2"),
            Some("declining hospital's act"),
        ),
        // Naming another spec.
        (
            decline("h3", "other", [9; 32], "h3", "h3"),
            Some("names the job's spec"),
        ),
        // From an enrolled hospital.
        (
            decline("h1", "enrolled", spec_digest, "h1", "h1"),
            Some("not enrolled in"),
        ),
        // The same reason twice.
        (
            decline("h2", "no column \"a\"", spec_digest, "h2", "h2"),
            Some("once per reason"),
        ),
        // Honest, up to the limit; one more is a lie.
        (decline("h2", "second", spec_digest, "h2", "h2"), None),
        (decline("h2", "third", spec_digest, "h2", "h2"), None),
        (
            decline("h2", "fourth", spec_digest, "h2", "h2"),
            Some("declines of a job are few"),
        ),
    ];
    let first = entries.len() as u64;
    let mut expected = Vec::new();
    for (i, (e, lie)) in lies.into_iter().enumerate() {
        entries.push(e);
        if let Some(check) = lie {
            expected.push((first + i as u64, check));
        }
    }
    entries.push(entry(
        "coordinator",
        Role::Coordinator,
        Body::JobFinished {
            job: 1,
            status: JobStatus::Failed,
            reason: "too few".into(),
        },
    ));
    let late = entries.len() as u64;
    entries.push(decline("h3", "late", spec_digest, "h3", "h3"));
    expected.push((late, "after JobFinished"));
    store.append_all(entries).unwrap();
    store.flush().unwrap();

    let (pk, _) = deal(512, 3, 2, &mut rand_chacha::ChaCha20Rng::seed_from_u64(3)).unwrap();
    let hospitals: BTreeMap<String, EnrolledHospital> = HOSPITALS
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (
                h.to_string(),
                EnrolledHospital {
                    share_index: i + 1,
                    identity: identity(h),
                },
            )
        })
        .collect();
    let report = replay(&store, &pk, &hospitals).unwrap();
    assert_eq!(report.declined, 3, "{:?}", report.discrepancies);
    let found: Vec<(u64, String)> = report
        .discrepancies
        .iter()
        .filter(|d| d.check.contains("decline") || d.check.contains("JobFinished"))
        .map(|d| (d.record.unwrap(), d.check.clone()))
        .collect();
    assert_eq!(found.len(), expected.len(), "{found:?}");
    for ((at, check), (want_at, want)) in found.iter().zip(&expected) {
        assert_eq!(at, want_at, "{check}");
        assert!(
            check.contains(want),
            "record {at}: {check:?}, expected {want:?}"
        );
    }
}
