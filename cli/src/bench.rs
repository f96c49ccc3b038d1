//! `fedchain bench`: one-shot performance figures on this machine.

use anyhow::Result;
use clap::Subcommand;
use fedchain_crypto::bench::{run as run_crypto, BenchConfig};
use fedchain_datasets::Builtin;
use fedchain_models::ModelKind;
use indicatif::ProgressBar;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Encryption, aggregation and threshold decryption costs (2048-bit keys by default).
    Crypto {
        /// Gradient values to encrypt end to end.
        #[arg(long, default_value_t = 100_000)]
        values: usize,
        /// Parties holding key shares (threshold: a majority).
        #[arg(long, default_value_t = 3)]
        parties: usize,
        /// Modulus size in bits (2048 default, 3072 supported).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Ciphertexts to partially decrypt, verify and combine (about 30 ms each per core).
        #[arg(long, default_value_t = 64)]
        decrypt: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One federated round of the demo's job, encrypted and in plaintext, phase by phase
    /// (train, encrypt, upload, aggregate, decrypt, ledger).
    Round {
        /// Bundled dataset of the demo's job: breast-cancer (MLP), digits (CNN) or diabetes (MLP).
        #[arg(long, default_value = "breast-cancer")]
        dataset: Builtin,
        /// Model: logreg, mlp or cnn (default: the demo's, cnn for digits, mlp otherwise).
        #[arg(long)]
        model: Option<ModelKind>,
        /// Rounds to run (the figures are means).
        #[arg(long, default_value_t = 8)]
        rounds: u64,
        /// Modulus size in bits.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ledger costs: recording a round (records + fsync'd signed checkpoint) and offline
    /// verification, in a temporary folder.
    Ledger {
        /// Hospitals per round.
        #[arg(long, default_value_t = 10)]
        hospitals: usize,
        /// Rounds to record.
        #[arg(long, default_value_t = 300)]
        rounds: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Round {
            dataset,
            model,
            rounds,
            bits,
            json,
        } => {
            let r = crate::bench_round::run(dataset, model, rounds, bits, !json)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let e = &r.encrypted_phases;
                let p = &r.plaintext_phases;
                println!(
                    "{} / {} ({} parameters), {} hospitals, {}-of-{} key of {} bits, mean of {} rounds:",
                    r.dataset, r.model, r.parameters, r.hospitals, r.threshold, r.hospitals,
                    r.modulus_bits, r.rounds
                );
                println!(
                    "  encrypted round {:.3} s: train {:.3}, encrypt {:.3}, upload {:.3} ({} ciphertexts, {} bytes per hospital), aggregate {:.3}, decrypt {:.3}, ledger {:.3}",
                    r.encrypted_round_s, e.train_s, e.encrypt_s, e.upload_s,
                    r.ciphertexts_per_update, r.upload_bytes_per_hospital, e.aggregate_s,
                    e.decrypt_s, e.ledger_s
                );
                println!(
                    "  plaintext round {:.3} s: train {:.3}, upload {:.3}, fedavg {:.4}, ledger {:.3}",
                    r.plaintext_round_s, p.train_s, p.upload_s, p.fedavg_s, p.ledger_s
                );
                println!("  encrypted / plaintext: {:.2}x", r.ratio);
            }
            Ok(())
        }
        BenchCommand::Crypto {
            values,
            parties,
            bits,
            decrypt,
            json,
        } => {
            anyhow::ensure!(values > 0, "--values must be at least 1");
            let config = BenchConfig {
                modulus_bits: bits,
                values,
                parties,
                decrypt_ciphertexts: decrypt,
                ..BenchConfig::default()
            };
            let spinner = if json {
                ProgressBar::hidden()
            } else {
                ProgressBar::new_spinner()
            };
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::from_os_rng();
            let r = run_crypto(&config, &mut rng, |step| {
                spinner.set_message(format!("measuring {step}"))
            })?;
            spinner.finish_and_clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "fedchain bench crypto: {}-bit N, {} parties (threshold {}), {} values, {} threads",
                bits, parties, r.threshold, values, r.threads
            );
            println!(
                "  key ceremony (all cores)        {:>10.0} ms",
                r.key_ceremony_ms_wall
            );
            println!(
                "  DJN table build (all cores)     {:>10.0} ms  ({:.0} MiB)",
                r.table_build_ms_wall, r.table_mib
            );
            println!(
                "  packing                          {} bits/slot, {} values per ciphertext, {} ciphertexts",
                r.slot_bits, r.slots_per_ciphertext, r.ciphertexts
            );
            println!("  per core:");
            println!(
                "  encrypt, naive (kzen, 1 value)  {:>10.1} us/value",
                r.naive_encrypt_us_per_value
            );
            println!(
                "  encrypt, quantize+pack+DJN      {:>10.2} us/value  ({:.0}x faster)",
                r.packed_encrypt_us_per_value, r.encrypt_speedup
            );
            println!(
                "  homomorphic addition            {:>10.2} us/ciphertext",
                r.add_us_per_ciphertext
            );
            println!(
                "  partial decryption + proof      {:>10.0} us/ciphertext (batched over {})",
                r.partial_decrypt_us_per_ciphertext, r.config.decrypt_ciphertexts
            );
            println!(
                "  bare GMP powm, same sizes       {:>10.0} us/ciphertext  (partial decryption is {:.2}x)",
                r.bare_powm_us_per_ciphertext, r.floor_ratio
            );
            println!(
                "  proof verification              {:>10.0} us/ciphertext",
                r.verify_us_per_ciphertext
            );
            println!(
                "  combine {} shares                {:>10.0} us/ciphertext",
                r.threshold, r.combine_us_per_ciphertext
            );
            println!(
                "  bytes on the wire               {:>10.1} naive, {:.2} packed per value",
                r.naive_bytes_per_value, r.packed_bytes_per_value
            );
            Ok(())
        }
        BenchCommand::Ledger {
            hospitals,
            rounds,
            json,
        } => {
            anyhow::ensure!(
                hospitals > 0 && rounds > 0,
                "--hospitals and --rounds must be at least 1"
            );
            let dir = tempfile::tempdir()?;
            let r = fedchain_ledger::bench::run(dir.path(), hospitals, rounds)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "fedchain bench ledger: {} hospitals, {} rounds, {} records per round",
                    r.hospitals, r.rounds, r.records_per_round
                );
                println!(
                    "  append a round + fsync'd signed checkpoint  {:.2} ms mean, {:.2} ms max",
                    r.round_append_checkpoint_ms_mean, r.round_append_checkpoint_ms_max
                );
                println!(
                    "  offline verification                        {:.0} records/s ({} records)",
                    r.verify_records_per_second, r.verified_records
                );
            }
            Ok(())
        }
    }
}
