//! The job machine without a network or a process: a whole 3-hospital, 2-of-3 encrypted job from
//! enrollment to `JobFinished`, with real keys, real encryption, signatures and decryption
//! shares. A small in-memory ledger stands in for the store: it assigns record indices and
//! applies credit movements, as the service does. Then the same records are fed to a fresh job
//! through `restore`, which must reach the same state.

use std::sync::{Arc, OnceLock};

use fedchain_coordinator::decryptors::{BACKUP_DECRYPT_MS, SHARE_ALLOWANCE_MS};
use fedchain_coordinator::job::{
    Decline, Enrollment, Job, JobEnv, JobError, JobPhase, ShareSubmission, Submission, Task,
    Writes, MAX_DECLINES,
};
use fedchain_crypto::djn::{decode_ciphertexts, encode_ciphertexts, EncryptionTable};
use fedchain_crypto::keys::{deal, KeyShare, PublicKey};
use fedchain_crypto::quantize::Rounding;
use fedchain_crypto::threshold::partial_decrypt;
use fedchain_ledger::credits::{Account, Credits, Movement};
use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::record::{Body, JobStatus};
use fedchain_ledger::{sha256, Hash};
use fedchain_model_core::{ModelDigest, ModelSpec};
use fedchain_proto::v1 as pb;
use fedchain_protocol::{self as protocol, RoundKind, RoundPlan};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

const JOB: u64 = 1;
const HOSPITALS: [(&str, u64); 3] = [("h1", 40), ("h2", 25), ("h3", 35)];
const DEPOSIT: u64 = 10;

struct Keys {
    pk: Arc<PublicKey>,
    shares: Vec<KeyShare>,
    table: EncryptionTable,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (pk, shares) = deal(512, 3, 2, &mut ChaCha20Rng::seed_from_u64(21)).unwrap();
        Keys {
            table: EncryptionTable::new(&pk),
            pk: Arc::new(pk),
            shares,
        }
    })
}

fn identity(h: &str) -> NoteSigner {
    NoteSigner::new(h, sha256(format!("identity of {h}").as_bytes())).unwrap()
}

fn spec(rounds: u32) -> fedchain_protocol::ValidJob {
    spec_with(rounds, false)
}

fn spec_with(rounds: u32, spread: bool) -> fedchain_protocol::ValidJob {
    let model = ModelSpec::LogisticRegression {
        inputs: 3,
        outputs: 1,
    };
    protocol::validate(&pb::JobSpec {
        torchscript_module: Vec::new(),
        privacy: None,
        spread_decryption: spread,
        schema: Some(pb::DatasetSchema {
            features: vec!["a".into(), "b".into(), "c".into()],
            target: "y".into(),
            task: Some(pb::dataset_schema::Task::Binary(
                pb::dataset_schema::Binary {},
            )),
            image: None,
        }),
        model: Some(pb::ModelSpec {
            canonical_json: model.canonical_json(),
        }),
        rounds,
        local_epochs: 1,
        learning_rate: 0.1,
        batch_size: 8,
        min_participants: 2,
        round_deadline_seconds: 60,
        credit_budget: 300,
        seed: 5,
        quantization: Some(pb::Quantization {
            frac_bits: 16,
            clip: 1.0,
            quant_bits: 0,
        }),
    })
    .unwrap()
}

/// What the store would hold: every record (index = position), the blobs, the balances.
struct Ledger {
    records: Vec<(u64, Body)>,
    blobs: Vec<Vec<u8>>,
    credits: Credits,
    checkpoints: usize,
}

impl Ledger {
    fn new() -> Ledger {
        let mut credits = Credits::new();
        credits
            .apply(&Movement::Mint {
                to: Account::Researcher("ada".into()),
                amount: 1000,
            })
            .unwrap();
        for (h, _) in HOSPITALS {
            credits
                .apply(&Movement::Mint {
                    to: Account::Hospital(h.into()),
                    amount: 100,
                })
                .unwrap();
        }
        Ledger {
            records: Vec::new(),
            blobs: Vec::new(),
            credits,
            checkpoints: 0,
        }
    }

    /// Writes `w` as the service does and tells the job what was recorded.
    fn commit(&mut self, job: &mut Job, w: Writes, now: u64) {
        self.blobs.extend(w.blobs.iter().map(|b| b.to_vec()));
        for e in w.entries {
            if let Body::CreditsMoved { movement } = &e.body {
                self.credits.apply(movement).unwrap();
            }
            let index = self.records.len() as u64;
            job.recorded(index, &e.body);
            self.records.push((now, e.body));
        }
        self.checkpoints += usize::from(w.checkpoint);
    }

