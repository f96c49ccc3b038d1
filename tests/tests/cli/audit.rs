//! `fedchain audit verify` and `fedchain bench ledger` through the binary: a clean ledger exits 0,
//! a tampered one exits 1 and names what it found.

use fedchain_ledger::credits::{Account, Movement};
use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::record::{Actor, Body, Outcome, Role};
use fedchain_ledger::store::{Entry, Store, DB_DIR};
use fedchain_tests::{fedchain, json};

fn ledger(dir: &std::path::Path) -> NoteSigner {
    let signer = NoteSigner::new("fedchain.e2e", [5u8; 32]).unwrap();
    let mut store = Store::open(dir, "fedchain.e2e/log").unwrap();
    let entries = (0..5)
        .map(|i| Entry {
            time_ms: 1_700_000_000_000 + i,
            actor: Actor {
                id: "coordinator".into(),
                role: Role::Coordinator,
            },
            outcome: Outcome::Success,
            body: Body::CreditsMoved {
                movement: Movement::Mint {
                    to: Account::Hospital(format!("hospital-{i}")),
                    amount: 10,
                },
            },
        })
        .collect();
    store.append_all(entries).unwrap();
    store.checkpoint(&signer).unwrap();
    signer
}

#[test]
fn clean_ledger_exits_0_and_tampered_exits_1_naming_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger");
    let signer = ledger(&path);
    let trust = dir.path().join("trust.txt");
    std::fs::write(
        &trust,
        format!("log {}\nquorum 0\n", signer.verifier().to_vkey()),
    )
    .unwrap();
    let args = |json: bool| {
        let mut a = vec![
            "audit".to_string(),
            "verify".into(),
            "--ledger".into(),
            path.to_str().unwrap().into(),
            "--trust".into(),
            trust.to_str().unwrap().into(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let run = |json: bool| {
        let a = args(json);
        fedchain(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let report = json(&run(true));
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 5);
    assert!(String::from_utf8_lossy(&run(false).stdout).contains("verdict: OK"));

    // Change one byte of record 2 (an amount 10 -> 11 stays a valid record; the log's root breaks).
    {
        let db = fedchain_ledger::store::open_db(&path.join(DB_DIR)).unwrap();
        let t = db.open_tree("records").unwrap();
        let v = t.get(2u64.to_be_bytes()).unwrap().unwrap();
        let text = String::from_utf8(v.to_vec())
            .unwrap()
            .replace("\"amount\":10", "\"amount\":11");
        t.insert(2u64.to_be_bytes(), text.as_bytes()).unwrap();
        db.flush().unwrap();
    }
    let out = run(false);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL checkpoint") && text.contains("verdict: FAILED"),
        "{text}"
    );
    let out = run(true);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
}

#[test]
fn verifying_a_folder_that_is_not_a_ledger_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = fedchain(&["audit", "verify", "--ledger", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a ledger folder"));
}

#[test]
fn ledger_benchmark_reports_its_figures() {
    let r = json(&fedchain(&[
        "bench",
        "ledger",
        "--hospitals",
        "3",
        "--rounds",
        "5",
        "--json",
    ]));
    assert_eq!(r["rounds"], 5);
    assert!(r["round_append_checkpoint_ms_mean"].as_f64().unwrap() > 0.0);
    assert!(r["verify_records_per_second"].as_f64().unwrap() > 0.0);
}
