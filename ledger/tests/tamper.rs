//! Tampering with a stored ledger — a changed byte in any record, a deleted or reordered record, a
//! swapped blob, an altered checkpoint, a forged double reward — must make the offline verifier
//! fail and name what it found; the untouched ledger must verify.
//!
//! The attacker here has write access to the database (sled's API), which is the realistic threat:
//! an operator editing its own store.

use ed25519_dalek::{Signer, SigningKey};
use fedchain_ledger::credits::{Account, Movement};
use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::record::{Actor, Body, Outcome, Role};
use fedchain_ledger::store::{Entry, Store, DB_DIR};
use fedchain_ledger::verify::{verify, Report, Trust};
use fedchain_ledger::{sha256, Hash};
use std::path::Path;

const ORIGIN: &str = "fedchain.test/log";

fn signer() -> NoteSigner {
    NoteSigner::new("fedchain.test", [3u8; 32]).unwrap()
}

fn witness(i: u8) -> NoteSigner {
    NoteSigner::new(&format!("hospital-{i}"), [40 + i; 32]).unwrap()
}

fn trust() -> Trust {
    Trust {
        log: signer().verifier(),
        witnesses: (0..3).map(|i| witness(i).verifier()).collect(),
        quorum: 2,
        anchors: Vec::new(),
    }
}

fn known() -> Vec<fedchain_ledger::note::NoteVerifier> {
    std::iter::once(signer().verifier())
        .chain((0..3).map(|i| witness(i).verifier()))
        .collect()
}

fn entry(actor: &str, role: Role, body: Body) -> Entry {
    Entry {
        time_ms: 1_700_000_000_000,
        actor: Actor {
            id: actor.into(),
            role,
        },
        outcome: Outcome::Success,
        body,
    }
}

fn credit(movement: Movement) -> Entry {
    entry(
        "coordinator",
        Role::Coordinator,
        Body::CreditsMoved { movement },
    )
}

/// A ledger with one job, three hospitals, two rounds, blobs, and cosigned checkpoints.
fn build(dir: &Path) -> Vec<Hash> {
    let mut store = Store::open(dir, ORIGIN).unwrap();
    // A hospital's identity key (submissions) is its witness key (cosignatures).
    let keys: Vec<SigningKey> = (0..3)
        .map(|i| SigningKey::from_bytes(&[40 + i; 32]))
        .collect();
    let names: Vec<String> = (0..3).map(|i| format!("hospital-{i}")).collect();
    let spec = store.put_blob(b"job spec").unwrap();
    let mut setup = vec![
        credit(Movement::Mint {
            to: Account::Researcher("ada".into()),
            amount: 1000,
        }),
        credit(Movement::Fund {
            job: 1,
            researcher: "ada".into(),
            amount: 600,
        }),
        entry(
            "ada",
            Role::Researcher,
            Body::JobSubmitted {
                job: 1,
                spec,
                researcher: "ada".into(),
                budget: 600,
            },
        ),
    ];
    for (n, k) in names.iter().zip(&keys) {
        setup.push(credit(Movement::Mint {
            to: Account::Hospital(n.clone()),
            amount: 50,
        }));
        setup.push(credit(Movement::PostDeposit {
            job: 1,
            hospital: n.clone(),
            amount: 50,
        }));
        setup.push(entry(
            n,
            Role::Hospital,
            Body::HospitalEnrolled {
                job: 1,
                hospital: n.clone(),
                identity_key: k.verifying_key().to_bytes(),
                samples: 100,
                deposit: 50,
            },
        ));
    }
    store.append_all(setup).unwrap();
    cosign(&mut store);
    let mut blobs = vec![spec];
    for round in 1..=2u64 {
        let mut entries = Vec::new();
        for (n, k) in names.iter().zip(&keys) {
            let digest = store
                .put_blob(format!("ciphertexts {round} {n}").as_bytes())
                .unwrap();
            blobs.push(digest);
            let sig = k.sign(&Body::submission_message(1, round, n, &digest));
            entries.push(entry(
                n,
                Role::Hospital,
                Body::UpdateSubmitted {
                    job: 1,
                    round,
                    hospital: n.clone(),
                    ciphertexts: digest,
                    signature: sig.to_bytes(),
                },
            ));
        }
        for n in &names {
            entries.push(credit(Movement::Reward {
                job: 1,
                round,
                hospital: n.clone(),
                amount: 10,
            }));
        }
        store.append_all(entries).unwrap();
        cosign(&mut store);
    }
    blobs
}

