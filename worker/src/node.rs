//! The worker process (`fedchain worker --config FILE`): a hospital's side of every job.
//!
//! The worker dials the coordinator over mutual TLS (it never listens), opens the `Tasks` stream
//! and handles each task in order:
//!
//! - **offer**: loads the hospital's CSV with the job's schema; enrolls when the data fits,
//!   declaring its training rows (after its seeded train/test split), and checks that the answer
//!   names the consortium's public key and its own key share index;
//! - **train** round 0: encrypts the per-row moments of its training features (statistics round);
//!   rounds 1..: scales its rows with the consortium's statistics, trains the global model (tch,
//!   CUDA when present), and encrypts the update. Both are weighted by its rows, quantized,
//!   packed, DJN-encrypted, signed with its identity key and streamed;
//! - **decrypt**: before producing a share, fetches every submission of the round, checks each
//!   hospital's signature against the consortium's trust file, multiplies the ciphertexts itself
//!   and compares with the aggregate it is asked to decrypt, and checks the number of distinct
//!   contributors against the job's minimum (never fewer than 2). Any mismatch is refused with a
//!   ledger record ([`pb::Refusal`]);
//! - **cosign**: cosigns a checkpoint only if it extends the last one it cosigned (its witness
//!   state is kept in its state folder);
//! - **evaluate**: scores a global model on its held-out rows; only the row count and mean
//!   metrics leave.
//!
//! Tasks are idempotent, and the coordinator sends each one once per task stream: after a
//! reconnect it resends what its ledger still has pending. A task this worker completed before
//! is done again, because being asked again means the coordinator lost the result (a restart
//! from a ledger that misses it); skipping it would leave the round without this hospital. But
//! only on the same input: the aggregate decrypted and the model trained in each round are kept
//! ([`crate::commitments`], fsynced before the answer leaves), and a second, different one in the
//! same round is refused, since two answers could be subtracted to expose a hospital's update.
//!
//! Each task stream opens with the newest checkpoint this hospital cosigned, so that a
//! coordinator whose ledger lost it stops (`DATA_LOSS`) instead of forking the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fedchain_consortium::tls::client_tls_for;
use fedchain_consortium::HospitalFolder;
use fedchain_crypto::aggregate::aggregate;
use fedchain_crypto::djn::{self, Ciphertext, EncryptionTable};
use fedchain_crypto::keys::{KeyShare, PublicKey};
use fedchain_crypto::threshold::partial_decrypt;
use fedchain_datasets::{
    load_data, train_test_split, DataError, Dataset, FeatureSums, Schema, Standardizer, TaskKind,
};
use fedchain_ledger::note::{NoteSigner, Witness};
use fedchain_ledger::record::{cut_text, Body, MAX_DECLINE_REASON};
use fedchain_ledger::{sha256, Hash};
use fedchain_models::{
    pick_device, DeviceChoice, ModelDigest, ModelFile, ModelKind, ModelSpec, TrainConfig,
};
use fedchain_proto::v1 as pb;
use fedchain_proto::{limits, timing};
use fedchain_protocol::statistics::STATISTICS_CLIP;
use fedchain_protocol::{decryption, decryption_context, RoundPlan, ValidJob};
use pb::ledger_service_client::LedgerServiceClient;
use pb::training_service_client::TrainingServiceClient;
use prost::Message;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use tch::Device;
use tonic::transport::{Channel, Endpoint};

use crate::commitments::{Act, Commitments};
use crate::privacy_log::{JobMechanism, PrivacyLog};
use crate::watchdog::{within_limit, StoppedModules, STOPPED_FILE};
use crate::{evaluate_global, local_round, local_round_distributed, local_round_dp, LocalData};

/// A worker's settings (TOML). Tools that write one serialize this type (`toml::to_string`), so
/// a written file always reads back.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The coordinator's URL, e.g. `https://coordinator.example.org:7443`.
    pub coordinator: String,
    /// The hospital's folder from `fedchain consortium init` (`DIR/hospitals/<name>`).
    pub dir: PathBuf,
    /// The hospital's name; by default the folder's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The hospital's CSV file.
    pub data: PathBuf,
    /// Where the worker keeps its state (the last checkpoint it cosigned); created if missing.
    pub state: PathBuf,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Fraction of the rows held out for evaluating global models.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Whether to take part in jobs that run a researcher's TorchScript module (default: no). Its
    /// operators are checked against an allowlist either way; `fedchain model inspect` shows its
    /// code.
    #[serde(default = "default_torchscript")]
    pub torchscript: bool,
    /// The longest a researcher's module may run in one task (loading, training, evaluating), in
    /// seconds. libtorch cannot interrupt a module, so one that runs longer stops the worker,
    /// which then refuses it (see [`crate::watchdog`]).
    #[serde(default = "default_torchscript_seconds")]
    pub torchscript_seconds: u64,
    /// Which jobs the hospital takes besides fitting its data; a job outside it is declined, on
    /// the ledger, naming the rule.
    #[serde(default, skip_serializing_if = "Policy::is_open")]
    pub policy: Policy,
}

/// A hospital's policy on the jobs it takes (`[policy]` in `worker.toml`). Every rule is checked
/// on the job's offer, before anything of the job is loaded.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The researchers whose jobs it takes (their names in the consortium); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub researchers: Option<Vec<String>>,
    /// The built-in models it trains (`logreg`, `mlp`, `cnn`); absent: all of them. Researchers'
    /// TorchScript modules are `torchscript`'s to allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// The fewest hospitals whose updates a decrypted aggregate may combine: a job that would
    /// decrypt fewer (the larger of its `min_participants` and the key's threshold) is declined,
    /// since a smaller sum says more about each update. 0: no floor.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_participants: u32,
    /// Takes only jobs with record-level differential privacy (a `[privacy]` budget).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_privacy: bool,
    /// The most epsilon this hospital's rows may spend over all jobs (summed, an upper bound by
    /// basic composition): a job whose spending could take the total past it is declined. What
    /// earlier jobs spent is read from the ledger's `PrivacySpent` records. Implies
    /// `require_privacy`; needs `lifetime_delta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_epsilon: Option<f64>,
    /// The most delta over all jobs (summed), with `lifetime_epsilon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_delta: Option<f64>,
}

/// What this hospital's rows have spent on jobs with differential privacy, by the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LifetimeSpent {
    /// Jobs it spent on.
    pub jobs: usize,
    /// The sum of their epsilons (each job's latest figure).
    pub epsilon: f64,
    /// The sum of their deltas.
    pub delta: f64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Policy {
    /// Whether it takes every job (nothing set).
    pub fn is_open(&self) -> bool {
        *self == Policy::default()
    }

    /// Refuses a policy that names a model kind that does not exist.
    pub fn validate(&self) -> Result<(), String> {
        for m in self.models.iter().flatten() {
            match m.parse::<ModelKind>() {
                Ok(_) => {}
                Err(_) if m == "torchscript" => {
                    return Err(
                        "policy.models lists built-in models only; researchers' TorchScript \
                         modules are allowed with torchscript = true"
                            .into(),
                    )
                }
                Err(e) => return Err(format!("policy.models: {e}")),
            }
        }
        match (self.lifetime_epsilon, self.lifetime_delta) {
            (None, None) => {}
            (Some(e), Some(d)) => {
                if !(e.is_finite() && e > 0.0) {
                    return Err(format!(
                        "policy.lifetime_epsilon must be a positive number, got {e}"
                    ));
                }
                if !(d.is_finite() && d > 0.0 && d < 1.0) {
                    return Err(format!(
                        "policy.lifetime_delta must be between 0 and 1, got {d}"
                    ));
                }
            }
            _ => {
                return Err(
                    "policy.lifetime_epsilon and policy.lifetime_delta go together: set both"
                        .into(),
                )
            }
        }
        Ok(())
    }

    /// Why a job of spec `job`, on `rows` training rows of this hospital, would take its lifetime
    /// budget past what is left after `spent`: the job may spend up to its own budget or what all
    /// its rounds spend, whichever is less.
    pub fn lifetime_declines(
        &self,
        spent: LifetimeSpent,
        job: &pb::JobSpec,
        rows: u64,
    ) -> Option<String> {
        let (Some(epsilon), Some(delta)) = (self.lifetime_epsilon, self.lifetime_delta) else {
            return None;
        };
        let p = fedchain_protocol::privacy::JobPrivacy::of(job)?;
        let most = p
            .spent(job, rows, u64::from(job.rounds))
            .map_or(p.epsilon, |e| e.min(p.epsilon));
        if spent.epsilon + most > epsilon || spent.delta + p.delta > delta {
            return Some(format!(
                "it may spend epsilon {most:.4} (delta {:e}) of this hospital's rows, and {} \
                 earlier job(s) spent epsilon {:.4} (delta {:e}) of its lifetime budget of \
                 epsilon {epsilon} (delta {delta:e})",
                p.delta, spent.jobs, spent.epsilon, spent.delta
            ));
        }
        None
    }

    /// Why this policy declines a job of `researcher` training `model` that decrypts aggregates of
    /// at least `participants` hospitals, if it does.
    pub fn declines(
        &self,
        researcher: &str,
        model: &ModelSpec,
        participants: u32,
        private: bool,
    ) -> Option<String> {
        if !private && (self.require_privacy || self.lifetime_epsilon.is_some()) {
            return Some(
                "it asks for no differential privacy, and this hospital's policy takes only jobs \
                 with a [privacy] budget"
                    .into(),
            );
        }
        if let Some(allowed) = &self.researchers {
            if !allowed.iter().any(|r| r == researcher) {
                return Some(format!(
                    "this hospital's policy takes jobs of researchers {} only, not of {researcher:?}",
                    allowed.join(", ")
                ));
            }
        }
        let kind = model.kind();
        if let Some(models) = &self.models {
            let listed = |m: &String| m.parse::<ModelKind>().is_ok_and(|k| k == kind);
            if kind != ModelKind::Torchscript && !models.iter().any(listed) {
                return Some(format!(
                    "this hospital's policy trains the models {} only, not {kind}",
                    models.join(", ")
                ));
            }
        }
        if participants < self.min_participants {
            return Some(format!(
                "its aggregates may combine as few as {participants} hospitals' updates; this \
                 hospital's policy requires at least {}",
                self.min_participants
            ));
        }
        None
    }
}

