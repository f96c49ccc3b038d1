//! `fedchain audit replay` against a coordinator that lies when it records.
//!
//! A dishonest operator holds the log key, so it can write any records and sign checkpoints over
//! them; hospitals cosign checkpoints without re-deriving rounds. Such a ledger passes
//! `audit verify` (every signature and every Merkle root is right), and only replaying the rounds
//! catches the lie. Each case below rebuilds the ledger of a real demo job with one lie, signs it
//! with the log key and has every hospital cosign it, checks that `audit verify` accepts it, and
//! that `audit replay` fails and names the record.

use std::collections::BTreeSet;
use std::path::Path;

use fedchain_crypto::aggregate::aggregate;
use fedchain_crypto::djn::{decode_ciphertexts, encode_ciphertexts};
use fedchain_crypto::keys::{KeyShare, PublicKey};
use fedchain_crypto::threshold::partial_decrypt;
use fedchain_ledger::credits::Movement;
use fedchain_ledger::note::{self, NoteSigner};
use fedchain_ledger::record::{Actor, Body, Outcome, Role};
use fedchain_ledger::store::{Entry, Store, DB_DIR};
use fedchain_ledger::verify::Trust;
use fedchain_ledger::{sha256, Hash};
use fedchain_protocol::decryption;

use fedchain_tests::{fedchain, json, ok_stdout};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_signer(path: &Path) -> NoteSigner {
    NoteSigner::from_skey(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

/// Copies the ledger at `from` into `to`, passing every record through `lie`, then signs one
/// checkpoint with the log key and adds every hospital's cosignature.
fn rebuild(demo: &Path, to: &Path, lie: &mut dyn FnMut(u64, &mut Body, &Store, &Store)) {
    rebuild_inserting(demo, to, &mut |i, body, from, out| {
        lie(i, body, from, out);
        Vec::new()
    })
}

/// [`rebuild`] where `lie` may also return records to write before the one it was given.
fn rebuild_inserting(
    demo: &Path,
    to: &Path,
    lie: &mut dyn FnMut(u64, &mut Body, &Store, &Store) -> Vec<Entry>,
) {
    let from = Store::open(&demo.join("ledger"), "fedchain-log").unwrap();
    let mut out = Store::open(to, "fedchain-log").unwrap();
    for i in 0..from.len() {
        let (record, _) = from.record(i).unwrap();
        let mut body = record.body.clone();
        for digest in blobs_of(&body) {
            if let Some(bytes) = from.blob(&digest).unwrap() {
                out.put_blob(&bytes).unwrap();
            }
        }
        let inserted = lie(i, &mut body, &from, &out);
        out.append_all(inserted).unwrap();
        out.append_all(vec![Entry {
            time_ms: record.time_ms,
            actor: record.actor,
            outcome: record.outcome,
            body,
        }])
        .unwrap();
    }
    let c = demo.join("consortium");
    let log = read_signer(&c.join("coordinator/log.skey"));
    let mut cp = out.checkpoint(&log).unwrap();
    let mut known = vec![log.verifier()];
    for h in ["st-marys", "riverside", "northgate"] {
        let w = read_signer(&c.join(format!("hospitals/{h}/identity.skey")));
        known.push(w.verifier());
        cp = note::add_signatures(&cp, &[&w]).unwrap();
    }
    out.add_cosignatures(&cp, &known).unwrap();
    out.flush().unwrap();
}

fn blobs_of(body: &Body) -> Vec<Hash> {
    match body {
        Body::JobSubmitted { spec, .. } => vec![*spec],
        Body::UpdateSubmitted { ciphertexts, .. } => vec![*ciphertexts],
        Body::DecryptionShare { share, .. } => vec![*share],
        _ => Vec::new(),
    }
}

fn verify_ok(demo: &Path, ledger: &Path) {
    let report = json(&fedchain(&[
        "audit",
        "verify",
        "--ledger",
        s(ledger),
        "--trust",
        s(&demo.join("consortium/auditors/audra/trust.txt")),
        "--json",
    ]));
    assert_eq!(
        report["ok"], true,
        "the lie must be consistently signed: {report}"
    );
}

/// `audit replay --json` of `ledger` by the demo's auditor.
fn replay_json(demo: &Path, ledger: &Path) -> serde_json::Value {
    json(&fedchain(&[
        "audit",
        "replay",
        "--ledger",
        s(ledger),
        "--consortium",
        s(&demo.join("consortium/auditors/audra")),
        "--json",
    ]))
}

fn replay(demo: &Path, ledger: &Path) -> (bool, String) {
    let out = fedchain(&[
        "audit",
        "replay",
        "--ledger",
        s(ledger),
        "--consortium",
        s(&demo.join("consortium/auditors/audra")),
    ]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `ledger` is consistently signed, and its replay fails with exactly one finding: `check` at
/// record `record` of job 1's round `round`.
fn one_finding(demo: &Path, ledger: &Path, round: u64, record: u64, check: &str) {
    verify_ok(demo, ledger);
    let (ok, text) = replay(demo, ledger);
    assert!(!ok);
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    let want = format!("FAIL job 1 round {round} record {record}: {check}");
    assert!(
        fails.len() == 1 && fails[0].starts_with(&want),
        "one finding, {want:?}:\n{text}"
    );
}

#[test]
fn replay_catches_a_coordinator_that_records_lies() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    ok_stdout(&fedchain(&[
        "demo",
        "--rounds",
        "2",
        "--bits",
        "1024",
        "--device",
        "cpu",
        "--dir",
        s(&demo),
        "--json",
    ]));
    // The real ledger replays cleanly, as JSON too.
    let (ok, text) = replay(&demo, &demo.join("ledger"));
    assert!(ok, "{text}");
    assert!(text.contains("job 1 round   2:"), "{text}");
    let report = json(&fedchain(&[
        "audit",
        "replay",
        "--ledger",
        s(&demo.join("ledger")),
        "--consortium",
        s(&demo.join("consortium/auditors/audra")),
        "--json",
    ]));
    assert_eq!(report["ok"], true);
    assert_eq!(report["replay"]["rounds"].as_array().unwrap().len(), 3);
    let trust = Trust::parse(
        &std::fs::read_to_string(demo.join("consortium/auditors/audra/trust.txt")).unwrap(),
    )
    .unwrap();
    assert_eq!(trust.quorum, 2);

    // An unchanged copy is accepted: the rebuilding itself is faithful.
    let copy = tmp.path().join("copy");
    rebuild(&demo, &copy, &mut |_, _, _, _| {});
    verify_ok(&demo, &copy);
    assert!(replay(&demo, &copy).0);

    // 1. A model digest the shares do not produce.
    let lied = tmp.path().join("model");
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, _, _| {
        if let Body::RoundFinalized {
            round: 2,
            model_after,
            ..
        } = body
        {
            model_after[0] ^= 1;
            at = Some(i);
        }
    });
    verify_ok(&demo, &lied);
    let (ok, text) = replay(&demo, &lied);
    assert!(!ok);
    let at = at.unwrap();
    assert!(
        text.contains(&format!("round 2 record {at}: model after the round")),
        "{text}"
    );

    // 1b. The same lie one round earlier is reported once, where it is. If only the record lied,
    //     round 2 starts from the re-derived model and is checked in full; if the coordinator went
    //     on from the model it recorded, round 2 is checked except its model, which the replay
    //     cannot reproduce and says so, instead of reporting the same fault again.
    for went_on_from_the_lie in [false, true] {
        let lied = tmp.path().join(format!("model-1-{went_on_from_the_lie}"));
        let mut at = None;
        let mut flipped = None;
        rebuild(&demo, &lied, &mut |i, body, _, _| match body {
            Body::RoundFinalized {
                round: 1,
                model_after,
                ..
            } => {
                model_after[0] ^= 1;
                flipped = Some(*model_after);
                at = Some(i);
            }
            Body::RoundFinalized {
                round: 2,
                model_before,
                ..
            } if went_on_from_the_lie => *model_before = flipped.unwrap(),
            _ => {}
        });
        let (ok, text) = replay(&demo, &lied);
        assert!(!ok);
        let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
        let want = format!(
            "FAIL job 1 round 1 record {}: model after the round",
            at.unwrap()
        );
        assert!(
            fails.len() == 1 && fails[0].starts_with(&want),
            "one finding, {want:?}:\n{text}"
        );
        let round2 = text.lines().find(|l| l.contains("round   2:")).unwrap();
        assert!(
            round2.contains("3 signatures") && round2.contains("aggregate matches"),
            "{text}"
        );
        let model = if went_on_from_the_lie {
            "model not re-derived"
        } else {
            "model matches"
        };
        assert!(round2.contains(model), "{model}:\n{text}");
    }

    // 2. A reward the policy does not prescribe (still a movement the balances allow).
    let lied = tmp.path().join("credit");
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, _, _| {
        if let Body::CreditsMoved {
            movement: Movement::Reward {
                round: 1, amount, ..
            },
        } = body
        {
            if at.is_none() {
                *amount -= 1;
                at = Some(i);
            }
        }
    });
    verify_ok(&demo, &lied);
    let (ok, text) = replay(&demo, &lied);
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "record {}: credit movement prescribed by the policy",
            at.unwrap()
        )),
        "{text}"
    );

    // 2b. The end of the job: instead of the escrow's rest refunded to its researcher, a reward
    //     for a round that never was (a movement the balances allow).
    let lied = tmp.path().join("refund");
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, _, _| {
        if let Body::CreditsMoved {
            movement: Movement::Refund { job, .. },
        } = body
        {
            let job = *job;
            *body = Body::CreditsMoved {
                movement: Movement::Reward {
                    job,
                    round: 99,
                    hospital: "northgate".into(),
                    amount: 1,
                },
            };
            at = Some(i);
        }
    });
    verify_ok(&demo, &lied);
    let (ok, text) = replay(&demo, &lied);
    assert!(!ok);
    let fails: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        fails.len() == 1
            && fails[0].contains(&format!(
                "record {}: credit movement prescribed by the policy",
                at.unwrap()
            )),
        "{text}"
    );

    // 2c. A job the coordinator ended, recorded as cancelled: only its researcher cancels a job.
    let lied = tmp.path().join("cancelled");
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, _, _| {
        if let Body::JobFinished { status, .. } = body {
            *status = fedchain_ledger::record::JobStatus::Cancelled;
            at = Some(i);
        }
    });
    verify_ok(&demo, &lied);
    let (ok, text) = replay(&demo, &lied);
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "record {}: a job is cancelled by the researcher who submitted it",
            at.unwrap()
        )),
        "{text}"
    );

    // 3. An aggregate that is not the product of the submissions: the record names another
    //    hospital's ciphertexts.
    let lied = tmp.path().join("aggregate");
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, from, _| {
        if let Body::RoundClosed {
            round: 1,
            aggregate,
            ..
        } = body
        {
            // The digest of some other ciphertext vector in the ledger.
            let other = (0..from.len())
                .find_map(|k| match from.record(k).unwrap().0.body {
                    Body::UpdateSubmitted {
                        round: 1,
                        ciphertexts,
                        ..
                    } => Some(ciphertexts),
                    _ => None,
                })
                .unwrap();
            *aggregate = other;
            at = Some(i);
        }
    });
    verify_ok(&demo, &lied);
    let (ok, text) = replay(&demo, &lied);
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "record {}: aggregate re-multiplied from the submissions",
            at.unwrap()
        )),
        "{text}"
    );

    // 4. A decryption share recorded as verified that does not decrypt this aggregate: the share
    //    of the previous round.
    let lied = tmp.path().join("share");
    let mut previous: Option<Hash> = None;
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, _, _| {
        if let Body::DecryptionShare { round, share, .. } = body {
            if *round == 1 && previous.is_none() {
                previous = Some(*share);
            } else if *round == 2 && at.is_none() {
                *share = previous.unwrap();
                at = Some(i);
            }
        }
    });
    verify_ok(&demo, &lied);
    let (ok, text) = replay(&demo, &lied);
    assert!(!ok);
    assert!(
        text.contains(&format!("record {}: decryption share", at.unwrap())),
        "{text}"
    );

    // 4b. Spread decryption: each share names the ciphertexts it decrypts. A share recorded as
    //     decrypting another hospital's ciphertexts does not verify on them.
    let lied = tmp.path().join("ranges");
    let mut first: Option<Vec<[u64; 2]>> = None;
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, _, _| {
        if let Body::DecryptionShare {
            round: 2,
            ciphertexts,
            ..
        } = body
        {
            assert!(!ciphertexts.is_empty(), "the demo's job spreads decryption");
            match &first {
                None => first = Some(ciphertexts.clone()),
                Some(other) if at.is_none() && other != ciphertexts => {
                    *ciphertexts = other.clone();
                    at = Some(i);
                }
                _ => {}
            }
        }
    });
    verify_ok(&demo, &lied);
    let (ok, text) = replay(&demo, &lied);
    assert!(!ok);
    assert!(
        text.contains(&format!("record {}: decryption share", at.unwrap())),
        "{text}"
    );

    // 4c. A share nobody needed: every ciphertext of round 2 already has its t valid shares when
    //     a hospital's proper share of the ciphertexts it did not decrypt is recorded before the
    //     round's finalization (and so paid as if it were needed).
    let lied = tmp.path().join("unneeded");
    let c = demo.join("consortium");
    let pk = PublicKey::load(&c.join("coordinator/public.key")).unwrap();
    let (mut updates, mut first, mut at) = (Vec::new(), None, None);
    rebuild_inserting(&demo, &lied, &mut |i, body, from, out| match body {
        Body::UpdateSubmitted {
            round: 2,
            ciphertexts,
            ..
        } => {
            let bytes = out.blob(ciphertexts).unwrap().unwrap();
            updates.push(decode_ciphertexts(&pk, &bytes, None).unwrap());
            Vec::new()
        }
        Body::DecryptionShare {
            round: 2,
            hospital,
            ciphertexts,
            ..
        } if first.is_none() => {
            first = Some((hospital.clone(), ciphertexts.clone()));
            Vec::new()
        }
        Body::RoundFinalized { job, round: 2, .. } => {
            let (hospital, mine) = first.clone().unwrap();
            let agg = aggregate(&pk, &updates).unwrap();
            let rest: BTreeSet<u64> = (0..agg.len() as u64)
                .filter(|j| !decryption::index_set(&mine, agg.len()).contains(j))
                .collect();
            assert!(!rest.is_empty(), "{hospital} decrypted only its part");
            let ranges = decryption::ranges_of(&rest);
            let cts: Vec<_> = rest.iter().map(|&j| agg[j as usize].clone()).collect();
            let digest = sha256(&encode_ciphertexts(&pk, &agg));
            let context = decryption::decryption_context(*job, 2, &digest);
            let key = KeyShare::load(&c.join(format!("hospitals/{hospital}/share.key"))).unwrap();
            let share = partial_decrypt(&pk, &key, &cts, &context, &mut rand::rng())
                .unwrap()
                .to_bytes(&pk);
            at = Some(i);
            vec![Entry {
                time_ms: from.record(i).unwrap().0.time_ms,
                actor: Actor {
                    id: hospital.clone(),
                    role: Role::Hospital,
                },
                outcome: Outcome::Success,
                body: Body::DecryptionShare {
                    job: *job,
                    round: 2,
                    hospital,
                    share: out.put_blob(&share).unwrap(),
                    verified: true,
                    ciphertexts: ranges,
                },
            }]
        }
        _ => Vec::new(),
    });
    // The inserted record took the finalization's place; the share itself verifies.
    one_finding(
        &demo,
        &lied,
        2,
        at.unwrap(),
        "decryption shares stop once every ciphertext has t valid shares",
    );

    // 5. A recorded ciphertext vector altered in place, the record untouched: the blob no longer
    //    hashes to the digest its record (and the hospital's signature) names.
    let altered = tmp.path().join("altered");
    rebuild(&demo, &altered, &mut |_, _, _, _| {});
    let (victim, store) = {
        let store = Store::open(&altered, "fedchain-log").unwrap();
        let victim = (0..store.len())
            .find_map(|i| match store.record(i).unwrap().0.body {
                Body::UpdateSubmitted { ciphertexts, .. } => Some(ciphertexts),
                _ => None,
            })
            .unwrap();
        (victim, store)
    };
    drop(store);
    {
        let db = fedchain_ledger::store::open_db(&altered.join(DB_DIR)).unwrap();
        let blobs = db.open_tree("blobs").unwrap();
        let mut bytes = blobs.get(victim).unwrap().unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        blobs.insert(victim, bytes).unwrap();
        db.flush().unwrap();
    }
    let (ok, text) = replay(&demo, &altered);
    assert!(!ok);
    let name: String = victim.iter().map(|b| format!("{b:02x}")).collect();
    assert!(text.contains(&name), "{text}");
    // The rounds after it are replayed in their own right, not reported as out of sequence.
    assert!(!text.contains("contiguous rounds"), "{text}");
    for round in ["round   1:", "round   2:"] {
        let line = text.lines().find(|l| l.contains(round)).unwrap();
        assert!(line.contains("model matches"), "{text}");
    }

    // 6. A hospital's ciphertext vector swapped for another valid one, record and checkpoint
    //    consistently re-signed by the log: the hospital's signature names the original.
    let swapped = tmp.path().join("swapped");
    let mut at = None;
    rebuild(&demo, &swapped, &mut |i, body, _, out| {
        if let Body::UpdateSubmitted {
            round: 2,
            ciphertexts,
            ..
        } = body
        {
            if at.is_none() {
                let mut bytes = out.blob(ciphertexts).unwrap().unwrap();
                bytes.reverse();
                *ciphertexts = out.put_blob(&bytes).unwrap();
                at = Some(i);
            }
        }
    });
    let (ok, text) = replay(&demo, &swapped);
    assert!(!ok);
    assert!(
        text.contains(&format!("record {}:", at.unwrap())) && text.contains("signature"),
        "{text}"
    );
    // 7. A final summary better than the hospitals' signed evaluations make it.
    let lied = tmp.path().join("summary");
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, _, _| {
        if let Body::JobFinished { reason, .. } = body {
            *reason = "final model on 114 held-out rows: accuracy=1.000000 loss=0.000001".into();
            at = Some(i);
        }
    });
    verify_ok(&demo, &lied);
    let (ok, text) = replay(&demo, &lied);
    assert!(!ok);
    assert!(
        text.contains(&format!(
            "record {}: final summary recomputed from the hospitals' signed evaluations",
            at.unwrap()
        )),
        "{text}"
    );

    // 8. An evaluation of some other model, properly signed by its hospital: the hospitals
    //    evaluated a model that is neither the recorded nor the re-derived one.
    let lied = tmp.path().join("evaluation");
    let hospitals = demo.join("consortium/hospitals");
    let mut at = None;
    rebuild(&demo, &lied, &mut |i, body, _, _| {
        if let Body::ModelEvaluated {
            job,
            round: 1,
            hospital,
            model,
            rows,
            metrics,
            signature,
        } = body
        {
            if at.is_none() {
                model[0] ^= 1;
                let key = read_signer(&hospitals.join(format!("{hospital}/identity.skey")));
                *signature = key.sign_message(&Body::evaluation_message(
                    *job, 1, hospital, model, *rows, metrics,
                ));
                at = Some(i);
            }
        }
    });
    one_finding(
        &demo,
        &lied,
        1,
        at.unwrap(),
        "evaluated model is the round's model",
    );
}

