//! `fedchain job submit|status|watch|download`: the researcher's side, over mutual TLS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use fedchain_consortium::TRUST_FILE;
use fedchain_datasets::{Builtin, ImageShape, TaskKind};
use fedchain_ledger::verify::Trust;
use fedchain_models::{ModelKind, ModelSpec};
use fedchain_proto::limits;
use fedchain_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};
use pb::job_service_client::JobServiceClient;
use pb::ledger_service_client::LedgerServiceClient;
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tonic::transport::Channel;

use crate::dial::{connect, endpoint};
use crate::serve::{read_toml, runtime};

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job described by a TOML file; prints the job id.
    Submit {
        /// The job file (dataset schema, model, rounds, ...; see README).
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
        /// Print the job's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's status.
    Status {
        /// The job id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a job round by round until it finishes (exit 0) or fails (exit 1).
    Watch {
        /// The job id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
        /// Print one JSON object per round and one for the outcome, instead of a progress bar.
        #[arg(long)]
        json: bool,
    },
    /// List your jobs (an auditor sees every job): state, rounds done, the latest model's figures.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel one of your jobs that has not ended: recorded on the ledger, the hospitals'
    /// deposits returned and what is left of the escrow refunded to you.
    Cancel {
        /// The job id.
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
        /// Print the job's status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a job's model and verify it against the ledger: the final model of a finished
    /// job, or with --round any finalized round's.
    Download {
        /// The job id.
        id: u64,
        /// A model round (1..=rounds) to download instead of the final model: any round that
        /// finalized, whatever became of the job after it.
        #[arg(long)]
        round: Option<u64>,
        /// Where to write the safetensors model.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
        /// Print the verification report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How to reach the coordinator, and as whom.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// The coordinator's URL.
    #[arg(
        long,
        env = "FEDCHAIN_COORDINATOR",
        default_value = "https://localhost:7443"
    )]
    pub coordinator: String,
    /// Your party folder from `fedchain consortium init` (e.g. DIR/researchers/alice); its name
    /// is your party name.
    #[arg(long = "as", env = "FEDCHAIN_PARTY")]
    pub party: PathBuf,
}

/// As [`connect`], but the connection is made by the first call, so that a coordinator that is
/// down shows up as a retryable `Unavailable` status (see [`watch`]).
pub fn connect_lazy(url: &str, party_dir: &Path) -> Result<Channel> {
    Ok(endpoint(url, party_dir)?.connect_lazy())
}

fn jobs(ch: Channel) -> JobServiceClient<Channel> {
    JobServiceClient::new(ch)
        .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_MESSAGE_BYTES)
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("the coordinator refused: {} ({:?})", s.message(), s.code())
}

/// A job file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// A bundled dataset whose columns define the schema (`breast-cancer`, `digits`, `diabetes`).
    #[serde(default)]
    pub dataset: Option<String>,
    /// An explicit schema, instead of `dataset`.
    #[serde(default)]
    pub schema: Option<SchemaFile>,
    /// `"logreg"`, `"mlp"`, `"cnn"`, or `{ torchscript = "net.pt" }` (relative to the job file).
    pub model: ModelChoice,
    #[serde(default = "d::rounds")]
    pub rounds: u32,
    #[serde(default = "d::local_epochs")]
    pub local_epochs: u32,
    #[serde(default = "d::learning_rate")]
    pub learning_rate: f64,
    #[serde(default = "d::batch_size")]
    pub batch_size: u32,
    #[serde(default = "d::min_participants")]
    pub min_participants: u32,
    #[serde(default = "d::round_deadline_seconds")]
    pub round_deadline_seconds: u32,
    #[serde(default = "d::credit_budget")]
    pub credit_budget: u64,
    #[serde(default = "d::seed")]
    pub seed: u64,
    /// Fixed-point fractional bits (default 16 when `quant_bits` is not set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frac_bits: Option<u32>,
    /// Bits of the value of a hospital with the average share of the rows (8, 12 or 16): slots
    /// grow with the hospitals, not their rows, at the price of coarser values (stochastic
    /// rounding keeps them unbiased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant_bits: Option<u32>,
    #[serde(default = "d::clip")]
    pub clip: f32,
    /// Record-level differential privacy (DP-SGD) of every hospital's training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyFile>,
    /// Spread each round's decryption over its participants, each ciphertext decrypted by t of
    /// them (default); false: the t lowest key-share indices decrypt everything, as jobs did
    /// before.
    #[serde(default = "d::spread_decryption")]
    pub spread_decryption: bool,
}