    fn env(&self) -> JobEnv<'_> {
        JobEnv {
            pk: &keys().pk,
            hospitals: HOSPITALS.len(),
            evaluation_ms: 30_000,
            credits: &self.credits,
        }
    }

    /// Steps the job until it rests at `now`.
    fn settle(&mut self, job: &mut Job, now: u64) {
        while let Some(w) = job.step(now, &self.env()).unwrap() {
            self.commit(job, w, now);
        }
    }

    fn blob(&self, digest: &Hash) -> Option<Vec<u8>> {
        self.blobs.iter().find(|b| sha256(b) == *digest).cloned()
    }

    /// A fresh job fed every record of this ledger through `restore`, as the service does after a
    /// restart (hospital hN's key share is N).
    fn restored(&self) -> Job {
        self.restored_as(spec(1))
    }

    /// [`Ledger::restored`] for a job of spec `valid`.
    fn restored_as(&self, valid: fedchain_protocol::ValidJob) -> Job {
        let mut again = Job::new(JOB, valid, "ada".into(), 0, 0);
        for (i, (t, body)) in self.records.iter().enumerate() {
            if matches!(body, Body::JobSubmitted { .. } | Body::CreditsMoved { .. }) {
                continue;
            }
            let blob = match body {
                Body::UpdateSubmitted { ciphertexts, .. } => self.blob(ciphertexts),
                Body::DecryptionShare { share, .. } => self.blob(share),
                _ => None,
            };
            let index = match body {
                Body::HospitalEnrolled { hospital, .. }
                | Body::DecryptionShare { hospital, .. } => {
                    1 + HOSPITALS.iter().position(|(h, _)| h == hospital).unwrap()
                }
                _ => 0,
            };
            again
                .restore(i as u64, *t, body, blob.as_deref(), index, &self.env())
                .unwrap_or_else(|e| panic!("record {i}: {e}"));
        }
        again
    }

    /// A one-round job of researcher ada, submitted and enrolling until `deadline_ms`.
    fn submitted(&mut self, deadline_ms: u64) -> Job {
        let valid = spec(1);
        let w = Job::submission(JOB, &valid, "ada", 1, &self.credits).unwrap();
        let mut job = Job::new(JOB, valid, "ada".into(), 0, deadline_ms);
        self.commit(&mut job, w, 1);
        job
    }
}

fn train_task(job: &Job, h: &str) -> RoundPlan {
    let tasks = job.tasks_for(h, true);
    match tasks.iter().find(|t| matches!(t, Task::Train { .. })) {
        Some(Task::Train { plan, .. }) => plan.clone(),
        _ => panic!("{h} has no train task: {tasks:?}"),
    }
}

/// Every hospital submits an encrypted vector for the current round, as its worker would.
fn submit_all(job: &mut Job, ledger: &mut Ledger, now: u64, rng: &mut ChaCha20Rng) {
    for (i, (h, rows)) in HOSPITALS.iter().enumerate() {
        let plan = train_task(job, h);
        let values: Vec<f32> = (0..plan.len)
            .map(|k| ((i + 1) as f32 * 0.01) * (k as f32 + 1.0))
            .collect();
        let codec = plan.codec(&keys().pk).unwrap();
        let enc = codec
            .encrypt(&keys().table, &values, *rows, Rounding::Nearest, rng)
            .unwrap();
        let bytes = encode_ciphertexts(&keys().pk, &enc.ciphertexts);
        let digest = sha256(&bytes);
        let message = Body::submission_message(JOB, plan.round, h, &digest);
        let (w, r) = job.submit(
            now,
            Submission {
                hospital: h,
                round: plan.round,
                bytes: &bytes,
                digest,
                signature: identity(h).sign_message(&message),
                ciphertexts: enc.ciphertexts.len() as u32,
            },
        );
        r.unwrap();
        assert_eq!(w.after_entries, Some("submission-recorded"));
        ledger.commit(job, w, now);
    }
}

/// The hospitals asked to decrypt send their shares, as their workers would.
fn decrypt(job: &mut Job, ledger: &mut Ledger, now: u64, rng: &mut ChaCha20Rng) -> Vec<String> {
    let mut asked = Vec::new();
    for (h, _) in HOSPITALS {
        if let Some(r) = send_share(job, ledger, h, now, rng) {
            r.unwrap();
            asked.push(h.to_string());
        }
    }
    asked
}

/// Hospital `h` (key share hN) sends its share if it was asked; `None` if it was not.
fn send_share(
    job: &mut Job,
    ledger: &mut Ledger,
    h: &str,
    now: u64,
    rng: &mut ChaCha20Rng,
) -> Option<Result<(), JobError>> {
    let i = HOSPITALS.iter().position(|(x, _)| *x == h).unwrap();
    let Some(Task::Decrypt {
        round,
        aggregate,
        context,
        ciphertexts,
        ..
    }) = job
        .tasks_for(h, true)
        .into_iter()
        .find(|t| matches!(t, Task::Decrypt { .. }))
    else {
        return None;
    };
    let agg_bytes = ledger.blob(&aggregate).expect("the aggregate is a blob");
    assert_eq!(
        context,
        protocol::decryption_context(JOB, round, &aggregate)
    );
    let agg = decode_ciphertexts(&keys().pk, &agg_bytes, None).unwrap();
    let agg: Vec<_> = protocol::decryption::indices(&ciphertexts, agg.len())
        .into_iter()
        .map(|j| agg[j].clone())
        .collect();
    let share = partial_decrypt(&keys().pk, &keys().shares[i], &agg, &context, rng).unwrap();
    let bytes = share.to_bytes(&keys().pk);
    let (w, r) = job.submit_share(
        now,
        ShareSubmission {
            hospital: h,
            round,
            aggregate: Some(aggregate),
            share_index: i + 1,
            ranges: &ciphertexts,
            bytes: &bytes,
            checked: None,
        },
        &ledger.credits.clone(),
    );
    ledger.commit(job, w, now);
    Some(r)
}

#[test]
fn a_whole_encrypted_job_runs_through_the_machine_and_restores_to_the_same_state() {
    whole_job(false);
}

/// The same job with its decryption spread: each hospital decrypts the ciphertexts the spread
/// gives it, and the job ends the same way.
#[test]
fn a_whole_job_with_spread_decryption_runs_and_restores_to_the_same_state() {
    whole_job(true);
}