impl WorkerConfig {
    /// The settings of a worker for the hospital folder `dir`, dialing `coordinator`, training on
    /// the CSV `data` and keeping its state in `state`, everything else at its default.
    pub fn new(coordinator: String, dir: PathBuf, data: PathBuf, state: PathBuf) -> WorkerConfig {
        WorkerConfig {
            coordinator,
            dir,
            name: None,
            data,
            state,
            device: default_device(),
            test_fraction: default_test_fraction(),
            torchscript: default_torchscript(),
            torchscript_seconds: default_torchscript_seconds(),
            policy: Policy::default(),
        }
    }
}

fn default_device() -> String {
    "auto".into()
}

fn default_torchscript_seconds() -> u64 {
    // A local round of a model of millions of parameters on a CPU takes minutes.
    1800
}

fn default_test_fraction() -> f64 {
    0.2
}

fn default_torchscript() -> bool {
    // Opt-in: the operator check is static (see fedchain_model_core::torchscript), and a module's
    // tensors come from its own pickles; a hospital decides to run researchers' code.
    false
}

/// What stops a worker.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration or the hospital folder is unusable.
    #[error("{0}")]
    Setup(String),
    /// The coordinator cannot be reached.
    #[error("cannot reach the coordinator at {url}: {reason}")]
    Connect {
        /// The URL dialed.
        url: String,
        /// Why.
        reason: String,
    },
}

fn setup(e: impl std::fmt::Display) -> NodeError {
    NodeError::Setup(e.to_string())
}

/// A task that could not be completed, with the reason (logged; the worker goes on).
type TaskResult = Result<String, String>;

/// The time limit of a task's work on a researcher's module (`None`: a built-in model, no limit),
/// as (limit, state folder, code digest, what the work is).
struct Limit(Option<(Duration, PathBuf, String, String)>);

impl Limit {
    fn run<T>(self, work: impl FnOnce() -> T) -> T {
        match self.0 {
            Some((limit, state, digest, what)) => within_limit(limit, &state, &digest, &what, work),
            None => work(),
        }
    }
}

/// What a job's spec and this hospital's rows make of each other, when they fit.
struct Fit {
    valid: ValidJob,
    schema: Schema,
    train_raw: Dataset,
    test_raw: Dataset,
}

/// What a decline may say of why this hospital's data does not fit a job: the columns of the job's
/// own schema, never a cell's value, the file's header or path, or a row's number.
fn public_reason(e: &DataError) -> String {
    match e {
        DataError::MissingColumn { column, .. } => format!("no column {column:?}"),
        DataError::DuplicateColumn { column, .. } => format!("column {column:?} appears twice"),
        DataError::NotNumeric { column, .. } | DataError::NotFinite { column, .. } => {
            format!("column {column:?} holds values that are not finite numbers")
        }
        DataError::BadLabel {
            column, expected, ..
        } => format!("column {column:?} holds labels outside the task's (expected {expected})"),
        DataError::Empty { .. } | DataError::NoRows { .. } => "no data rows".into(),
        // The file's name and contents stay in the hospital: only that an image did not fit.
        DataError::Image { .. } => {
            "an image file is not the job's declared images (shape, channels or encoding; see \
             the hospital's log)"
                .into()
        }
        _ => "the data cannot be read as the job's schema asks (see the hospital's log)".into(),
    }
}

struct JobCtx {
    /// The job's spec, validated with the protocol's rules.
    valid: ValidJob,
    schema: Schema,
    train_raw: Dataset,
    test_raw: Dataset,
    /// Data scaled with the consortium's statistics, keyed by their digest.
    scaled: Option<(Hash, LocalData)>,
}

/// A running hospital worker.
pub struct Node {
    cfg: WorkerConfig,
    name: String,
    identity: NoteSigner,
    share: KeyShare,
    pk: PublicKey,
    table: EncryptionTable,
    peers: HashMap<String, [u8; 32]>,
    witness: Witness,
    device: Device,
    jobs: HashMap<u64, JobCtx>,
    rng: ChaCha20Rng,
    /// Task streams opened so far (the reconnection backoff starts over after each).
    connections: u64,
    /// How to reach the coordinator when not by its URL.
    dial: Option<Dial>,
    /// The aggregates decrypted and models trained, per job and round (see [`Commitments`]).
    commitments: Commitments,
    /// The mechanisms of the private jobs it trained in: its own count of what its rows spent.
    privacy: PrivacyLog,
    /// The researchers' modules this worker stopped for running past its limit.
    stopped: StoppedModules,
    /// What a decryption share costs this machine per ciphertext (µs), once measured.
    share_cost_us: Option<u64>,
}