fn cosign(store: &mut Store) {
    let mut note = store.checkpoint(&signer()).unwrap();
    for i in 0..2 {
        note = fedchain_ledger::note::add_signatures(&note, &[&witness(i)]).unwrap();
    }
    store.add_cosignatures(&note, &known()).unwrap();
}

fn check(dir: &Path) -> Report {
    verify(dir, Some(&trust())).unwrap()
}

fn with_db<T>(dir: &Path, f: impl FnOnce(&sled::Db) -> T) -> T {
    let db = fedchain_ledger::store::open_db(&dir.join(DB_DIR)).unwrap();
    let out = f(&db);
    db.flush().unwrap();
    out
}

fn assert_fails(report: &Report, needle: &str) {
    assert!(!report.ok(), "tampering went unnoticed");
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.problem.contains(needle) || f.object == needle),
        "no finding mentions '{needle}': {:?}",
        report.findings
    );
}

#[test]
fn a_clean_ledger_verifies() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let r = check(dir.path());
    assert!(r.ok(), "{:?}", r.findings);
    assert_eq!(r.checkpoints, 3);
    assert_eq!(r.checkpointed_size, r.records);
    assert!(r.signatures_checked);
}

#[test]
fn any_flipped_byte_of_any_record_is_found() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let records: Vec<(sled::IVec, sled::IVec)> = with_db(dir.path(), |db| {
        db.open_tree("records")
            .unwrap()
            .iter()
            .map(|r| r.unwrap())
            .collect()
    });
    let mut tried = 0;
    for (key, value) in &records {
        // Every byte position would take minutes (a database open per try); a stride that
        // lands on every field of every record, plus the first and last byte, covers each kind.
        let positions: Vec<usize> = (0..value.len())
            .step_by(23)
            .chain([value.len() - 1])
            .collect();
        for pos in positions {
            let mut bad = value.to_vec();
            bad[pos] ^= 0x01;
            with_db(dir.path(), |db| {
                db.open_tree("records").unwrap().insert(key, bad).unwrap()
            });
            let r = check(dir.path());
            let index = u64::from_be_bytes(key.as_ref().try_into().unwrap());
            assert!(!r.ok(), "flip of record {index} byte {pos} unnoticed");
            tried += 1;
            with_db(dir.path(), |db| {
                db.open_tree("records").unwrap().insert(key, value).unwrap()
            });
        }
    }
    assert!(tried > 50);
    assert!(
        check(dir.path()).ok(),
        "restoring must make it verify again"
    );
}

#[test]
fn deleted_and_reordered_records_are_found() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let (k3, v3, k4, v4) = with_db(dir.path(), |db| {
        let t = db.open_tree("records").unwrap();
        let k3 = 3u64.to_be_bytes();
        let k4 = 4u64.to_be_bytes();
        (
            k3,
            t.get(k3).unwrap().unwrap(),
            k4,
            t.get(k4).unwrap().unwrap(),
        )
    });
    // Reorder two records.
    with_db(dir.path(), |db| {
        let t = db.open_tree("records").unwrap();
        t.insert(k3, &v4).unwrap();
        t.insert(k4, &v3).unwrap();
    });
    let r = check(dir.path());
    assert_fails(&r, "reordered");
    assert!(
        r.findings.iter().any(|f| f.record == Some(3)),
        "{:?}",
        r.findings
    );
    // Delete one.
    with_db(dir.path(), |db| {
        let t = db.open_tree("records").unwrap();
        t.insert(k3, &v3).unwrap();
        t.remove(k4).unwrap();
    });
    assert_fails(&check(dir.path()), "record 4 is missing");
    // Delete the last ones: checkpoints now cover records that are gone.
    with_db(dir.path(), |db| {
        let t = db.open_tree("records").unwrap();
        t.insert(k4, &v4).unwrap();
        let last = t.iter().keys().last().unwrap().unwrap();
        t.remove(last).unwrap();
    });
    assert_fails(&check(dir.path()), "records exist");
}

