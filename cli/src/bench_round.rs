//! `fedchain bench round`: what encryption costs per federated round, phase by phase.
//!
//! Runs the demo's job (by default breast-cancer, 3 hospitals with Dirichlet skew, its MLP, 2 local
//! epochs; `--dataset` and `--model` pick another) round after round in this process with the real
//! parts: libtorch training, 2048-bit threshold Paillier (DJN encryption, aggregation, partial
//! decryption with proofs, verification, combination), loopback TCP transfer of the bytes a
//! hospital uploads, and a sled ledger with an fsync'd signed checkpoint per round. Each phase is
//! timed on its own.
//!
//! In a consortium the hospitals train, encrypt and decrypt in parallel on their own machines, so
//! the round time reported is the critical path: the slowest hospital's train (+ encrypt), the
//! uploads, the coordinator's work, the slowest share, and the ledger. The plaintext round is the
//! same system without encryption: train, upload the f32 update, FedAvg, ledger.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;
use fedchain_coordinator::decryptors::ShareCosts;
use fedchain_crypto::aggregate::aggregate;
use fedchain_crypto::djn::Ciphertext;
use fedchain_crypto::djn::{decode_ciphertexts, encode_ciphertexts, EncryptionTable};
use fedchain_crypto::keys::{deal, KeyShare, PublicKey};
use fedchain_crypto::threshold::{
    combine_pieces, partial_decrypt, verify_piece, DecryptionShare, Piece,
};
use fedchain_crypto::BigInt;
use fedchain_datasets::Builtin;
use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::record::{Actor, Body, Outcome, Role};
use fedchain_ledger::sha256;
use fedchain_ledger::store::{Entry, Store};
use fedchain_models::{fedavg, pick_device, DeviceChoice, ModelDigest, ModelKind};
use fedchain_protocol::decryption;
use fedchain_worker::local_round;
use rand::{RngCore, SeedableRng};
use serde::Serialize;

use crate::simulation::{demo_job, plaintext_hospitals, pooled_metrics, round_config};

#[derive(Debug, Default, Clone, Serialize)]
pub struct Phases {
    /// Local training, slowest hospital.
    pub train_s: f64,
    /// Quantize, pack, encrypt and encode, slowest hospital.
    pub encrypt_s: f64,
    /// Loopback TCP transfer of every hospital's upload.
    pub upload_s: f64,
    /// Coordinator: decode and check the submissions, multiply them.
    pub aggregate_s: f64,
    /// Partial decryption with proof, slowest share; then verification of the t shares,
    /// combination and decoding.
    pub decrypt_s: f64,
    /// Plaintext FedAvg (plaintext rounds only).
    pub fedavg_s: f64,
    /// Appending the round's records and a signed, fsync'd checkpoint.
    pub ledger_s: f64,
}