/// Connects an endpoint (TLS and timeouts set) some other way than by dialing its URL.
pub type Dial = std::sync::Arc<
    dyn Fn(
            Endpoint,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Channel, String>> + Send>>
        + Send
        + Sync,
>;

impl Node {
    /// Loads the hospital folder: identity key, key share (checked against the public key), the
    /// consortium's trust file (the other hospitals' identity keys) and the witness state.
    pub fn open(cfg: WorkerConfig) -> Result<Node, NodeError> {
        let folder = HospitalFolder::open(&cfg.dir, cfg.name.as_deref()).map_err(setup)?;
        let peers = folder.peers().into_iter().collect();
        let HospitalFolder {
            name,
            identity,
            public_key: pk,
            share,
            log,
            ..
        } = folder;
        fedchain_ledger::durable::create_dir_all(&cfg.state)
            .map_err(|e| setup(format!("cannot create the state folder: {e}")))?;
        let witness =
            Witness::open(identity.clone(), log, &cfg.state.join("witness.txt")).map_err(setup)?;
        let commitments = Commitments::open(&cfg.state.join("commitments.txt")).map_err(setup)?;
        let privacy = PrivacyLog::open(&cfg.state.join("privacy.txt")).map_err(setup)?;
        let choice: DeviceChoice = cfg.device.parse().map_err(setup)?;
        let device = pick_device(choice).map_err(setup)?;
        if !(cfg.test_fraction > 0.0 && cfg.test_fraction < 1.0) {
            return Err(setup("test_fraction must be between 0 and 1"));
        }
        cfg.policy.validate().map_err(setup)?;
        if cfg.torchscript_seconds == 0 {
            return Err(setup("torchscript_seconds must be at least 1"));
        }
        let stopped = StoppedModules::open(&cfg.state.join(STOPPED_FILE)).map_err(setup)?;
        let table = EncryptionTable::new(&pk);
        Ok(Node {
            cfg,
            name,
            identity,
            share,
            pk,
            table,
            peers,
            witness,
            device,
            jobs: HashMap::new(),
            rng: ChaCha20Rng::from_os_rng(),
            connections: 0,
            dial: None,
            commitments,
            privacy,
            stopped,
            share_cost_us: None,
        })
    }

    /// The time limit for work on `model` (only a researcher's module has one).
    fn limit(&self, model: &ModelSpec, what: &str) -> Limit {
        Limit(match model {
            ModelSpec::Torchscript { module, .. } => Some((
                Duration::from_secs(self.cfg.torchscript_seconds),
                self.cfg.state.clone(),
                module.clone(),
                what.to_string(),
            )),
            _ => None,
        })
    }

    /// Runs `work` on `model` within its time limit.
    fn limited<T>(&self, model: &ModelSpec, what: &str, work: impl FnOnce() -> T) -> T {
        self.limit(model, what).run(work)
    }

    /// The hospital's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device local training runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    fn log(&self, msg: &str) {
        eprintln!("[{}] {msg}", self.name);
    }

    /// Reaches the coordinator through `dial` instead of dialing its URL: the in-process tests
    /// hand the connection an in-memory pipe. Mutual TLS, timeouts and everything else stay.
    pub fn with_dial(mut self, dial: Dial) -> Node {
        self.dial = Some(dial);
        self
    }

    async fn connect(&self) -> Result<Channel, NodeError> {
        let url = self.cfg.coordinator.clone();
        let err = |reason: String| NodeError::Connect {
            url: url.clone(),
            reason,
        };
        let tls = client_tls_for(&self.cfg.dir, &self.name, &url).map_err(setup)?;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| err(e.to_string()))?
            .tls_config(tls)
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(20));
        match &self.dial {
            Some(dial) => dial(endpoint).await.map_err(err),
            None => endpoint
                .connect()
                .await
                .map_err(|e| err(format!("{e} ({})", source_chain(&e)))),
        }
    }

    /// Works until the process is stopped: connects, follows the task stream, and reconnects
    /// (with backoff) when the connection drops. Only a setup error ends it.
    pub async fn run(mut self) -> Result<(), NodeError> {
        let first = Duration::from_millis(timing::MIN_RECONNECT_BACKOFF_MS);
        let most = Duration::from_millis(timing::MAX_RECONNECT_BACKOFF_MS);
        let mut backoff = first;
        loop {
            let connections = self.connections;
            let outcome = self.session().await;
            // A session that got through resets the backoff: a coordinator that restarts after
            // a long outage must not leave its hospitals waiting the longest delay to come back.
            if self.connections > connections {
                backoff = first;
            }
            match outcome {
                Ok(()) => self.log("the coordinator closed the task stream; reconnecting"),
                Err(NodeError::Setup(e)) => return Err(NodeError::Setup(e)),
                Err(e) => {
                    self.log(&format!("{e}; retrying in {:.1} s", backoff.as_secs_f64()));
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(most);
        }
    }

    async fn session(&mut self) -> Result<(), NodeError> {
        let channel = self.connect().await?;
        let m = limits::MAX_MESSAGE_BYTES;
        let mut client = TrainingServiceClient::new(channel.clone())
            .max_decoding_message_size(m)
            .max_encoding_message_size(m);
        let mut ledger = LedgerServiceClient::new(channel)
            .max_decoding_message_size(m)
            .max_encoding_message_size(m);
        let share_micros_per_ciphertext = self.share_cost_us();
        let mut tasks = client
            .tasks(pb::TaskRequest {
                hospital: self.name.clone(),
                witnessed: self.witness.last_note().map(|note| pb::Checkpoint {
                    note: note.to_string(),
                }),
                share_micros_per_ciphertext,
            })
            .await
            .map_err(|s| {
                if s.code() == tonic::Code::DataLoss {
                    self.log(&format!(
                        "INCIDENT: the coordinator's ledger no longer holds the checkpoint this \
                         hospital cosigned ({}); it stopped rather than fork the log. Tell its \
                         operator; this worker keeps its witness state and retries.",
                        s.message()
                    ));
                }
                NodeError::Connect {
                    url: self.cfg.coordinator.clone(),
                    reason: format!("{}: {}", s.code(), s.message()),
                }
            })?
            .into_inner();
        self.connections += 1;
        self.log(&format!("connected to {}", self.cfg.coordinator));
        loop {
            let task = match tasks.message().await {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(()),
                Err(s) => {
                    return Err(NodeError::Connect {
                        url: self.cfg.coordinator.clone(),
                        reason: format!("task stream: {}: {}", s.code(), s.message()),
                    })
                }
            };
            let Some(kind) = task.kind else { continue };
            let (key, outcome) = self.handle(&mut client, &mut ledger, kind).await;
            match outcome {
                Ok(msg) if msg.is_empty() => {}
                Ok(msg) => self.log(&msg),
                Err(msg) => self.log(&format!("{key}: {msg}")),
            }
        }
    }

    async fn handle(
        &mut self,
        client: &mut TrainingServiceClient<Channel>,
        ledger: &mut LedgerServiceClient<Channel>,
        kind: pb::task::Kind,
    ) -> (String, TaskResult) {
        use pb::task::Kind;
        let key = match &kind {
            Kind::Offer(o) => format!("offer/{}", o.job),
            Kind::Train(t) => format!("train/{}/{}", t.job, t.round),
            Kind::Decrypt(d) => format!("decrypt/{}/{}", d.job, d.round),
            Kind::Evaluate(e) => format!("evaluate/{}/{}", e.job, e.round),
            Kind::Cosign(c) => format!(
                "cosign/{}",
                c.checkpoint
                    .as_ref()
                    .map(|n| sha256(n.note.as_bytes()))
                    .map(hex::encode)
                    .unwrap_or_default()
            ),
        };
        let result = match kind {
            Kind::Offer(o) => self.offer(client, ledger, o).await,
            Kind::Train(t) => self.train(client, ledger, t).await,
            Kind::Decrypt(d) => self.decrypt(client, ledger, d).await,
            Kind::Evaluate(e) => self.evaluate(client, ledger, e).await,
            Kind::Cosign(c) => self.cosign(client, ledger, c).await,
        };
        (key, result)
    }

    async fn offer(
        &mut self,
        client: &mut TrainingServiceClient<Channel>,
        ledger: &mut LedgerServiceClient<Channel>,
        o: pb::JobOffer,
    ) -> TaskResult {
        let job = o.job;
        let spec = spec_of(ledger, job, o.spec, o.spec_digest.as_ref()).await?;
        let digest = sha256(&spec.encode_to_vec());
        let mut assessed = self.assess(&spec, Some(&o.researcher));
        if let (Ok(fit), Some(_)) = (&assessed, self.cfg.policy.lifetime_epsilon) {
            let rows = fit.train_raw.len() as u64;
            // A ledger that cannot be read says nothing of what was spent: no answer yet (the
            // offer comes again), rather than a decline or a job that might pass the budget.
            let spent = self.lifetime_spent(ledger, job).await?;
            if let Some(why) = self.cfg.policy.lifetime_declines(spent, &spec, rows) {
                assessed = Err(why);
            }
        }
        match assessed {
            Ok(fit) => self.join(client, job, spec, fit).await,
            Err(reason) => {
                // Declined on the ledger, signed, so the researcher sees who declined and why.
                let reason = cut_text(&reason, MAX_DECLINE_REASON).to_string();
                let signature = self
                    .identity
                    .sign_message(&Body::decline_message(job, &digest, &self.name, &reason));
                let answer = client
                    .decline_job(pb::Decline {
                        job,
                        hospital: self.name.clone(),
                        spec: Some(pb::Digest {
                            sha256: digest.to_vec(),
                        }),
                        reason: reason.clone(),
                        signature: signature.to_vec(),
                    })
                    .await;
                let recorded = match answer {
                    Ok(a) => a
                        .into_inner()
                        .record_index
                        .map_or_else(String::new, |i| format!(" (record {i})")),
                    Err(s) => format!(" (not recorded: {})", s.message()),
                };
                Err(format!("declined job {job}: {reason}{recorded}"))
            }
        }
    }

    /// Whether this hospital trains round `round` of private job `job` on its `rows` training
    /// rows: a round the job has, that keeps its rows within the job's budget by its own count
    /// (the model rounds it trained, whatever the coordinator says), its mechanism recorded
    /// first for its lifetime budget. The coordinator should never ask otherwise; the hospital
    /// does not rely on it.
    fn privacy_allows(
        &mut self,
        spec: &pb::JobSpec,
        p: &fedchain_protocol::privacy::JobPrivacy,
        job: u64,
        round: u64,
        rows: u64,
    ) -> Result<(), String> {
        if round > u64::from(spec.rounds) {
            return Err(format!(
                "round {round}: refusing to train: job {job} has {} rounds",
                spec.rounds
            ));
        }
        let done = self.commitments.rounds_besides(Act::Train, job, round);
        let spend = p
            .spend(spec, rows, done + 1)
            .map_err(|e| format!("round {round}: the job's privacy: {e}"))?;
        let spent = spend.epsilon;
        if spent > p.epsilon {
            return Err(format!(
                "round {round}: refusing to train: a round more than the {done} this hospital \
                 trained would take its rows to epsilon {spent:.4}, past job {job}'s budget of {}",
                p.epsilon
            ));
        }
        self.privacy.record(
            job,
            JobMechanism {
                sampling_rate: spend.mechanism.sampling_rate,
                noise_multiplier: spend.noise_multiplier,
                steps: spend.mechanism.steps,
                delta: p.delta,
                budget: p.epsilon,
            },
        )
    }

    /// What this hospital's rows spent, or may yet spend, on jobs with differential privacy
    /// other than `offered`. Per job, the most of: its own count (the mechanism it recorded before
    /// training, composed over the rounds it trained); the ledger's latest `PrivacySpent` figure
    /// for it; and the job's whole budget while the job has not ended (it may spend all of it),
    /// for a job it enrolled in by the ledger or is working on now. The ledger is read up to the
    /// checkpoint this hospital last cosigned, and checked against that checkpoint's root.
    async fn lifetime_spent(
        &self,
        ledger: &mut LedgerServiceClient<Channel>,
        offered: u64,
    ) -> Result<LifetimeSpent, String> {
        use fedchain_ledger::record::Record;
        let mut figures: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        let mut raise = |job: u64, epsilon: f64, delta: f64| {
            let f = figures.entry(job).or_insert((0.0, 0.0));
            *f = (f.0.max(epsilon), f.1.max(delta));
        };
        for (job, m) in self.privacy.jobs() {
            let rounds = self.commitments.rounds_besides(Act::Train, *job, 0);
            raise(*job, m.spent(rounds), m.delta);
        }
        let size = self.witness.last().map_or(0, |cp| cp.size);
        let mut leaves = Vec::with_capacity(size as usize);
        let mut specs: BTreeMap<u64, Hash> = BTreeMap::new();
        let mut enrolled = std::collections::BTreeSet::new();
        let mut ended = std::collections::BTreeSet::new();
        while (leaves.len() as u64) < size {
            let mut stream = ledger
                .get_records(pb::RecordRange {
                    start: leaves.len() as u64,
                    end: size,
                })
                .await
                .map_err(|s| {
                    format!(
                        "reading the ledger for the lifetime budget: {}",
                        s.message()
                    )
                })?
                .into_inner();
            let before = leaves.len();
            while let Some(e) = stream
                .message()
                .await
                .map_err(|s| format!("reading the ledger: {}", s.message()))?
            {
                if e.index != leaves.len() as u64 {
                    return Err(format!("the ledger sent record {} out of order", e.index));
                }
                leaves.push(fedchain_ledger::merkle::leaf_hash(&e.record));
                let record = Record::decode(&e.record)
                    .map_err(|e| format!("a ledger record does not decode: {e}"))?;
                match record.body {
                    Body::JobSubmitted { job, spec, .. } => {
                        specs.insert(job, spec);
                    }
                    Body::HospitalEnrolled { job, hospital, .. } if hospital == self.name => {
                        enrolled.insert(job);
                    }
                    Body::PrivacySpent {
                        job, delta, spent, ..
                    } => {
                        if let Some(mine) = spent.iter().find(|s| s.hospital == self.name) {
                            raise(job, mine.epsilon, delta);
                        }
                    }
                    Body::JobFinished { job, .. } => {
                        ended.insert(job);
                    }
                    _ => {}
                }
            }
            if leaves.len() == before {
                return Err("the ledger sent no records".into());
            }
        }
        if let Some(cp) = self.witness.last() {
            if fedchain_ledger::merkle::root(&leaves) != cp.root {
                return Err(format!(
                    "the ledger's first {} records are not the ones this hospital cosigned",
                    cp.size
                ));
            }
        }
        // Jobs not ended may yet spend their whole budget.
        let mut running: BTreeMap<u64, pb::JobSpec> = self
            .jobs
            .iter()
            .filter(|(id, _)| !ended.contains(*id))
            .map(|(id, ctx)| (*id, ctx.valid.spec.clone()))
            .collect();
        for job in enrolled.difference(&ended) {
            if running.contains_key(job) {
                continue;
            }
            let Some(digest) = specs.get(job) else {
                continue;
            };
            let bytes = fetch_blob(ledger, digest).await?;
            if sha256(&bytes) != *digest {
                return Err(format!(
                    "the ledger's spec of job {job} is not the one recorded"
                ));
            }
            let spec = pb::JobSpec::decode(bytes.as_slice())
                .map_err(|e| format!("job {job}'s spec: {e}"))?;
            running.insert(*job, spec);
        }
        for (job, spec) in &running {
            if let Some(p) = fedchain_protocol::privacy::JobPrivacy::of(spec) {
                raise(*job, p.epsilon, p.delta);
            }
        }
        figures.remove(&offered);
        Ok(LifetimeSpent {
            jobs: figures.len(),
            epsilon: figures.values().map(|f| f.0).sum(),
            delta: figures.values().map(|f| f.1).sum(),
        })
    }

    /// Whether this hospital takes part in `spec`: the job is valid, its `researcher` (when it is
    /// offered) and model are ones the hospital's policy takes, its module (if any) is one this
    /// hospital runs and declares its parameters truly, and this hospital's rows fit its schema.
    /// `Err`: why the hospital declines.
    fn assess(&self, spec: &pb::JobSpec, researcher: Option<&str>) -> Result<Fit, String> {
        let valid = fedchain_protocol::validate(spec).map_err(|e| e.to_string())?;
        if let Some(researcher) = researcher {
            let participants = spec.min_participants.max(self.pk.threshold() as u32);
            if let Some(why) = self.cfg.policy.declines(
                researcher,
                &valid.model,
                participants,
                spec.privacy.is_some(),
            ) {
                return Err(why);
            }
        }
        if !spec.torchscript_module.is_empty() {
            if !self.cfg.torchscript {
                return Err(
                    "it runs a researcher's TorchScript module, and this hospital's worker.toml \
                     refuses those (torchscript = false)"
                        .into(),
                );
            }
            if let ModelSpec::Torchscript { module, .. } = &valid.model {
                if let Some(what) = self.stopped.get(module) {
                    return Err(format!(
                        "this worker stopped its TorchScript module (code sha256 {module}) once \
                         for running past torchscript_seconds ({what}); it will not run it again"
                    ));
                }
            }
            // Loaded once here (its operators and tensors were checked by validate, before any
            // load), so that a module whose parameters are not the ones it declares is declined
            // now. Loading runs its code (__setstate__): within the limit too.
            let start = fedchain_models::init_params(&valid.model, spec.seed);
            self.limited(&valid.model, "loading the module", || {
                fedchain_models::Model::for_job(
                    &valid.model,
                    &spec.torchscript_module,
                    &start,
                    tch::Device::Cpu,
                )
            })
            .map_err(|e| format!("its TorchScript module: {e}"))?;
        }
        let schema = valid.data_schema();
        // The full error stays in this hospital's log; the decline, which the ledger keeps and the
        // researcher reads, says only what the job's own schema names (never a cell, the header
        // or the file's path).
        let rows = load_data(&self.cfg.data, &schema).map_err(|e| {
            self.log(&format!("the job's schema against my data: {e}"));
            format!("my data does not fit its schema: {}", public_reason(&e))
        })?;
        let (train_raw, test_raw) = train_test_split(&rows, self.cfg.test_fraction, spec.seed)
            .map_err(|e| {
                self.log(&format!("splitting my rows: {e}"));
                "my rows cannot be split into training and held-out rows".to_string()
            })?;
        if let Some(p) = fedchain_protocol::privacy::JobPrivacy::of(spec) {
            fedchain_protocol::privacy::delta_fits(p.delta, train_raw.len() as u64)?;
        }
        Ok(Fit {
            valid,
            schema,
            train_raw,
            test_raw,
        })
    }

    /// Enrolls in `job` with the rows `assess` found fit (again: the coordinator answers an
    /// enrolled hospital with its recorded enrollment, which is how a restarted worker rejoins).
    async fn join(
        &mut self,
        client: &mut TrainingServiceClient<Channel>,
        job: u64,
        spec: pb::JobSpec,
        fit: Fit,
    ) -> TaskResult {
        let Fit {
            valid,
            schema,
            train_raw,
            test_raw,
        } = fit;
        let samples = train_raw.len() as u64;
        let share_micros_per_ciphertext = self.share_cost_us();
        let answer = client
            .enroll(pb::EnrollRequest {
                job_id: job,
                hospital: self.name.clone(),
                identity_key: self.identity.verifier().public_key().to_vec(),
                declared_samples: samples,
                share_micros_per_ciphertext,
            })
            .await
            .map_err(|s| format!("enrolling in job {job}: {}", s.message()))?
            .into_inner();
        if answer.public_key != self.pk.to_bytes() {
            return Err(format!(
                "job {job}: the coordinator answered with another public key than the consortium's"
            ));
        }
        if answer.party as usize != self.share.index() {
            return Err(format!(
                "job {job}: the coordinator says my key share index is {}, my share is {}",
                answer.party,
                self.share.index()
            ));
        }
        let named = answer.spec_digest.as_ref().map(|d| d.sha256.as_slice());
        if named != Some(sha256(&spec.encode_to_vec()).as_slice())
            || answer.spec.is_some_and(|s| s != spec)
        {
            return Err(format!(
                "job {job}: the enrollment names another spec than the offer"
            ));
        }
        self.jobs.insert(
            job,
            JobCtx {
                valid,
                schema,
                train_raw,
                test_raw,
                scaled: None,
            },
        );
        Ok(format!(
            "enrolled in job {job} with {samples} training rows (deposit {}, record {}); a \
             decryption share costs this machine {:.1} ms per ciphertext",
            answer.deposit,
            answer.record_index,
            share_micros_per_ciphertext as f64 / 1000.0
        ))
    }

    /// What one decryption share costs this machine per ciphertext ([`share_cost_us`]), measured
    /// once and reported when enrolling, so the coordinator asks a backup in this hospital's place
    /// only when it is really late. 0 if the measurement failed.
    fn share_cost_us(&mut self) -> u64 {
        if let Some(us) = self.share_cost_us {
            return us;
        }
        let (pk, share) = (&self.pk, &self.share);
        let us = tokio::task::block_in_place(|| share_cost_us(pk, share)).unwrap_or(0);
        self.share_cost_us = Some(us);
        us
    }

    /// Makes sure this worker knows job `id`: after a restart it asks the coordinator for its
    /// enrollment (which carries the spec) and reloads its rows.
    async fn ensure_job(
        &mut self,
        client: &mut TrainingServiceClient<Channel>,
        ledger: &mut LedgerServiceClient<Channel>,
        id: u64,
    ) -> Result<(), String> {
        if self.jobs.contains_key(&id) {
            return Ok(());
        }
        let answer = client
            .enroll(pb::EnrollRequest {
                job_id: id,
                hospital: self.name.clone(),
                identity_key: self.identity.verifier().public_key().to_vec(),
                // Zero never enrolls anybody: the coordinator answers an enrolled hospital with
                // its recorded enrollment and refuses everyone else.
                declared_samples: 0,
                // Sent by `join` below, once the job is known to fit.
                share_micros_per_ciphertext: 0,
            })
            .await
            .map_err(|s| format!("job {id} is unknown to this worker and: {}", s.message()))?
            .into_inner();
        let spec = spec_of(ledger, id, answer.spec, answer.spec_digest.as_ref()).await?;
        // Enrolled already: the policy was checked when the job was offered.
        let fit = self
            .assess(&spec, None)
            .map_err(|e| format!("job {id}, enrolled before a restart, no longer fits: {e}"))?;
        let msg = self.join(client, id, spec, fit).await?;
        self.log(&format!("rejoined: {msg}"));
        Ok(())
    }

    fn job(&self, id: u64) -> Result<&JobCtx, String> {
        self.jobs.get(&id).ok_or_else(|| {
            format!("job {id} is unknown to this worker (it enrolled before a restart)")
        })
    }

    /// The job's rows scaled with the consortium's statistics.
    fn scaled(&mut self, id: u64, stats: &[f32]) -> Result<&LocalData, String> {
        let digest = ModelDigest::of(stats).0;
        let ctx = self.jobs.get_mut(&id).ok_or("unknown job")?;
        if ctx.scaled.as_ref().map(|(d, _)| *d) != Some(digest) {
            let regression = ctx.schema.task == TaskKind::Regression;
            let features = ctx.schema.features.clone().unwrap_or_default();
            let scaler = Standardizer::from_moments(&features, regression, stats)
                .map_err(|e| format!("the consortium's statistics are unusable: {e}"))?
                .with_image(ctx.schema.image);
            let data = LocalData {
                train: scaler.apply(&ctx.train_raw).map_err(|e| e.to_string())?,
                test: scaler.apply(&ctx.test_raw).map_err(|e| e.to_string())?,
                scaler,
            };
            ctx.scaled = Some((digest, data));
        }
        Ok(&ctx.scaled.as_ref().ok_or("no data")?.1)
    }

    async fn train(
        &mut self,
        client: &mut TrainingServiceClient<Channel>,
        ledger: &mut LedgerServiceClient<Channel>,
        t: pb::TrainTask,
    ) -> TaskResult {
        let started = Instant::now();
        self.ensure_job(client, ledger, t.job).await?;
        let ctx = self.job(t.job)?;
        let spec = ctx.valid.spec.clone();
        let model_spec = ctx.valid.model.clone();
        // The round as the protocol defines it, checked against the task the coordinator sent.
        let enrolled = fedchain_protocol::Enrollment {
            rows: t.total_weight,
            hospitals: t.contributors,
        };
        let plan = RoundPlan::new(&ctx.valid, t.round, enrolled);
        let quantization = t.quantization.ok_or("the task has no quantization")?;
        let stats_round = t.kind == pb::RoundKind::Statistics as i32;
        if stats_round != (plan.kind == fedchain_protocol::RoundKind::Statistics) {
            return Err(format!(
                "round {}: the task's kind is not the round's ({:?})",
                t.round, plan.kind
            ));
        }
        enrolled_count_fits(&quantization, t.contributors, &self.pk)
            .map_err(|why| format!("round {}: {why}", t.round))?;
        if quantization != plan.quantization {
            return Err(format!(
                "round {}: the task's quantization {quantization:?} is not the round's {:?}",
                t.round, plan.quantization
            ));
        }
        let (vector, weight, what) = if stats_round {
            let train_raw = &ctx.train_raw;
            let moments = FeatureSums::of(train_raw)
                .moments()
                .ok_or("no training rows")?;
            (
                moments,
                train_raw.len() as u64,
                "feature statistics".to_string(),
            )
        } else {
            let file = match t.model_file {
                Some(pb::train_task::ModelFile::Inline(bytes)) => bytes,
                Some(pb::train_task::ModelFile::Fetch(req)) => fetch_model(client, req).await?,
                None => return Err("the task carries no model".into()),
            };
            let global = check_model(&file, &t.model, &model_spec)?;
            if let Some(p) = fedchain_protocol::privacy::JobPrivacy::of(&spec) {
                let rows = self.scaled(t.job, &t.statistics)?.samples();
                self.privacy_allows(&spec, &p, t.job, t.round, rows)?;
            }
            // One round, one starting model: written before the update leaves.
            self.commitments
                .commit(Act::Train, t.job, t.round, ModelDigest::of(&global).0)?;
            let device = self.device;
            let config = TrainConfig {
                epochs: spec.local_epochs as usize,
                batch_size: spec.batch_size as usize,
                learning_rate: spec.learning_rate,
                seed: plan.training_seed,
                ..TrainConfig::default()
            };
            let limit = self.limit(
                &model_spec,
                &format!("job {}, round {}: training", t.job, t.round),
            );
            // DP-SGD's samples and noise: secret, from the worker's OS-seeded generator.
            let mut dp_rng = ChaCha20Rng::from_rng(&mut self.rng);
            let data = self.scaled(t.job, &t.statistics)?;
            let rng = &mut dp_rng;
            let update = tokio::task::block_in_place(|| {
                limit.run(|| match &spec.privacy {
                    None => local_round(
                        &model_spec,
                        &spec.torchscript_module,
                        &global,
                        data,
                        &config,
                        device,
                    ),
                    Some(p) if p.distributed => {
                        local_round_distributed(&spec, &model_spec, &global, data, device)
                    }
                    Some(_) => {
                        local_round_dp(&spec, &model_spec, &global, data, &config, device, rng)
                    }
                })
            })
            .map_err(|e| format!("local training failed: {e}"))?;
            let what = if plan.distributed.is_some() {
                format!(
                    "summed {} rows' clipped gradients for one step, noised in encryption (loss \
                     {:.4})",
                    update.samples, update.train_loss
                )
            } else {
                format!(
                    "trained {} epochs on {} rows (loss {:.4})",
                    spec.local_epochs, update.samples, update.train_loss
                )
            };
            (update.delta, update.samples, what)
        };
        let trained = started.elapsed();
        if weight > t.total_weight {
            return Err(format!(
                "my weight {weight} exceeds the round's total weight {}",
                t.total_weight
            ));
        }
        let codec = plan
            .codec(&self.pk)
            .map_err(|e| format!("the round's codec: {e}"))?;
        let enc_started = Instant::now();
        let rounding = plan.rounding(self.rng.next_u64());
        let (table, rng) = (&self.table, &mut self.rng);
        let encrypted =
            tokio::task::block_in_place(|| codec.encrypt(table, &vector, weight, rounding, rng))
                .map_err(|e| format!("encryption failed: {e}"))?;
        if encrypted.clipped > 0 {
            if stats_round {
                return Err(format!(
                    "{} feature moments exceed the statistics bound {}; not submitting clipped \
                     statistics",
                    encrypted.clipped, STATISTICS_CLIP
                ));
            }
            self.log(&format!(
                "round {}: {} update values clipped to ±{}",
                t.round, encrypted.clipped, quantization.clip
            ));
        }
        let bytes = djn::encode_ciphertexts(&self.pk, &encrypted.ciphertexts);
        let encrypt_time = enc_started.elapsed();
        let digest = sha256(&bytes);
        let signature = self.identity.sign_message(&Body::submission_message(
            t.job, t.round, &self.name, &digest,
        ));
        let header = pb::Submission {
            job: t.job,
            round: t.round,
            hospital: self.name.clone(),
            ciphertexts: encrypted.ciphertexts.len() as u32,
            total_bytes: bytes.len() as u64,
            ciphertext_digest: Some(pb::Digest {
                sha256: digest.to_vec(),
            }),
            signature: signature.to_vec(),
        };
        use pb::update_chunk::Part;
        let mut msgs = vec![pb::UpdateChunk {
            part: Some(Part::Submission(header)),
        }];
        msgs.extend(bytes.chunks(limits::CHUNK_BYTES).map(|c| pb::UpdateChunk {
            part: Some(Part::Chunk(c.to_vec())),
        }));
        let up_started = Instant::now();
        let ack = client
            .submit_update(tokio_stream::iter(msgs))
            .await
            .map_err(|s| format!("round {}: submission refused: {}", t.round, s.message()))?
            .into_inner();
        Ok(format!(
            "job {} round {}: {what} in {:.2} s; encrypted {} values into {} ciphertexts in {:.2} s; \
             uploaded {} bytes in {:.2} s (record {})",
            t.job,
            t.round,
            trained.as_secs_f64(),
            vector.len(),
            encrypted.ciphertexts.len(),
            encrypt_time.as_secs_f64(),
            ack.received_bytes,
            up_started.elapsed().as_secs_f64(),
            ack.record_index
        ))
    }

    async fn refuse(
        &self,
        client: &mut TrainingServiceClient<Channel>,
        d: &pb::DecryptTask,
        reason: String,
    ) -> TaskResult {
        let ack = client
            .refuse_decryption(pb::Refusal {
                job: d.job,
                round: d.round,
                hospital: self.name.clone(),
                reason: reason.clone(),
            })
            .await;
        let recorded = match ack {
            Ok(a) => format!(
                "refusal recorded as record {:?}",
                a.into_inner().record_index
            ),
            Err(s) => format!("the refusal could not be recorded: {}", s.message()),
        };
        Err(format!("REFUSED to decrypt: {reason}; {recorded}"))
    }

    async fn decrypt(
        &mut self,
        client: &mut TrainingServiceClient<Channel>,
        ledger: &mut LedgerServiceClient<Channel>,
        d: pb::DecryptTask,
    ) -> TaskResult {
        let started = Instant::now();
        self.ensure_job(client, ledger, d.job).await?;
        let min = self.job(d.job)?.valid.spec.min_participants.max(2) as usize;
        let Some(aggregate_digest) = d
            .aggregate
            .as_ref()
            .and_then(|a| <Hash>::try_from(a.sha256.as_slice()).ok())
        else {
            return self
                .refuse(client, &d, "the task names no aggregate digest".into())
                .await;
        };
        let context = decryption_context(d.job, d.round, &aggregate_digest);
        if context != d.context {
            return self
                .refuse(
                    client,
                    &d,
                    "the decryption context is not bound to this job, round and aggregate".into(),
                )
                .await;
        }
        let distinct: HashSet<&String> = d.contributors.iter().collect();
        if distinct.len() < min {
            let reason = format!(
                "the aggregate has {} distinct contributors; the job's minimum is {min}, so \
                 decrypting it could reveal an individual hospital's update",
                distinct.len()
            );
            return self.refuse(client, &d, reason).await;
        }
        match self.rebuild(client, &d, aggregate_digest).await {
            Ok(cts) => {
                // Once per round, whatever the coordinator asks: written before the share leaves.
                if let Err(why) =
                    self.commitments
                        .commit(Act::Decrypt, d.job, d.round, aggregate_digest)
                {
                    return self.refuse(client, &d, why).await;
                }
                // Spread decryption: only the ciphertexts the task names (the proof then covers
                // exactly those); none named: all of them.
                let ranges: Vec<[u64; 2]> =
                    d.ciphertexts.iter().map(|r| [r.start, r.end]).collect();
                if let Err(e) = decryption::check_ranges(&ranges, cts.len() as u64) {
                    return self
                        .refuse(client, &d, format!("the task's ciphertexts: {e}"))
                        .await;
                }
                let cts: Vec<_> = if ranges.is_empty() {
                    cts
                } else {
                    decryption::indices(&ranges, cts.len())
                        .into_iter()
                        .map(|j| cts[j].clone())
                        .collect()
                };
                let (pk, share, rng) = (&self.pk, &self.share, &mut self.rng);
                let share =
                    tokio::task::block_in_place(|| partial_decrypt(pk, share, &cts, &context, rng))
                        .map_err(|e| format!("partial decryption failed: {e}"))?;
                let bytes = share.to_bytes(&self.pk);
                use pb::share_chunk::Part;
                let mut msgs = vec![pb::ShareChunk {
                    part: Some(Part::Share(pb::DecryptionShare {
                        job: d.job,
                        round: d.round,
                        hospital: self.name.clone(),
                        party: share.party() as u32,
                        aggregate: d.aggregate.clone(),
                        total_bytes: bytes.len() as u64,
                        share_digest: Some(pb::Digest {
                            sha256: sha256(&bytes).to_vec(),
                        }),
                        ciphertexts: d.ciphertexts.clone(),
                    })),
                }];
                msgs.extend(bytes.chunks(limits::CHUNK_BYTES).map(|c| pb::ShareChunk {
                    part: Some(Part::Chunk(c.to_vec())),
                }));
                let ack = client
                    .submit_decryption_share(tokio_stream::iter(msgs))
                    .await
                    .map_err(|s| format!("share refused: {}", s.message()))?
                    .into_inner();
                Ok(format!(
                    "job {} round {}: checked {} signed submissions, rebuilt the aggregate and \
                     decrypted {} ciphertexts in {:.2} s (record {:?})",
                    d.job,
                    d.round,
                    distinct.len(),
                    cts.len(),
                    started.elapsed().as_secs_f64(),
                    ack.record_index
                ))
            }
            Err(reason) => self.refuse(client, &d, reason).await,
        }
    }

    /// Fetches the round's submissions, checks them and multiplies them; the product must be the
    /// aggregate the task names.
    async fn rebuild(
        &self,
        client: &mut TrainingServiceClient<Channel>,
        d: &pb::DecryptTask,
        want: Hash,
    ) -> Result<Vec<Ciphertext>, String> {
        use pb::round_bundle::Part;
        let mut stream = client
            .fetch_round(pb::RoundRef {
                job: d.job,
                round: d.round,
            })
            .await
            .map_err(|s| format!("cannot fetch the round: {}", s.message()))?
            .into_inner();
        let mut subs: Vec<(pb::Submission, Vec<u8>)> = Vec::new();
        let mut agg = None;
        while let Some(msg) = stream
            .message()
            .await
            .map_err(|s| s.message().to_string())?
        {
            match msg.part {
                Some(Part::Submission(s)) => {
                    if s.total_bytes > limits::MAX_STREAM_BYTES {
                        return Err("a submission announces too many bytes".into());
                    }
                    subs.push((s, Vec::new()));
                }
                Some(Part::Chunk(c)) => {
                    let (s, bytes) = subs.last_mut().ok_or("bytes before any submission")?;
                    if bytes.len() as u64 + c.len() as u64 > s.total_bytes {
                        return Err(format!(
                            "{:?}'s submission runs past its length",
                            s.hospital
                        ));
                    }
                    bytes.extend_from_slice(&c);
                }
                Some(Part::Aggregate(a)) => agg = Some(a),
                None => return Err("an empty message in the round bundle".into()),
            }
        }
        let agg = agg.ok_or("the round bundle has no aggregate header")?;
        let mut names: Vec<&str> = subs.iter().map(|(s, _)| s.hospital.as_str()).collect();
        names.sort();
        let mut contributors: Vec<&str> = d.contributors.iter().map(String::as_str).collect();
        contributors.sort();
        let mut declared: Vec<&str> = agg.contributors.iter().map(String::as_str).collect();
        declared.sort();
        if names != contributors || declared != contributors {
            return Err(format!(
                "the submissions ({names:?}) are not the contributors the task names ({contributors:?})"
            ));
        }
        let mut unique = names.clone();
        unique.dedup();
        if unique.len() != names.len() {
            return Err("a hospital appears twice among the submissions".into());
        }
        let mut vectors = Vec::with_capacity(subs.len());
        for (s, bytes) in &subs {
            let digest = sha256(bytes);
            if Some(digest.to_vec()) != s.ciphertext_digest.as_ref().map(|d| d.sha256.clone()) {
                return Err(format!(
                    "{:?}'s ciphertexts do not match their digest",
                    s.hospital
                ));
            }
            let key = self
                .peers
                .get(&s.hospital)
                .ok_or_else(|| format!("{:?} is not a hospital of the trust file", s.hospital))?;
            let message = Body::submission_message(d.job, d.round, &s.hospital, &digest);
            let sig = <[u8; 64]>::try_from(s.signature.as_slice())
                .map_err(|_| format!("{:?}'s signature is not 64 bytes", s.hospital))?;
            let ok = ed25519_dalek::VerifyingKey::from_bytes(key)
                .map(|k| k.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sig)))
                .is_ok_and(|r| r.is_ok());
            if !ok {
                return Err(format!(
                    "{:?}'s submission signature does not verify with its identity key",
                    s.hospital
                ));
            }
            let cts = djn::decode_ciphertexts(&self.pk, bytes, Some(s.ciphertexts as usize))
                .map_err(|e| format!("{:?}'s ciphertexts: {e}", s.hospital))?;
            vectors.push(cts);
        }
        let product = tokio::task::block_in_place(|| aggregate(&self.pk, &vectors))
            .map_err(|e| format!("cannot multiply the submissions: {e}"))?;
        let rebuilt = sha256(&djn::encode_ciphertexts(&self.pk, &product));
        let announced = agg.digest.as_ref().map(|d| d.sha256.clone());
        if rebuilt != want || announced != Some(want.to_vec()) {
            return Err(format!(
                "the aggregate I rebuilt ({}) is not the one I am asked to decrypt ({})",
                hex::encode(rebuilt),
                hex::encode(want)
            ));
        }
        Ok(product)
    }

    async fn evaluate(
        &mut self,
        client: &mut TrainingServiceClient<Channel>,
        ledger: &mut LedgerServiceClient<Channel>,
        e: pb::EvaluateTask,
    ) -> TaskResult {
        self.ensure_job(client, ledger, e.job).await?;
        let model_spec = self.job(e.job)?.valid.model.clone();
        let module = self.job(e.job)?.valid.spec.torchscript_module.clone();
        let file = match e.fetch {
            Some(req) => fetch_model(client, req).await?,
            None => e.inline,
        };
        let params = check_model(&file, &e.model, &model_spec)?;
        let model = ModelDigest::of(&params).0;
        let device = self.device;
        let limit = self.limit(
            &model_spec,
            &format!("job {}, round {}: evaluating", e.job, e.round),
        );
        let data = self.scaled(e.job, &e.statistics)?;
        let m = tokio::task::block_in_place(|| {
            limit.run(|| evaluate_global(&model_spec, &module, &params, data, device))
        })
        .map_err(|err| format!("evaluation failed: {err}"))?;
        let (rows, signed) = crate::report(&m);
        let metrics: Vec<pb::Metric> = signed
            .iter()
            .map(|(name, value)| pb::Metric {
                name: name.clone(),
                value: *value,
            })
            .collect();
        let signature = self.identity.sign_message(&Body::evaluation_message(
            e.job, e.round, &self.name, &model, rows, &signed,
        ));
        let shown: Vec<String> = metrics
            .iter()
            .map(|m| format!("{} {:.4}", m.name, m.value))
            .collect();
        client
            .submit_evaluation(pb::Evaluation {
                job: e.job,
                round: e.round,
                hospital: self.name.clone(),
                rows,
                metrics,
                model: Some(pb::Digest {
                    sha256: model.to_vec(),
                }),
                signature: signature.to_vec(),
            })
            .await
            .map_err(|s| format!("evaluation refused: {}", s.message()))?;
        Ok(format!(
            "job {} round {}: global model on my {} held-out rows: {}",
            e.job,
            e.round,
            m.rows,
            shown.join(", ")
        ))
    }

    async fn cosign(
        &mut self,
        client: &mut TrainingServiceClient<Channel>,
        ledger: &mut LedgerServiceClient<Channel>,
        c: pb::CosignTask,
    ) -> TaskResult {
        let note = c.checkpoint.ok_or("the task has no checkpoint")?.note;
        let my_last = self.witness.last().map(|cp| cp.size).unwrap_or(0);
        let proof: Vec<Hash> = if my_last == c.old_size {
            c.consistency
                .map(proof_hashes)
                .transpose()?
                .unwrap_or_default()
        } else {
            // The coordinator's idea of what I cosigned last is off (a restart): ask for the
            // proof from my own last checkpoint; it is checked all the same.
            let cp = fedchain_ledger::note::parse(&note)
                .ok()
                .and_then(|n| fedchain_ledger::note::Checkpoint::from_text(&n.text).ok())
                .ok_or("the note is not a checkpoint")?;
            if my_last == 0 {
                Vec::new()
            } else {
                let proof = ledger
                    .get_consistency_proof(pb::ConsistencyProofRequest {
                        old_size: my_last,
                        new_size: cp.size,
                    })
                    .await
                    .map_err(|s| format!("consistency proof: {}", s.message()))?
                    .into_inner();
                proof_hashes(proof)?
            }
        };
        let cosigned = self
            .witness
            .cosign(&note, &proof)
            .map_err(|e| format!("REFUSED to cosign: {e}"))?;
        client
            .submit_cosignature(pb::Cosignature {
                hospital: self.name.clone(),
                note: cosigned,
            })
            .await
            .map_err(|s| format!("cosignature refused: {}", s.message()))?;
        Ok(String::new())
    }
}