#[test]
fn swapped_or_altered_blobs_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = build(dir.path());
    with_db(dir.path(), |db| {
        let t = db.open_tree("blobs").unwrap();
        let a = t.get(blobs[1]).unwrap().unwrap();
        let b = t.get(blobs[2]).unwrap().unwrap();
        t.insert(blobs[1], b).unwrap();
        t.insert(blobs[2], a).unwrap();
    });
    assert_fails(&check(dir.path()), "swapped");
    let _ = sha256(b"");
}

#[test]
fn altered_checkpoints_and_missing_cosignatures_are_found() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let (key, note) = with_db(dir.path(), |db| {
        let (k, v) = db
            .open_tree("checkpoints")
            .unwrap()
            .iter()
            .last()
            .unwrap()
            .unwrap();
        (k, String::from_utf8(v.to_vec()).unwrap())
    });
    // A different root in the signed text: the log's signature breaks.
    let lines: Vec<&str> = note.lines().collect();
    let mut forged = note.replacen(lines[2], &lines[2].replace('A', "B"), 1);
    if forged == note {
        forged = note.replacen(lines[1], "999", 1);
    }
    with_db(dir.path(), |db| {
        db.open_tree("checkpoints")
            .unwrap()
            .insert(&key, forged.as_bytes())
            .unwrap()
    });
    assert_fails(&check(dir.path()), "checkpoint");
    // Only the log's signature, no cosignatures: below quorum.
    let bare = {
        let signed = fedchain_ledger::note::parse(&note).unwrap();
        fedchain_ledger::note::sign(&signed.text, &[&signer()]).unwrap()
    };
    with_db(dir.path(), |db| {
        db.open_tree("checkpoints")
            .unwrap()
            .insert(&key, bare.as_bytes())
            .unwrap()
    });
    assert_fails(&check(dir.path()), "checkpoint");
}

/// A checkpoint superseded before its witnesses answered (the coordinator restarted right after
/// signing it) is reported but passes: the newest checkpoint's quorum covers its records. A
/// forged cosignature on it still fails, and so does a newest checkpoint without its quorum.
#[test]
fn only_the_newest_checkpoint_needs_its_quorum() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let (first_key, first) = with_db(dir.path(), |db| {
        let (k, v) = db
            .open_tree("checkpoints")
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .unwrap();
        (k, String::from_utf8(v.to_vec()).unwrap())
    });
    let signed = fedchain_ledger::note::parse(&first).unwrap();
    let bare = fedchain_ledger::note::sign(&signed.text, &[&signer()]).unwrap();
    let put = |note: &str| {
        with_db(dir.path(), |db| {
            db.open_tree("checkpoints")
                .unwrap()
                .insert(&first_key, note.as_bytes())
                .unwrap()
        })
    };
    put(&bare);
    let r = check(dir.path());
    assert!(r.ok(), "{:?}", r.findings);
    assert_eq!(r.superseded_uncosigned.len(), 1, "{r:?}");
    assert!(r.superseded_uncosigned[0]
        .1
        .contains("cosigned by 0 of 3 witnesses, 2 required"));

    // A cosignature that does not verify is still a finding on an older checkpoint: hospital-0's
    // cosignature of the newest checkpoint, pasted under the first.
    let newest = with_db(dir.path(), |db| {
        let (_, v) = db
            .open_tree("checkpoints")
            .unwrap()
            .last()
            .unwrap()
            .unwrap();
        String::from_utf8(v.to_vec()).unwrap()
    });
    let line = newest
        .lines()
        .find(|l| l.starts_with("\u{2014} hospital-0 "))
        .expect("hospital-0 cosigned the newest checkpoint");
    put(&format!("{bare}{line}\n"));
    assert_fails(&check(dir.path()), "checkpoint");
}

#[test]
fn double_rewards_are_refused_on_write_and_found_on_verify() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let mut store = Store::open(dir.path(), ORIGIN).unwrap();
    let before = store.len();
    let twice = credit(Movement::Reward {
        job: 1,
        round: 2,
        hospital: "hospital-0".into(),
        amount: 10,
    });
    assert!(store.append(twice.clone()).is_err());
    assert_eq!(store.len(), before, "a refused movement writes nothing");
    // Overdraft: more than the escrow holds.
    assert!(store
        .append(credit(Movement::Reward {
            job: 1,
            round: 3,
            hospital: "hospital-0".into(),
            amount: 1_000_000,
        }))
        .is_err());
    drop(store);

    // An operator writing the double reward straight into the database is caught by the verifier.
    let record = fedchain_ledger::record::Record::new(
        before,
        twice.time_ms,
        twice.actor,
        twice.outcome,
        twice.body,
    );
    with_db(dir.path(), |db| {
        db.open_tree("records")
            .unwrap()
            .insert(before.to_be_bytes(), record.encode().unwrap())
            .unwrap()
    });
    assert_fails(&check(dir.path()), "credits");
    // And the store refuses to open it for writing.
    assert!(Store::open(dir.path(), ORIGIN).is_err());
}

