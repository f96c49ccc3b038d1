//! Durability against the OS, not only the process: a writer appends as the coordinator does
//! (blob, records, flush, then an acknowledgement) on a real ext4 file system, and the file system
//! is aborted right after an acknowledgement, as an OS crash or a storage fault would. After
//! `e2fsck` and a remount, every acknowledged record and blob must still be there.
//!
//! `crash.rs` cannot see this: after SIGKILL the page cache still holds what was written. Here it
//! is dropped. Before `Store::flush` called `fsync` (sled's own flush is `sync_file_range`), this
//! test lost the last acknowledged records in every attempt.

mod support;

use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::store::Store;
use fedchain_ledger::verify::{verify, Trust};
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::loopfs::LoopFs;

#[test]
fn acknowledged_records_survive_a_file_system_failure() {
    let Some(mut fs) = LoopFs::new_or_skip(256, "disk_fault") else {
        return;
    };
    let dir = fs.path().join("ledger");
    let trust = Trust {
        log: NoteSigner::new("fedchain.crash", [9u8; 32])
            .unwrap()
            .verifier(),
        witnesses: Vec::new(),
        quorum: 0,
        anchors: Vec::new(),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let mut acked_total = 0u64;
    for attempt in 0..3 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fedchain-ledger-crash-writer"))
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let wanted = rng.random_range(60..400);
        let mut acked = None;
        for _ in 0..wanted {
            let line = lines
                .next()
                .expect("the writer stopped early")
                .expect("read the writer");
            if let Some(rest) = line.strip_prefix("acked ") {
                let (size, blob) = rest.split_once(' ').expect("acked SIZE BLOB");
                acked = Some((size.parse::<u64>().unwrap(), blob.to_string()));
            }
        }
        // Right after an acknowledgement: what the writer was told is durable must be.
        let (size, blob) = acked.expect("no acknowledgement");
        fs.fail().expect("abort the file system");
        child.kill().expect("kill the writer");
        child.wait().unwrap();
        fs.recover().expect("fsck and remount");
        acked_total = acked_total.max(size);

        let store = Store::open(&dir, "fedchain.crash/log")
            .unwrap_or_else(|e| panic!("attempt {attempt}: reopening failed: {e}"));
        assert!(
            store.len() >= size,
            "attempt {attempt}: {} records left after the failure, but {size} were acknowledged",
            store.len()
        );
        let digest: [u8; 32] = hex::decode(&blob).unwrap().try_into().unwrap();
        assert!(
            store.blob(&digest).unwrap().is_some(),
            "attempt {attempt}: the blob stored before acknowledgement {size} is gone"
        );
        drop(store);
        let report = verify(&dir, Some(&trust)).unwrap();
        assert!(report.ok(), "attempt {attempt}: {:?}", report.findings);
    }
    assert!(acked_total > 0);
}