/// The hashes of a Merkle proof, each checked to be 32 bytes.
fn proof_hashes(proof: pb::Proof) -> Result<Vec<Hash>, String> {
    proof
        .hashes
        .iter()
        .map(|h| <Hash>::try_from(h.sha256.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|_| "a proof hash is not 32 bytes".to_string())
}

/// Parses a model file and checks it is the announced model of the job's architecture.
fn check_model(
    bytes: &[u8],
    announced: &Option<pb::Digest>,
    spec: &ModelSpec,
) -> Result<Vec<f32>, String> {
    let file = ModelFile::from_bytes(bytes, Path::new("<global model from the coordinator>"))
        .map_err(|e| format!("the global model file is invalid: {e}"))?;
    if file.spec() != spec {
        return Err("the global model is not the job's architecture".into());
    }
    if announced.as_ref().map(|d| d.sha256.as_slice()) != Some(file.digest().0.as_slice()) {
        return Err("the global model's parameters do not match the announced digest".into());
    }
    Ok(file.into_parts().1)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// What one decryption share with `share` costs this machine per ciphertext, in microseconds
/// (at least 1): a share of a few encryptions of zero under `pk`, computed as a real one is, with
/// every core and its proof (which adds about 1/8 per core). `None` if `share` is not `pk`'s.
pub fn share_cost_us(pk: &PublicKey, share: &KeyShare) -> Option<u64> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let k = (8 * cores).clamp(8, 64);
    // Its own randomness: a worker's RNG stream (stochastic rounding) stays as it was.
    let mut rng = ChaCha20Rng::from_os_rng();
    let zero = fedchain_crypto::BigInt::from(0);
    let cts = (0..k)
        .map(|_| djn::encrypt_plain(pk, &zero, &mut rng))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let started = Instant::now();
    partial_decrypt(pk, share, &cts, b"fedchain/share-cost-probe", &mut rng).ok()?;
    let us = started.elapsed().as_micros() / k as u128;
    Some(u64::try_from(us).unwrap_or(u64::MAX).max(1))
}

/// The enrolled count sizes the scaled layout's levels: one outside what the key allows is a
/// coordinator's error (or one too old to send it), not a codec to build.
fn enrolled_count_fits(
    q: &pb::Quantization,
    contributors: u64,
    pk: &PublicKey,
) -> Result<(), String> {
    let (t, n) = (pk.threshold() as u64, pk.parties() as u64);
    if q.quant_bits == 0 || (t..=n).contains(&contributors) {
        return Ok(());
    }
    Err(format!(
        "the task says {contributors} hospitals are enrolled; the key needs between {t} and {n} \
         (is the coordinator older than this worker?)"
    ))
}

/// A model file the coordinator did not send inline, at most `limits::MAX_MODEL_FILE_BYTES`
/// (its parameters are checked against the task's digest after).
async fn fetch_model(
    client: &mut TrainingServiceClient<Channel>,
    req: pb::ModelRequest,
) -> Result<Vec<u8>, String> {
    let stream = client
        .fetch_model(req)
        .await
        .map_err(|s| format!("fetching the model: {}", s.message()))?
        .into_inner();
    read_chunks(stream, limits::MAX_MODEL_FILE_BYTES as u64)
        .await
        .map_err(|e| format!("fetching the model: {e}"))
}

/// The bytes of a stream of chunks, refused past `limit`.
async fn read_chunks(
    mut stream: tonic::Streaming<pb::Chunk>,
    limit: u64,
) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while let Some(c) = stream
        .message()
        .await
        .map_err(|s| s.message().to_string())?
    {
        bytes.extend_from_slice(&c.data);
        if bytes.len() as u64 > limit {
            return Err(format!("more than the {limit} bytes it may have"));
        }
    }
    Ok(bytes)
}