/// A job file's `[privacy]`: the budget, and DP-SGD's clipping and noise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyFile {
    /// The most epsilon any hospital may spend on the job.
    pub epsilon: f64,
    /// The delta of the guarantee.
    #[serde(default = "d::delta")]
    pub delta: f64,
    /// Every row's gradient is clipped to this L2 norm.
    #[serde(default = "d::max_grad_norm")]
    pub max_grad_norm: f64,
    /// Noise standard deviation over `max_grad_norm`, the same for every hospital; when not
    /// given, each hospital derives its own from its rows, the smallest that keeps all the
    /// job's rounds within `epsilon` for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_multiplier: Option<f64>,
    /// Distributed noise: each round one full-batch gradient step, each hospital adding a share
    /// of the noise, so that only the decrypted aggregate carries all of it (README, "Distributed
    /// noise").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub distributed: bool,
}

impl PrivacyFile {
    /// The spec's `privacy`.
    pub fn to_spec(&self) -> pb::Privacy {
        pb::Privacy {
            epsilon: self.epsilon,
            delta: self.delta,
            max_grad_norm: self.max_grad_norm,
            noise_multiplier: self.noise_multiplier.unwrap_or(0.0),
            distributed: self.distributed,
        }
    }
}

/// A job file's round deadline when it names none.
pub const DEFAULT_ROUND_DEADLINE_SECONDS: u32 = 300;

mod d {
    pub fn spread_decryption() -> bool {
        true
    }
    pub fn rounds() -> u32 {
        8
    }
    pub fn local_epochs() -> u32 {
        2
    }
    pub fn learning_rate() -> f64 {
        2e-3
    }
    pub fn batch_size() -> u32 {
        32
    }
    pub fn min_participants() -> u32 {
        2
    }
    pub fn round_deadline_seconds() -> u32 {
        super::DEFAULT_ROUND_DEADLINE_SECONDS
    }
    pub fn credit_budget() -> u64 {
        2000
    }
    pub fn seed() -> u64 {
        1
    }
    pub fn frac_bits() -> u32 {
        16
    }
    pub fn clip() -> f32 {
        1.0
    }
    pub fn delta() -> f64 {
        1e-5
    }
    pub fn max_grad_norm() -> f64 {
        1.0
    }
}

/// A job's model: a built-in family by name, or the researcher's TorchScript module.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ModelChoice {
    /// `logreg`, `mlp` or `cnn`.
    Builtin(String),
    /// A TorchScript file (`torch.jit.script(net).save(...)`), sent with the spec.
    Torchscript {
        /// Its path.
        torchscript: PathBuf,
    },
}

impl std::fmt::Display for ModelChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelChoice::Builtin(name) => f.write_str(name),
            ModelChoice::Torchscript { torchscript } => {
                write!(f, "torchscript {}", torchscript.display())
            }
        }
    }
}

/// The columns a job reads.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaFile {
    /// `table` (the default: a CSV with these `features`) or `image` (a folder of image files
    /// of `channels` x `height` x `width`, with a labels CSV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Table columns, in model input order (not given for images: their features are the
    /// channels).
    #[serde(default)]
    pub features: Vec<String>,
    /// For images: 1 (grayscale) or 3 (RGB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u32>,
    /// For images: height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// For images: width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    pub target: String,
    /// `binary`, `multiclass` or `regression`.
    pub task: String,
    /// Number of classes, for `multiclass`.
    #[serde(default)]
    pub classes: Option<u32>,
}