#[test]
fn forged_submission_signatures_are_found() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let mut store = Store::open(dir.path(), ORIGIN).unwrap();
    let wrong_key = SigningKey::from_bytes(&[99; 32]);
    let digest = [5u8; 32];
    store
        .append(entry(
            "hospital-1",
            Role::Hospital,
            Body::UpdateSubmitted {
                job: 1,
                round: 3,
                hospital: "hospital-1".into(),
                ciphertexts: digest,
                signature: wrong_key
                    .sign(&Body::submission_message(1, 3, "hospital-1", &digest))
                    .to_bytes(),
            },
        ))
        .unwrap();
    cosign(&mut store);
    drop(store);
    let r = check(dir.path());
    assert_fails(&r, "signature does not verify");
}

/// A hospital's signed evaluation verifies; the same report with a figure changed (by an operator
/// who cannot sign as the hospital) does not.
#[test]
fn evaluations_carry_the_hospitals_signature() {
    let evaluation = |accuracy: f64| {
        let (model, metrics) = ([6u8; 32], vec![("accuracy".to_string(), 0.75)]);
        let message = Body::evaluation_message(1, 2, "hospital-2", &model, 40, &metrics);
        Body::ModelEvaluated {
            job: 1,
            round: 2,
            hospital: "hospital-2".into(),
            model,
            rows: 40,
            metrics: vec![("accuracy".to_string(), accuracy)],
            signature: SigningKey::from_bytes(&[42; 32]).sign(&message).to_bytes(),
        }
    };
    for (accuracy, honest) in [(0.75, true), (0.95, false)] {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path());
        let mut store = Store::open(dir.path(), ORIGIN).unwrap();
        store
            .append(entry("hospital-2", Role::Hospital, evaluation(accuracy)))
            .unwrap();
        cosign(&mut store);
        drop(store);
        let r = check(dir.path());
        if honest {
            assert!(r.ok(), "{r:?}");
        } else {
            assert_fails(
                &r,
                "model_evaluated: hospital-2's signature does not verify",
            );
        }
    }
}

/// Retention prunes the blobs of old rounds only; the records (and so the digests) stay, and the
/// ledger still verifies.
#[test]
fn retention_prunes_old_round_blobs_and_keeps_the_digests() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = build(dir.path());
    let store = Store::open(dir.path(), ORIGIN).unwrap();
    let records_before = store.len();
    assert_eq!(store.apply_retention(None).unwrap(), 0);
    // Keep the last round: round 1's three ciphertext blobs go, the spec and round 2 stay.
    assert_eq!(store.apply_retention(Some(1)).unwrap(), 3);
    assert!(store.blob(&blobs[0]).unwrap().is_some(), "job spec kept");
    for d in &blobs[1..4] {
        assert!(store.blob(d).unwrap().is_none(), "round 1 pruned");
    }
    for d in &blobs[4..7] {
        assert!(store.blob(d).unwrap().is_some(), "round 2 kept");
    }
    assert_eq!(store.len(), records_before);
    drop(store);
    let r = check(dir.path());
    assert!(r.ok(), "{:?}", r.findings);
}

/// Review finding F1: a cosignature line that is unknown or does not verify is refused, so it can
/// never poison a checkpoint for every auditor.
#[test]
fn bad_cosignature_lines_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let mut store = Store::open(dir.path(), ORIGIN).unwrap();
    let note = store.checkpoint(&signer()).unwrap();
    let stranger = NoteSigner::new("stranger", [77; 32]).unwrap();
    let foreign = fedchain_ledger::note::add_signatures(&note, &[&stranger]).unwrap();
    assert!(store.add_cosignatures(&foreign, &known()).is_err());
    // A line under a known hospital's name and key id, with a garbage signature.
    let good = fedchain_ledger::note::add_signatures(&note, &[&witness(2)]).unwrap();
    let line = good.lines().last().unwrap().to_string();
    let forged_line = {
        let (head, b64) = line.rsplit_once(' ').unwrap();
        let mut chars: Vec<char> = b64.chars().collect();
        chars[10] = if chars[10] == 'A' { 'B' } else { 'A' };
        format!("{head} {}", chars.into_iter().collect::<String>())
    };
    let forged = good.replace(&line, &forged_line);
    assert!(store.add_cosignatures(&forged, &known()).is_err());
    drop(store);
    assert!(check(dir.path()).ok());
}

