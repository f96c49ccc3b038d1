//! One-shot measurements behind `fedchain bench ledger`: the cost of recording a round (records +
//! fsync'd, signed checkpoint) and of verifying a ledger offline.

use crate::credits::{Account, Movement};
use crate::error::Result;
use crate::note::NoteSigner;
use crate::record::{Actor, Body, Outcome, Role};
use crate::store::{Entry, Store};
use crate::verify::verify;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerBench {
    /// Hospitals per round.
    pub hospitals: usize,
    /// Rounds recorded.
    pub rounds: u64,
    /// Records per round.
    pub records_per_round: usize,
    /// Mean time to append a round's records and sign an fsync'd checkpoint.
    pub round_append_checkpoint_ms_mean: f64,
    /// Slowest round.
    pub round_append_checkpoint_ms_max: f64,
    /// Records in the ledger verified.
    pub verified_records: u64,
    /// Offline verification throughput.
    pub verify_records_per_second: f64,
}

fn actor(id: &str, role: Role) -> Actor {
    Actor {
        id: id.to_string(),
        role,
    }
}

/// Records `rounds` rounds of a job with `hospitals` hospitals into a new ledger in `dir`, then
/// verifies it.
pub fn run(dir: &Path, hospitals: usize, rounds: u64) -> Result<LedgerBench> {
    let mut store = Store::open(dir, "fedchain.bench/log")?;
    let signer = NoteSigner::new("fedchain.bench", [7u8; 32])?;
    let keys: Vec<SigningKey> = (0..hospitals)
        .map(|i| SigningKey::from_bytes(&[i as u8 + 1; 32]))
        .collect();
    let names: Vec<String> = (0..hospitals).map(|i| format!("hospital-{i:02}")).collect();
    let coord = actor("coordinator", Role::Coordinator);
    let t = |_: u64| 1_700_000_000_000u64;

    // Job setup: funds, enrollment, deposits.
    let mut setup = vec![
        Movement::Mint {
            to: Account::Researcher("researcher".into()),
            amount: 1_000_000,
        },
        Movement::Fund {
            job: 1,
            researcher: "researcher".into(),
            amount: 1_000_000,
        },
    ];
    for n in &names {
        setup.push(Movement::Mint {
            to: Account::Hospital(n.clone()),
            amount: 100,
        });
        setup.push(Movement::PostDeposit {
            job: 1,
            hospital: n.clone(),
            amount: 100,
        });
    }
    let mut entries: Vec<Entry> = setup
        .into_iter()
        .map(|movement| Entry {
            time_ms: t(0),
            actor: coord.clone(),
            outcome: Outcome::Success,
            body: Body::CreditsMoved { movement },
        })
        .collect();
    for (n, k) in names.iter().zip(&keys) {
        entries.push(Entry {
            time_ms: t(0),
            actor: actor(n, Role::Hospital),
            outcome: Outcome::Success,
            body: Body::HospitalEnrolled {
                job: 1,
                hospital: n.clone(),
                identity_key: k.verifying_key().to_bytes(),
                samples: 100,
                deposit: 100,
            },
        });
    }
    store.append_all(entries)?;
    store.checkpoint(&signer)?;

    let mut times = Vec::with_capacity(rounds as usize);
    let mut per_round = 0;
    for round in 1..=rounds {
        // Build the round's records (including real signatures) before timing the write.
        let mut entries = Vec::new();
        for (n, k) in names.iter().zip(&keys) {
            let digest = crate::sha256(format!("ciphertexts {round} {n}").as_bytes());
            let sig = k.sign(&Body::submission_message(1, round, n, &digest));
            entries.push(Entry {
                time_ms: t(round),
                actor: actor(n, Role::Hospital),
                outcome: Outcome::Success,
                body: Body::UpdateSubmitted {
                    job: 1,
                    round,
                    hospital: n.clone(),
                    ciphertexts: digest,
                    signature: sig.to_bytes(),
                },
            });
        }
        entries.push(Entry {
            time_ms: t(round),
            actor: coord.clone(),
            outcome: Outcome::Success,
            body: Body::RoundClosed {
                job: 1,
                round,
                participants: names.clone(),
                aggregate: crate::sha256(format!("aggregate {round}").as_bytes()),
            },
        });
        for n in &names {
            entries.push(Entry {
                time_ms: t(round),
                actor: actor(n, Role::Hospital),
                outcome: Outcome::Success,
                body: Body::DecryptionShare {
                    job: 1,
                    round,
                    hospital: n.clone(),
                    share: crate::sha256(format!("share {round} {n}").as_bytes()),
                    verified: true,
                    ciphertexts: Vec::new(),
                },
            });
        }
        entries.push(Entry {
            time_ms: t(round),
            actor: coord.clone(),
            outcome: Outcome::Success,
            body: Body::RoundFinalized {
                job: 1,
                round,
                model_before: crate::sha256(&round.to_be_bytes()),
                model_after: crate::sha256(&(round + 1).to_be_bytes()),
                metrics: vec![("accuracy".into(), 0.95)],
            },
        });
        for n in &names {
            entries.push(Entry {
                time_ms: t(round),
                actor: coord.clone(),
                outcome: Outcome::Success,
                body: Body::CreditsMoved {
                    movement: Movement::Reward {
                        job: 1,
                        round,
                        hospital: n.clone(),
                        amount: 10,
                    },
                },
            });
        }
        per_round = entries.len();
        let started = Instant::now();
        store.append_all(entries)?;
        store.checkpoint(&signer)?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    drop(store);

    let started = Instant::now();
    let report = verify(dir, None)?;
    let secs = started.elapsed().as_secs_f64();
    if !report.ok() {
        return Err(crate::LedgerError::Corrupt(format!(
            "the benchmark's own ledger does not verify: {:?}",
            report.findings
        )));
    }
    Ok(LedgerBench {
        hospitals,
        rounds,
        records_per_round: per_round,
        round_append_checkpoint_ms_mean: times.iter().sum::<f64>() / times.len().max(1) as f64,
        round_append_checkpoint_ms_max: times.iter().cloned().fold(0.0, f64::max),
        verified_records: report.records,
        verify_records_per_second: report.records as f64 / secs,
    })
}