impl JobFile {
    /// The protobuf spec the coordinator receives.
    pub fn to_spec(&self) -> Result<pb::JobSpec> {
        use pb::dataset_schema::Task;
        if self.quant_bits == Some(0) {
            bail!(
                "quant_bits = 0 is not a width: remove the line for 16 fractional bits \
                 (frac_bits), or set 8, 12 or 16"
            );
        }
        let mut image = None;
        let (features, target, task) = match (&self.dataset, &self.schema) {
            (Some(name), None) => {
                let b: Builtin = name.parse()?;
                let ds = b.load()?;
                (ds.feature_names().to_vec(), b.schema().target, ds.task())
            }
            (None, Some(s)) => {
                let task = match (s.task.as_str(), s.classes) {
                    ("binary", None) => TaskKind::Binary,
                    ("regression", None) => TaskKind::Regression,
                    ("multiclass", Some(c)) => TaskKind::Multiclass {
                        classes: c as usize,
                    },
                    (t, c) => bail!(
                        "schema: task {t:?} with classes {c:?}: use binary, regression, or \
                         multiclass with classes = N"
                    ),
                };
                match (
                    s.kind.as_deref().unwrap_or("table"),
                    s.channels,
                    s.height,
                    s.width,
                ) {
                    ("table", None, None, None) => {}
                    ("table", ..) => bail!(
                        "schema: channels, height and width describe images; add kind = \"image\""
                    ),
                    ("image", Some(c), Some(h), Some(w)) => {
                        if !s.features.is_empty() {
                            bail!(
                                "schema: an image schema lists no features (its features are its \
                                 channels); remove `features`"
                            );
                        }
                        image = Some(ImageShape::new(c as usize, h as usize, w as usize)?);
                    }
                    ("image", ..) => {
                        bail!("schema: kind = \"image\" needs channels (1 or 3), height and width")
                    }
                    (k, ..) => bail!("schema: kind {k:?} is not table or image"),
                }
                let features = match image {
                    Some(shape) => shape.channel_names(),
                    None => s.features.clone(),
                };
                (features, s.target.clone(), task)
            }
            _ => {
                bail!("the job file needs exactly one of `dataset = \"NAME\"` or a [schema] table")
            }
        };
        // A module is checked and declared here (its operators, its parameters, one forward
        // pass), so a module that could not run is refused before anything is sent.
        let (model, module) = match &self.model {
            ModelChoice::Builtin(name) => {
                let kind: ModelKind = name.parse()?;
                let spec = match image {
                    Some(shape) => ModelSpec::preset_images(kind, shape, task)?,
                    None => ModelSpec::preset(kind, features.len(), task)?,
                };
                (spec, Vec::new())
            }
            ModelChoice::Torchscript { torchscript } => {
                let size = std::fs::metadata(torchscript)
                    .with_context(|| format!("cannot read {}", torchscript.display()))?
                    .len();
                if size > limits::MAX_TORCHSCRIPT_MODULE_BYTES as u64 {
                    bail!(
                        "{} has {size} bytes; a job's module may have up to {} bytes",
                        torchscript.display(),
                        limits::MAX_TORCHSCRIPT_MODULE_BYTES
                    );
                }
                let m = fedchain_models::Model::from_module_for(
                    torchscript,
                    image.map_or(features.len(), |s| s.len()),
                    task.outputs(),
                    image.map(|s| [s.channels, s.height, s.width]),
                    tch::Device::Cpu,
                )?;
                let bytes = std::fs::read(torchscript)
                    .with_context(|| format!("cannot read {}", torchscript.display()))?;
                (m.spec().clone(), bytes)
            }
        };
        let task_pb = match task {
            TaskKind::Binary => Task::Binary(pb::dataset_schema::Binary {}),
            TaskKind::Regression => Task::Regression(pb::dataset_schema::Regression {}),
            TaskKind::Multiclass { classes } => Task::Multiclass(pb::dataset_schema::Multiclass {
                classes: classes as u32,
            }),
        };
        Ok(pb::JobSpec {
            torchscript_module: module,
            privacy: self.privacy.as_ref().map(PrivacyFile::to_spec),
            schema: Some(pb::DatasetSchema {
                features,
                target,
                task: Some(task_pb),
                image: image.map(|s| pb::ImageShape {
                    channels: s.channels as u32,
                    height: s.height as u32,
                    width: s.width as u32,
                }),
            }),
            model: Some(pb::ModelSpec {
                canonical_json: model.canonical_json(),
            }),
            rounds: self.rounds,
            local_epochs: self.local_epochs,
            learning_rate: self.learning_rate,
            batch_size: self.batch_size,
            min_participants: self.min_participants,
            round_deadline_seconds: self.round_deadline_seconds,
            credit_budget: self.credit_budget,
            // With quant_bits, frac_bits is unused (0) unless the file sets both, which the
            // protocol refuses, naming them.
            quantization: Some(pb::Quantization {
                frac_bits: self.frac_bits.unwrap_or(if self.quant_bits.is_some() {
                    0
                } else {
                    d::frac_bits()
                }),
                clip: self.clip,
                quant_bits: self.quant_bits.unwrap_or(0),
            }),
            seed: self.seed,
            spread_decryption: self.spread_decryption,
        })
    }
}

pub fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state).unwrap_or(pb::JobState::Unspecified) {
        pb::JobState::Enrolling => "enrolling",
        pb::JobState::Running => "running",
        pb::JobState::Finished => "finished",
        pb::JobState::Failed => "failed",
        pb::JobState::Cancelled => "cancelled",
        pb::JobState::Unspecified => "unknown",
    }
}

fn phase_name(phase: i32) -> &'static str {
    match pb::RoundPhase::try_from(phase).unwrap_or(pb::RoundPhase::Unspecified) {
        pb::RoundPhase::Training => "training",
        pb::RoundPhase::Aggregating => "aggregating",
        pb::RoundPhase::Decrypting => "decrypting",
        pb::RoundPhase::Finalized => "finalized",
        pb::RoundPhase::Unspecified => "-",
    }
}