/// Review finding F4: re-issuing the checkpoint of an unchanged log keeps its cosignatures.
#[test]
fn reissuing_a_checkpoint_keeps_its_cosignatures() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let mut store = Store::open(dir.path(), ORIGIN).unwrap();
    let again = store.checkpoint(&signer()).unwrap();
    assert_eq!(
        fedchain_ledger::note::parse(&again)
            .unwrap()
            .signatures
            .len(),
        3
    );
    drop(store);
    assert!(check(dir.path()).ok());
}

/// Review finding F2: deleting the latest checkpoints and rewriting what followed is caught by
/// the checkpoint a hospital kept (its witness state).
#[test]
fn rewritten_history_is_caught_by_a_hospitals_anchor() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let (latest_key, latest) = with_db(dir.path(), |db| {
        let (k, v) = db
            .open_tree("checkpoints")
            .unwrap()
            .iter()
            .last()
            .unwrap()
            .unwrap();
        (k, String::from_utf8(v.to_vec()).unwrap())
    });
    let anchor = fedchain_ledger::note::Checkpoint::from_text(
        &fedchain_ledger::note::parse(&latest).unwrap().text,
    )
    .unwrap();
    // The operator drops the latest checkpoint and rewrites the last record.
    with_db(dir.path(), |db| {
        db.open_tree("checkpoints")
            .unwrap()
            .remove(&latest_key)
            .unwrap();
        let t = db.open_tree("records").unwrap();
        let (k, v) = t.iter().last().unwrap().unwrap();
        let text = String::from_utf8(v.to_vec())
            .unwrap()
            .replace("\"amount\":10", "\"amount\":9");
        t.insert(k, text.as_bytes()).unwrap();
    });
    assert!(
        check(dir.path()).ok(),
        "without an anchor this rewrite is invisible"
    );
    let mut t = trust();
    t.anchors.push(anchor);
    let r = verify(dir.path(), Some(&t)).unwrap();
    assert_fails(&r, "history was rewritten");
}

/// Review finding F3: an operator enrolling its own key under a hospital's name is caught.
#[test]
fn enrolled_keys_must_be_the_hospitals_trusted_keys() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let mut store = Store::open(dir.path(), ORIGIN).unwrap();
    store
        .append(entry(
            "hospital-1",
            Role::Hospital,
            Body::HospitalEnrolled {
                job: 2,
                hospital: "hospital-1".into(),
                identity_key: SigningKey::from_bytes(&[66; 32]).verifying_key().to_bytes(),
                samples: 10,
                deposit: 0,
            },
        ))
        .unwrap();
    cosign(&mut store);
    drop(store);
    assert_fails(&check(dir.path()), "trusted key of hospital-1");
}

/// Review finding F6: a store whose records no longer reproduce its latest checkpoint refuses to
/// open for writing (appending would fork the log away from what hospitals cosigned).
#[test]
fn store_refuses_to_extend_records_its_checkpoint_no_longer_matches() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    with_db(dir.path(), |db| {
        let t = db.open_tree("records").unwrap();
        let last = t.iter().keys().last().unwrap().unwrap();
        t.remove(last).unwrap();
    });
    let err = Store::open(dir.path(), ORIGIN).err().expect("must refuse");
    assert!(err.to_string().contains("lost or changed"), "{err}");
}