/// A demo job with differential privacy (local noise): the ledger records what each round spends, `privacy
/// report` shows it, the replay recomputes it, and catches an edited figure and a missing record,
/// even consistently re-signed.
#[test]
fn replay_recomputes_the_privacy_each_round_spends() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let summary = json(&fedchain(&[
        "demo",
        "--rounds",
        "2",
        "--epsilon",
        "8",
        "--local-noise",
        "--bits",
        "1024",
        "--device",
        "cpu",
        "--dir",
        s(&demo),
        "--json",
    ]));
    assert_eq!(summary["rounds"].as_array().unwrap().len(), 2, "{summary}");
    let auditor = demo.join("consortium/auditors/audra");
    let report = json(&fedchain(&[
        "privacy",
        "report",
        "--ledger",
        s(&demo.join("ledger")),
        "--consortium",
        s(&auditor),
        "--json",
    ]));
    let spending = report["spending"].as_array().unwrap();
    assert_eq!(spending.len(), 3, "{report}");
    for h in spending {
        let (epsilon, left) = (h["epsilon"].as_f64().unwrap(), h["left"].as_f64().unwrap());
        assert_eq!(h["rounds"], 2, "{h}");
        assert_eq!(h["budget"], 8.0, "{h}");
        assert!(epsilon > 0.5 && epsilon <= 8.0, "{h}");
        assert!((left - (8.0 - epsilon)).abs() < 1e-9, "{h}");
    }
    let text = ok_stdout(&fedchain(&[
        "privacy",
        "report",
        "--ledger",
        s(&demo.join("ledger")),
        "--consortium",
        s(&auditor),
    ]));
    assert!(
        text.contains("st-marys") && text.contains("budget"),
        "{text}"
    );
    let replayed = replay_json(&demo, &demo.join("ledger"));
    assert_eq!(replayed["ok"], true, "{replayed}");
    assert_eq!(replayed["replay"]["privacy_checked"], 6, "{replayed}");

    // A lower figure for one hospital in round 2, re-signed by the log and cosigned.
    let edited = tmp.path().join("edited");
    rebuild(&demo, &edited, &mut |_, body, _, _| {
        if let Body::PrivacySpent {
            round: 2, spent, ..
        } = body
        {
            spent[0].epsilon /= 2.0;
        }
    });
    verify_ok(&demo, &edited);
    let (ok, text) = replay(&demo, &edited);
    assert!(!ok, "{text}");
    assert!(text.contains("privacy spent by "), "{text}");
    assert!(text.contains("recomputed"), "{text}");

    // Round 1's record left out (another record in its place): its shares came without it.
    let missing = tmp.path().join("missing");
    rebuild(&demo, &missing, &mut |_, body, _, _| {
        if matches!(body, Body::PrivacySpent { round: 1, .. }) {
            *body = Body::RequestRejected {
                request: "nothing".into(),
                reason: "in place of the round's privacy record".into(),
            };
        }
    });
    verify_ok(&demo, &missing);
    let (ok, text) = replay(&demo, &missing);
    assert!(!ok, "{text}");
    assert!(
        text.contains("privacy spent recorded before the round is decrypted"),
        "{text}"
    );
}