fn status_json(s: &pb::JobStatus) -> serde_json::Value {
    json!({
        "job": s.job,
        "state": state_name(s.state),
        "spec_sha256": s.spec.as_ref().map(|d| hex::encode(&d.sha256)),
        "submitted_record": s.submitted_record,
        "hospitals": s.hospitals,
        "round": s.round,
        "rounds": s.rounds,
        "phase": s.progress.as_ref().map(|p| phase_name(p.phase)),
        "participants": s.progress.as_ref().map(|p| p.participants.clone()),
        "reason": s.reason,
        "researcher": s.researcher,
        "finalized_round": s.finalized_round,
        "metrics": metrics_of(&s.metrics),
        "declined": s.declined.iter().map(|d| json!({
            "hospital": d.hospital,
            "reason": d.reason,
            "record": d.record_index,
        })).collect::<Vec<_>>(),
        "wasted_shares": s.wasted_shares,
        "privacy_budget": (s.privacy_budget > 0.0).then_some(s.privacy_budget),
        "privacy": s.privacy.iter().map(|p| json!({
            "hospital": p.hospital,
            "rounds": p.rounds,
            "epsilon": p.epsilon,
            "noise_multiplier": p.noise_multiplier,
        })).collect::<Vec<_>>(),
        "share_costs_us": s.share_costs.iter()
            .map(|c| (c.hospital.clone(), c.micros_per_ciphertext))
            .collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// Where job `id` stands now.
pub async fn status(ch: Channel, id: u64) -> Result<pb::JobStatus> {
    Ok(jobs(ch)
        .get_job(pb::JobId { id })
        .await
        .map_err(status_err)?
        .into_inner())
}

/// Submits `spec`: in one message, or, when it is too large for one (a large TorchScript
/// module), streamed in slices after a header with its length and digest.
pub async fn submit(ch: Channel, spec: pb::JobSpec) -> Result<pb::JobStatus> {
    if spec.encoded_len() <= limits::MAX_INLINE_SPEC_BYTES {
        return Ok(jobs(ch)
            .submit_job(spec)
            .await
            .map_err(status_err)?
            .into_inner());
    }
    let bytes = spec.encode_to_vec();
    drop(spec);
    if bytes.len() as u64 > limits::MAX_SPEC_BYTES {
        bail!(
            "the job spec is {} bytes, over the {} a coordinator accepts (a TorchScript module may \
             have up to {} bytes)",
            bytes.len(),
            limits::MAX_SPEC_BYTES,
            limits::MAX_TORCHSCRIPT_MODULE_BYTES
        );
    }
    let header = pb::SpecChunk {
        part: Some(pb::spec_chunk::Part::Header(pb::SpecHeader {
            total_bytes: bytes.len() as u64,
            spec: Some(pb::Digest {
                sha256: fedchain_ledger::sha256(&bytes).to_vec(),
            }),
        })),
    };
    let slices: Vec<pb::SpecChunk> = std::iter::once(header)
        .chain(bytes.chunks(limits::CHUNK_BYTES).map(|c| pb::SpecChunk {
            part: Some(pb::spec_chunk::Part::Chunk(c.to_vec())),
        }))
        .collect();
    Ok(jobs(ch)
        .submit_job_stream(tokio_stream::iter(slices))
        .await
        .map_err(status_err)?
        .into_inner())
}

/// Named metrics as commands print them: a JSON object (`{"accuracy": 0.97}`), keys sorted. The
/// ledger keeps its own canonical encoding (sorted pairs); this is only what tools read.
pub type MetricMap = std::collections::BTreeMap<String, f64>;

/// One model round as a watcher saw it.
#[derive(Debug, Clone, Serialize)]
pub struct RoundLine {
    pub round: u64,
    pub metrics: MetricMap,
}

/// How a watched job ended.
#[derive(Debug, Clone, Serialize)]
pub struct Watched {
    pub job: u64,
    pub finished: bool,
    pub rounds: Vec<RoundLine>,
    pub final_metrics: MetricMap,
    pub reason: String,
    /// Whether the job's researcher cancelled it.
    pub cancelled: bool,
    pub model_sha256: Option<String>,
    /// Hospitals that declined the job, as they did.
    pub declined: Vec<DeclinedLine>,
}

/// A hospital's recorded decline of a job.
#[derive(Debug, Clone, Serialize)]
pub struct DeclinedLine {
    pub hospital: String,
    pub reason: String,
    /// Its `JobDeclined` record.
    pub record: u64,
}

fn metrics_of(m: &[pb::Metric]) -> MetricMap {
    m.iter().map(|m| (m.name.clone(), m.value)).collect()
}

fn show_metrics(m: &MetricMap) -> String {
    m.iter()
        .map(|(n, v)| format!("{n} {v:.4}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Follows job `id` to its end. `mode`: 0 quiet, 1 progress bar and lines, 2 JSON lines.
pub async fn watch(ch: Channel, id: u64, mode: u8) -> Result<Watched> {
    use pb::job_event::Event;
    let mut client = jobs(ch);
    let mut outage = Outage::default();
    let status = loop {
        match client.get_job(pb::JobId { id }).await {
            Ok(s) => break s.into_inner(),
            Err(e) if transient(&e) => outage.wait(id, e.message(), None).await?,
            Err(e) => return Err(status_err(e)),
        }
    };
    let bar = if mode == 1 {
        let bar = ProgressBar::new(u64::from(status.rounds));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} job {prefix} [{bar:30}] {pos}/{len} rounds  {msg}  ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(id.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    } else {
        None
    };
    // When the coordinator goes away (a restart, a crash, a network cut), watching resumes once it
    // is back: it rebuilds its jobs from the ledger and the stream starts again from the current
    // state. Rounds already shown are not shown again.
    let mut stream = loop {
        match client.watch_job(pb::JobId { id }).await {
            Ok(s) => break s.into_inner(),
            Err(e) if transient(&e) => outage.wait(id, e.message(), bar.as_ref()).await?,
            Err(e) => return Err(status_err(e)),
        }
    };
    let mut out = Watched {
        job: id,
        finished: false,
        rounds: Vec::new(),
        final_metrics: MetricMap::new(),
        reason: String::new(),
        cancelled: false,
        model_sha256: None,
        declined: Vec::new(),
    };
    let println = |line: String| match &bar {
        Some(b) if !b.is_hidden() => b.println(line),
        _ if mode == 1 => println!("{line}"),
        _ => {}
    };
    loop {
        // The stream only ends after the job's last event; an earlier end is a coordinator
        // shutting down, like an error that a retry can outlive.
        let lost = match stream.message().await {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => Err("the coordinator closed the stream".to_string()),
            Err(e) if transient(&e) => Err(e.message().to_string()),
            Err(e) => return Err(status_err(e)),
        };
        let ev = match lost {
            Ok(ev) => {
                outage = Outage::default();
                ev
            }
            Err(why) => {
                outage.wait(id, &why, bar.as_ref()).await?;
                match client.watch_job(pb::JobId { id }).await {
                    Ok(s) => stream = s.into_inner(),
                    Err(e) if transient(&e) => {}
                    Err(e) => return Err(status_err(e)),
                }
                continue;
            }
        };
        match ev.event {
            Some(Event::Round(p)) => {
                let finalized = p.phase == pb::RoundPhase::Finalized as i32;
                let shown = out.rounds.last().is_some_and(|l| l.round >= p.round);
                if finalized && p.round > 0 && !p.metrics.is_empty() && !shown {
                    let line = RoundLine {
                        round: p.round,
                        metrics: metrics_of(&p.metrics),
                    };
                    if mode == 2 {
                        println!(
                            "{}",
                            json!({"job": id, "round": line.round, "metrics": line.metrics})
                        );
                    }
                    println(format!(
                        "round {:>3}/{}: {}",
                        p.round,
                        status.rounds,
                        show_metrics(&line.metrics)
                    ));
                    if let Some(b) = &bar {
                        b.set_position(p.round);
                    }
                    out.rounds.push(line);
                } else if let Some(b) = &bar {
                    let what = if p.round == 0 {
                        "statistics round".to_string()
                    } else {
                        format!("round {}", p.round)
                    };
                    b.set_message(format!(
                        "{what}: {} ({} hospitals)",
                        phase_name(p.phase),
                        p.participants.len()
                    ));
                }
            }
            Some(Event::Finished(f)) => {
                out.finished = true;
                out.final_metrics = metrics_of(&f.metrics);
                out.model_sha256 = f.model.map(|d| hex::encode(d.sha256));
                break;
            }
            Some(Event::Failed(f)) => {
                out.reason = f.reason;
                out.cancelled = f.cancelled;
                break;
            }
            Some(Event::Declined(d)) => {
                // A stream opened again after an outage sends every decline again.
                if out.declined.iter().any(|l| l.record == d.record_index) {
                    continue;
                }
                let line = DeclinedLine {
                    hospital: d.hospital,
                    reason: d.reason,
                    record: d.record_index,
                };
                if mode == 2 {
                    println!("{}", json!({"job": id, "declined": line}));
                }
                println(format!(
                    "hospital {} declined the job: {} (record {})",
                    printable(&line.hospital),
                    printable(&line.reason),
                    line.record
                ));
                out.declined.push(line);
            }
            None => {}
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(out)
}

/// `text` (another party's words) with its control characters escaped, so that it cannot move
/// the cursor or recolour the researcher's terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// How long `job watch` keeps trying to reach a coordinator that went away.
const WATCH_PATIENCE: Duration = Duration::from_secs(120);

/// A stretch of time in which the coordinator could not be reached.
#[derive(Default)]
struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    /// Says so (once per outage), waits a second before the next try, and gives up after
    /// [`WATCH_PATIENCE`].
    async fn wait(&mut self, id: u64, why: &str, bar: Option<&ProgressBar>) -> Result<()> {
        let since = match self.since {
            Some(t) => t,
            None => {
                let t = std::time::Instant::now();
                self.since = Some(t);
                match bar {
                    Some(b) => b.set_message(format!("waiting for the coordinator ({why})")),
                    None => eprintln!("waiting for the coordinator ({why}); retrying"),
                }
                t
            }
        };
        if since.elapsed() > WATCH_PATIENCE {
            return Err(anyhow!(
                "the coordinator has not been ready for {} s ({why}); run the command again \
                 (for job {id}) once it is",
                WATCH_PATIENCE.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }
}

/// Whether a failed call may succeed when retried: the coordinator is restarting or unreachable.
/// A refusal (unknown job, wrong role, ...) is final.
fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// What `job download` checked.
#[derive(Debug, Clone, Serialize)]
pub struct Downloaded {
    pub job: u64,
    pub round: u64,
    pub path: PathBuf,
    pub model_sha256: String,
    pub file_bytes: u64,
    pub record_index: u64,
    pub checkpoint_size: u64,
    pub cosigned_by: Vec<String>,
    /// The JobSubmitted record whose spec names the file's features, target and task.
    pub job_record_index: u64,
    /// Round 0's RoundFinalized record, whose digest is the file's pooled statistics.
    pub statistics_record_index: u64,
    /// For a TorchScript model: the trained module (the job's module with the released
    /// parameters), which `torch.jit.load` opens.
    pub module: Option<PathBuf>,
}

/// Downloads job `id`'s model and verifies, against the trust file in the party folder: the file
/// digest, the parameter digest, that the RoundFinalized record names it, that the record is in a
/// checkpoint signed by the log and cosigned by a quorum of hospitals; and that the file's
/// preprocessing is the job's schema and round 0's statistics, records of the same checkpoint.
pub async fn download(
    ch: Channel,
    id: u64,
    round: Option<u64>,
    trust_path: &Path,
    out: &Path,
) -> Result<Downloaded> {
    use pb::model_download::Part;
    let trust = Trust::parse(
        &std::fs::read_to_string(trust_path)
            .with_context(|| format!("cannot read {}", trust_path.display()))?,
    )?;
    // Right after a job finishes, the checkpoint covering its model may still be collecting the
    // hospitals' cosignatures (UNAVAILABLE): wait for it, as `job watch` waits out a restart.
    let mut ledger =
        LedgerServiceClient::new(ch.clone()).max_decoding_message_size(limits::MAX_MESSAGE_BYTES);
    let mut client = jobs(ch);
    // The model asked for is the round named or the job's last round's, which the release must be.
    let want = match round {
        Some(r) => r,
        None => {
            let s = client
                .get_job(pb::JobId { id })
                .await
                .map_err(status_err)?
                .into_inner();
            // A job its privacy budget stopped early ends with an earlier round's model.
            if s.finalized_round > 0 && s.finalized_round < u64::from(s.rounds) {
                s.finalized_round
            } else {
                u64::from(s.rounds)
            }
        }
    };
    let mut outage = Outage::default();
    let mut stream = loop {
        match client
            .download_model(pb::DownloadRequest { job: id, round })
            .await
        {
            Ok(s) => break s.into_inner(),
            Err(e) if transient(&e) => outage.wait(id, e.message(), None).await?,
            Err(e) => return Err(status_err(e)),
        }
    };
    let mut release = None;
    let mut file = Vec::new();
    while let Some(m) = stream.message().await.map_err(status_err)? {
        match m.part {
            Some(Part::Release(r)) => release = Some(r),
            Some(Part::Chunk(c)) => {
                file.extend_from_slice(&c.data);
                if file.len() as u64 > limits::MAX_STREAM_BYTES {
                    bail!("the model file is larger than the protocol allows");
                }
            }
            None => {}
        }
    }
    let r = release.ok_or_else(|| anyhow!("the coordinator sent no release header"))?;
    let v = fedchain_audit::verify_release(id, want, &r, &file, &trust)
        .context("the release does not verify; nothing was written")?;
    let p = fedchain_audit::verify_preprocessing(&mut ledger, id, &v)
        .await
        .context("the model's preprocessing does not verify; nothing was written")?;
    if !p.torchscript_module.is_empty() && crate::train::module_path(out) == out {
        bail!(
            "--out {} would be overwritten by the trained module, which goes beside the model as \
             FILE.pt; name the model FILE.safetensors (nothing was written)",
            out.display()
        );
    }
    // The final model is the last round's by the job's spec on the ledger, not by the
    // coordinator's word (`GetJob`), which a coordinator could shorten.
    // A job with differential privacy may stop before its last round when the next would pass
    // its budget; whether it had to is the auditor's replay's check (it recomputes the stop).
    if round.is_none() && v.round != p.rounds && !(p.private && v.round < p.rounds) {
        bail!(
            "the release is round {}'s model, but job {id}'s spec on the ledger has {} rounds; \
             nothing was written",
            v.round,
            p.rounds
        );
    }
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, &file)
        .and_then(|()| std::fs::rename(&tmp, out))
        .with_context(|| format!("cannot write {}", out.display()))?;
    // A TorchScript job's module comes from its spec on the ledger (just verified), with the
    // released parameters in it.
    let module = if p.torchscript_module.is_empty() {
        None
    } else {
        let path = crate::train::module_path(out);
        fedchain_models::Model::for_job(
            v.model.spec(),
            &p.torchscript_module,
            v.model.params(),
            tch::Device::Cpu,
        )
        .and_then(|m| m.save_module(&path))
        .with_context(|| format!("writing the trained module {}", path.display()))?;
        Some(path)
    };
    Ok(Downloaded {
        job: id,
        round: r.round,
        path: out.to_path_buf(),
        model_sha256: hex::encode(v.model_digest),
        file_bytes: r.file_bytes,
        record_index: v.record_index,
        checkpoint_size: v.checkpoint_size,
        cosigned_by: v.cosigned_by,
        job_record_index: p.job_record,
        statistics_record_index: p.statistics_record,
        module,
    })
}

/// The spec of job file `file`: its module (if any) read relative to the file's folder, loaded,
/// checked and declared.
pub fn spec_of_file(file: &Path) -> Result<pb::JobSpec> {
    let mut job: JobFile = read_toml(file)?;
    if let ModelChoice::Torchscript { torchscript } = &mut job.model {
        if torchscript.is_relative() {
            let base = file.parent().unwrap_or(Path::new(""));
            *torchscript = base.join(&*torchscript);
        }
    }
    job.to_spec()
        .with_context(|| format!("in {}", file.display()))
}

pub fn run(cmd: JobCommand) -> Result<std::process::ExitCode> {
    use std::process::ExitCode;
    let rt = runtime()?;
    rt.block_on(async move {
        match cmd {
            JobCommand::Submit { file, client, json } => {
                let spec = spec_of_file(&file)?;
                let ch = connect(&client.coordinator, &client.party).await?;
                let s = submit(ch, spec).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status_json(&s))?);
                } else {
                    println!(
                        "job {} submitted ({}); follow it with: fedchain job watch {} --as {}",
                        s.job,
                        state_name(s.state),
                        s.job,
                        client.party.display()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Status { id, client, json } => {
                let ch = connect(&client.coordinator, &client.party).await?;
                let s = status(ch, id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status_json(&s))?);
                } else {
                    println!(
                        "job {}: {}, round {}/{}, hospitals {}{}",
                        s.job,
                        state_name(s.state),
                        s.round,
                        s.rounds,
                        s.hospitals.join(", "),
                        if s.reason.is_empty() {
                            String::new()
                        } else {
                            format!("\n  reason: {}", s.reason)
                        }
                    );
                    for d in &s.declined {
                        println!(
                            "  declined by {}: {} (record {})",
                            printable(&d.hospital),
                            printable(&d.reason),
                            d.record_index
                        );
                    }
                    if s.wasted_shares > 0 {
                        println!(
                            "  decryption shares computed for rounds already decrypted: {}",
                            s.wasted_shares
                        );
                    }
                    if s.privacy_budget > 0.0 {
                        let each: Vec<String> = s
                            .privacy
                            .iter()
                            .map(|p| {
                                format!(
                                    "{} {:.3} in {} rounds (noise {:.2})",
                                    printable(&p.hospital),
                                    p.epsilon,
                                    p.rounds,
                                    p.noise_multiplier
                                )
                            })
                            .collect();
                        println!(
                            "  privacy spent of the budget of epsilon {}: {}",
                            s.privacy_budget,
                            if each.is_empty() {
                                "nothing yet".to_string()
                            } else {
                                each.join(", ")
                            }
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Watch { id, client, json } => {
                let ch = connect_lazy(&client.coordinator, &client.party)?;
                let w = watch(ch, id, if json { 2 } else { 1 }).await?;
                if json {
                    println!("{}", serde_json::to_string(&w)?);
                } else if w.finished {
                    println!("job {id} finished: {}", show_metrics(&w.final_metrics));
                } else if w.cancelled {
                    println!("job {id} was cancelled: {}", w.reason);
                } else {
                    println!("job {id} FAILED: {}", w.reason);
                }
                Ok(if w.finished {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            JobCommand::List { client, json } => {
                let ch = connect(&client.coordinator, &client.party).await?;
                let list = jobs(ch)
                    .list_jobs(pb::ListJobsRequest {})
                    .await
                    .map_err(status_err)?
                    .into_inner()
                    .jobs;
                if json {
                    let v: Vec<_> = list.iter().map(status_json).collect();
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else if list.is_empty() {
                    println!("no jobs yet; submit one with: fedchain job submit JOB.toml");
                } else {
                    println!(
                        "{:>5}  {:<10} {:>6}  {:<12} LATEST MODEL",
                        "JOB", "STATE", "ROUNDS", "RESEARCHER"
                    );
                    for s in &list {
                        let figures = if s.finalized_round == 0 {
                            "-".to_string()
                        } else if s.metrics.is_empty() {
                            format!("round {} (being evaluated)", s.finalized_round)
                        } else {
                            format!(
                                "round {}: {}",
                                s.finalized_round,
                                show_metrics(&metrics_of(&s.metrics))
                            )
                        };
                        let reason = if s.reason.is_empty() {
                            String::new()
                        } else {
                            format!("  ({})", s.reason)
                        };
                        println!(
                            "{:>5}  {:<10} {:>6}  {:<12} {figures}{reason}",
                            s.job,
                            state_name(s.state),
                            format!("{}/{}", s.finalized_round, s.rounds),
                            s.researcher,
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Cancel { id, client, json } => {
                let ch = connect(&client.coordinator, &client.party).await?;
                let s = jobs(ch)
                    .cancel_job(pb::JobId { id })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                if json {
                    println!("{}", serde_json::to_string_pretty(&status_json(&s))?);
                } else {
                    println!(
                        "job {id} cancelled after {} of {} rounds: recorded on the ledger, the \
                         hospitals' deposits returned and the rest of the escrow refunded{}",
                        s.finalized_round,
                        s.rounds,
                        if s.finalized_round > 0 {
                            format!(
                                "; its finalized rounds' models can still be downloaded \
                                 (fedchain job download {id} --round {} --out FILE)",
                                s.finalized_round
                            )
                        } else {
                            String::new()
                        }
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            JobCommand::Download {
                id,
                round,
                out,
                client,
                json,
            } => {
                let ch = connect(&client.coordinator, &client.party).await?;
                let d = download(ch, id, round, &client.party.join(TRUST_FILE), &out).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&d)?);
                } else {
                    println!(
                        "wrote {} ({} bytes): model {} of job {id} after round {}\n  verified: \
                         file and parameter digests, RoundFinalized record {} names it, included in \
                         checkpoint of size {} signed by the log and cosigned by {}; its \
                         preprocessing is the job's schema (record {}) and round 0's statistics \
                         (record {}): `fedchain predict --model {} --csv ROWS` applies it",
                        d.path.display(),
                        d.file_bytes,
                        d.model_sha256,
                        d.round,
                        d.record_index,
                        d.checkpoint_size,
                        d.cosigned_by.join(", "),
                        d.job_record_index,
                        d.statistics_record_index,
                        d.path.display()
                    );
                    if let Some(module) = &d.module {
                        println!(
                            "wrote {}: the job's TorchScript module with these parameters \
                             (torch.jit.load opens it)",
                            module.display()
                        );
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(extra: &str) -> JobFile {
        toml::from_str(&format!(
            "dataset = \"breast-cancer\"\nmodel = \"mlp\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn quantization_lines_become_the_spec_and_a_zero_width_is_refused() {
        let e = job("quant_bits = 0\n").to_spec().unwrap_err().to_string();
        assert!(e.contains("quant_bits = 0 is not a width"), "{e}");
        let q = |extra: &str| job(extra).to_spec().unwrap().quantization.unwrap();
        assert_eq!((q("").frac_bits, q("").quant_bits), (16, 0));
        let q8 = q("quant_bits = 8\n");
        assert_eq!((q8.frac_bits, q8.quant_bits), (0, 8));
        // Both set: passed through, for the protocol to refuse naming both.
        let both = q("quant_bits = 8\nfrac_bits = 12\n");
        assert_eq!((both.frac_bits, both.quant_bits), (12, 8));
        let e = fedchain_protocol::validate(
            &job("quant_bits = 8\nfrac_bits = 12\n").to_spec().unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("quant_bits") && e.contains("frac_bits"), "{e}");
    }

    #[test]
    fn a_privacy_section_asks_for_distributed_noise_only_when_it_says_so() {
        let p = |extra: &str| job(extra).to_spec().unwrap().privacy.unwrap();
        assert!(!p("[privacy]\nepsilon = 3.0\n").distributed);
        let d = p("[privacy]\nepsilon = 3.0\ndistributed = true\n");
        assert!(d.distributed && d.epsilon == 3.0 && d.noise_multiplier == 0.0);
        // Written back, the file keeps it, and leaves it out when false.
        let back = toml::to_string(&job("[privacy]\nepsilon = 3.0\ndistributed = true\n")).unwrap();
        assert!(back.contains("distributed = true"), "{back}");
        let plain = toml::to_string(&job("[privacy]\nepsilon = 3.0\n")).unwrap();
        assert!(!plain.contains("distributed"), "{plain}");
    }
}
