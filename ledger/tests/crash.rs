//! Durability: a writer process is killed with SIGKILL at random moments, many times over the same
//! ledger. After every kill the store must reopen, verify, and still hold every record covered by
//! a checkpoint the writer reported (a checkpoint is only reported after its fsync).

use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::store::Store;
use fedchain_ledger::verify::{verify, Trust};
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn killed_writers_leave_a_consistent_verifiable_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let log = NoteSigner::new("fedchain.crash", [9u8; 32])
        .unwrap()
        .verifier();
    let trust = Trust {
        log,
        witnesses: Vec::new(),
        quorum: 0,
        anchors: Vec::new(),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut durable = 0u64;
    for attempt in 0..25 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fedchain-ledger-crash-writer"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer");
        let reported = Arc::new(AtomicU64::new(0));
        let out = child.stdout.take().unwrap();
        let seen = reported.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(size) = line.strip_prefix("checkpoint ") {
                    seen.store(size.parse().unwrap(), Ordering::SeqCst);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(30..400)));
        child.kill().expect("SIGKILL the writer");
        child.wait().unwrap();
        reader.join().unwrap();
        durable = durable.max(reported.load(Ordering::SeqCst));

        let store = Store::open(dir.path(), "fedchain.crash/log")
            .unwrap_or_else(|e| panic!("attempt {attempt}: reopening failed: {e}"));
        assert!(
            store.len() >= durable,
            "attempt {attempt}: {} records left, but a checkpoint of {durable} was reported",
            store.len()
        );
        drop(store);
        let report = verify(dir.path(), Some(&trust)).unwrap();
        assert!(report.ok(), "attempt {attempt}: {:?}", report.findings);
        assert!(report.checkpointed_size >= durable, "attempt {attempt}");
    }
    assert!(durable > 0, "the writer never reached a checkpoint");
}