/// One noise multiplier for every hospital, and a budget that two rounds fit and three do not:
/// the job stops after round 2 of 4, says so in its summary, releases round 2's model, and
/// replays cleanly; the same ledger with another summary, re-signed, does not.
#[test]
fn a_job_its_privacy_budget_stops_early_replays_and_its_stop_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let demo = |dir: &Path, rounds: &str, epsilon: &str| {
        json(&fedchain(&[
            "demo",
            "--rounds",
            rounds,
            "--epsilon",
            epsilon,
            "--noise-multiplier",
            "1.0",
            "--local-noise",
            "--bits",
            "1024",
            "--device",
            "cpu",
            "--dir",
            s(dir),
            "--json",
        ]))
    };
    // What two rounds spend at this noise, for the hospital that spends the most.
    let probe = demo(&tmp.path().join("probe"), "2", "100");
    let two = probe["privacy_spent"]
        .as_object()
        .unwrap()
        .values()
        .map(|e| e.as_f64().unwrap())
        .fold(0.0, f64::max);
    let budget = format!("{}", two * 1.01);
    let stopped = tmp.path().join("stopped");
    let summary = demo(&stopped, "4", &budget);
    assert_eq!(summary["rounds"].as_array().unwrap().len(), 2, "{summary}");
    let replayed = replay_json(&stopped, &stopped.join("ledger"));
    assert_eq!(replayed["ok"], true, "{replayed}");
    let store = Store::open(&stopped.join("ledger"), "fedchain-log").unwrap();
    let reason = (0..store.len())
        .find_map(|i| match store.record(i).unwrap().0.body {
            Body::JobFinished { reason, .. } => Some(reason),
            _ => None,
        })
        .unwrap();
    drop(store);
    assert!(
        reason.starts_with("stopped by the privacy budget after round 2 of 4: the next round"),
        "{reason}"
    );
    // A summary that hides the stop.
    let hidden = tmp.path().join("hidden");
    rebuild(&stopped, &hidden, &mut |_, body, _, _| {
        if let Body::JobFinished { reason, .. } = body {
            *reason = reason.split("; ").last().unwrap().to_string();
        }
    });
    verify_ok(&stopped, &hidden);
    let (ok, text) = replay(&stopped, &hidden);
    assert!(!ok, "{text}");
    assert!(text.contains("final summary recomputed"), "{text}");
}

