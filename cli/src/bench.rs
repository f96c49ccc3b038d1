//! `fedchain bench`: one-shot performance figures on this machine.

use anyhow::Result;
use clap::Subcommand;
use fedchain_crypto::bench::{run as run_crypto, BenchConfig};
use fedchain_datasets::Builtin;
use fedchain_models::ModelKind;
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

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
        /// Quantize updates to this many bits (8, 12 or 16) for the average share of the rows,
        /// each hospital's scaled by its share, as `demo --quant-bits` does; default: 16
        /// fractional bits times the rows.
        #[arg(long, value_name = "BITS")]
        quant_bits: Option<u32>,
        /// Instead of the demo's job: one round's crypto for a synthetic model of N parameters
        /// (updates drawn like trained deltas, 3 hospitals, no training), phase by phase, with
        /// the memory it took.
        #[arg(long, value_name = "N", conflicts_with_all = ["dataset", "model", "rounds"])]
        params: Option<usize>,
        /// With --params: hospitals in the consortium, all of them participants and decryptors.
        #[arg(long, default_value_t = 3, requires = "params")]
        hospitals: usize,
        /// With --params: the key's threshold t, the shares each ciphertext needs.
        #[arg(long, default_value_t = 2, requires = "params")]
        threshold: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What `job submit` does before it sends anything: read the job file, load its
    /// TorchScript module, check its operators and tensors, declare its parameters and run one
    /// forward pass; then encode the spec. The median of REPEAT runs.
    Submit {
        /// The job file (`job.toml`), as `job submit` takes it.
        job: PathBuf,
        /// Runs (the figure is the median).
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Loading a hospital's image folder: writes COUNT synthetic SIZE x SIZE grayscale images
    /// (dicom or png) with a labels CSV into a temporary folder, then times loading it as a worker
    /// does (every file decoded and checked, on every core).
    Images {
        /// Images to write and load.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Side of each square image, in pixels.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// dicom or png.
        #[arg(long, default_value = "dicom")]
        format: fedchain_datasets::ImageFormat,
        /// Loads to time (the figure is the fastest; the page cache is warm after the first).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// DP-SGD against ordinary training of the same model on the same rows: seconds per epoch
    /// and their ratio (per-row clipping and noise cost), on the CPU.
    Dp {
        /// Bundled dataset.
        #[arg(long, default_value = "breast-cancer")]
        dataset: Builtin,
        /// Model: logreg, mlp or cnn (default: cnn for digits, mlp otherwise).
        #[arg(long)]
        model: Option<ModelKind>,
        /// Epochs of each.
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        /// Rows per step (DP-SGD: the expected size of its Poisson samples).
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// How fast the dashboard's pages load for a ledger of RECORDS records (a real demo job of
    /// ROUNDS rounds, then refused requests, signed and cosigned): the time to check the ledger
    /// and build the view, then each page fetched over HTTP on loopback.
    Dashboard {
        /// Records in the ledger.
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        /// Rounds of the demo job recorded first.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        rounds: u32,
        /// Loads of each page (median and slowest reported).
        #[arg(long, default_value_t = 5)]
        repeat: usize,
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
        BenchCommand::Dashboard {
            records,
            rounds,
            repeat,
            json,
        } => {
            let r = crate::bench_dashboard::run(records, rounds, repeat)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                crate::bench_dashboard::print(&r);
            }
            Ok(())
        }
        BenchCommand::Submit { job, repeat, json } => {
            if repeat == 0 {
                anyhow::bail!("--repeat must be at least 1");
            }
            let mut seconds = Vec::with_capacity(repeat);
            let mut spec = None;
            for _ in 0..repeat {
                let start = std::time::Instant::now();
                let s = crate::job::spec_of_file(&job)?;
                let bytes = prost::Message::encode_to_vec(&s);
                seconds.push(start.elapsed().as_secs_f64());
                spec = Some((s, bytes.len()));
            }
            let (spec, spec_bytes) = spec.expect("at least one run");
            let model = fedchain_models::ModelSpec::from_json(
                &spec
                    .model
                    .as_ref()
                    .map(|m| m.canonical_json.clone())
                    .unwrap_or_default(),
            )?;
            seconds.sort_by(f64::total_cmp);
            let r = serde_json::json!({
                "job": job,
                "parameters": fedchain_models::num_parameters(&model),
                "module_bytes": spec.torchscript_module.len(),
                "spec_bytes": spec_bytes,
                "streamed": spec_bytes > fedchain_proto::limits::MAX_INLINE_SPEC_BYTES,
                "repeat": repeat,
                "median_s": seconds[repeat / 2],
                "min_s": seconds[0],
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}: {} parameters, module {} bytes, spec {} bytes ({}): checked and encoded \
                     in {:.3} s (median of {repeat}, fastest {:.3} s)",
                    job.display(),
                    r["parameters"],
                    r["module_bytes"],
                    r["spec_bytes"],
                    if r["streamed"] == true {
                        "streamed"
                    } else {
                        "one message"
                    },
                    seconds[repeat / 2],
                    seconds[0]
                );
            }
            Ok(())
        }
        BenchCommand::Dp {
            dataset,
            model,
            epochs,
            batch_size,
            json,
        } => {
            if epochs == 0 || batch_size == 0 {
                anyhow::bail!("--epochs and --batch-size must be at least 1");
            }
            let r = crate::bench_dp::run(dataset, model, epochs, batch_size)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} / {} ({} rows, batches of {}, {} epochs): {:.3} s per epoch, DP-SGD \
                     (clip {}, noise {}) {:.3} s: {:.2}x",
                    r.dataset,
                    r.model,
                    r.rows,
                    r.batch_size,
                    r.epochs,
                    r.plain_epoch_s,
                    r.max_grad_norm,
                    r.noise_multiplier,
                    r.dp_epoch_s,
                    r.ratio
                );
            }
            Ok(())
        }
        BenchCommand::Images {
            count,
            size,
            format,
            repeat,
            json,
        } => images(count, size, format, repeat.max(1), json),
        BenchCommand::Round {
            bits,
            quant_bits,
            params: Some(params),
            hospitals,
            threshold,
            json,
            ..
        } => {
            let r = crate::bench_round::run_params(
                params, bits, quant_bits, hospitals, threshold, !json,
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "{} parameters, {} hospitals, {}-of-{} key of {} bits, {}: {} ciphertexts of {} \
                 {}-bit slots, {:.1} bits per parameter on the wire",
                r.parameters,
                r.hospitals,
                r.threshold,
                r.hospitals,
                r.modulus_bits,
                match r.quant_bits {
                    Some(b) => format!("quant_bits {b}"),
                    None => "16 fractional bits".into(),
                },
                r.ciphertexts_per_update,
                r.slots_per_ciphertext,
                r.slot_bits,
                r.bits_per_parameter
            );
            println!(
                "  crypto of one round {:.2} s: encrypt {:.2}, aggregate {:.2}, share {:.2} (slowest \
                 hospital, alone on this machine), verify + combine + decode {:.2}",
                r.crypto_round_s, r.encrypt_s, r.aggregate_s, r.share_s, r.verify_combine_s
            );
            println!(
                "  decryption spread over the {} hospitals: each decrypts at most {} of {} \
                 ciphertexts; a share takes {:.2} s against {:.2} s for all of them ({:.2}x)",
                r.hospitals,
                r.ciphertexts_per_decryptor,
                r.ciphertexts_per_update,
                r.share_s,
                r.whole_share_s,
                r.share_work_ratio
            );
            println!(
                "  the coordinator would ask a backup decryptor after {:.1} s; shares computed \
                 for nothing: {}",
                r.share_budget_s, r.wasted_shares
            );
            println!(
                "  largest error of the average {:.2e}, {} values clipped, peak memory {} (one \
                 process plays every party)",
                r.max_abs_error,
                r.clipped_values,
                r.process_peak_rss_mib
                    .map_or("unknown".into(), |m| format!("{m:.0} MiB"))
            );
            Ok(())
        }
        BenchCommand::Round {
            dataset,
            model,
            rounds,
            bits,
            quant_bits,
            params: None,
            json,
            ..
        } => {
            let r = crate::bench_round::run(dataset, model, rounds, bits, quant_bits, !json)?;
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
                println!(
                    "  decryption shares the coordinator's scheduler would have had computed for \
                     nothing: {}",
                    r.wasted_shares
                );
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
            println!(
                "  speed-up from 1 to {} threads:  encrypt {:.2}x, partial decryption {:.2}x, \
                 verification {:.2}x",
                r.threads,
                r.encrypt_threads_speedup,
                r.partial_decrypt_threads_speedup,
                r.verify_threads_speedup
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

/// `bench images`: write a synthetic folder, then time loading it.
fn images(
    count: usize,
    size: usize,
    format: fedchain_datasets::ImageFormat,
    repeat: usize,
    json: bool,
) -> Result<()> {
    use fedchain_datasets::{load_images, write_images, Dataset, ImageShape, Schema, TaskKind};
    use std::time::Instant;
    anyhow::ensure!(count > 0, "--count must be at least 1");
    let shape = ImageShape::new(1, size, size)?;
    let dir = tempfile::tempdir()?;
    // Smooth, label-dependent synthetic scans with noise: realistic enough for the codecs (PNG's
    // filters compress them as they would real images), seeded so runs compare.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut csv = String::from("label");
    for i in 0..shape.len() {
        csv.push_str(&format!(",p{i}"));
    }
    csv.push('\n');
    let bar = (!json).then(|| progress(count as u64, "writing images"));
    let mut rows = String::new();
    for k in 0..count {
        let label = k % 2;
        rows.push_str(&label.to_string());
        for y in 0..size {
            for x in 0..size {
                let r = ((x as f64 - size as f64 / 2.0).powi(2)
                    + (y as f64 - size as f64 / 2.0).powi(2))
                .sqrt();
                let base = if label == 1 {
                    180.0 - 2.0 * r
                } else {
                    60.0 + r
                };
                let v = (base + rng.random_range(-10.0..10.0))
                    .clamp(0.0, 255.0)
                    .round();
                rows.push_str(&format!(",{v}"));
            }
        }
        rows.push('\n');
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    let table = fedchain_datasets::parse_csv(
        (csv + &rows).as_bytes(),
        "synthetic",
        &Schema {
            features: None,
            target: "label".into(),
            task: TaskKind::Binary,
            image: None,
        },
    )?;
    drop(rows);
    let t = Instant::now();
    write_images(&table, shape, format, dir.path(), "bench")?;
    let write_seconds = t.elapsed().as_secs_f64();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let bytes: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let schema = Schema {
        features: None,
        target: "label".into(),
        task: TaskKind::Binary,
        image: Some(shape),
    };
    let mut times = Vec::new();
    let mut loaded: Option<Dataset> = None;
    for _ in 0..repeat {
        let t = Instant::now();
        loaded = Some(load_images(dir.path(), &schema)?);
        times.push(t.elapsed().as_secs_f64());
    }
    let loaded = loaded.expect("repeat >= 1");
    anyhow::ensure!(
        loaded.len() == count,
        "loaded {} of {count} images",
        loaded.len()
    );
    let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = serde_json::json!({
        "format": format.extension(),
        "count": count,
        "size": size,
        "bytes": bytes,
        "threads": threads,
        "write_seconds": write_seconds,
        "load_seconds": times,
        "best_load_seconds": best,
        "images_per_second": count as f64 / best,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{count} {size}x{size} grayscale {} files ({:.1} MiB) on {threads} threads: written in {write_seconds:.2} s; loaded and checked in {best:.2} s (best of {repeat}: {:.0} images/s)",
            format.extension(),
            bytes as f64 / (1 << 20) as f64,
            count as f64 / best
        );
    }
    Ok(())
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_message(what.to_string());
    bar
}
