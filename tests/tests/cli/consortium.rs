//! `fedchain consortium init` through the binary, and the files it writes working with the rest:
//! shares check against the public key, and a ledger signed by the consortium's log key and
//! cosigned by its hospitals verifies with the generated trust file.
//! 512-bit Paillier keys keep this fast; provisioning does not depend on the size.

use fedchain_ledger::credits::{Account, Movement};
use fedchain_ledger::note::{add_signatures, NoteSigner};
use fedchain_ledger::record::{Actor, Body, Outcome, Role};
use fedchain_ledger::store::{Entry, Store};
use fedchain_tests::{failed_stderr, fedchain, json, ok_stdout};
use std::path::Path;

fn skey(path: &Path) -> NoteSigner {
    NoteSigner::from_skey(std::fs::read_to_string(path).unwrap().trim()).unwrap()
}

#[test]
fn provisioned_consortium_keys_and_trust_file_work_together() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("consortium");
    let d = dir.to_str().unwrap();
    let description = json(&fedchain(&[
        "consortium",
        "init",
        "--dir",
        d,
        "--hospitals",
        "oslo,bergen,tromso",
        "--threshold",
        "2",
        "--bits",
        "512",
        "--json",
    ]));
    assert_eq!(description["threshold"], 2);
    let hospitals: Vec<_> = description["parties"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"] == "hospital")
        .collect();
    assert_eq!(hospitals.len(), 3);

    // Each hospital's share checks against the public key.
    for h in ["oslo", "bergen", "tromso"] {
        let folder = dir.join("hospitals").join(h);
        ok_stdout(&fedchain(&[
            "keys",
            "check",
            "--public",
            folder.join("public.key").to_str().unwrap(),
            "--share",
            folder.join("share.key").to_str().unwrap(),
        ]));
    }

    // A ledger signed by the consortium's log key and cosigned by two hospitals' identity keys
    // verifies against the generated trust file (quorum = threshold = 2).
    let log = skey(&dir.join("coordinator").join("log.skey"));
    let ledger = tmp.path().join("ledger");
    let mut store = Store::open(&ledger, "fedchain.test/consortium").unwrap();
    store
        .append(Entry {
            time_ms: 1_700_000_000_000,
            actor: Actor {
                id: "coordinator".into(),
                role: Role::Coordinator,
            },
            outcome: Outcome::Success,
            body: Body::CreditsMoved {
                movement: Movement::Mint {
                    to: Account::Hospital("oslo".into()),
                    amount: 10,
                },
            },
        })
        .unwrap();
    let mut note = store.checkpoint(&log).unwrap();
    let mut known = vec![log.verifier()];
    for h in ["oslo", "bergen"] {
        let identity = skey(&dir.join("hospitals").join(h).join("identity.skey"));
        note = add_signatures(&note, &[&identity]).unwrap();
        known.push(identity.verifier());
    }
    store.add_cosignatures(&note, &known).unwrap();
    drop(store);
    let verify = |trust: &Path| {
        fedchain(&[
            "audit",
            "verify",
            "--ledger",
            ledger.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
        ])
    };
    let text = ok_stdout(&verify(&dir.join("trust.txt")));
    assert!(text.contains("verdict: OK"), "{text}");

    // Another consortium's trust file does not vouch for this ledger.
    let other = tmp.path().join("other");
    ok_stdout(&fedchain(&[
        "consortium",
        "init",
        "--dir",
        other.to_str().unwrap(),
        "--hospitals",
        "oslo,bergen",
        "--threshold",
        "2",
        "--bits",
        "512",
    ]));
    let out = verify(&other.join("trust.txt"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_consortium_requests_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    std::fs::write(tmp.path().join("something"), "x").unwrap();
    let err = failed_stderr(
        &fedchain(&[
            "consortium",
            "init",
            "--dir",
            d,
            "--hospitals",
            "a,b",
            "--threshold",
            "2",
            "--bits",
            "512",
        ]),
        1,
    );
    assert!(err.contains("empty"), "{err}");
    let fresh = tmp.path().join("new");
    let f = fresh.to_str().unwrap();
    let err = failed_stderr(
        &fedchain(&[
            "consortium",
            "init",
            "--dir",
            f,
            "--hospitals",
            "a,b",
            "--threshold",
            "3",
            "--bits",
            "512",
        ]),
        1,
    );
    assert!(err.contains("threshold"), "{err}");
    let err = failed_stderr(
        &fedchain(&[
            "consortium",
            "init",
            "--dir",
            f,
            "--hospitals",
            "Bad Name",
            "--threshold",
            "1",
            "--bits",
            "512",
        ]),
        1,
    );
    assert!(err.contains("Bad Name"), "{err}");
}