fn whole_job(spread: bool) {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let mut ledger = Ledger::new();
    let valid = spec_with(1, spread);
    let w = Job::submission(JOB, &valid, "ada", 1, &ledger.credits).unwrap();
    assert_eq!(w.blobs, vec![valid.bytes.clone()]);
    let mut job = Job::new(JOB, valid, "ada".into(), 0, 10_000);
    ledger.commit(&mut job, w, 1);

    // Enrollment: offers go out, each hospital posts its deposit; a second enrollment with the
    // same key is its recorded enrollment again, with another key a refusal.
    assert_eq!(job.tasks_for("h1", true), vec![Task::Offer { job: JOB }]);
    assert!(job.tasks_for("h1", false).is_empty());
    for (i, (h, rows)) in HOSPITALS.iter().enumerate() {
        let req = Enrollment {
            hospital: h,
            identity: identity(h).verifier().public_key(),
            share_index: i + 1,
            declared: *rows,
            deposit: DEPOSIT,
        };
        let w = job
            .enroll(req.clone(), 2, &ledger.credits)
            .unwrap()
            .unwrap();
        ledger.commit(&mut job, w, 2);
        assert!(job
            .enroll(req.clone(), 2, &ledger.credits)
            .unwrap()
            .is_none());
        let other = Enrollment {
            identity: [9; 32],
            ..req
        };
        assert!(matches!(
            job.enroll(other, 2, &ledger.credits),
            Err(JobError::OtherIdentity { .. })
        ));
    }
    assert_eq!(
        job.answers["h2"].record, 4,
        "records 0-1 submit, then 2 per enrollment"
    );

    // All enrolled: round 0, the statistics round, opens at once.
    ledger.settle(&mut job, 3);
    assert_eq!(job.phase, JobPhase::Running);
    let plan = train_task(&job, "h3");
    assert_eq!(plan.kind, RoundKind::Statistics);
    assert_eq!(plan.total_weight, 100);
    assert_eq!(plan.contributors, job.enrolled.len() as u64);
    assert_eq!(plan.quantization, protocol::statistics_quantization(100));
    assert_eq!(
        plan,
        RoundPlan::new(
            &job.valid,
            0,
            protocol::Enrollment::of(job.enrolled.iter().map(|e| e.samples))
        ),
        "the protocol's plan"
    );

    for round in 0..=1u64 {
        submit_all(&mut job, &mut ledger, 10 + round, &mut rng);
        // A late resubmission for the round is refused, and recorded.
        let (w, r) = job.submit(
            11,
            Submission {
                hospital: "h1",
                round: round + 5,
                bytes: b"x",
                digest: sha256(b"x"),
                signature: [0; 64],
                ciphertexts: 1,
            },
        );
        assert!(matches!(r, Err(JobError::WrongRound(_))), "{r:?}");
        assert!(w.entries.is_empty());
        // All submitted: the round closes, aggregate blob first.
        let w = job.step(20, &ledger.env()).unwrap().expect("closes");
        assert_eq!(
            (w.blobs.len(), w.after_blobs),
            (1, Some("aggregate-stored"))
        );
        assert!(matches!(w.entries[0].body, Body::RoundClosed { .. }));
        ledger.commit(&mut job, w, 20);
        assert_eq!(job.closed_record, Some(ledger.records.len() as u64 - 1));
        // The two lowest key-share indices decrypt first; spread, those the spread gives
        // ciphertexts (all three once the aggregate has three or more).
        let primaries: Vec<String> = job
            .round
            .as_ref()
            .unwrap()
            .assignment()
            .into_iter()
            .map(|(h, _)| h)
            .collect();
        let count = job.round.as_ref().unwrap().ciphertexts();
        if !spread {
            assert_eq!(primaries, ["h1", "h2"]);
        } else if count >= 3 {
            assert_eq!(primaries, ["h1", "h2", "h3"]);
        }
        assert_eq!(decrypt(&mut job, &mut ledger, 21, &mut rng), primaries);
        let checkpoints = ledger.checkpoints;
        ledger.settle(&mut job, 22);
        assert_eq!(
            ledger.checkpoints,
            checkpoints + 1,
            "a checkpoint per finalized round"
        );
        // A backup share after the round was decrypted is not needed, and not recorded.
        let (w, r) = job.submit_share(
            23,
            ShareSubmission {
                hospital: "h3",
                round,
                aggregate: None,
                share_index: 3,
                ranges: &[],
                bytes: b"late",
                checked: None,
            },
            &ledger.credits.clone(),
        );
        assert!(matches!(r, Err(JobError::AlreadyDecrypted { .. })), "{r:?}");
        assert!(w.entries.is_empty());
        assert_eq!(
            job.wasted_shares, 0,
            "h3 was never asked: not work it was given"
        );
    }
    // Round 0 pooled the moments: the row-weighted mean of the hospitals' vectors.
    let expected0 = (0.01 * 40.0 + 0.02 * 25.0 + 0.03 * 35.0) / 100.0;
    assert!((job.stats[0] - expected0).abs() < 1e-4, "{:?}", job.stats);
    assert_eq!(
        job.phase,
        JobPhase::Evaluating {
            deadline_ms: 22 + 30_000
        }
    );
    let (round, _) = job.finalized.expect("round 1 finalized");
    assert_eq!(round, 1);

    // Evaluations: the wrong model and a forged signature are refused; the rest are recorded.
    let model = job.model_digest;
    assert_eq!(model, ModelDigest::of(&job.global).0);
    let report = |acc: f64| (50u64, vec![("accuracy".to_string(), acc)]);
    let sign = |h: &str, acc: f64| {
        let (rows, metrics) = report(acc);
        identity(h).sign_message(&Body::evaluation_message(JOB, 1, h, &model, rows, &metrics))
    };
    assert!(matches!(
        job.evaluate(30, "h1", 1, [3; 32], report(0.9), sign("h1", 0.9)),
        Err(JobError::OtherModel { .. })
    ));
    assert!(matches!(
        job.evaluate(30, "h1", 1, model, report(0.9), sign("h2", 0.9)),
        Err(JobError::BadEvaluationSignature(_))
    ));
    for (h, acc) in [("h1", 0.9), ("h2", 0.8), ("h3", 0.7)] {
        let w = job
            .evaluate(31, h, 1, model, report(acc), sign(h, acc))
            .unwrap()
            .unwrap();
        ledger.commit(&mut job, w, 31);
        assert!(job
            .evaluate(31, h, 1, model, report(acc), sign(h, acc))
            .unwrap()
            .is_none());
    }
    ledger.settle(&mut job, 32);
    assert_eq!(job.phase, JobPhase::Finished);
    let finished = ledger
        .records
        .iter()
        .find_map(|(_, b)| match b {
            Body::JobFinished { status, reason, .. } => Some((*status, reason.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(finished.0, JobStatus::Finished);
    assert_eq!(
        finished.1,
        "final model on 150 held-out rows: accuracy=0.800000"
    );
    // Deposits back, the escrow's rest refunded: nothing left in the job's accounts.
    for (h, _) in HOSPITALS {
        let deposit = Account::Deposit {
            job: JOB,
            hospital: h.into(),
        };
        assert_eq!(ledger.credits.balance(&deposit), 0);
    }
    assert_eq!(ledger.credits.balance(&Account::Escrow(JOB)), 0);

    // Restore: the same records fed to a fresh job give the same job.
    let again = ledger.restored_as(spec_with(1, spread));
    assert_eq!(again.phase, JobPhase::Finished);
    assert_eq!(again.model_digest, job.model_digest);
    assert_eq!(again.stats, job.stats);
    assert_eq!(again.evaluations, job.evaluations);
    assert_eq!(again.finalized, job.finalized);
    assert_eq!(again.finished_record, job.finished_record);
    assert_eq!(again.answers["h3"].record, job.answers["h3"].record);
}

#[test]
fn a_job_short_of_hospitals_fails_at_its_deadline_and_gives_the_money_back() {
    let mut ledger = Ledger::new();
    let valid = spec(2);
    let w = Job::submission(JOB, &valid, "ada", 1, &ledger.credits).unwrap();
    let mut job = Job::new(JOB, valid, "ada".into(), 0, 1_000);
    ledger.commit(&mut job, w, 1);
    let req = Enrollment {
        hospital: "h1",
        identity: identity("h1").verifier().public_key(),
        share_index: 1,
        declared: 0,
        deposit: DEPOSIT,
    };
    assert_eq!(
        job.enroll(req.clone(), 2, &ledger.credits).err(),
        Some(JobError::DeclaredSamples(0))
    );
    let rich = Enrollment {
        declared: 10,
        deposit: 1_000,
        ..req.clone()
    };
    assert!(matches!(
        job.enroll(rich, 2, &ledger.credits),
        Err(JobError::CannotDeposit { balance: 100, .. })
    ));
    let w = job
        .enroll(
            Enrollment {
                declared: 10,
                ..req
            },
            2,
            &ledger.credits,
        )
        .unwrap()
        .unwrap();
    ledger.commit(&mut job, w, 2);
    // Before the deadline nothing happens; at it, one hospital is too few.
    assert!(job.step(999, &ledger.env()).unwrap().is_none());
    let w = job.step(1_000, &ledger.env()).unwrap().expect("fails");
    assert!(w.checkpoint);
    // Until its JobFinished is on the ledger, a restored job that decided to fail says so again
    // (the service writes it after restoring); once recorded, not.
    let again = job
        .unrecorded_end(1_000, &ledger.env())
        .expect("not recorded yet");
    assert_eq!(again.entries.len(), w.entries.len());
    ledger.commit(&mut job, w, 1_000);
    assert!(job.unrecorded_end(1_000, &ledger.env()).is_none());
    // A failed job takes nothing more: no late submission, no late share.
    let (w, r) = job.submit(
        1_001,
        Submission {
            hospital: "h1",
            round: 0,
            bytes: b"x",
            digest: sha256(b"x"),
            signature: [0; 64],
            ciphertexts: 1,
        },
    );
    assert!(
        matches!(r, Err(JobError::Ended { .. })) && w.entries.is_empty(),
        "{r:?}"
    );
    let (w, r) = job.submit_share(
        1_001,
        ShareSubmission {
            hospital: "h1",
            round: 0,
            aggregate: None,
            share_index: 1,
            ranges: &[],
            bytes: b"late",
            checked: None,
        },
        &ledger.credits.clone(),
    );
    assert!(
        matches!(r, Err(JobError::Ended { .. })) && w.entries.is_empty(),
        "{r:?}"
    );
    assert_eq!(job.phase, JobPhase::Failed);
    assert!(
        job.reason.contains("only 1 hospitals enrolled"),
        "{}",
        job.reason
    );
    assert_eq!(ledger.credits.balance(&Account::Escrow(JOB)), 0);
    assert_eq!(ledger.credits.balance(&Account::Hospital("h1".into())), 100);
    assert_eq!(
        ledger.credits.balance(&Account::Researcher("ada".into())),
        1000
    );
    assert!(job.step(2_000, &ledger.env()).unwrap().is_none());
    assert!(matches!(
        Job::submission(2, &spec(2), "ada", 1, &Credits::new()),
        Err(JobError::CannotFund { .. })
    ));
}

/// `h`'s decline of `job` for `reason`, signed as its worker signs it.
fn decline<'a>(job: &Job, h: &'a str, reason: &'a str) -> Decline<'a> {
    let spec = job.valid.digest;
    Decline {
        hospital: h,
        identity: identity(h).verifier().public_key(),
        spec,
        reason,
        signature: identity(h).sign_message(&Body::decline_message(job.id, &spec, h, reason)),
    }
}

fn enroll(job: &mut Job, ledger: &mut Ledger, h: &str, share_index: usize, now: u64) {
    let req = Enrollment {
        hospital: h,
        identity: identity(h).verifier().public_key(),
        share_index,
        declared: 10,
        deposit: DEPOSIT,
    };
    let w = job.enroll(req, now, &ledger.credits).unwrap().unwrap();
    ledger.commit(job, w, now);
}

#[test]
fn a_signed_decline_is_recorded_once_and_the_job_starts_without_waiting_for_the_deadline() {
    let mut ledger = Ledger::new();
    let mut job = ledger.submitted(100_000);
    enroll(&mut job, &mut ledger, "h1", 1, 2);
    enroll(&mut job, &mut ledger, "h2", 2, 2);
    // Two of three enrolled, the third has not answered: the job waits for it.
    assert!(job.step(3, &ledger.env()).unwrap().is_none());

    // Not a decline: signed by another key, of another spec, too long.
    let why = "it runs a researcher's TorchScript module, and this hospital refuses those";
    let mut forged = decline(&job, "h3", why);
    forged.signature =
        identity("h2").sign_message(&Body::decline_message(JOB, &forged.spec, "h3", why));
    let mut other_spec = decline(&job, "h3", why);
    other_spec.spec = [9; 32];
    let long = "x".repeat(fedchain_ledger::record::MAX_DECLINE_REASON + 1);
    for (bad, said) in [
        (forged, "does not verify"),
        (other_spec, "names spec"),
        (decline(&job, "h3", &long), "bytes long"),
    ] {
        match job.decline(bad, 4) {
            Err(JobError::BadDecline(e)) => assert!(e.contains(said), "{e}"),
            other => panic!("{said}: {other:?}"),
        }
    }
    // An enrolled hospital takes part; it cannot decline.
    assert!(matches!(
        job.decline(decline(&job, "h1", why), 4),
        Err(JobError::EnrolledCannotDecline { .. })
    ));

    let w = job.decline(decline(&job, "h3", why), 4).unwrap().unwrap();
    assert!(matches!(
        &w.entries[..],
        [e] if e.actor.id == "h3" && matches!(&e.body, Body::JobDeclined { reason, .. } if reason == why)
    ));
    ledger.commit(&mut job, w, 4);
    let first = job.declined["h3"].record;
    // The same decline again (a worker that reconnects is offered the job again) is not
    // recorded again; a changed reason is, up to MAX_DECLINES.
    assert!(job.decline(decline(&job, "h3", why), 5).unwrap().is_none());
    let reasons: Vec<String> = (0..MAX_DECLINES + 2)
        .map(|i| format!("reason {i}"))
        .collect();
    let mut recorded = 1;
    for r in &reasons {
        if let Some(w) = job.decline(decline(&job, "h3", r), 5).unwrap() {
            ledger.commit(&mut job, w, 5);
            recorded += 1;
        }
    }
    assert_eq!(recorded, MAX_DECLINES);
    assert_eq!(job.declined["h3"].count, MAX_DECLINES);
    assert!(job.declined["h3"].record > first);

    // Everyone answered and two is enough: round 0 opens now, long before the deadline.
    ledger.settle(&mut job, 6);
    assert_eq!(job.phase, JobPhase::Running);
    assert_eq!(job.round_no, 0);
    // A restart rebuilds the declines from the records.
    assert_eq!(ledger.restored().declined, job.declined);
}

#[test]
fn a_job_every_other_hospital_declined_fails_at_once_naming_them() {
    let mut ledger = Ledger::new();
    let mut job = ledger.submitted(100_000);
    enroll(&mut job, &mut ledger, "h1", 1, 2);
    for (h, why) in [
        ("h2", "my data does not fit its schema"),
        ("h3", "no TorchScript"),
    ] {
        let w = job.decline(decline(&job, h, why), 3).unwrap().unwrap();
        ledger.commit(&mut job, w, 3);
    }
    ledger.settle(&mut job, 4);
    assert_eq!(job.phase, JobPhase::Failed);
    for part in [
        "only 1 hospitals enrolled",
        "h2: my data does not fit its schema",
        "h3: no TorchScript",
        "at least 2",
    ] {
        assert!(job.reason.contains(part), "{part:?} in {}", job.reason);
    }
    assert!(matches!(
        ledger.records.last(),
        Some((_, Body::CreditsMoved { .. } | Body::JobFinished { .. }))
    ));
    // Declining a job that ended is refused.
    assert!(matches!(
        job.decline(decline(&job, "h2", "later"), 5),
        Err(JobError::Ended { .. })
    ));
}

/// A three-hospital job whose round 0 just closed at `closed`, each hospital having reported
/// what a share costs it per ciphertext.
fn closed_round(ledger: &mut Ledger, costs: [u64; 3], closed: u64) -> Job {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut job = ledger.submitted(100_000);
    enroll_all(&mut job, ledger);
    for (i, (h, _)) in HOSPITALS.iter().enumerate() {
        job.report_share_cost(h, costs[i]);
    }
    ledger.settle(&mut job, 3);
    submit_all(&mut job, ledger, 10, &mut rng);
    let w = job.step(closed, &ledger.env()).unwrap().expect("closes");
    ledger.commit(&mut job, w, closed);
    job
}

fn asked(job: &Job, h: &str) -> bool {
    job.tasks_for(h, true)
        .iter()
        .any(|t| matches!(t, Task::Decrypt { .. }))
}

#[test]
fn a_backup_decrypts_only_once_a_primary_runs_past_its_work_and_a_late_share_is_counted() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut ledger = Ledger::new();
    // h1 reported 1 s per ciphertext, h2 100 ms: their budgets differ tenfold.
    let mut job = closed_round(&mut ledger, [1_000_000, 100_000, 50_000], 20);
    let ciphertexts = job.round.as_ref().unwrap().ciphertexts() as u64;
    assert!(ciphertexts > 0);
    let budget = |us: u64| SHARE_ALLOWANCE_MS + 3 * us * ciphertexts / 1000;
    assert!(asked(&job, "h1") && asked(&job, "h2") && !asked(&job, "h3"));
    // h1 answers at once; h2 is within its budget, so h3 is not asked, however long the
    // fixed 3 s of before would have been.
    send_share(&mut job, &mut ledger, "h1", 21, &mut rng)
        .unwrap()
        .unwrap();
    ledger.settle(&mut job, 20 + budget(100_000) - 1);
    assert!(!asked(&job, "h3"), "h2 still has time");
    // Past h2's budget: h3 is asked in its place.
    ledger.settle(&mut job, 20 + budget(100_000));
    assert!(asked(&job, "h3"));
    send_share(
        &mut job,
        &mut ledger,
        "h3",
        20 + budget(100_000) + 5,
        &mut rng,
    )
    .unwrap()
    .unwrap();
    ledger.settle(&mut job, 20 + budget(100_000) + 6);
    assert_eq!(job.round_no, 1, "round 0 finalized with h1 and h3");
    // h2's share, finished after all, was work for nothing: counted, not recorded.
    let (w, r) = job.submit_share(
        20 + budget(100_000) + 7,
        ShareSubmission {
            hospital: "h2",
            round: 0,
            aggregate: None,
            share_index: 2,
            ranges: &[],
            bytes: b"late",
            checked: None,
        },
        &ledger.credits.clone(),
    );
    assert!(matches!(r, Err(JobError::AlreadyDecrypted { .. })), "{r:?}");
    assert!(w.entries.is_empty());
    assert_eq!(job.wasted_shares, 1);
    // Its lateness counts: h2's cost per ciphertext is now what this share showed, so it is not
    // late again next round.
    let shown = job.share_costs.per_ciphertext_us("h2").unwrap();
    assert!(shown >= 3 * 100_000, "{shown}");
    // The same share again is not counted twice.
    let (_, r) = job.submit_share(
        20 + budget(100_000) + 8,
        ShareSubmission {
            hospital: "h2",
            round: 0,
            aggregate: None,
            share_index: 2,
            ranges: &[],
            bytes: b"late",
            checked: None,
        },
        &ledger.credits.clone(),
    );
    assert!(matches!(r, Err(JobError::AlreadyDecrypted { .. })), "{r:?}");
    assert_eq!(job.wasted_shares, 1);
    // h1's share showed nothing slower than its report; h3's took 5 ms: its report stands.
    assert_eq!(job.share_costs.per_ciphertext_us("h3"), Some(50_000));
}

#[test]
fn a_refusing_primary_is_replaced_at_once_and_unmeasured_hospitals_get_the_fixed_wait() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut ledger = Ledger::new();
    let mut job = closed_round(&mut ledger, [1_000_000; 3], 20);
    job.decryption_refused("h2", 0);
    ledger.settle(&mut job, 21);
    assert!(asked(&job, "h3"), "asked at once, not after h2's budget");
    for h in ["h1", "h3"] {
        send_share(&mut job, &mut ledger, h, 22, &mut rng)
            .unwrap()
            .unwrap();
    }
    ledger.settle(&mut job, 23);
    assert_eq!((job.round_no, job.wasted_shares), (1, 0));

    // Nobody reported a cost (an older worker, or a restarted coordinator): the fixed wait.
    let mut ledger = Ledger::new();
    let mut job = closed_round(&mut ledger, [0; 3], 20);
    ledger.settle(&mut job, 20 + BACKUP_DECRYPT_MS - 1);
    assert!(!asked(&job, "h3"));
    ledger.settle(&mut job, 20 + BACKUP_DECRYPT_MS);
    assert!(asked(&job, "h3"));
}

/// A coordinator restarted while a round decrypts keeps no share costs (they live in memory), so
/// it judged every primary by the fixed wait, which a large round outlasts: its backups then
/// decrypted for nothing. Each hospital's task stream now reports its cost when it reconnects,
/// and the restored job judges the re-asked primaries by their work again.
#[test]
fn after_a_restart_the_cost_a_reconnecting_hospital_reports_sets_its_budget_again() {
    let mut ledger = Ledger::new();
    // A second per ciphertext: far longer than the fixed wait for any round.
    let _ = closed_round(&mut ledger, [1_000_000; 3], 20);
    let back = 10_000;
    let restart = || {
        let mut job = ledger.restored();
        job.resume(back, 1_000, 1_000);
        assert!(asked(&job, "h1") && asked(&job, "h2") && !asked(&job, "h3"));
        job
    };
    // Without the reports, h3 is asked once the fixed wait has passed.
    let mut forgetful = restart();
    let _ = forgetful
        .step(back + BACKUP_DECRYPT_MS, &ledger.env())
        .unwrap();
    assert!(asked(&forgetful, "h3"));
    // With them, not before the primaries' budgets.
    let mut job = restart();
    for (h, _) in HOSPITALS {
        job.report_share_cost(h, 1_000_000);
    }
    let ciphertexts = job.round.as_ref().unwrap().ciphertexts() as u64;
    let budget = SHARE_ALLOWANCE_MS + 3 * 1_000_000 * ciphertexts / 1000;
    assert!(budget > BACKUP_DECRYPT_MS);
    let _ = job.step(back + budget - 1, &ledger.env()).unwrap();
    assert!(!asked(&job, "h3"), "the primaries still have time");
    let _ = job.step(back + budget, &ledger.env()).unwrap();
    assert!(asked(&job, "h3"));
}

/// Spread decryption over a model large enough for several ciphertexts: the first decryptor
/// refuses, its ciphertexts are asked of the others as tasks of their own (a hospital already
/// decrypting its part gets a second task of only the new ciphertexts), every share is accepted,
/// none is refused as a repeat, and the round finalizes.
#[test]
fn a_refusing_spread_decryptor_is_replaced_by_tasks_of_its_ciphertexts_only() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut ledger = Ledger::new();
    let mut s = spec_with(1, true).spec;
    s.model = Some(pb::ModelSpec {
        canonical_json: ModelSpec::Mlp {
            inputs: 3,
            hidden: vec![64],
            outputs: 1,
            dropout: 0.0,
        }
        .canonical_json(),
    });
    let mut job = enrolled_job(&mut ledger, protocol::validate(&s).unwrap());
    // Round 0 pools the statistics; round 1 has the model's ciphertexts.
    submit_all(&mut job, &mut ledger, 10, &mut rng);
    ledger.settle(&mut job, 20);
    decrypt(&mut job, &mut ledger, 21, &mut rng);
    ledger.settle(&mut job, 22);
    assert_eq!(job.round_no, 1);
    submit_all(&mut job, &mut ledger, 30, &mut rng);
    ledger.settle(&mut job, 40);
    let round = job.round.as_ref().unwrap();
    let count = round.ciphertexts();
    assert!(count >= 3, "{count} ciphertexts");
    let plan = round.assignment();
    assert_eq!(plan.len(), 3, "{plan:?}");
    job.decryption_refused("h1", 1);
    ledger.settle(&mut job, 41);
    let tasks = |job: &Job, h: &str| -> Vec<(String, Vec<[u64; 2]>)> {
        job.tasks_for(h, true)
            .into_iter()
            .filter_map(|t| match &t {
                Task::Decrypt { ciphertexts, .. } => Some((t.key(), ciphertexts.clone())),
                _ => None,
            })
            .collect()
    };
    for h in ["h2", "h3"] {
        let mine = tasks(&job, h);
        assert_eq!(mine.len(), 2, "{h}: its own part and a backup's: {mine:?}");
        assert_ne!(mine[0].0, mine[1].0, "distinct keys");
        assert!(
            !protocol::decryption::overlap(&mine[0].1, &mine[1].1),
            "{h}'s backup task repeats its own ciphertexts: {mine:?}"
        );
    }
    // Each hospital answers its tasks in turn; every share is accepted.
    for h in ["h2", "h3"] {
        while let Some(r) = send_share(&mut job, &mut ledger, h, 42, &mut rng) {
            r.unwrap();
        }
    }
    ledger.settle(&mut job, 43);
    assert!(
        job.finalized.is_some_and(|(r, _)| r == 1),
        "round 1 decrypted"
    );
    assert!(
        !ledger
            .records
            .iter()
            .any(|(_, b)| matches!(b, Body::RequestRejected { .. })),
        "no share refused"
    );
}

/// A job with differential privacy of `rounds` rounds within `epsilon` (noise multiplier 1).
fn private_spec(rounds: u32, epsilon: f64) -> fedchain_protocol::ValidJob {
    let mut s = spec(rounds).spec;
    s.privacy = Some(pb::Privacy {
        epsilon,
        delta: 1e-5,
        max_grad_norm: 1.0,
        noise_multiplier: 1.0,
        distributed: false,
    });
    protocol::validate(&s).unwrap()
}

/// Most epsilon any of the three hospitals has spent after `rounds` rounds of `valid`.
fn most_spent(valid: &fedchain_protocol::ValidJob, rounds: u64) -> f64 {
    let p = protocol::privacy::JobPrivacy::of(&valid.spec).unwrap();
    HOSPITALS
        .iter()
        .map(|(_, rows)| p.spent(&valid.spec, *rows, rounds).unwrap())
        .fold(0.0, f64::max)
}

/// A submitted job of spec `valid` with the three hospitals enrolled (their `HOSPITALS` rows)
/// and round 0 open.
fn enrolled_job(ledger: &mut Ledger, valid: fedchain_protocol::ValidJob) -> Job {
    let w = Job::submission(JOB, &valid, "ada", 1, &ledger.credits).unwrap();
    let mut job = Job::new(JOB, valid, "ada".into(), 0, 10_000);
    ledger.commit(&mut job, w, 1);
    enroll_all(&mut job, ledger);
    ledger.settle(&mut job, 3);
    job
}

/// Every hospital enrolls (key share hN, its `HOSPITALS` rows) at time 2.
fn enroll_all(job: &mut Job, ledger: &mut Ledger) {
    for (i, (h, rows)) in HOSPITALS.iter().enumerate() {
        let req = Enrollment {
            hospital: h,
            identity: identity(h).verifier().public_key(),
            share_index: i + 1,
            declared: *rows,
            deposit: DEPOSIT,
        };
        let w = job.enroll(req, 2, &ledger.credits).unwrap().unwrap();
        ledger.commit(job, w, 2);
    }
}

/// A job with differential privacy records what each round spends, with its `RoundClosed` and
/// before any share; opens no round that would take a hospital past its budget, and ends with
/// the reason on the ledger; a restored job decides the same.
#[test]
fn a_private_job_records_its_spending_and_stops_before_its_budget_runs_out() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut ledger = Ledger::new();
    // A budget between what two rounds and three rounds spend: two rounds of the ten run.
    let probe = private_spec(10, 1.0);
    let budget = (most_spent(&probe, 2) + most_spent(&probe, 3)) / 2.0;
    let valid = private_spec(10, budget);
    let mut job = enrolled_job(&mut ledger, valid.clone());
    assert_eq!(job.phase, JobPhase::Running);
    let mut spent_before = 0.0;
    for round in 0..=2u64 {
        submit_all(&mut job, &mut ledger, 10, &mut rng);
        let w = job.step(20, &ledger.env()).unwrap().expect("closes");
        assert!(matches!(w.entries[0].body, Body::RoundClosed { .. }));
        if round == 0 {
            assert_eq!(w.entries.len(), 1, "round 0 trains nothing: {w:?}");
        } else {
            let Body::PrivacySpent {
                round: r, spent, ..
            } = &w.entries[1].body
            else {
                panic!("no PrivacySpent after RoundClosed: {:?}", w.entries);
            };
            assert_eq!(*r, round);
            assert!(spent.iter().all(|s| s.noise_multiplier == 1.0), "{spent:?}");
            let names: Vec<&str> = spent.iter().map(|s| s.hospital.as_str()).collect();
            assert_eq!(names, ["h1", "h2", "h3"]);
            for s in spent {
                let rows = HOSPITALS.iter().find(|(h, _)| *h == s.hospital).unwrap().1;
                let p = protocol::privacy::JobPrivacy::of(&valid.spec).unwrap();
                assert_eq!(s.rounds, round);
                assert_eq!(s.epsilon, p.spent(&valid.spec, rows, round).unwrap());
                assert!(s.epsilon <= budget, "{} > {budget}", s.epsilon);
            }
            let most = spent.iter().map(|s| s.epsilon).fold(0.0, f64::max);
            assert!(
                most > spent_before,
                "spending grows: {most} after {spent_before}"
            );
            spent_before = most;
        }
        ledger.commit(&mut job, w, 20);
        decrypt(&mut job, &mut ledger, 21, &mut rng);
        ledger.settle(&mut job, 22);
    }
    // Round 3 would pass the budget: the job evaluates round 2's model as its last.
    assert_eq!(job.last_round(), 2);
    assert!(
        job.reason
            .starts_with("stopped by the privacy budget after round 2 of 10"),
        "{}",
        job.reason
    );
    assert_eq!(job.privacy_spent.len(), 3);
    assert_eq!(
        job.phase,
        JobPhase::Evaluating {
            deadline_ms: 22 + 30_000
        }
    );
    assert!(job
        .tasks_for("h1", true)
        .iter()
        .all(|t| !matches!(t, Task::Train { .. })));
    ledger.settle(&mut job, 22 + 30_000);
    assert_eq!(job.phase, JobPhase::Finished);
    let reason = ledger
        .records
        .iter()
        .find_map(|(_, b)| match b {
            Body::JobFinished { status, reason, .. } => {
                assert_eq!(*status, JobStatus::Finished);
                Some(reason.clone())
            }
            _ => None,
        })
        .unwrap();
    assert!(
        reason.starts_with(
            "stopped by the privacy budget after round 2 of 10: the next round would take"
        ),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("above the job's budget of {budget}")),
        "{reason}"
    );
    let again = ledger.restored_as(valid);
    assert_eq!(again.phase, JobPhase::Finished);
    assert_eq!(again.budget_stop, job.budget_stop);
    assert_eq!(again.privacy_rounds, job.privacy_rounds);
    assert_eq!(
        job.privacy_rounds.values().cloned().collect::<Vec<_>>(),
        [vec![3, 3], vec![3, 3], vec![3, 3]]
    );
}

/// A budget that not even one round fits fails the job once its hospitals enrolled, before
/// round 0 (whose pooled moments the budget does not cover), saying so.
#[test]
fn a_private_job_whose_budget_fits_no_round_fails_naming_it() {
    let mut ledger = Ledger::new();
    let probe = private_spec(3, 1.0);
    let valid = private_spec(3, most_spent(&probe, 1) / 2.0);
    let job = enrolled_job(&mut ledger, valid);
    assert_eq!(job.phase, JobPhase::Failed);
    assert!(job.tasks_for("h1", true).is_empty());
    assert!(!ledger
        .records
        .iter()
        .any(|(_, b)| matches!(b, Body::RoundClosed { .. } | Body::UpdateSubmitted { .. })));
    assert!(
        job.reason
            .starts_with("no round fits the job's privacy budget: the next round would take"),
        "{}",
        job.reason
    );
    assert!(!ledger
        .records
        .iter()
        .any(|(_, b)| matches!(b, Body::PrivacySpent { .. })));
}