/// Job `job`'s spec as an offer or an enrollment answer carries it (`sent`), or, when it was too
/// large to send, from the ledger's blob of `digest`; either way checked against `digest`, the
/// `JobSubmitted` record's.
async fn spec_of(
    ledger: &mut LedgerServiceClient<Channel>,
    job: u64,
    sent: Option<pb::JobSpec>,
    digest: Option<&pb::Digest>,
) -> Result<pb::JobSpec, String> {
    let digest: Hash = digest
        .and_then(|d| d.sha256.as_slice().try_into().ok())
        .ok_or_else(|| format!("job {job}: the coordinator names no spec digest"))?;
    let spec = match sent {
        Some(spec) => spec,
        None => {
            let bytes = fetch_blob(ledger, &digest)
                .await
                .map_err(|e| format!("job {job}'s spec, too large to be sent: {e}"))?;
            pb::JobSpec::decode(bytes.as_slice())
                .map_err(|e| format!("job {job}'s spec from the ledger: {e}"))?
        }
    };
    if sha256(&spec.encode_to_vec()) != digest {
        return Err(format!(
            "job {job}: the spec does not match the digest its JobSubmitted record names"
        ));
    }
    Ok(spec)
}

/// Blob `digest` from the coordinator's ledger service, at most `limits::MAX_STREAM_BYTES`.
async fn fetch_blob(
    ledger: &mut LedgerServiceClient<Channel>,
    digest: &Hash,
) -> Result<Vec<u8>, String> {
    let stream = ledger
        .get_blob(pb::Digest {
            sha256: digest.to_vec(),
        })
        .await
        .map_err(|s| format!("reading blob {}: {}", hex::encode(digest), s.message()))?
        .into_inner();
    read_chunks(stream, limits::MAX_STREAM_BYTES)
        .await
        .map_err(|e| format!("reading blob {}: {e}", hex::encode(digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_task_must_count_as_many_hospitals_as_the_key_allows() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (pk, _) = fedchain_crypto::keys::deal(512, 3, 2, &mut rng).unwrap();
        let q = |quant_bits| pb::Quantization {
            frac_bits: 0,
            clip: 1.0,
            quant_bits,
        };
        for n in 2..=3 {
            enrolled_count_fits(&q(8), n, &pk).unwrap();
        }
        for n in [0, 1, 4, u64::MAX] {
            let why = enrolled_count_fits(&q(8), n, &pk).unwrap_err();
            assert!(
                why.contains(&format!("says {n} hospitals")) && why.contains("between 2 and 3"),
                "{why}"
            );
        }
        // The fixed-point layout does not use the count (older coordinators send 0).
        enrolled_count_fits(&q(0), 0, &pk).unwrap();
    }

    fn mlp() -> ModelSpec {
        ModelSpec::Mlp {
            inputs: 4,
            hidden: vec![8],
            outputs: 1,
            dropout: 0.0,
        }
    }

    #[test]
    fn an_open_policy_takes_every_job_and_is_not_written() {
        let p = Policy::default();
        assert!(p.is_open());
        assert_eq!(p.declines("anyone", &mlp(), 1, false), None);
        let cfg = WorkerConfig::new("https://c".into(), "d".into(), "x.csv".into(), "s".into());
        let text = toml::to_string(&cfg).unwrap();
        assert!(!text.contains("policy"), "{text}");
    }

    #[test]
    fn each_rule_declines_naming_itself() {
        let p: Policy = toml::from_str(
            "researchers = [\"alice\"]\nmodels = [\"logreg\", \"cnn\"]\nmin_participants = 3\n",
        )
        .unwrap();
        p.validate().unwrap();
        let logreg = ModelSpec::LogisticRegression {
            inputs: 4,
            outputs: 1,
        };
        assert_eq!(p.declines("alice", &logreg, 3, false), None);
        let why = p.declines("bob", &logreg, 3, false).unwrap();
        assert!(
            why.contains("researchers alice only, not of \"bob\""),
            "{why}"
        );
        let why = p.declines("alice", &mlp(), 3, false).unwrap();
        assert!(why.contains("models logreg, cnn only, not mlp"), "{why}");
        let why = p.declines("alice", &logreg, 2, false).unwrap();
        assert!(
            why.contains("as few as 2") && why.contains("at least 3"),
            "{why}"
        );
    }

    #[test]
    fn the_readmes_worker_toml_reads_as_written() {
        let readme = include_str!("../../README.md");
        let at = readme
            .find("Of each hospital's worker (`worker.toml`):")
            .expect("the README shows a worker.toml");
        let block = &readme[at..];
        let start = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + block[start..].find("```").expect("its end");
        let cfg: WorkerConfig = toml::from_str(&block[start..end]).unwrap();
        cfg.policy.validate().unwrap();
        assert_eq!(cfg.policy.researchers, Some(vec!["alice".to_string()]));
        assert_eq!(cfg.policy.min_participants, 3);
    }

    #[test]
    fn a_decline_names_the_schemas_columns_never_a_cell_or_the_header() {
        let cell = DataError::NotNumeric {
            source_name: "/secret/path/patients.csv".into(),
            line: 17,
            column: "age".into(),
            value: "Jane Doe".into(),
        };
        let missing = DataError::MissingColumn {
            source_name: "/secret/path/patients.csv".into(),
            column: "age".into(),
            available: "name,diagnosis".into(),
        };
        for e in [cell, missing] {
            let said = public_reason(&e);
            assert!(said.contains("\"age\""), "{said}");
            for secret in ["Jane", "secret", "diagnosis", "17"] {
                assert!(!said.contains(secret), "{said}");
            }
        }
    }

    /// A job without privacy is declined by a policy that requires it (or has a lifetime
    /// budget); a private job is declined when what it may spend, on top of what earlier jobs
    /// spent, passes the lifetime budget, naming both figures.
    #[test]
    fn privacy_rules_decline_jobs_without_it_and_jobs_past_the_lifetime_budget() {
        let p: Policy = toml::from_str("lifetime_epsilon = 6.0\nlifetime_delta = 1e-4\n").unwrap();
        p.validate().unwrap();
        let why = p.declines("anyone", &mlp(), 3, false).unwrap();
        assert!(why.contains("only jobs with a [privacy] budget"), "{why}");
        assert_eq!(p.declines("anyone", &mlp(), 3, true), None);
        let required: Policy = toml::from_str("require_privacy = true").unwrap();
        assert!(required.declines("anyone", &mlp(), 3, false).is_some());
        let job = pb::JobSpec {
            rounds: 4,
            local_epochs: 1,
            batch_size: 32,
            privacy: Some(pb::Privacy {
                epsilon: 3.0,
                delta: 1e-5,
                max_grad_norm: 1.0,
                noise_multiplier: 0.8,
                distributed: false,
            }),
            ..Default::default()
        };
        // At this noise all four rounds would spend more than 3: the job's budget bounds it.
        let all = fedchain_protocol::privacy::JobPrivacy::of(&job)
            .unwrap()
            .spent(&job, 200, 4)
            .unwrap();
        assert!(all > 3.0, "{all}");
        let nothing = LifetimeSpent::default();
        assert_eq!(p.lifetime_declines(nothing, &job, 200), None);
        let some = LifetimeSpent {
            jobs: 1,
            epsilon: 2.5,
            delta: 1e-5,
        };
        assert_eq!(p.lifetime_declines(some, &job, 200), None, "2.5 + 3 <= 6");
        let more = LifetimeSpent {
            epsilon: 3.5,
            ..some
        };
        let why = p.lifetime_declines(more, &job, 200).unwrap();
        assert!(
            why.contains("epsilon 3.0000") && why.contains("spent epsilon 3.5000"),
            "{why}"
        );
        let deltas = LifetimeSpent {
            delta: 9.5e-5,
            ..some
        };
        assert!(p.lifetime_declines(deltas, &job, 200).is_some());
        // Without a lifetime budget nothing is counted.
        assert_eq!(required.lifetime_declines(more, &job, 200), None);
        for bad in [
            "lifetime_epsilon = 1.0",
            "lifetime_epsilon = -1.0\nlifetime_delta = 1e-5",
            "lifetime_epsilon = 1.0\nlifetime_delta = 2.0",
        ] {
            let p: Policy = toml::from_str(bad).unwrap();
            assert!(p.validate().unwrap_err().contains("lifetime"), "{bad}");
        }
    }

    #[test]
    fn a_policy_naming_no_model_or_an_unknown_rule_is_refused() {
        let p: Policy = toml::from_str("models = [\"resnet\"]").unwrap();
        assert!(p.validate().unwrap_err().contains("resnet"));
        let p: Policy = toml::from_str("models = [\"torchscript\"]").unwrap();
        assert!(p.validate().unwrap_err().contains("torchscript = true"));
        assert!(toml::from_str::<Policy>("epsilon = 1.0").is_err());
    }
}