/// A hospital's cosigned checkpoint that the ledger lost (records and checkpoint both gone, as
/// after a storage fault) is caught by [`Store::reproduces`], the check a coordinator runs on
/// every witness state it receives; the ledger's own checkpoints, and its prefixes, pass.
#[test]
fn reproduces_finds_a_cosigned_checkpoint_the_ledger_lost() {
    use fedchain_ledger::note::checkpoint_in;
    use fedchain_ledger::LedgerError;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let store = Store::open(dir.path(), ORIGIN).unwrap();
    let held: Vec<_> = store
        .checkpoints()
        .unwrap()
        .into_iter()
        .map(|(_, note)| checkpoint_in(&note).unwrap())
        .collect();
    assert!(held.len() >= 2);
    for cp in &held {
        store.reproduces(cp).unwrap();
    }
    let newest = held.last().unwrap().clone();

    // Longer than the ledger: records it covered are gone.
    let beyond = fedchain_ledger::note::Checkpoint {
        size: store.len() + 3,
        ..newest.clone()
    };
    let e = store.reproduces(&beyond).unwrap_err();
    assert!(matches!(e, LedgerError::Inconsistent(_)), "{e:?}");
    assert!(
        e.to_string().contains("3 records it covered are lost"),
        "{e}"
    );
    // Same size, another root: a fork.
    let forked = fedchain_ledger::note::Checkpoint {
        root: [7; 32],
        ..newest.clone()
    };
    let e = store.reproduces(&forked).unwrap_err();
    assert!(e.to_string().contains("were changed"), "{e}");
    // Another log's checkpoint is not evidence about this one.
    let foreign = fedchain_ledger::note::Checkpoint {
        origin: "elsewhere/log".into(),
        ..newest
    };
    assert!(matches!(
        store.reproduces(&foreign),
        Err(LedgerError::InvalidArgument(_))
    ));
}

/// Deleting only the newest cosigned checkpoint (its records intact) hides nothing from the
/// records' point of view, but it is tampering all the same: a hospital's witness file names it,
/// and verify with that anchor must fail rather than note that the last records are uncovered.
#[test]
fn an_anchor_whose_checkpoint_was_deleted_is_a_failure() {
    use fedchain_ledger::note::checkpoint_in;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let newest = {
        let store = Store::open(dir.path(), ORIGIN).unwrap();
        let (_, note) = store.checkpoints().unwrap().pop().unwrap();
        checkpoint_in(&note).unwrap()
    };
    let anchored = |dir: &Path| {
        let mut t = trust();
        t.anchors.push(newest.clone());
        verify(dir, Some(&t)).unwrap()
    };
    assert!(anchored(dir.path()).ok());
    with_db(dir.path(), |db| {
        let t = db.open_tree("checkpoints").unwrap();
        let last = t.iter().keys().last().unwrap().unwrap();
        t.remove(last).unwrap();
    });
    // Without the anchor it only looks unfinished; with it, it is a finding.
    assert!(check(dir.path()).ok());
    assert_fails(&anchored(dir.path()), "no longer holds");
}

#[test]
fn a_changed_record_is_readable_for_an_audit_but_never_written_to() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    with_db(dir.path(), |db| {
        let t = db.open_tree("records").unwrap();
        let v = t.get(2u64.to_be_bytes()).unwrap().unwrap();
        let text = String::from_utf8(v.to_vec())
            .unwrap()
            .replace("\"budget\":600", "\"budget\":601");
        assert_ne!(
            text.as_bytes(),
            v.as_ref(),
            "record 2 submits a job of budget 600"
        );
        t.insert(2u64.to_be_bytes(), text.as_bytes()).unwrap();
    });
    // Opening to write refuses: appending would fork the log from what hospitals cosigned.
    let refused = Store::open(dir.path(), ORIGIN).err().expect("refused");
    assert!(
        refused.to_string().contains("do not reproduce"),
        "{refused}"
    );
    // Opening to read gives the records and says what is wrong; every write is refused.
    let (mut store, why) = Store::open_to_read(dir.path(), ORIGIN).unwrap();
    assert!(why.unwrap().contains("do not reproduce"));
    let (record, _) = store.record(2).unwrap();
    assert!(matches!(
        record.body,
        Body::JobSubmitted { budget: 601, .. }
    ));
    let len = store.len();
    assert!(store
        .append(credit(Movement::Mint {
            to: Account::Researcher("eve".into()),
            amount: 1,
        }))
        .is_err());
    assert!(store.put_blob(b"x").is_err());
    assert!(store.checkpoint(&signer()).is_err());
    assert_eq!(store.len(), len);
    drop(store);
    // A clean ledger opens to read with nothing to say.
    let clean = tempfile::tempdir().unwrap();
    build(clean.path());
    let (store, why) = Store::open_to_read(clean.path(), ORIGIN).unwrap();
    assert_eq!(why, None);
    assert!(
        store.put_blob(b"x").is_err(),
        "opened to read, it writes nothing"
    );
}