impl Phases {
    fn total(&self) -> f64 {
        self.train_s
            + self.encrypt_s
            + self.upload_s
            + self.aggregate_s
            + self.decrypt_s
            + self.fedavg_s
            + self.ledger_s
    }
    fn add(&mut self, o: &Phases) {
        self.train_s += o.train_s;
        self.encrypt_s += o.encrypt_s;
        self.upload_s += o.upload_s;
        self.aggregate_s += o.aggregate_s;
        self.decrypt_s += o.decrypt_s;
        self.fedavg_s += o.fedavg_s;
        self.ledger_s += o.ledger_s;
    }
    fn scaled(&self, k: f64) -> Phases {
        Phases {
            train_s: self.train_s * k,
            encrypt_s: self.encrypt_s * k,
            upload_s: self.upload_s * k,
            aggregate_s: self.aggregate_s * k,
            decrypt_s: self.decrypt_s * k,
            fedavg_s: self.fedavg_s * k,
            ledger_s: self.ledger_s * k,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RoundBench {
    pub dataset: String,
    pub model: String,
    pub parameters: usize,
    pub hospitals: usize,
    pub threshold: usize,
    pub modulus_bits: usize,
    pub rounds: u64,
    pub ciphertexts_per_update: usize,
    pub upload_bytes_per_hospital: usize,
    /// The job's quant_bits (null: 16 fractional bits times the rows).
    pub quant_bits: Option<u32>,
    /// Width of one value's slot in the plaintext.
    pub slot_bits: u32,
    /// Upload bits per parameter: each ciphertext is twice the modulus, shared by its slots.
    pub bits_per_parameter: f64,
    /// Update values clipped, all rounds and hospitals.
    pub clipped_values: usize,
    pub encrypted_round_s: f64,
    pub plaintext_round_s: f64,
    pub ratio: f64,
    pub encrypted_phases: Phases,
    pub plaintext_phases: Phases,
    pub final_accuracy_encrypted: f64,
    /// Decryption shares the coordinator's scheduler would have had computed for nothing over
    /// all rounds: a primary's measured share ran past the budget its probed cost gives it.
    pub wasted_shares: u64,
}

/// A round's decryption as the coordinator spreads it: every hospital of `shares` (all
/// participants) decrypts the ciphertexts [`decryption::spread`] gives it, each timed alone (as
/// on its own machine). Returns each decryptor's share with its ciphertexts' indices, and its
/// seconds.
#[allow(clippy::type_complexity)]
fn spread_shares(
    pk: &PublicKey,
    shares: &[KeyShare],
    agg: &[Ciphertext],
    context: &[u8],
    rng: &mut rand_chacha::ChaCha20Rng,
    say: impl Fn(&str),
) -> Result<(Vec<(DecryptionShare, Vec<usize>)>, Vec<f64>)> {
    let names: Vec<String> = (1..=shares.len()).map(|i| format!("h{i}")).collect();
    let plan = decryption::spread(agg.len() as u64, &names, pk.threshold());
    let (mut held, mut times) = (Vec::new(), Vec::new());
    for (h, ranges) in plan {
        let i: usize = h[1..].parse()?;
        let at = decryption::indices(&ranges, agg.len());
        say(&format!(
            "hospital {i} computes its decryption share of {} of {} ciphertexts",
            at.len(),
            agg.len()
        ));
        let sub: Vec<Ciphertext> = at.iter().map(|&j| agg[j].clone()).collect();
        let t = Instant::now();
        let share = partial_decrypt(pk, &shares[i - 1], &sub, context, rng)?;
        times.push(t.elapsed().as_secs_f64());
        held.push((share, at));
    }
    Ok((held, times))
}

/// The coordinator's side of [`spread_shares`]: verify each share on its ciphertexts, combine.
fn verify_combine(
    pk: &PublicKey,
    agg: &[Ciphertext],
    held: &[(DecryptionShare, Vec<usize>)],
    context: &[u8],
) -> Result<Vec<BigInt>> {
    for (share, at) in held {
        verify_piece(pk, agg, Piece { share, at }, context)?;
    }
    let pieces: Vec<Piece<'_>> = held.iter().map(|(share, at)| Piece { share, at }).collect();
    Ok(combine_pieces(pk, agg.len(), &pieces)?)
}

/// What the coordinator's scheduler makes of the measured times (in seconds) the decryptors,
/// `times_s.len()` key shares of `shares` asked for `ciphertexts` each, take for their share: each
/// reports what a worker's probe measures on this machine ([`fedchain_worker::share_cost_us`]), and one whose
/// time ran past the budget the coordinator gives it ([`ShareCosts::budget_ms`], capped at half
/// the demo job's round deadline) gets a backup (while the other key shares last), whose share is
/// then computed for nothing. Returns the shares wasted and the smallest budget in seconds.
///
/// What it models: each primary on its own machine, as this benchmark times it (rebuilding the
/// aggregate, then the share), against a probe taken the same way. It does not model primaries
/// sharing cores, network transfers or a restarted coordinator's fixed wait; the demo does
/// (`demo --json` reports the coordinator's own count).
fn scheduled(
    pk: &PublicKey,
    shares: &[KeyShare],
    times_s: &[f64],
    ciphertexts: &[usize],
) -> (u64, f64) {
    let cap_ms = u64::from(crate::job::DEFAULT_ROUND_DEADLINE_SECONDS) * 1000 / 2;
    let mut costs = ShareCosts::default();
    let names: Vec<String> = (1..=times_s.len()).map(|i| format!("h{i}")).collect();
    for (h, share) in names.iter().zip(shares) {
        costs.report(h, fedchain_worker::share_cost_us(pk, share).unwrap_or(0));
    }
    let budgets: Vec<u64> = names
        .iter()
        .zip(ciphertexts)
        .map(|(h, &n)| costs.budget_ms(h, n, cap_ms))
        .collect();
    let late = times_s
        .iter()
        .zip(&budgets)
        .filter(|(t, b)| **t * 1000.0 > **b as f64)
        .count();
    // Spread over every hospital, a late one's ciphertexts go to the others: its share is then
    // computed for nothing. First t, only the hospitals beyond the t can be backups.
    let backups = if times_s.len() == shares.len() {
        late
    } else {
        shares.len().saturating_sub(times_s.len())
    };
    let smallest = budgets.iter().min().copied().unwrap_or(0);
    (late.min(backups) as u64, smallest as f64 / 1000.0)
}

/// Sends `bytes` over a loopback TCP connection and returns how long until the receiver has them.
fn loopback(bytes: &[u8]) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let len = bytes.len();
    let receiver = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = listener.accept()?;
        let mut buf = Vec::with_capacity(len);
        s.read_to_end(&mut buf)?;
        Ok(buf.len())
    });
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.write_all(bytes)?;
    s.shutdown(std::net::Shutdown::Write)?;
    let got = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver thread panicked"))??;
    anyhow::ensure!(got == len, "loopback transfer lost bytes");
    Ok(t.elapsed())
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn entry(body: Body) -> Entry {
    Entry {
        time_ms: 0,
        actor: Actor {
            id: "coordinator".into(),
            role: Role::Coordinator,
        },
        outcome: Outcome::Success,
        body,
    }
}

pub fn run(
    dataset: Builtin,
    model: Option<ModelKind>,
    rounds: u64,
    bits: usize,
    quant_bits: Option<u32>,
    progress: bool,
) -> Result<RoundBench> {
    anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
    let job = demo_job(
        dataset,
        model,
        None,
        Some(rounds as u32),
        quant_bits,
        1,
        false,
    );
    let spec = job.to_spec()?;
    let (model, hospitals) = plaintext_hospitals(dataset, 3, 0.5, 1, &spec, None)?;
    let device = pick_device(DeviceChoice::Cpu)?;
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let (pk, shares) = deal(bits, hospitals.len(), 2, &mut rng)?;
    let table = EncryptionTable::new(&pk);
    let valid = fedchain_protocol::validate(&spec)?;
    let enrolled = fedchain_protocol::Enrollment::of(hospitals.iter().map(|h| h.samples()));
    let total = enrolled.rows;
    let plan = fedchain_protocol::RoundPlan::new(&valid, 1, enrolled);
    let codec = plan.codec(&pk)?;
    let tmp = tempfile::tempdir()?;
    let mut store = Store::open(tmp.path(), "bench-log")?;
    let signer = NoteSigner::new("bench-log", [7; 32])?;
    let mut global = fedchain_protocol::starting_model(&valid);
    let (mut enc, mut plain) = (Phases::default(), Phases::default());
    let (mut enc_round, mut plain_round) = (0.0, 0.0);
    let mut ciphertexts = 0;
    let mut upload_bytes = 0;
    let mut clipped = 0;
    let mut wasted_shares = 0;
    for round in 1..=rounds {
        let config = round_config(&spec, round);
        let (mut train, mut encrypt, mut up, mut up_plain) = (vec![], vec![], 0.0, 0.0);
        let mut updates = Vec::new();
        let mut submissions = Vec::new();
        for h in &hospitals {
            let t = Instant::now();
            let u = local_round(&model, &[], &global, h, &config, device)?;
            train.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let rounding = plan.rounding(rng.next_u64());
            let e = codec.encrypt(&table, &u.delta, u.samples, rounding, &mut rng)?;
            clipped += e.clipped;
            let bytes = encode_ciphertexts(&pk, &e.ciphertexts);
            encrypt.push(t.elapsed().as_secs_f64());
            ciphertexts = e.ciphertexts.len();
            upload_bytes = bytes.len();
            up += loopback(&bytes)?.as_secs_f64();
            let raw: Vec<u8> = u.delta.iter().flat_map(|v| v.to_le_bytes()).collect();
            up_plain += loopback(&raw)?.as_secs_f64();
            submissions.push(bytes);
            updates.push(u);
        }
        // Plaintext FedAvg of the same updates.
        let t = Instant::now();
        let weighted: Vec<(u64, &[f32])> =
            updates.iter().map(|u| (u.samples, &u.delta[..])).collect();
        let plain_next = fedavg::apply(&global, fedavg::weighted_average(&weighted)?)?;
        let fedavg_s = t.elapsed().as_secs_f64();

        // Coordinator: decode (with the group checks) and multiply.
        let t = Instant::now();
        let vectors = submissions
            .iter()
            .map(|b| decode_ciphertexts(&pk, b, Some(ciphertexts)))
            .collect::<Result<Vec<_>, _>>()?;
        let agg = aggregate(&pk, &vectors)?;
        let aggregate_s = t.elapsed().as_secs_f64();

        // Every hospital decrypts its part (in parallel in a consortium); the coordinator
        // verifies, combines.
        let context = round.to_be_bytes();
        let (dec, share_times) = spread_shares(&pk, &shares, &agg, &context, &mut rng, |_| {})?;
        // A decryptor rebuilds the aggregate from the submissions before its share.
        let rebuilt: Vec<f64> = share_times.iter().map(|t| t + aggregate_s).collect();
        let counts: Vec<usize> = dec.iter().map(|(_, at)| at.len()).collect();
        wasted_shares += scheduled(&pk, &shares, &rebuilt, &counts).0;
        let t = Instant::now();
        let plaintexts = verify_combine(&pk, &agg, &dec, &context)?;
        let avg = codec.decode_average(&plaintexts, global.len(), total)?;
        let next = fedavg::apply(&global, avg)?;
        let combine_s = t.elapsed().as_secs_f64();

        // The ledger: what the coordinator records for the round, then a signed checkpoint.
        let t = Instant::now();
        let mut entries: Vec<Entry> = submissions
            .iter()
            .enumerate()
            .map(|(i, b)| {
                entry(Body::UpdateSubmitted {
                    job: 1,
                    round,
                    hospital: format!("h{}", i + 1),
                    ciphertexts: sha256(b),
                    signature: [0; 64],
                })
            })
            .collect();
        entries.push(entry(Body::RoundClosed {
            job: 1,
            round,
            participants: vec!["h1".into(), "h2".into(), "h3".into()],
            aggregate: sha256(&encode_ciphertexts(&pk, &agg)),
        }));
        for (i, (d, at)) in dec.iter().enumerate() {
            entries.push(entry(Body::DecryptionShare {
                job: 1,
                round,
                hospital: format!("h{}", i + 1),
                share: sha256(&d.to_bytes(&pk)),
                verified: true,
                ciphertexts: decryption::ranges_of(&at.iter().map(|&j| j as u64).collect()),
            }));
        }
        entries.push(entry(Body::RoundFinalized {
            job: 1,
            round,
            model_before: ModelDigest::of(&global).0,
            model_after: ModelDigest::of(&next).0,
            metrics: Vec::new(),
        }));
        for b in &submissions {
            store.put_blob(b)?;
        }
        store.append_all(entries)?;
        store.checkpoint(&signer)?;
        let ledger_s = t.elapsed().as_secs_f64();

        let e = Phases {
            train_s: max(&train),
            encrypt_s: max(&encrypt),
            upload_s: up,
            aggregate_s,
            decrypt_s: max(&share_times) + combine_s,
            fedavg_s: 0.0,
            ledger_s,
        };
        let p = Phases {
            train_s: max(&train),
            upload_s: up_plain,
            fedavg_s,
            ledger_s,
            ..Phases::default()
        };
        // Critical path: the slowest hospital trains then encrypts.
        let slowest: f64 = train
            .iter()
            .zip(&encrypt)
            .map(|(a, b)| a + b)
            .fold(0.0, f64::max);
        enc_round += slowest + e.upload_s + e.aggregate_s + e.decrypt_s + e.ledger_s;
        plain_round += p.total();
        enc.add(&e);
        plain.add(&p);
        if progress {
            eprintln!(
                "round {round}/{rounds}: encrypted {:.3} s (train {:.3}, encrypt {:.3}, upload \
                 {:.3}, aggregate {:.3}, decrypt {:.3}, ledger {:.3}); plaintext {:.3} s",
                slowest + e.upload_s + e.aggregate_s + e.decrypt_s + e.ledger_s,
                e.train_s,
                e.encrypt_s,
                e.upload_s,
                e.aggregate_s,
                e.decrypt_s,
                e.ledger_s,
                p.total()
            );
        }
        std::hint::black_box(plain_next);
        global = next;
    }
    let k = 1.0 / rounds as f64;
    let accuracy = pooled_metrics(&model, &[], &global, &hospitals, device)?
        .into_iter()
        .find(|(n, _)| n == "accuracy")
        .map(|(_, v)| v)
        .unwrap_or(f64::NAN);
    Ok(RoundBench {
        dataset: dataset.name().into(),
        model: model.kind().name().into(),
        parameters: global.len(),
        hospitals: hospitals.len(),
        threshold: 2,
        modulus_bits: bits,
        rounds,
        ciphertexts_per_update: ciphertexts,
        upload_bytes_per_hospital: upload_bytes,
        quant_bits,
        slot_bits: codec.packer().slot_bits(),
        bits_per_parameter: upload_bytes as f64 * 8.0 / global.len() as f64,
        clipped_values: clipped,
        encrypted_round_s: enc_round * k,
        plaintext_round_s: plain_round * k,
        ratio: enc_round / plain_round,
        encrypted_phases: enc.scaled(k),
        plaintext_phases: plain.scaled(k),
        final_accuracy_encrypted: accuracy,
        wasted_shares,
    })
}

/// `bench round --params N`: one round's crypto for a synthetic model of N parameters.
#[derive(Debug, Serialize)]
pub struct ParamsBench {
    pub parameters: usize,
    pub hospitals: usize,
    pub threshold: usize,
    pub modulus_bits: usize,
    /// The job's quant_bits (null: 16 fractional bits times the rows).
    pub quant_bits: Option<u32>,
    pub clip: f32,
    pub slot_bits: u32,
    pub slots_per_ciphertext: usize,
    pub ciphertexts_per_update: usize,
    pub upload_bytes_per_hospital: usize,
    /// Upload bits per parameter: each ciphertext is twice the modulus, shared by its slots.
    pub bits_per_parameter: f64,
    /// Quantize, pack, encrypt and encode one update (slowest hospital, all cores).
    pub encrypt_s: f64,
    /// Coordinator: decode and check every submission, multiply them.
    pub aggregate_s: f64,
    /// One hospital's decryption share of its spread part with its proof, slowest of the
    /// hospitals, each alone on all cores
    /// (as if on its own machine).
    pub share_s: f64,
    /// The most ciphertexts one hospital decrypts: the spread gives each about t/n of them.
    pub ciphertexts_per_decryptor: usize,
    /// One share of every ciphertext, timed the same way: what each of the t decryptors
    /// computed before decryption was spread.
    pub whole_share_s: f64,
    /// `share_s / whole_share_s`: a hospital's share work now against before.
    pub share_work_ratio: f64,
    /// How long the coordinator lets a decryptor take before asking a backup: the smallest of
    /// their budgets, from the cost per ciphertext a worker's probe measures here.
    pub share_budget_s: f64,
    /// Shares the coordinator's scheduler would have had computed for nothing: a primary whose
    /// measured share ran past its budget gets a backup.
    pub wasted_shares: u64,
    /// Coordinator: verify every hospital's share on its ciphertexts, combine each ciphertext,
    /// decode and average.
    pub verify_combine_s: f64,
    /// The round's crypto on its critical path: encrypt + aggregate + share + verify_combine.
    pub crypto_round_s: f64,
    /// Largest difference between the decoded average and the exact weighted average.
    pub max_abs_error: f64,
    /// Update values clipped, all hospitals.
    pub clipped_values: usize,
    /// Peak resident memory of this process, which plays every party: a bound on each.
    pub process_peak_rss_mib: Option<f64>,
}

/// Times one round's crypto for `params` parameters across `hospitals` hospitals (threshold
/// `threshold`), with updates drawn like trained deltas (normal, standard deviation 0.01,
/// seeded).
pub fn run_params(
    params: usize,
    bits: usize,
    quant_bits: Option<u32>,
    hospitals: usize,
    threshold: usize,
    progress: bool,
) -> Result<ParamsBench> {
    use rand_distr::{Distribution, Normal};
    anyhow::ensure!(params > 0, "--params must be at least 1");
    anyhow::ensure!(
        (2..=hospitals).contains(&threshold),
        "--threshold must be between 2 and --hospitals ({hospitals}), got {threshold}"
    );
    let say = |m: &str| {
        if progress {
            eprintln!("{m}");
        }
    };
    // 1,000 rows in all: 500, 300, 200 for three hospitals, as the figures in the README; an
    // even split otherwise.
    let weights: Vec<u64> = if hospitals == 3 {
        vec![500, 300, 200]
    } else {
        let n = hospitals as u64;
        (0..n).map(|i| 1000 / n + u64::from(i < 1000 % n)).collect()
    };
    let clip = if quant_bits.is_some() {
        crate::simulation::QUANT_CLIP
    } else {
        1.0
    };
    let quantization = fedchain_proto::v1::Quantization {
        frac_bits: if quant_bits.is_some() { 0 } else { 16 },
        clip,
        quant_bits: quant_bits.unwrap_or(0),
    };
    let enrolled = fedchain_protocol::Enrollment::of(weights.iter().copied());
    say(&format!(
        "dealing a {bits}-bit {threshold}-of-{hospitals} key"
    ));
    let mut rng = rand_chacha::ChaCha20Rng::from_os_rng();
    let (pk, shares) = deal(bits, weights.len(), threshold, &mut rng)?;
    let table = EncryptionTable::new(&pk);
    let codec = fedchain_protocol::codec(&pk, &quantization, enrolled)?;
    let normal = Normal::new(0.0f32, 0.01).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut data_rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let updates: Vec<Vec<f32>> = weights
        .iter()
        .map(|_| (0..params).map(|_| normal.sample(&mut data_rng)).collect())
        .collect();

    let (mut encrypt_s, mut clipped, mut submissions) = (0f64, 0, Vec::new());
    for (i, (u, &w)) in updates.iter().zip(&weights).enumerate() {
        say(&format!("hospital {} encrypts its update", i + 1));
        let t = Instant::now();
        let rounding = if quant_bits.is_some() {
            fedchain_crypto::quantize::Rounding::Stochastic {
                seed: rng.next_u64(),
            }
        } else {
            fedchain_crypto::quantize::Rounding::Nearest
        };
        let e = codec.encrypt(&table, u, w, rounding, &mut rng)?;
        submissions.push(encode_ciphertexts(&pk, &e.ciphertexts));
        encrypt_s = encrypt_s.max(t.elapsed().as_secs_f64());
        clipped += e.clipped;
    }
    let ciphertexts = codec.ciphertexts_for(params);
    let upload_bytes = submissions[0].len();

    say("the coordinator aggregates");
    let t = Instant::now();
    let vectors = submissions
        .iter()
        .map(|b| decode_ciphertexts(&pk, b, Some(ciphertexts)))
        .collect::<Result<Vec<_>, _>>()?;
    let agg = aggregate(&pk, &vectors)?;
    let aggregate_s = t.elapsed().as_secs_f64();
    drop(vectors);

    let context = b"fedchain bench round --params";
    let (dec, share_times) = spread_shares(&pk, &shares, &agg, context, &mut rng, say)?;
    let share_s = max(&share_times);
    // Before spread decryption each of the t decryptors decrypted every ciphertext: timed the
    // same way, for the ratio.
    say(&format!(
        "for comparison, hospital 1 decrypts all {} ciphertexts, as each of the t did before",
        agg.len()
    ));
    let t = Instant::now();
    std::hint::black_box(partial_decrypt(&pk, &shares[0], &agg, context, &mut rng)?);
    let whole_share_s = t.elapsed().as_secs_f64();
    say("the hospitals measure what a share costs them; the coordinator sets their budgets");
    // A decryptor rebuilds the aggregate from the submissions before its share.
    let rebuilt: Vec<f64> = share_times.iter().map(|t| t + aggregate_s).collect();
    let counts: Vec<usize> = dec.iter().map(|(_, at)| at.len()).collect();
    let (wasted_shares, share_budget_s) = scheduled(&pk, &shares, &rebuilt, &counts);
    say("the coordinator verifies, combines and decodes");
    let t = Instant::now();
    let plaintexts = verify_combine(&pk, &agg, &dec, context)?;
    let avg = codec.decode_average(&plaintexts, params, enrolled.rows)?;
    let verify_combine_s = t.elapsed().as_secs_f64();

    let max_abs_error = (0..params)
        .map(|j| {
            let exact: f64 = updates
                .iter()
                .zip(&weights)
                .map(|(u, &w)| f64::from(u[j].clamp(-clip, clip)) * w as f64)
                .sum::<f64>()
                / enrolled.rows as f64;
            (f64::from(avg[j]) - exact).abs()
        })
        .fold(0.0, f64::max);
    Ok(ParamsBench {
        parameters: params,
        hospitals: weights.len(),
        threshold,
        modulus_bits: bits,
        quant_bits,
        clip,
        slot_bits: codec.packer().slot_bits(),
        slots_per_ciphertext: codec.packer().slots_per_plaintext(),
        ciphertexts_per_update: ciphertexts,
        upload_bytes_per_hospital: upload_bytes,
        bits_per_parameter: upload_bytes as f64 * 8.0 / params as f64,
        encrypt_s,
        aggregate_s,
        share_s,
        ciphertexts_per_decryptor: counts.iter().copied().max().unwrap_or(0),
        whole_share_s,
        share_work_ratio: share_s / whole_share_s,
        share_budget_s,
        wasted_shares,
        verify_combine_s,
        crypto_round_s: encrypt_s + aggregate_s + share_s + verify_combine_s,
        max_abs_error,
        clipped_values: clipped,
        process_peak_rss_mib: peak_rss_mib(),
    })
}

/// This process's peak resident memory (Linux `VmHWM`).
fn peak_rss_mib() -> Option<f64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|kb| kb / 1024.0)
}
