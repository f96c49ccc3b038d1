//! `fedchain demo`: the whole story on loopback, with real processes.
//!
//! Provisions a consortium (3 hospitals, threshold 2, a researcher, an auditor), splits a bundled
//! dataset across the hospitals with Dirichlet label skew, starts the coordinator and one worker
//! process per hospital (mutual TLS on 127.0.0.1), submits a job as the researcher, watches it,
//! downloads and verifies the model, stops everything, verifies the ledger as the auditor, and
//! prints per-round accuracy, final accuracy, credits per party and the ledger verdict.
//!
//! `--plaintext` runs the same job (same split, seeds, statistics, local training and FedAvg) in
//! one process without encryption, network or ledger: a comparison, never a deployment.
//! `--centralized` runs the old single-machine baseline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use fedchain_consortium::{self as consortium, InitOptions, TRUST_FILE};
use fedchain_datasets::{write_split_as, write_split_images, Builtin, ImageFormat};
use fedchain_ledger::credits::Account;
use fedchain_ledger::note;
use fedchain_ledger::store::Store;
use fedchain_ledger::verify::{verify, Trust};
use fedchain_models::{describe_device, fedavg, pick_device, DeviceChoice, ModelKind};
use fedchain_proto::v1 as pb;
use fedchain_worker::local_round;
use serde::Serialize;

use crate::baseline::{self, BaselineArgs};
use crate::job::{self, MetricMap, RoundLine};
use crate::serve::runtime;
use crate::simulation::{demo_job, demo_split, plaintext_hospitals, pooled_metrics, round_config};

/// The demo's hospitals, in key-share order.
pub const HOSPITALS: [&str; 3] = ["st-marys", "riverside", "northgate"];

/// The names of `n` demo hospitals: the three above, or `h01`, `h02`, ... for another count.
pub fn hospital_names(n: usize) -> Vec<String> {
    if n == HOSPITALS.len() {
        HOSPITALS.iter().map(|h| h.to_string()).collect()
    } else {
        (1..=n).map(|i| format!("h{i:02}")).collect()
    }
}
const RESEARCHER: &str = "alice";
const AUDITOR: &str = "audra";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Bundled dataset: breast-cancer (MLP), digits (CNN) or diabetes (MLP).
    #[arg(long, default_value = "breast-cancer")]
    dataset: Builtin,
    /// Model: logreg, mlp or cnn (default: cnn for digits, mlp otherwise).
    #[arg(long)]
    model: Option<ModelKind>,
    /// A researcher's TorchScript module instead (e.g. examples/digits_resnet.pt, which setup
    /// exports): sent with the job, checked and loaded by every hospital.
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    model_file: Option<std::path::PathBuf>,
    /// Give each hospital its share as a folder of image files (png or dicom) instead of a CSV:
    /// the job declares 1x8x8 grayscale images and workers decode the files (digits only).
    #[arg(long, value_name = "png|dicom")]
    images: Option<ImageFormat>,
    /// Federated rounds.
    #[arg(long)]
    rounds: Option<u32>,
    /// Quantize updates to this many bits (8, 12 or 16) for a hospital with the average share of
    /// the rows, each scaled by its share, instead of 16 fractional bits times its rows: fewer,
    /// narrower slots, so fewer ciphertexts to encrypt and decrypt.
    #[arg(long, value_name = "BITS")]
    quant_bits: Option<u32>,
    /// Seed of the split across hospitals and of the job.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Dirichlet concentration of the label skew across hospitals (smaller = more skew).
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Number of hospitals (one worker process each).
    #[arg(long, default_value_t = 3)]
    hospitals: usize,
    /// Decryption threshold (and cosignature quorum).
    #[arg(long, default_value_t = 2)]
    threshold: usize,
    /// Train with record-level differential privacy within this epsilon per hospital, at delta
    /// 1e-5, with distributed noise (each round one full-batch gradient step, 40 rounds at
    /// learning rate 2 unless --rounds and --learning-rate say otherwise; each hospital adds a
    /// share of the noise, so only the decrypted aggregate carries all of it): the ledger records
    /// what each round spends, and the auditor's replay recomputes it.
    #[arg(long, conflicts_with_all = ["plaintext", "centralized"])]
    epsilon: Option<f64>,
    /// With --epsilon: this noise multiplier instead of the smallest the budget allows (with
    /// --local-noise, one for every hospital instead of each one's own); the budget may then
    /// stop the job before its last round.
    #[arg(long, requires = "epsilon")]
    noise_multiplier: Option<f64>,
    /// With --epsilon: each hospital trains with its own DP-SGD and its own noise (local noise,
    /// private without trusting the other hospitals, each noise multiplier derived from its
    /// rows) instead of distributed noise.
    #[arg(long, requires = "epsilon")]
    local_noise: bool,
    /// The job's learning rate (with distributed noise, the step size of each round's gradient
    /// step on the mean clipped gradient; default 2).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Run the same job WITHOUT encryption, network or ledger, in this process, for comparison.
    #[arg(long, conflicts_with = "centralized")]
    plaintext: bool,
    /// Run the centralized single-machine baseline on the three bundled datasets instead.
    #[arg(long)]
    centralized: bool,
    /// Keep the consortium, data, logs and ledger in this (new or empty) folder instead of a
    /// temporary one.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds a round waits for submissions, and then for decryption shares, before the job
    /// fails. Large models need more: a share costs about 25 ms per ciphertext at 2048 bits on
    /// these 2 cores, and a million parameters make about 5,000 ciphertexts at --quant-bits 8.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    round_deadline: u32,
    /// Paillier modulus bits of the demo consortium.
    #[arg(long, default_value_t = 2048)]
    bits: usize,
    /// Device for local training: auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Print the summary as JSON.
    #[arg(long, conflicts_with = "dashboard")]
    json: bool,
    /// Then serve the web dashboard of the demo's ledger on this address (default
    /// 127.0.0.1:8080) until Ctrl-C; the demo's files are kept (in a new temporary folder
    /// without --dir).
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:8080",
        conflicts_with_all = ["plaintext", "centralized"]
    )]
    dashboard: Option<std::net::SocketAddr>,
}