/// Distributed noise (`demo --epsilon`'s default): each round is accounted for its actual participants (all three, so each
/// aggregate carries 3/2 of the noise `--epsilon` needs at the job's `min_participants` of 2),
/// the model learns through the noised encrypted sums, the replay agrees, and it catches a
/// record that accounts a round for two participants when three took part, consistently
/// re-signed.
#[test]
fn distributed_noise_is_accounted_for_the_actual_participants() {
    use fedchain_protocol::accountant::{epsilon_of, noise_multiplier_for};
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("demo");
    let summary = json(&fedchain(&[
        "demo",
        "--rounds",
        "3",
        "--epsilon",
        "8",
        "--bits",
        "1024",
        "--device",
        "cpu",
        "--dir",
        s(&demo),
        "--json",
    ]));
    assert_eq!(summary["rounds"].as_array().unwrap().len(), 3, "{summary}");
    // Above the majority class's 63 %: the noised sums decode to a useful step.
    let accuracy = summary["final_metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "{summary}");
    let sigma = noise_multiplier_for(1.0, 3, 8.0, 1e-5).unwrap();
    let actual = epsilon_of(1.0, sigma * 1.5f64.sqrt(), 3, 1e-5).unwrap();
    let worst = epsilon_of(1.0, sigma, 3, 1e-5).unwrap();
    let spent = summary["privacy_spent"].as_object().unwrap();
    assert_eq!(spent.len(), 3, "{summary}");
    for e in spent.values() {
        let e = e.as_f64().unwrap();
        assert!((e - actual).abs() < 1e-9 * actual, "{e} vs {actual}");
    }
    assert!(actual < 0.9 * worst, "{actual} {worst}");
    let replayed = replay_json(&demo, &demo.join("ledger"));
    assert_eq!(replayed["ok"], true, "{replayed}");
    assert_eq!(replayed["replay"]["privacy_checked"], 9, "{replayed}");

    // Round 3 recorded as if two had taken part: more than was spent, and still wrong.
    let two = epsilon_of(1.0, sigma * 1.5f64.sqrt(), 2, 1e-5).unwrap();
    let mut rdp = fedchain_protocol::accountant::Rdp::new();
    rdp.compose_sampled_gaussian(1.0, sigma * 1.5f64.sqrt(), 2)
        .unwrap();
    rdp.compose_sampled_gaussian(1.0, sigma, 1).unwrap();
    let as_if_two = rdp.epsilon(1e-5).unwrap().0;
    assert!(as_if_two > actual && two < actual);
    let edited = tmp.path().join("edited");
    rebuild(&demo, &edited, &mut |_, body, _, _| {
        if let Body::PrivacySpent {
            round: 3, spent, ..
        } = body
        {
            spent[1].epsilon = as_if_two;
        }
    });
    verify_ok(&demo, &edited);
    let (ok, text) = replay(&demo, &edited);
    assert!(!ok, "{text}");
    assert!(
        text.contains("privacy spent by ") && text.contains("recomputed"),
        "{text}"
    );
}
