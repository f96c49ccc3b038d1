//! Appends records and checkpoints to the ledger in `argv[1]` forever, as the coordinator does:
//! a blob (large enough that sled writes it to a file of its own), then records, flushed before
//! they are acknowledged with `acked SIZE BLOB` on stdout, and every third batch a checkpoint,
//! announced with `checkpoint SIZE` once durable. The crash test kills it with SIGKILL; the disk
//! fault test fails the file system under it right after an acknowledgement.

use fedchain_ledger::credits::{Account, Movement};
use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::record::{Actor, Body, Outcome, Role};
use fedchain_ledger::store::{Entry, Store};
use std::io::Write;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: crash-writer DIR");
    let mut store = Store::open(std::path::Path::new(&dir), "fedchain.crash/log").expect("open");
    let signer = NoteSigner::new("fedchain.crash", [9u8; 32]).expect("signer");
    let actor = Actor {
        id: "coordinator".into(),
        role: Role::Coordinator,
    };
    let mut stdout = std::io::stdout();
    let mut batch = store.len();
    loop {
        let n = 1 + (batch % 7) as usize;
        let mut entries: Vec<Entry> = (0..n)
            .map(|k| Entry {
                time_ms: batch,
                actor: actor.clone(),
                outcome: Outcome::Success,
                body: Body::CreditsMoved {
                    movement: Movement::Mint {
                        to: Account::Hospital(format!("hospital-{k}")),
                        amount: 1 + batch,
                    },
                },
            })
            .collect();
        entries.push(Entry {
            time_ms: batch,
            actor: actor.clone(),
            outcome: Outcome::MinorFailure,
            body: Body::RequestRejected {
                request: format!("submit/{batch}"),
                reason: "crash test filler".into(),
            },
        });
        // 200 KB: over sled's 128 KiB inline threshold, like a round's ciphertext vector.
        let blob: Vec<u8> = (0..200_000u64)
            .map(|i| (i.wrapping_mul(31).wrapping_add(batch * 7919) % 251) as u8)
            .collect();
        let digest = store.put_blob(&blob).expect("blob");
        store.append_all(entries).expect("append");
        store.flush().expect("flush");
        writeln!(stdout, "acked {} {}", store.len(), hex::encode(digest)).expect("stdout");
        stdout.flush().expect("stdout");
        if batch.is_multiple_of(3) {
            store.checkpoint(&signer).expect("checkpoint");
            writeln!(stdout, "checkpoint {}", store.len()).expect("stdout");
            stdout.flush().expect("stdout");
        }
        batch += 1;
    }
}