#[derive(Debug, Serialize)]
struct Summary {
    mode: &'static str,
    dataset: String,
    model: String,
    hospitals: Vec<String>,
    rounds: Vec<RoundLine>,
    final_metrics: MetricMap,
    seconds: f64,
    seconds_per_round: f64,
    credits: Vec<(String, u64)>,
    ledger_verdict: Option<String>,
    ledger_records: Option<u64>,
    model_sha256: Option<String>,
    coordinator_peak_rss_mib: Option<f64>,
    /// Decryption shares computed for rounds already decrypted (the coordinator's count).
    wasted_shares: Option<u64>,
    /// For a job with differential privacy: the epsilon each hospital's rows spent (ledger).
    #[serde(skip_serializing_if = "Option::is_none")]
    privacy_spent: Option<std::collections::BTreeMap<String, f64>>,
    dir: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<()> {
    if args.centralized {
        return baseline::run(BaselineArgs {
            seed: args.seed,
            device: args.device,
            json: args.json,
        });
    }
    if let (Some(f), None) = (args.images, args.dataset.image_shape()) {
        bail!(
            "--images {} needs a dataset of images: {} is a table; use --dataset digits",
            f.extension(),
            args.dataset
        );
    }
    let summary = if args.plaintext {
        plaintext(&args)?
    } else {
        federated(&args)?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!();
    println!(
        "{} summary: {} / {}, hospitals {}",
        summary.mode,
        summary.dataset,
        summary.model,
        summary.hospitals.join(", ")
    );
    for r in &summary.rounds {
        println!("  round {:>2}: {}", r.round, show(&r.metrics));
    }
    println!("  final model: {}", show(&summary.final_metrics));
    println!(
        "  time: {:.1} s, {:.2} s per round",
        summary.seconds, summary.seconds_per_round
    );
    if let Some(m) = summary.coordinator_peak_rss_mib {
        println!("  coordinator peak memory: {m:.0} MiB");
    }
    if let Some(w) = summary.wasted_shares {
        println!("  decryption shares computed and not needed: {w}");
    }
    if let Some(p) = &summary.privacy_spent {
        let each: Vec<String> = p.iter().map(|(h, e)| format!("{h} {e:.3}")).collect();
        println!(
            "  privacy spent (epsilon, by the ledger): {}",
            each.join(", ")
        );
    }
    if !summary.credits.is_empty() {
        println!("  credits:");
        for (who, c) in &summary.credits {
            println!("    {who:<28} {c:>6}");
        }
    }
    if let Some(v) = &summary.ledger_verdict {
        println!(
            "  ledger: {} records, auditor's verdict: {v}",
            summary.ledger_records.unwrap_or(0)
        );
    }
    if let Some(dir) = &summary.dir {
        println!("  files kept in {}", dir.display());
    }
    if let (Some(listen), Some(dir)) = (args.dashboard, &summary.dir) {
        println!();
        return crate::dashboard::run(crate::dashboard::DashboardArgs {
            ledger: Some(dir.join("ledger")),
            coordinator: None,
            consortium: dir.join("consortium/auditors").join(AUDITOR),
            anchor: witness_files(dir),
            listen,
            refresh: 10,
        });
    }
    Ok(())
}

/// The hospitals' witness state files of the demo in `dir`: checkpoints they cosigned.
fn witness_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(states) = std::fs::read_dir(dir.join("worker-state")) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = states
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("witness.txt"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn show(m: &MetricMap) -> String {
    m.iter()
        .map(|(n, v)| {
            if n == "accuracy" {
                format!("{n} {:.2} %", v * 100.0)
            } else {
                format!("{n} {v:.4}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The job run in one process without encryption: the comparison for the federated demo.
fn plaintext(args: &DemoArgs) -> Result<Summary> {
    let jobfile = demo_job(
        args.dataset,
        args.model,
        args.model_file.as_deref(),
        args.rounds,
        args.quant_bits,
        args.seed,
        args.images.is_some(),
    );
    let spec_pb = jobfile.to_spec()?;
    if !args.json {
        println!("==================================================================");
        println!("  PLAINTEXT COMPARISON RUN: NO ENCRYPTION, NO NETWORK, NO LEDGER.");
        println!("  Every update is visible in clear in this process. For comparison");
        println!("  with `fedchain demo` only; never run a consortium like this.");
        println!("==================================================================");
    }
    let started = Instant::now();
    let device = pick_device(args.device)?;
    let (model, hospitals) = plaintext_hospitals(
        args.dataset,
        args.hospitals,
        args.alpha,
        args.seed,
        &spec_pb,
        args.images,
    )?;
    // The model round 1 starts from, as the coordinator derives it.
    let mut global = fedchain_protocol::starting_model(&fedchain_protocol::validate(&spec_pb)?);
    let mut rounds = Vec::new();
    for round in 1..=u64::from(spec_pb.rounds) {
        let config = round_config(&spec_pb, round);
        let updates = hospitals
            .iter()
            .map(|h| {
                local_round(
                    &model,
                    &spec_pb.torchscript_module,
                    &global,
                    h,
                    &config,
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let weighted: Vec<(u64, &[f32])> =
            updates.iter().map(|u| (u.samples, &u.delta[..])).collect();
        global = fedavg::apply(&global, fedavg::weighted_average(&weighted)?)?;
        let metrics = pooled_metrics(
            &model,
            &spec_pb.torchscript_module,
            &global,
            &hospitals,
            device,
        )?;
        if !args.json {
            println!("round {round:>3}/{}: {}", spec_pb.rounds, show(&metrics));
        }
        rounds.push(RoundLine { round, metrics });
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Summary {
        mode: "PLAINTEXT comparison (no encryption, no network, no ledger)",
        dataset: match args.images {
            Some(f) => format!("{} ({} files)", args.dataset.name(), f.extension()),
            None => args.dataset.name().into(),
        },
        model: model.kind().name().into(),
        hospitals: hospital_names(args.hospitals),
        final_metrics: rounds.last().map(|r| r.metrics.clone()).unwrap_or_default(),
        seconds_per_round: seconds / f64::from(spec_pb.rounds),
        rounds,
        seconds,
        credits: Vec::new(),
        ledger_verdict: None,
        ledger_records: None,
        model_sha256: None,
        coordinator_peak_rss_mib: None,
        wasted_shares: None,
        privacy_spent: None,
        dir: None,
    })
}

/// Child processes that are stopped when dropped.
struct Procs(Vec<(String, Child)>);

impl Procs {
    fn stop(&mut self, name: &str) -> Result<()> {
        if let Some((_, child)) = self.0.iter_mut().find(|(n, _)| n == name) {
            terminate(child)?;
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, then wait up to 15 s, then SIGKILL.
fn terminate(child: &mut Child) -> Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    child.wait()?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Distributed noise's rounds when `--rounds` names none: one gradient step a round needs more
/// rounds than local epochs do.
const DISTRIBUTED_ROUNDS: u32 = 40;

/// Distributed noise's step size on the mean clipped gradient when `--learning-rate` names none.
const DISTRIBUTED_LEARNING_RATE: f64 = 2.0;

fn federated(args: &DemoArgs) -> Result<Summary> {
    let temp;
    let dir = match &args.dir {
        Some(d) => {
            if d.exists() && d.read_dir()?.next().is_some() {
                bail!("{} is not empty; pick a new folder for --dir", d.display());
            }
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        // The dashboard serves the ledger after the demo: keep the folder.
        None if args.dashboard.is_some() => tempfile::Builder::new()
            .prefix("fedchain-demo-")
            .tempdir()?
            .keep(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("fedchain-demo-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };
    let started = Instant::now();
    let mut jobfile = demo_job(
        args.dataset,
        args.model,
        args.model_file.as_deref(),
        args.rounds,
        args.quant_bits,
        args.seed,
        args.images.is_some(),
    );
    if args.round_deadline == 0 {
        bail!("--round-deadline must be at least 1 second");
    }
    jobfile.round_deadline_seconds = args.round_deadline;
    // --epsilon without --local-noise: distributed noise.
    let distributed = args.epsilon.is_some() && !args.local_noise;
    if distributed {
        jobfile.rounds = args.rounds.unwrap_or(DISTRIBUTED_ROUNDS);
        jobfile.learning_rate = DISTRIBUTED_LEARNING_RATE;
    }
    if let Some(lr) = args.learning_rate {
        jobfile.learning_rate = lr;
    }
    let mut spec = jobfile.to_spec()?;
    let device = pick_device(args.device)?;
    say(format!(
        "fedchain demo: encrypted federated training of {} / {} across {} hospitals ({} rounds)",
        args.dataset, jobfile.model, args.hospitals, spec.rounds
    ));
    say(format!(
        "  device for local training: {}",
        describe_device(device)
    ));

    // 1. The consortium.
    let t = Instant::now();
    anyhow::ensure!(
        args.hospitals >= 2 && args.threshold >= 2 && args.threshold <= args.hospitals,
        "the demo needs at least 2 hospitals and a threshold between 2 and --hospitals"
    );
    let hospitals = hospital_names(args.hospitals);
    let c = consortium::init(
        &dir.join("consortium"),
        &hospitals,
        args.threshold,
        &InitOptions {
            modulus_bits: args.bits,
            researchers: vec![RESEARCHER.into()],
            auditors: vec![AUDITOR.into()],
            ..InitOptions::default()
        },
    )?;
    say(format!(
        "1. consortium provisioned in {:.1} s: CA, mutual-TLS certificates, identity keys, \
         {}-of-{} threshold Paillier key ({} bits)",
        t.elapsed().as_secs_f64(),
        args.threshold,
        args.hospitals,
        args.bits
    ));

    // 2. The data.
    let images = args.images.is_some();
    let (data, part) = demo_split(args.dataset, args.hospitals, args.alpha, args.seed, images)?;
    let data_dir = dir.join("data");
    let summary = match (args.images, data.image()) {
        (Some(format), Some(shape)) => {
            write_split_images(&data, &part, &data_dir, &hospitals, shape, format)?
        }
        _ => write_split_as(&data, &part, &data_dir, &hospitals)?,
    };
    let shares: Vec<String> = summary
        .hospitals
        .iter()
        .zip(&hospitals)
        .map(|(s, h)| format!("{h} {} rows {:?}", s.rows, s.label_histogram))
        .collect();
    if let Some(epsilon) = args.epsilon {
        jobfile.privacy = Some(crate::job::PrivacyFile {
            epsilon,
            delta: 1e-5,
            max_grad_norm: 1.0,
            noise_multiplier: args.noise_multiplier,
            distributed,
        });
        spec = jobfile.to_spec()?;
        let privacy = fedchain_protocol::privacy::JobPrivacy::of(&spec);
        if let Some(p) = privacy.filter(|p| p.distributed) {
            let sigma = p
                .noise_for(&spec, 0)
                .with_context(|| format!("--epsilon {epsilon}: the job's noise"))?;
            say(format!(
                "  differential privacy, distributed noise: {} rounds of one full-batch step \
                 (learning rate {}), rows' gradients clipped to {}; each participant adds a \
                 share of the noise, so that an aggregate of {} or more carries noise \
                 multiplier {sigma:.2} or more (within epsilon {epsilon} at delta {:e} for every \
                 row)",
                spec.rounds, spec.learning_rate, p.max_grad_norm, spec.min_participants, p.delta
            ));
        } else if let Some(p) = privacy {
            // What each hospital will derive from its training rows (a worker holds out a fifth
            // of each class).
            let mut noise = Vec::new();
            for (h, rows) in hospitals.iter().zip(&part.hospitals) {
                // The worker's own split: its rows less the held-out fifth of each class.
                let (train, _) =
                    fedchain_datasets::train_test_split(&data.subset(rows), 0.2, args.seed)?;
                let train = train.len() as u64;
                let sigma = p
                    .noise_for(&spec, train)
                    .with_context(|| format!("--epsilon {epsilon}: {h}'s noise"))?;
                noise.push(format!("{h} {sigma:.2}"));
            }
            say(format!(
                "  differential privacy: each hospital trains with DP-SGD within epsilon \
                 {epsilon} at delta {:e}, rows' gradients clipped to {}; noise multipliers: {}",
                p.delta,
                p.max_grad_norm,
                noise.join(", ")
            ));
        }
    }
    say(format!(
        "2. {} split with Dirichlet({}) label skew{}: {} (labels {:?})",
        args.dataset,
        args.alpha,
        match args.images {
            Some(f) => format!(", as folders of {} files", f.extension()),
            None => String::new(),
        },
        shares.join("; "),
        summary.label_names
    ));

    // 3. The processes.
    let exe = std::env::current_exe()?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut coordinator = fedchain_coordinator::service::Config::new(
        c.coordinator_dir(),
        dir.join("ledger"),
        "127.0.0.1:0".parse()?,
    );
    coordinator.enroll_seconds = 120;
    write(
        &dir.join("coordinator.toml"),
        &toml::to_string(&coordinator)?,
    )?;
    let log = |name: &str| -> Result<Stdio> {
        Ok(std::fs::File::create(logs.join(format!("{name}.log")))?.into())
    };
    let addr_file = dir.join("coordinator.addr");
    // The coordinator's host runs fedchain-server (no libtorch) when it is built beside this
    // binary, as `make demo` does; otherwise this binary's own `coordinator` command.
    let server = exe.with_file_name("fedchain-server");
    let coordinator_exe = if server.is_file() { &server } else { &exe };
    let mut procs = Procs(Vec::new());
    procs.0.push((
        "coordinator".into(),
        Command::new(coordinator_exe)
            .arg("coordinator")
            .arg("--config")
            .arg(dir.join("coordinator.toml"))
            .arg("--address-file")
            .arg(&addr_file)
            .stdout(Stdio::null())
            .stderr(log("coordinator")?)
            .spawn()
            .context("cannot start the coordinator")?,
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            break a;
        }
        if let Some((_, c)) = procs.0.first_mut() {
            if let Some(status) = c.try_wait()? {
                bail!(
                    "the coordinator exited ({status}); see {}",
                    logs.join("coordinator.log").display()
                );
            }
        }
        if Instant::now() > deadline {
            bail!("the coordinator did not start within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let url = format!("https://{}", addr.trim());
    let device_name = match args.device {
        DeviceChoice::Auto => "auto".to_string(),
        DeviceChoice::Cpu => "cpu".to_string(),
        DeviceChoice::Cuda(n) => format!("cuda:{n}"),
    };
    for (i, h) in hospitals.iter().enumerate() {
        let cfg = dir.join(format!("worker-{h}.toml"));
        let mut worker = fedchain_worker::node::WorkerConfig::new(
            url.clone(),
            c.hospital_dir(h),
            data_dir.join(&summary.hospitals[i].file),
            dir.join("worker-state").join(h),
        );
        worker.device = device_name.clone();
        // The demo's hospitals run the module its operator gave (`--model-file`).
        worker.torchscript = !spec.torchscript_module.is_empty();
        write(&cfg, &toml::to_string(&worker)?)?;
        procs.0.push((
            h.clone(),
            Command::new(&exe)
                .arg("worker")
                .arg("--config")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(log(h)?)
                .spawn()
                .with_context(|| format!("cannot start the worker of {h}"))?,
        ));
    }
    say(format!(
        "3. coordinator ({}) listening on {url} (mutual TLS); workers of {} running (logs in {})",
        if coordinator_exe == &server {
            "fedchain-server, no libtorch"
        } else {
            "fedchain coordinator"
        },
        hospitals.join(", "),
        logs.display()
    ));

    // 4. The researcher's job.
    let alice = c.researcher_dir(RESEARCHER);
    let audra = c.auditor_dir(AUDITOR);
    let rt = runtime()?;
    let job_started = Instant::now();
    let (watched, downloaded, wasted_shares) = rt.block_on(async {
        let ch = crate::dial::connect(&url, &alice).await?;
        let status = job::submit(ch.clone(), spec.clone()).await?;
        say(format!(
            "4. {RESEARCHER} submitted job {} (spec {}); hospitals enroll, then round 0 pools \
             feature statistics under encryption, then {} model rounds",
            status.job,
            hex::encode(
                status
                    .spec
                    .as_ref()
                    .map(|d| d.sha256.clone())
                    .unwrap_or_default()
            ),
            spec.rounds
        ));
        let watched = job::watch(ch.clone(), status.job, if args.json { 0 } else { 1 }).await?;
        if !watched.finished {
            let hint = if watched.reason.contains("before the share deadline") {
                format!(
                    "; a larger model needs a longer --round-deadline (it was {} s)",
                    args.round_deadline
                )
            } else {
                String::new()
            };
            bail!(
                "job {} failed: {}{hint} (logs in {})",
                status.job,
                watched.reason,
                logs.display()
            );
        }
        let out = dir.join("model.safetensors");
        let mut tries = 0;
        let downloaded = loop {
            match job::download(ch.clone(), status.job, None, &alice.join(TRUST_FILE), &out).await {
                Ok(d) => break d,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        };
        // Counted by the coordinator, so read before it stops.
        let wasted = job::status(ch.clone(), status.job).await?.wasted_shares;
        // Wait until the hospitals cosigned the last checkpoint, so the auditor sees every
        // checkpoint with its quorum.
        let trust = Trust::parse(&std::fs::read_to_string(audra.join(TRUST_FILE))?)?;
        let ch = crate::dial::connect(&url, &audra).await?;
        let mut ledger = pb::ledger_service_client::LedgerServiceClient::new(ch);
        for _ in 0..100 {
            let cp = ledger
                .get_checkpoint(pb::CheckpointRequest { size: None })
                .await?
                .into_inner();
            if note::quorum(&cp.note, &trust.log, &trust.witnesses, trust.quorum).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, anyhow::Error>((watched, downloaded, wasted))
    })?;
    let job_seconds = job_started.elapsed().as_secs_f64();
    say(format!(
        "5. {RESEARCHER} downloaded {} and verified it: digests, RoundFinalized record {}, \
         inclusion in checkpoint {} cosigned by {}, preprocessing from the job's schema and \
         round 0's statistics (records {} and {}); `fedchain predict --model {} {}` \
         applies it to raw data",
        downloaded.path.display(),
        downloaded.record_index,
        downloaded.checkpoint_size,
        downloaded.cosigned_by.join(", "),
        downloaded.job_record_index,
        downloaded.statistics_record_index,
        downloaded.path.display(),
        if images { "--images DIR" } else { "--csv ROWS" }
    ));

    // 5. Stop everything, then audit.
    let coordinator_peak_rss_mib = procs
        .0
        .first()
        .and_then(|(_, c)| std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok())
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0);
    for h in &hospitals {
        procs.stop(h)?;
    }
    procs.stop("coordinator")?;
    let trust_text = std::fs::read_to_string(audra.join(TRUST_FILE))?;
    let mut trust = Trust::parse(&trust_text)?;
    for h in &hospitals {
        let state = dir.join("worker-state").join(h).join("witness.txt");
        if let Ok(text) = std::fs::read_to_string(&state) {
            trust.anchors.push(note::checkpoint_in(&text)?);
        }
    }
    let report = verify(&dir.join("ledger"), Some(&trust))?;
    let verdict = if report.ok() {
        "OK".to_string()
    } else {
        format!("FAILED ({} findings)", report.findings.len())
    };
    say(format!(
        "6. {AUDITOR} verified the ledger offline with the consortium's trust file and the \
         hospitals' cosigned checkpoints as anchors: {verdict}"
    ));
    let store = Store::open(&dir.join("ledger"), "fedchain-log")?;
    let credits: Vec<(String, u64)> = store
        .credits()
        .balances()
        .iter()
        .map(|(a, b)| (account_name(a), *b))
        .collect();
    let records = store.len();
    // What each hospital's rows spent, as the ledger records it (the latest figure).
    let mut privacy = std::collections::BTreeMap::new();
    for i in 0..records {
        if let fedchain_ledger::record::Body::PrivacySpent { spent, .. } = store.record(i)?.0.body {
            for h in spent {
                privacy.insert(h.hospital, h.epsilon);
            }
        }
    }
    drop(store);
    let seconds = started.elapsed().as_secs_f64();
    // A private job may stop before its last round.
    let rounds = watched.rounds.len().max(1) as f64;
    if !report.ok() {
        for f in &report.findings {
            eprintln!("  finding: {f:?}");
        }
        bail!("the ledger does not verify");
    }
    Ok(Summary {
        mode: "encrypted federated",
        dataset: match args.images {
            Some(f) => format!("{} ({} files)", args.dataset.name(), f.extension()),
            None => args.dataset.name().into(),
        },
        model: jobfile.model.to_string(),
        hospitals,
        rounds: watched.rounds,
        final_metrics: watched.final_metrics,
        seconds,
        seconds_per_round: job_seconds / (rounds + 1.0),
        credits,
        ledger_verdict: Some(verdict),
        ledger_records: Some(records),
        model_sha256: watched.model_sha256,
        coordinator_peak_rss_mib,
        wasted_shares: Some(wasted_shares),
        privacy_spent: (!privacy.is_empty()).then_some(privacy),
        dir: (args.dir.is_some() || args.dashboard.is_some()).then(|| dir.clone()),
    })
}

fn account_name(a: &Account) -> String {
    match a {
        Account::Researcher(n) => format!("researcher {n}"),
        Account::Hospital(n) => format!("hospital {n}"),
        Account::Escrow(j) => format!("escrow of job {j}"),
        Account::Deposit { job, hospital } => format!("deposit {hospital} (job {job})"),
        Account::Treasury => "treasury".into(),
    }
}
