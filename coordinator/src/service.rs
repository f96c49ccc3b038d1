//! The coordinator process: the three gRPC services over mutual TLS, the job lifecycle and the
//! ledger.
//!
//! One state behind a mutex holds the ledger [`Store`] (sled) and every job. Handlers check
//! the caller's role and name from its certificate ([`crate::tls::caller`]), read streamed bytes
//! outside the lock, then take the lock, let the job and its [`Round`] decide, append the
//! resulting entries, and bump a version counter. Long-lived streams (a hospital's tasks, a
//! researcher's watch) wake on that counter and send what changed, so the coordinator never dials
//! anybody. A driver task wakes every 100 ms for deadlines.
//!
//! Job lifecycle: `ENROLLING` (offers go to every hospital; starts when all the consortium's
//! hospitals enrolled, or at the enrollment deadline with at least `max(min_participants, t)`),
//! round 0 (statistics, see [`crate::job`]), rounds 1..=R, then a short evaluation phase in which
//! hospitals score the final model, then `FINISHED` with `JobFinished`, deposits returned and the
//! rest of the escrow refunded. A round that cannot complete (too few submissions by the deadline,
//! too few valid shares by the share deadline, an aggregate that does not decode) fails the job
//! the same way with its reason. Every finalized round and every job end is followed by a signed
//! checkpoint that the hospitals cosign through `CosignTask`.
//!
//! State lives in the ledger: every record is flushed before the request that produced it is
//! answered, and a restarted coordinator rebuilds every job by feeding the recorded submissions,
//! closings and shares to the same pure round machine, then resumes with fresh deadlines.

use crate::failpoint;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedchain_crypto::keys::{PublicKey, PUBLIC_KEY_FILE};
use fedchain_ledger::credits::{Account, Movement};
use fedchain_ledger::note::{self, Checkpoint, NoteSigner, NoteVerifier};
use fedchain_ledger::record::{
    signature_verifies, Actor, Body, JobStatus as LedgerJobStatus, Outcome, Role as LRole,
};
use fedchain_ledger::store::{Entry, Store};
use fedchain_ledger::verify::Trust;
use fedchain_ledger::{sha256, Hash, LedgerError};
use fedchain_models::{init_params, num_parameters, ModelDigest, ModelFile};
use fedchain_proto::limits;
use fedchain_proto::v1 as pb;
use pb::job_service_server::{JobService, JobServiceServer};
use pb::ledger_service_server::{LedgerService, LedgerServiceServer};
use pb::training_service_server::{TrainingService, TrainingServiceServer};
use prost::Message;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::consortium::{Consortium, ConsortiumError, COORDINATOR_NAME, LOG_SKEY_FILE, TRUST_FILE};
use crate::job::{self, ValidJob};
use crate::refusals::{self, Admit, RefusalMeter};
use crate::round::{Enrolled, Phase, Round, RoundConfig, RoundError};
use crate::tls::{self, caller, Role, TlsError};

/// The coordinator's settings (`fedchain coordinator --config FILE`, TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The coordinator's folder from `fedchain consortium init` (`DIR/coordinator`).
    pub dir: PathBuf,
    /// Where the ledger (sled) lives; created if missing.
    pub state: PathBuf,
    /// Address to listen on; port 0 picks a free port (see [`Coordinator::bind`]).
    pub listen: SocketAddr,
    /// Seconds a job accepts enrollments before it starts with whoever enrolled.
    #[serde(default = "defaults::enroll_seconds")]
    pub enroll_seconds: u64,
    /// Credits each hospital posts as deposit when it enrolls in a job.
    #[serde(default = "defaults::deposit")]
    pub deposit: u64,
    /// Credits minted once, when the ledger is created, for each researcher and hospital.
    #[serde(default = "defaults::initial_credits")]
    pub initial_credits: u64,
    /// Seconds the hospitals have to evaluate the final model before the job finishes anyway.
    #[serde(default = "defaults::evaluation_seconds")]
    pub evaluation_seconds: u64,
    /// Revoked certificates, by the SHA-256 of their DER encoding (lowercase hex, as
    /// `consortium.json` lists them): their holders are refused on every RPC, whatever their role.
    #[serde(default)]
    pub revoked: Vec<String>,
}

mod defaults {
    pub fn enroll_seconds() -> u64 {
        60
    }
    pub fn deposit() -> u64 {
        100
    }
    pub fn initial_credits() -> u64 {
        10_000
    }
    pub fn evaluation_seconds() -> u64 {
        30
    }
}

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A file of the coordinator's folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The folder's contents are not what `consortium init` writes.
    #[error("{0}")]
    Folder(String),
    /// The consortium description.
    #[error(transparent)]
    Consortium(#[from] ConsortiumError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The public key.
    #[error(transparent)]
    Crypto(#[from] fedchain_crypto::CryptoError),
    /// The gRPC server.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The environment (a crash test's failpoint where it cannot work).
    #[error("{0}")]
    Environment(String),
}

type SResult<T> = Result<T, Status>;

/// How long the `t` first hospitals (by key-share index) have to deliver their decryption shares
/// before the others are asked too. Decrypting costs each hospital one 4096-bit exponentiation per
/// ciphertext, so asking everyone at once would waste `n - t` hospitals' work in the normal case.
pub const BACKUP_DECRYPT_MS: u64 = 3_000;
/// After a restart, when the deadlines of whatever was in progress start again: time for every
/// worker to notice the restart and reconnect (its longest backoff), with a margin. The first
/// decryptors' head start over the backups counts from then too.
const RESUME_GRACE_MS: u64 = fedchain_proto::timing::MAX_RECONNECT_BACKOFF_MS + 2_000;
type BoxStream<T> = Pin<Box<dyn Stream<Item = SResult<T>> + Send + 'static>>;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("coordinator: {e}"))
}

fn round_status(e: &RoundError) -> Status {
    let msg = e.to_string();
    match e {
        RoundError::Closed { .. }
        | RoundError::PastDeadline { .. }
        | RoundError::NotDecrypting { .. } => Status::failed_precondition(msg),
        RoundError::NotEnrolled(_) => Status::permission_denied(msg),
        RoundError::DuplicateSubmission(_) | RoundError::DuplicateShare(_) => {
            Status::already_exists(msg)
        }
        RoundError::InvalidConfig(_) | RoundError::Finalize(_) => Status::internal(msg),
        _ => Status::invalid_argument(msg),
    }
}

fn entry(now: u64, id: &str, role: LRole, outcome: Outcome, body: Body) -> Entry {
    Entry {
        time_ms: now,
        actor: Actor {
            id: id.to_owned(),
            role,
        },
        outcome,
        body,
    }
}

fn coord(now: u64, body: Body) -> Entry {
    entry(
        now,
        COORDINATOR_NAME,
        LRole::Coordinator,
        Outcome::Success,
        body,
    )
}

fn digest_of(d: &Option<pb::Digest>) -> SResult<Hash> {
    d.as_ref()
        .and_then(|d| <[u8; 32]>::try_from(d.sha256.as_slice()).ok())
        .ok_or_else(|| Status::invalid_argument("a digest must be 32 bytes (SHA-256)"))
}

fn pb_proof(hashes: &[Hash]) -> pb::Proof {
    pb::Proof {
        hashes: hashes
            .iter()
            .map(|h| pb::Digest { sha256: h.to_vec() })
            .collect(),
    }
}

fn pb_digest(h: &Hash) -> Option<pb::Digest> {
    Some(pb::Digest { sha256: h.to_vec() })
}

/// Splits bytes into protocol chunks.
fn chunks(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    bytes.chunks(limits::CHUNK_BYTES).map(<[u8]>::to_vec)
}

/// Reads a stream's slices after its header: refuses more than `total` bytes, or fewer.
async fn read_body<T>(
    stream: &mut Streaming<T>,
    total: u64,
    slice: impl Fn(T) -> Option<Vec<u8>>,
) -> SResult<Vec<u8>> {
    if total > limits::MAX_STREAM_BYTES {
        return Err(Status::resource_exhausted(format!(
            "the header announces {total} bytes; at most {} may be streamed",
            limits::MAX_STREAM_BYTES
        )));
    }
    let mut bytes = Vec::with_capacity(total as usize);
    while let Some(msg) = stream.message().await? {
        let Some(part) = slice(msg) else {
            return Err(Status::invalid_argument(
                "only byte slices may follow the header",
            ));
        };
        if bytes.len() as u64 + part.len() as u64 > total {
            return Err(Status::resource_exhausted(format!(
                "the stream runs past the {total} bytes its header announced"
            )));
        }
        bytes.extend_from_slice(&part);
    }
    if (bytes.len() as u64) < total {
        return Err(Status::invalid_argument(format!(
            "the stream ended after {} of the {total} bytes its header announced",
            bytes.len()
        )));
    }
    Ok(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum JobPhase {
    Enrolling { deadline_ms: u64 },
    Running,
    Evaluating { deadline_ms: u64 },
    Finished,
    Failed,
}

#[derive(Debug, Clone)]
struct SubInfo {
    digest: Hash,
    signature: [u8; 64],
    ciphertexts: u32,
    bytes: u64,
}

#[derive(Debug, Clone)]
struct EnrollAnswer {
    record: u64,
    deposit: u64,
}

struct Job {
    id: u64,
    valid: ValidJob,
    researcher: String,
    submitted_record: u64,
    phase: JobPhase,
    reason: String,
    enrolled: Vec<Enrolled>,
    answers: BTreeMap<String, EnrollAnswer>,
    total_weight: u64,
    round_no: u64,
    round: Option<Round>,
    quantization: pb::Quantization,
    subs: BTreeMap<String, SubInfo>,
    closed_record: Option<u64>,
    share_deadline_ms: Option<u64>,
    /// When the first decryptors were asked, in effect: the round's closing, or after a restart
    /// the resumption plus [`RESUME_GRACE_MS`]. The backup decryptors are asked
    /// [`BACKUP_DECRYPT_MS`] later.
    closed_ms: u64,
    backups_asked: bool,
    stats: Vec<f32>,
    global: Vec<f32>,
    model_file: Vec<u8>,
    model_digest: Hash,
    /// The latest finalized model round, with its RoundFinalized record.
    finalized: Option<(u64, u64)>,
    /// Index of the RoundFinalized record of the round that just finalized, set by whoever
    /// appended (or, on restore, read) it.
    finalized_record: Option<u64>,
    /// Per round, per hospital: held-out rows and mean metrics (its `ModelEvaluated` record).
    evaluations: BTreeMap<u64, BTreeMap<String, job::Evaluation>>,
    finished_record: Option<u64>,
}

impl Job {
    fn is_enrolled(&self, hospital: &str) -> bool {
        self.answers.contains_key(hospital)
    }

    fn terminal(&self) -> bool {
        matches!(self.phase, JobPhase::Finished | JobPhase::Failed)
    }

    fn state(&self) -> pb::JobState {
        match self.phase {
            JobPhase::Enrolling { .. } => pb::JobState::Enrolling,
            JobPhase::Running | JobPhase::Evaluating { .. } => pb::JobState::Running,
            JobPhase::Finished => pb::JobState::Finished,
            JobPhase::Failed => pb::JobState::Failed,
        }
    }

    /// Row-weighted means of the hospitals' reports on round `r`'s model.
    fn metrics(&self, r: u64) -> Vec<pb::Metric> {
        let Some(reports) = self.evaluations.get(&r) else {
            return Vec::new();
        };
        job::pooled_metrics(reports.values())
            .into_iter()
            .map(|(name, value)| pb::Metric { name, value })
            .collect()
    }

    fn evaluated_by_all(&self, r: u64) -> bool {
        self.evaluations
            .get(&r)
            .is_some_and(|e| e.len() == self.enrolled.len())
    }

    fn progress(&self) -> Option<pb::RoundProgress> {
        let round = self.round.as_ref()?;
        let (phase, participants) = match round.phase() {
            Phase::Collecting => (pb::RoundPhase::Training, round.submitted()),
            Phase::Decrypting => (pb::RoundPhase::Decrypting, round.submitted()),
            Phase::Finalized => (pb::RoundPhase::Finalized, round.submitted()),
            Phase::Failed(_) => (pb::RoundPhase::Unspecified, round.submitted()),
        };
        let finalized = phase == pb::RoundPhase::Finalized;
        Some(pb::RoundProgress {
            round: self.round_no,
            phase: phase as i32,
            participants,
            metrics: if finalized {
                self.metrics(self.round_no)
            } else {
                Vec::new()
            },
            model: if finalized && self.round_no > 0 {
                pb_digest(&self.model_digest)
            } else {
                None
            },
        })
    }
}

struct State {
    store: Store,
    jobs: BTreeMap<u64, Job>,
    next_job: u64,
    /// The latest checkpoint: tree size and signed note (cosignatures merged in).
    checkpoint: Option<(u64, String)>,
    /// Per hospital, the size of the last checkpoint it cosigned here.
    cosigned: HashMap<String, u64>,
    /// How many of each hospital's refusals are recorded.
    refusals: RefusalMeter,
    /// Hospitals whose decryption share is being verified off the lock: one at a time each, so
    /// a hospital cannot make the coordinator verify many copies of its share at once.
    checking_share: HashSet<String>,
}

struct Hospital {
    party: usize,
    identity: [u8; 32],
}

struct Shared {
    config: Config,
    pk: Arc<PublicKey>,
    signer: NoteSigner,
    known: Vec<NoteVerifier>,
    /// Cosignatures a checkpoint needs (the trust file's quorum).
    quorum: usize,
    hospitals: BTreeMap<String, Hospital>,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    /// Set when the server shuts down: long-lived streams end so the shutdown can complete.
    closing: AtomicBool,
    /// A crash test's failpoint ([`crate::failpoint`]); `None` in every real deployment.
    failpoint: Option<failpoint::Armed>,
}

/// The coordinator: open it, then [`Coordinator::serve`].
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
}

fn read_text(path: &Path) -> Result<String, ServiceError> {
    std::fs::read_to_string(path).map_err(|source| ServiceError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Coordinator {
    /// Opens the coordinator's folder and ledger: checks the folder holds the coordinator's
    /// material, mints the initial credits into a new ledger, and closes jobs a previous run left
    /// unfinished.
    pub fn open(config: Config) -> Result<Coordinator, ServiceError> {
        let failpoint = failpoint::from_env().map_err(ServiceError::Environment)?;
        let dir = &config.dir;
        tls::server_tls(dir)?;
        let description = Consortium::load(dir)?.description;
        let pk = PublicKey::load(&dir.join(PUBLIC_KEY_FILE))?;
        if hex::encode(pk.digest()) != description.public_key_sha256 {
            return Err(ServiceError::Folder(format!(
                "{} is not the consortium's public key (consortium.json names another digest)",
                dir.join(PUBLIC_KEY_FILE).display()
            )));
        }
        let signer = NoteSigner::from_skey(read_text(&dir.join(LOG_SKEY_FILE))?.trim())?;
        if signer.verifier().to_vkey() != description.log_vkey {
            return Err(ServiceError::Folder(format!(
                "{} does not match the log key of consortium.json",
                dir.join(LOG_SKEY_FILE).display()
            )));
        }
        let trust = Trust::parse(&read_text(&dir.join(TRUST_FILE))?)?;
        let mut hospitals = BTreeMap::new();
        for h in description.hospitals() {
            let (Some(party), Some(vkey)) = (h.index, h.identity_vkey.as_deref()) else {
                return Err(ServiceError::Folder(format!(
                    "consortium.json: hospital {:?} has no key index or identity key",
                    h.name
                )));
            };
            let identity = NoteVerifier::from_vkey(vkey)?.public_key();
            hospitals.insert(h.name.clone(), Hospital { party, identity });
        }
        let mut known = vec![signer.verifier()];
        known.extend(trust.witnesses.iter().cloned());

        std::fs::create_dir_all(&config.state).map_err(|source| ServiceError::Io {
            path: config.state.clone(),
            source,
        })?;
        let mut store = Store::open(&config.state, signer.name())?;
        let now = now_ms();
        if store.is_empty() && config.initial_credits > 0 {
            let mut entries = Vec::new();
            let mut accounts: Vec<Account> = hospitals
                .keys()
                .map(|h| Account::Hospital(h.clone()))
                .collect();
            accounts.extend(
                description
                    .parties
                    .iter()
                    .filter(|p| p.role == Role::Researcher)
                    .map(|p| Account::Researcher(p.name.clone())),
            );
            for to in accounts {
                entries.push(coord(
                    now,
                    Body::CreditsMoved {
                        movement: Movement::Mint {
                            to,
                            amount: config.initial_credits,
                        },
                    },
                ));
            }
            store.append_all(entries)?;
        }
        let (version, _) = watch::channel(0);
        let coordinator = Coordinator {
            shared: Arc::new(Shared {
                config,
                pk: Arc::new(pk),
                signer,
                known,
                quorum: trust.quorum,
                hospitals,
                state: Mutex::new(State {
                    store,
                    jobs: BTreeMap::new(),
                    next_job: 1,
                    checkpoint: None,
                    cosigned: HashMap::new(),
                    refusals: RefusalMeter::default(),
                    checking_share: HashSet::new(),
                }),
                version,
                closing: AtomicBool::new(false),
                failpoint,
            }),
        };
        {
            let shared = &coordinator.shared;
            let mut st = shared.lock();
            shared.restore(&mut st, now)?;
            // Whatever the restore decided (a job failing that cannot resume) is checkpointed.
            let note = st.store.checkpoint(&shared.signer)?;
            st.checkpoint = Some((st.store.len(), note));
        }
        Ok(coordinator)
    }

    /// Binds the configured address (port 0: a free one) and returns the listener with the
    /// address it got.
    pub async fn bind(&self) -> Result<(TcpListener, SocketAddr), ServiceError> {
        let listener = TcpListener::bind(self.shared.config.listen)
            .await
            .map_err(|source| ServiceError::Io {
                path: PathBuf::from(self.shared.config.listen.to_string()),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServiceError::Io {
            path: PathBuf::from(self.shared.config.listen.to_string()),
            source,
        })?;
        Ok((listener, addr))
    }

    /// Serves the three services over mutual TLS on `listener` until `shutdown` completes, with
    /// the deadline driver running alongside.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError> {
        let tls = tls::server_tls(&self.shared.config.dir)?;
        let driver = {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    shared.drive();
                }
            })
        };
        let m = limits::MAX_MESSAGE_BYTES;
        let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = self.shared.clone();
        let shutdown = async move {
            shutdown.await;
            // End the task and watch streams, which would otherwise hold the shutdown forever.
            shared.closing.store(true, Ordering::SeqCst);
            shared.bump();
            let _ = fired_tx.send(());
        };
        let server = tonic::transport::Server::builder()
            .tls_config(tls)?
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .layer(tls::rpc_name_layer())
            .add_service(
                JobServiceServer::new(self.clone())
                    .max_decoding_message_size(m)
                    .max_encoding_message_size(m),
            )
            .add_service(
                TrainingServiceServer::new(self.clone())
                    .max_decoding_message_size(m)
                    .max_encoding_message_size(m),
            )
            .add_service(
                LedgerServiceServer::new(self.clone())
                    .max_decoding_message_size(m)
                    .max_encoding_message_size(m),
            )
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown);
        // After the signal, in-flight calls get 5 seconds to finish.
        let grace = async {
            if fired_rx.await.is_ok() {
                tokio::time::sleep(Duration::from_secs(5)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = server => r,
            () = grace => Ok(()),
        };
        driver.abort();
        self.shared.lock().store.flush()?;
        Ok(result?)
    }
}

/// Deposits back to the hospitals and the rest of the escrow back to the researcher.
fn release_funds(
    store: &Store,
    job: u64,
    researcher: &str,
    hospitals: &[String],
    now: u64,
) -> Vec<Entry> {
    let credits = store.credits();
    let mut out = Vec::new();
    for h in hospitals {
        let deposit = Account::Deposit {
            job,
            hospital: h.clone(),
        };
        if credits.balance(&deposit) > 0 {
            out.push(coord(
                now,
                Body::CreditsMoved {
                    movement: Movement::ReturnDeposit {
                        job,
                        hospital: h.clone(),
                    },
                },
            ));
        }
    }
    if credits.balance(&Account::Escrow(job)) > 0 {
        out.push(coord(
            now,
            Body::CreditsMoved {
                movement: Movement::Refund {
                    job,
                    researcher: researcher.to_owned(),
                },
            },
        ));
    }
    out
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; the state is still the best we have.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A crash test's failpoint: see [`crate::failpoint`].
    fn fail_here(&self, name: &'static str, job: u64, round: u64) {
        failpoint::hit(&self.failpoint, name, job, round);
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Appends `entries` and flushes; returns their record indices. A hospital's refusals beyond
    /// its [`RefusalMeter`] budget are not appended (empty indices): the caller still answers.
    fn append(&self, st: &mut State, entries: Vec<Entry>) -> SResult<Vec<u64>> {
        if let Some(who) = refused_hospital(&entries) {
            match st.refusals.admit(who, now_ms()) {
                Admit::Record => {}
                Admit::FirstUnrecorded => {
                    eprintln!(
                        "fedchain coordinator: hospital {who} was refused more than {} times in a \
                         burst; further refusals are answered, and counted on the ledger instead \
                         of recorded one by one",
                        refusals::BURST
                    );
                    return Ok(Vec::new());
                }
                Admit::Unrecorded => return Ok(Vec::new()),
            }
        }
        self.append_unmetered(st, entries)
    }

    fn append_unmetered(&self, st: &mut State, entries: Vec<Entry>) -> SResult<Vec<u64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let records = st.store.append_all(entries).map_err(internal)?;
        // Durable before anyone is told: a coordinator killed after answering must not lose
        // what it acknowledged.
        st.store.flush().map_err(internal)?;
        Ok(records.iter().map(|r| r.event).collect())
    }

    fn checkpoint(&self, st: &mut State) -> SResult<()> {
        let note = st.store.checkpoint(&self.signer).map_err(internal)?;
        st.checkpoint = Some((st.store.len(), note));
        Ok(())
    }

    /// Rebuilds the jobs from the ledger after a restart: every recorded submission, closing and
    /// share is fed again to the job's [`Round`] (a pure state machine, so it decides the same),
    /// which resumes each job exactly where its last record left it. Rounds in progress get fresh
    /// deadlines. The hospitals' evaluations come back from their `ModelEvaluated` records, so
    /// no hospital is asked twice to evaluate a model.
    fn restore(&self, st: &mut State, now: u64) -> Result<(), ServiceError> {
        let broken = |i: u64, what: String| {
            ServiceError::Folder(format!("cannot resume from the ledger: record {i}: {what}"))
        };
        for i in 0..st.store.len() {
            let (record, _) = st.store.record(i)?;
            let t = record.time_ms;
            match record.body {
                Body::JobSubmitted {
                    job,
                    spec,
                    researcher,
                    ..
                } => {
                    st.next_job = st.next_job.max(job + 1);
                    let bytes = st
                        .store
                        .blob(&spec)?
                        .ok_or_else(|| broken(i, "the job spec blob is missing".into()))?;
                    let spec = pb::JobSpec::decode(bytes.as_slice())
                        .map_err(|e| broken(i, format!("job spec: {e}")))?;
                    let valid = job::validate(&spec).map_err(|e| broken(i, e))?;
                    st.jobs.insert(
                        job,
                        new_job(
                            job,
                            valid,
                            researcher,
                            i,
                            t + self.config.enroll_seconds * 1000,
                        ),
                    );
                }
                Body::HospitalEnrolled {
                    job,
                    hospital,
                    identity_key,
                    samples,
                    deposit,
                } => {
                    let party = self
                        .hospitals
                        .get(&hospital)
                        .map(|h| h.party)
                        .ok_or_else(|| broken(i, format!("unknown hospital {hospital:?}")))?;
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    j.enrolled.push(Enrolled {
                        name: hospital.clone(),
                        identity_key,
                        samples,
                        party,
                    });
                    j.answers
                        .insert(hospital, EnrollAnswer { record: i, deposit });
                }
                Body::UpdateSubmitted {
                    job,
                    round,
                    hospital,
                    ciphertexts,
                    signature,
                } => {
                    let bytes = st
                        .store
                        .blob(&ciphertexts)?
                        .ok_or_else(|| broken(i, "a submission blob is missing".into()))?;
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    if matches!(j.phase, JobPhase::Enrolling { .. }) && round == 0 {
                        j.phase = JobPhase::Running;
                        j.total_weight = j.enrolled.iter().map(|e| e.samples).sum();
                        self.open_round(st, job, 0, t)
                            .map_err(|s| broken(i, s.message().to_string()))?;
                    }
                    let j = st.jobs.get_mut(&job).expect("present");
                    let Some(r) = j.round.as_mut().filter(|_| j.round_no == round) else {
                        return Err(broken(
                            i,
                            format!("a submission for round {round}, not open"),
                        ));
                    };
                    r.set_deadline(u64::MAX);
                    if r.submit(t, &hospital, &bytes, signature).1.is_ok() {
                        let count = r.submission(&hospital).map_or(0, |c| c.len());
                        j.subs.insert(
                            hospital,
                            SubInfo {
                                digest: ciphertexts,
                                signature,
                                ciphertexts: count as u32,
                                bytes: bytes.len() as u64,
                            },
                        );
                    }
                }
                Body::RoundClosed { job, round, .. } => {
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    let Some(r) = j.round.as_mut().filter(|_| j.round_no == round) else {
                        return Err(broken(i, format!("round {round} is not open")));
                    };
                    r.set_deadline(t);
                    let closed = r.try_close(t);
                    if closed.is_empty() {
                        return Err(broken(i, format!("round {round} does not close again")));
                    }
                    j.closed_record = Some(i);
                    j.closed_ms = t;
                    j.share_deadline_ms =
                        Some(t + u64::from(j.valid.spec.round_deadline_seconds) * 1000);
                }
                Body::DecryptionShare {
                    job,
                    round,
                    hospital,
                    share,
                    ..
                } => {
                    let bytes = st
                        .store
                        .blob(&share)?
                        .ok_or_else(|| broken(i, "a share blob is missing".into()))?;
                    let credits = st.store.credits().clone();
                    let party = self.hospitals.get(&hospital).map(|h| h.party).unwrap_or(0);
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    let Some(r) = j.round.as_mut().filter(|_| j.round_no == round) else {
                        return Err(broken(i, format!("round {round} is not open")));
                    };
                    let _ = r.submit_share(t, &hospital, party, &bytes, None, &credits);
                }
                Body::RoundFinalized { job, round, .. } => {
                    let j = st
                        .jobs
                        .get(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    let finalized = j.round_no == round
                        && j.round
                            .as_ref()
                            .is_some_and(|r| *r.phase() == Phase::Finalized);
                    if !finalized {
                        return Err(broken(i, format!("round {round} does not finalize again")));
                    }
                    if let Some(j) = st.jobs.get_mut(&job) {
                        j.finalized_record = Some(i);
                    }
                    self.round_finalized(st, job, t, true)
                        .map_err(|s| broken(i, s.message().to_string()))?;
                }
                Body::JobFinished {
                    job,
                    status,
                    reason,
                } => {
                    if let Some(j) = st.jobs.get_mut(&job) {
                        j.phase = match status {
                            LedgerJobStatus::Finished => JobPhase::Finished,
                            LedgerJobStatus::Failed => JobPhase::Failed,
                        };
                        if status == LedgerJobStatus::Failed {
                            j.reason = reason;
                        }
                        j.finished_record = Some(i);
                    }
                }
                Body::ModelEvaluated {
                    job,
                    round,
                    hospital,
                    rows,
                    metrics,
                    ..
                } => {
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    j.evaluations
                        .entry(round)
                        .or_default()
                        .insert(hospital, (rows, metrics));
                }
                Body::CreditsMoved { .. } | Body::RequestRejected { .. } => {}
            }
        }
        // Fresh deadlines for whatever is in progress, counted from when the workers can be back
        // (their longest reconnection backoff, with a margin): a hospital must not miss a
        // deadline, and be penalised, for the coordinator's crash.
        let back = now + RESUME_GRACE_MS;
        for j in st.jobs.values_mut() {
            let deadline = back + u64::from(j.valid.spec.round_deadline_seconds) * 1000;
            match &mut j.phase {
                JobPhase::Enrolling { deadline_ms } => {
                    *deadline_ms = back + self.config.enroll_seconds * 1000
                }
                JobPhase::Evaluating { deadline_ms } => {
                    *deadline_ms = back + self.config.evaluation_seconds * 1000
                }
                JobPhase::Running => {
                    if let Some(r) = j.round.as_mut() {
                        match r.phase() {
                            Phase::Collecting => r.set_deadline(deadline),
                            Phase::Decrypting => {
                                j.share_deadline_ms = Some(deadline);
                                // The first decryptors get their usual head start from then.
                                j.closed_ms = back;
                            }
                            _ => {}
                        }
                    }
                }
                JobPhase::Finished | JobPhase::Failed => {}
            }
        }
        Ok(())
    }

    /// The deadline driver: advances every job.
    fn drive(&self) {
        let mut st = self.lock();
        let now = now_ms();
        for u in st.refusals.due(now) {
            let e = entry(
                now,
                &u.party,
                LRole::Hospital,
                Outcome::MinorFailure,
                Body::RequestRejected {
                    request: format!("refusals/hospital/{}", u.party),
                    reason: u.reason(),
                },
            );
            if let Err(e) = self.append_unmetered(&mut st, vec![e]) {
                eprintln!(
                    "fedchain coordinator: cannot record {} unrecorded refusals of {}: {}",
                    u.count,
                    u.party,
                    e.message()
                );
            }
        }
        let ids: Vec<u64> = st.jobs.keys().copied().collect();
        let mut changed = false;
        for id in ids {
            match self.step(&mut st, id, now_ms()) {
                Ok(c) => changed |= c,
                Err(e) => eprintln!("fedchain coordinator: job {id}: {}", e.message()),
            }
        }
        drop(st);
        if changed {
            self.bump();
        }
    }

    /// Moves job `id` forward as far as it can go now; returns whether anything changed.
    fn step(&self, st: &mut State, id: u64, now: u64) -> SResult<bool> {
        let mut changed = false;
        loop {
            let Some(job) = st.jobs.get_mut(&id) else {
                return Ok(changed);
            };
            match job.phase.clone() {
                JobPhase::Enrolling { deadline_ms } => {
                    let t = self.pk.threshold();
                    let needed = (job.valid.spec.min_participants as usize).max(t);
                    let all = job.enrolled.len() == self.hospitals.len();
                    if all || (now >= deadline_ms && job.enrolled.len() >= needed) {
                        job.phase = JobPhase::Running;
                        job.total_weight = job.enrolled.iter().map(|e| e.samples).sum();
                        self.open_round(st, id, 0, now)?;
                        changed = true;
                        continue;
                    }
                    if now >= deadline_ms {
                        let reason = format!(
                            "only {} hospitals enrolled before the enrollment deadline; the job \
                             needs at least {needed} (min_participants {}, decryption threshold {t})",
                            job.enrolled.len(),
                            job.valid.spec.min_participants
                        );
                        self.fail(st, id, reason, now)?;
                        return Ok(true);
                    }
                    return Ok(changed);
                }
                JobPhase::Running => {
                    let Some(round) = job.round.as_mut() else {
                        return Ok(changed);
                    };
                    match round.phase().clone() {
                        Phase::Collecting => {
                            let entries = round.try_close(now);
                            if !entries.is_empty() {
                                job.share_deadline_ms = Some(
                                    now + u64::from(job.valid.spec.round_deadline_seconds) * 1000,
                                );
                                job.closed_ms = now;
                                job.backups_asked = false;
                                if let Some(bytes) = round.aggregate_bytes() {
                                    st.store.put_blob(&bytes).map_err(internal)?;
                                }
                                let r = job.round_no;
                                self.fail_here("aggregate-stored", id, r);
                                let idx = self.append(st, entries)?;
                                self.fail_here("round-closed", id, r);
                                if let Some(job) = st.jobs.get_mut(&id) {
                                    job.closed_record = idx.first().copied();
                                }
                                changed = true;
                                continue;
                            }
                            if let Phase::Failed(why) = round.phase().clone() {
                                self.fail(st, id, why, now)?;
                                return Ok(true);
                            }
                            return Ok(changed);
                        }
                        Phase::Decrypting => {
                            if !job.backups_asked && now >= job.closed_ms + BACKUP_DECRYPT_MS {
                                job.backups_asked = true;
                                changed = true;
                            }
                            if job.share_deadline_ms.is_some_and(|d| now >= d) {
                                let reason = format!(
                                    "round {}: only {} valid decryption shares of the {} needed \
                                     arrived before the share deadline",
                                    job.round_no,
                                    round.valid_shares().len(),
                                    self.pk.threshold()
                                );
                                self.fail(st, id, reason, now)?;
                                return Ok(true);
                            }
                            return Ok(changed);
                        }
                        Phase::Finalized => {
                            self.round_finalized(st, id, now, false)?;
                            changed = true;
                            continue;
                        }
                        Phase::Failed(why) => {
                            let reason = format!("round {}: {why}", job.round_no);
                            self.fail(st, id, reason, now)?;
                            return Ok(true);
                        }
                    }
                }
                JobPhase::Evaluating { deadline_ms } => {
                    let last = u64::from(job.valid.spec.rounds);
                    if job.evaluated_by_all(last) || now >= deadline_ms {
                        self.finish(st, id, now)?;
                        return Ok(true);
                    }
                    return Ok(changed);
                }
                JobPhase::Finished | JobPhase::Failed => return Ok(changed),
            }
        }
    }

    fn open_round(&self, st: &mut State, id: u64, r: u64, now: u64) -> SResult<()> {
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        let schema = job.valid.spec.schema.clone().unwrap_or_default();
        let (len, global, quantization) = if r == 0 {
            let len = job::statistics_len(schema.features.len(), job.valid.task);
            (
                len,
                vec![0f32; len],
                job::statistics_quantization(job.total_weight),
            )
        } else {
            (
                job.global.len(),
                job.global.clone(),
                job.valid.spec.quantization.unwrap_or_default(),
            )
        };
        let opened = job::codec(&self.pk, &quantization, job.total_weight)
            .map_err(|e| e.to_string())
            .and_then(|codec| {
                let cfg = RoundConfig {
                    job: id,
                    round: r,
                    min_participants: job.valid.spec.min_participants as usize,
                    deadline_ms: now + u64::from(job.valid.spec.round_deadline_seconds) * 1000,
                    len,
                };
                Round::new(cfg, self.pk.clone(), codec, job.enrolled.clone(), global)
                    .map_err(|e| e.to_string())
            });
        match opened {
            Ok(round) => {
                job.round_no = r;
                job.round = Some(round);
                job.quantization = quantization;
                job.subs.clear();
                job.closed_record = None;
                job.share_deadline_ms = None;
                Ok(())
            }
            Err(why) => self.fail(st, id, format!("round {r} cannot open: {why}"), now),
        }
    }

    fn round_finalized(&self, st: &mut State, id: u64, now: u64, replaying: bool) -> SResult<()> {
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        let round = job.round.as_ref().ok_or_else(|| internal("no round"))?;
        let new = round
            .new_global()
            .ok_or_else(|| internal("a finalized round without a model"))?
            .to_vec();
        let r = job.round_no;
        if r == 0 {
            job.stats = new;
            job.global = init_params(&job.valid.model, job.valid.spec.seed);
        } else {
            job.global = new;
        }
        let file = ModelFile::new(job.valid.model.clone(), job.global.clone())
            .and_then(|f| f.to_bytes())
            .map_err(internal)?;
        job.model_digest = ModelDigest::of(&job.global).0;
        job.model_file = file;
        st.store.put_blob(&job.model_file).map_err(internal)?;
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        if r > 0 {
            job.finalized = job.finalized_record.map(|i| (r, i));
        }
        let rounds = u64::from(job.valid.spec.rounds);
        if !replaying {
            self.checkpoint(st)?;
        }
        if r < rounds {
            self.open_round(st, id, r + 1, now)
        } else {
            let job = st
                .jobs
                .get_mut(&id)
                .ok_or_else(|| internal("job vanished"))?;
            job.phase = JobPhase::Evaluating {
                deadline_ms: now + self.config.evaluation_seconds * 1000,
            };
            Ok(())
        }
    }

    fn finish(&self, st: &mut State, id: u64, now: u64) -> SResult<()> {
        let job = st.jobs.get(&id).ok_or_else(|| internal("job vanished"))?;
        let last = u64::from(job.valid.spec.rounds);
        let summary = match job.evaluations.get(&last) {
            Some(reports) => job::final_summary(reports.values()),
            None => job::final_summary(std::iter::empty()),
        };
        let hospitals: Vec<String> = job.enrolled.iter().map(|e| e.name.clone()).collect();
        let mut entries = vec![coord(
            now,
            Body::JobFinished {
                job: id,
                status: LedgerJobStatus::Finished,
                reason: summary,
            },
        )];
        entries.extend(release_funds(
            &st.store,
            id,
            &job.researcher,
            &hospitals,
            now,
        ));
        let idx = self.append(st, entries)?;
        self.checkpoint(st)?;
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        job.finished_record = idx.first().copied();
        job.phase = JobPhase::Finished;
        Ok(())
    }

    fn fail(&self, st: &mut State, id: u64, reason: String, now: u64) -> SResult<()> {
        let job = st.jobs.get(&id).ok_or_else(|| internal("job vanished"))?;
        let hospitals: Vec<String> = job.enrolled.iter().map(|e| e.name.clone()).collect();
        let mut entries = vec![coord(
            now,
            Body::JobFinished {
                job: id,
                status: LedgerJobStatus::Failed,
                reason: reason.clone(),
            },
        )];
        entries.extend(release_funds(
            &st.store,
            id,
            &job.researcher,
            &hospitals,
            now,
        ));
        let idx = self.append(st, entries)?;
        self.checkpoint(st)?;
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        job.finished_record = idx.first().copied();
        job.reason = reason;
        job.phase = JobPhase::Failed;
        Ok(())
    }

    fn status(&self, job: &Job) -> pb::JobStatus {
        let mut hospitals: Vec<String> = job.enrolled.iter().map(|e| e.name.clone()).collect();
        hospitals.sort();
        pb::JobStatus {
            job: job.id,
            state: job.state() as i32,
            spec: pb_digest(&job.valid.digest),
            submitted_record: job.submitted_record,
            hospitals,
            round: job.round_no,
            rounds: job.valid.spec.rounds,
            progress: job.progress(),
            reason: job.reason.clone(),
        }
    }

    /// The tasks hospital `h` has pending, each with a key that names it uniquely.
    fn tasks_for(&self, st: &State, h: &str) -> Vec<(String, pb::Task)> {
        use pb::task::Kind;
        let mut out = Vec::new();
        if let Some((size, note)) = &st.checkpoint {
            let last = st.cosigned.get(h).copied().unwrap_or(0);
            if *size > last {
                let proof = if last == 0 {
                    Ok(Vec::new())
                } else {
                    st.store.consistency_proof(last, *size)
                };
                if let Ok(proof) = proof {
                    out.push((
                        format!("cosign/{size}"),
                        pb::Task {
                            kind: Some(Kind::Cosign(pb::CosignTask {
                                checkpoint: Some(pb::Checkpoint { note: note.clone() }),
                                consistency: Some(pb_proof(&proof)),
                                old_size: last,
                            })),
                        },
                    ));
                }
            }
        }
        for job in st.jobs.values() {
            if let JobPhase::Enrolling { .. } = job.phase {
                if !job.is_enrolled(h) && self.hospitals.contains_key(h) {
                    out.push((
                        format!("offer/{}", job.id),
                        pb::Task {
                            kind: Some(Kind::Offer(pb::JobOffer {
                                job: job.id,
                                spec: Some(job.valid.spec.clone()),
                                spec_digest: pb_digest(&job.valid.digest),
                                deposit: self.config.deposit,
                            })),
                        },
                    ));
                }
                continue;
            }
            if job.terminal() || !job.is_enrolled(h) {
                continue;
            }
            if let Some((r, _)) = job.finalized {
                let done = job.evaluations.get(&r).is_some_and(|e| e.contains_key(h));
                if !done {
                    out.push((
                        format!("evaluate/{}/{r}", job.id),
                        pb::Task {
                            kind: Some(Kind::Evaluate(pb::EvaluateTask {
                                job: job.id,
                                round: r,
                                model: pb_digest(&job.model_digest),
                                inline: job.model_file.clone(),
                                statistics: job.stats.clone(),
                            })),
                        },
                    ));
                }
            }
            let Some(round) = job.round.as_ref() else {
                continue;
            };
            match round.phase() {
                Phase::Collecting if !job.subs.contains_key(h) => {
                    let stats_round = job.round_no == 0;
                    out.push((
                        format!("train/{}/{}", job.id, job.round_no),
                        pb::Task {
                            kind: Some(Kind::Train(pb::TrainTask {
                                job: job.id,
                                round: job.round_no,
                                model: if stats_round {
                                    None
                                } else {
                                    pb_digest(&job.model_digest)
                                },
                                model_file: if stats_round {
                                    None
                                } else {
                                    Some(pb::train_task::ModelFile::Inline(job.model_file.clone()))
                                },
                                deadline_unix_ms: round.config().deadline_ms,
                                kind: if stats_round {
                                    pb::RoundKind::Statistics
                                } else {
                                    pb::RoundKind::Model
                                } as i32,
                                quantization: Some(job.quantization),
                                total_weight: job.total_weight,
                                statistics: job.stats.clone(),
                            })),
                        },
                    ));
                }
                Phase::Decrypting => {
                    let answered = round.valid_shares().iter().any(|v| v == h)
                        || round.invalid_shares().iter().any(|v| v == h);
                    // The t enrolled hospitals with the lowest key-share indices decrypt first.
                    let asked = job.backups_asked || round.primaries().iter().any(|p| p == h);
                    if let (false, true, Some(digest), Some(context)) =
                        (answered, asked, round.aggregate_digest(), round.context())
                    {
                        out.push((
                            format!("decrypt/{}/{}", job.id, job.round_no),
                            pb::Task {
                                kind: Some(Kind::Decrypt(pb::DecryptTask {
                                    job: job.id,
                                    round: job.round_no,
                                    aggregate: pb_digest(&digest),
                                    contributors: round.submitted(),
                                    context,
                                })),
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// [`caller`], and refuses a revoked certificate.
    fn authorize<T>(&self, req: &Request<T>, allowed: &[Role]) -> SResult<crate::tls::Peer> {
        if !self.config.revoked.is_empty() {
            let certs = req.peer_certs();
            if let Some(leaf) = certs.as_ref().and_then(|c| c.first()) {
                let fingerprint = hex::encode(sha256(leaf.as_ref()));
                if self
                    .config
                    .revoked
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case(&fingerprint))
                {
                    return Err(Status::permission_denied(format!(
                        "certificate {fingerprint} has been revoked by this consortium"
                    )));
                }
            }
        }
        caller(req, allowed)
    }

    fn hospital_caller<T>(&self, req: &Request<T>, claimed: &str) -> SResult<String> {
        let peer = self.authorize(req, &[Role::Hospital])?;
        if peer.name != claimed {
            let status =
                Status::permission_denied(format!("{peer} may not act as hospital {claimed:?}"));
            return Err(self.refuse(&peer.name, format!("act_as/hospital/{claimed}"), status));
        }
        if !self.hospitals.contains_key(&peer.name) {
            return Err(Status::permission_denied(format!(
                "{peer} is not a hospital of this consortium"
            )));
        }
        Ok(peer.name)
    }

    /// Records a refusal (taking the lock) and returns its status.
    fn refuse(&self, who: &str, request: String, status: Status) -> Status {
        let mut st = self.lock();
        self.reject(&mut st, who, request, status)
    }

    /// Records a request refused before it reached a round (unknown job, wrong round).
    fn reject(&self, st: &mut State, hospital: &str, request: String, status: Status) -> Status {
        let e = entry(
            now_ms(),
            hospital,
            LRole::Hospital,
            Outcome::MinorFailure,
            Body::RequestRejected {
                request,
                reason: status.message().to_string(),
            },
        );
        let _ = self.append(st, vec![e]);
        status
    }
}

/// The hospital whose refusal `entries` are, if they are nothing but one hospital's refusals.
fn refused_hospital(entries: &[Entry]) -> Option<&str> {
    let first = entries.first()?;
    let refusal = |e: &Entry| {
        matches!(e.body, Body::RequestRejected { .. })
            && e.actor.role == LRole::Hospital
            && e.actor.id == first.actor.id
    };
    entries
        .iter()
        .all(refusal)
        .then_some(first.actor.id.as_str())
}

/// A job as submitted: enrolling until `enroll_deadline_ms`.
fn new_job(
    id: u64,
    valid: ValidJob,
    researcher: String,
    submitted_record: u64,
    enroll_deadline_ms: u64,
) -> Job {
    Job {
        id,
        global: Vec::with_capacity(num_parameters(&valid.model)),
        valid,
        researcher,
        submitted_record,
        phase: JobPhase::Enrolling {
            deadline_ms: enroll_deadline_ms,
        },
        reason: String::new(),
        enrolled: Vec::new(),
        answers: BTreeMap::new(),
        total_weight: 0,
        round_no: 0,
        round: None,
        quantization: job::statistics_quantization(0),
        subs: BTreeMap::new(),
        closed_record: None,
        share_deadline_ms: None,
        closed_ms: 0,
        backups_asked: false,
        stats: Vec::new(),
        model_file: Vec::new(),
        model_digest: [0; 32],
        finalized: None,
        finalized_record: None,
        evaluations: BTreeMap::new(),
        finished_record: None,
    }
}

fn job_not_found(id: u64) -> Status {
    Status::not_found(format!("no job {id} on this coordinator"))
}

#[tonic::async_trait]
impl JobService for Coordinator {
    async fn submit_job(&self, req: Request<pb::JobSpec>) -> SResult<Response<pb::JobStatus>> {
        let peer = self.shared.authorize(&req, &[Role::Researcher])?;
        let valid = job::validate(req.get_ref()).map_err(Status::invalid_argument)?;
        let s = &self.shared;
        let mut st = s.lock();
        let budget = valid.spec.credit_budget;
        let balance = st
            .store
            .credits()
            .balance(&Account::Researcher(peer.name.clone()));
        if balance < budget {
            return Err(Status::failed_precondition(format!(
                "researcher {:?} holds {balance} credits; the job's credit_budget is {budget}",
                peer.name
            )));
        }
        let id = st.next_job;
        let now = now_ms();
        st.store.put_blob(&valid.bytes).map_err(internal)?;
        let idx = s.append(
            &mut st,
            vec![
                entry(
                    now,
                    &peer.name,
                    LRole::Researcher,
                    Outcome::Success,
                    Body::JobSubmitted {
                        job: id,
                        spec: valid.digest,
                        researcher: peer.name.clone(),
                        budget,
                    },
                ),
                entry(
                    now,
                    &peer.name,
                    LRole::Researcher,
                    Outcome::Success,
                    Body::CreditsMoved {
                        movement: Movement::Fund {
                            job: id,
                            researcher: peer.name.clone(),
                            amount: budget,
                        },
                    },
                ),
            ],
        )?;
        st.next_job += 1;
        let job = new_job(
            id,
            valid,
            peer.name,
            idx[0],
            now + s.config.enroll_seconds * 1000,
        );
        let status = s.status(&job);
        st.jobs.insert(id, job);
        drop(st);
        s.bump();
        Ok(Response::new(status))
    }

    async fn get_job(&self, req: Request<pb::JobId>) -> SResult<Response<pb::JobStatus>> {
        self.shared
            .authorize(&req, &[Role::Researcher, Role::Auditor, Role::Hospital])?;
        let st = self.shared.lock();
        let id = req.get_ref().id;
        let job = st.jobs.get(&id).ok_or_else(|| job_not_found(id))?;
        Ok(Response::new(self.shared.status(job)))
    }

    type WatchJobStream = BoxStream<pb::JobEvent>;

    async fn watch_job(&self, req: Request<pb::JobId>) -> SResult<Response<Self::WatchJobStream>> {
        self.shared
            .authorize(&req, &[Role::Researcher, Role::Auditor, Role::Hospital])?;
        let id = req.get_ref().id;
        if !self.shared.lock().jobs.contains_key(&id) {
            return Err(job_not_found(id));
        }
        let shared = self.shared.clone();
        let mut version = shared.version.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut sent_metrics: BTreeSet<u64> = BTreeSet::new();
            let mut last: Option<(u64, i32, usize)> = None;
            loop {
                let (events, done) = {
                    let st = shared.lock();
                    let Some(job) = st.jobs.get(&id) else { return };
                    watch_events(job, &mut sent_metrics, &mut last)
                };
                for e in events {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                if done || version.changed().await.is_err() || shared.closing.load(Ordering::SeqCst)
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DownloadModelStream = BoxStream<pb::ModelDownload>;

    async fn download_model(
        &self,
        req: Request<pb::JobId>,
    ) -> SResult<Response<Self::DownloadModelStream>> {
        let peer = self
            .shared
            .authorize(&req, &[Role::Researcher, Role::Auditor])?;
        let id = req.get_ref().id;
        let (release, file) = {
            let st = self.shared.lock();
            let job = st.jobs.get(&id).ok_or_else(|| job_not_found(id))?;
            if peer.role == Role::Researcher && peer.name != job.researcher {
                return Err(Status::permission_denied(format!(
                    "job {id} belongs to researcher {:?}, not {peer}",
                    job.researcher
                )));
            }
            if job.phase != JobPhase::Finished {
                return Err(Status::failed_precondition(format!(
                    "job {id} is {}: only a finished job's model can be downloaded{}",
                    job.state().as_str_name(),
                    if job.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" (failed: {})", job.reason)
                    }
                )));
            }
            let (round, index) = job
                .finalized
                .ok_or_else(|| internal("a finished job without a finalized round"))?;
            // The latest checkpoint covering the record that a quorum of hospitals cosigned
            // already (the newest one may still be collecting cosignatures).
            let cosigners = |note: &str| {
                note::parse(note).map_or(0, |n| {
                    n.signatures
                        .iter()
                        .filter(|sig| self.shared.hospitals.contains_key(&sig.name))
                        .count()
                })
            };
            let (size, note) = st
                .store
                .checkpoints()
                .map_err(internal)?
                .into_iter()
                .filter(|(size, note)| *size > index && cosigners(note) >= self.shared.quorum)
                .max_by_key(|(size, _)| *size)
                .ok_or_else(|| {
                    Status::unavailable(
                        "no checkpoint covering the final model is cosigned by a quorum of                          hospitals yet; retry in a few seconds",
                    )
                })?;
            let (_, record) = st.store.record(index).map_err(internal)?;
            let proof = st.store.inclusion_proof(index, size).map_err(internal)?;
            let release = pb::ModelRelease {
                job: id,
                round,
                model: pb_digest(&job.model_digest),
                file: pb_digest(&sha256(&job.model_file)),
                file_bytes: job.model_file.len() as u64,
                record_index: index,
                record,
                checkpoint: Some(pb::Checkpoint { note }),
                inclusion: Some(pb_proof(&proof)),
            };
            (release, job.model_file.clone())
        };
        use pb::model_download::Part;
        let mut msgs = vec![Ok(pb::ModelDownload {
            part: Some(Part::Release(release)),
        })];
        msgs.extend(chunks(&file).map(|data| {
            Ok(pb::ModelDownload {
                part: Some(Part::Chunk(pb::Chunk { data })),
            })
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }
}

/// The watch events of `job` not sent yet, and whether the watch is over.
fn watch_events(
    job: &Job,
    sent_metrics: &mut BTreeSet<u64>,
    last: &mut Option<(u64, i32, usize)>,
) -> (Vec<pb::JobEvent>, bool) {
    use pb::job_event::Event;
    let mut out = Vec::new();
    let ev = |event| pb::JobEvent {
        job: job.id,
        event: Some(event),
    };
    if let Some(p) = job.progress() {
        let key = (p.round, p.phase, p.participants.len());
        if *last != Some(key) {
            *last = Some(key);
            if p.phase != pb::RoundPhase::Finalized as i32 || p.round == 0 {
                out.push(ev(Event::Round(p)));
            }
        }
    }
    // A model round's line goes out once every hospital scored its model, or when the job ends.
    if let Some((r, _)) = job.finalized {
        for round in 1..=r {
            if sent_metrics.contains(&round) {
                continue;
            }
            let complete = job.evaluated_by_all(round) || job.terminal() || round < r;
            if complete {
                sent_metrics.insert(round);
                out.push(ev(Event::Round(pb::RoundProgress {
                    round,
                    phase: pb::RoundPhase::Finalized as i32,
                    participants: Vec::new(),
                    metrics: job.metrics(round),
                    model: None,
                })));
            }
        }
    }
    let record_index = job.finished_record.unwrap_or(0);
    match job.phase {
        JobPhase::Finished => {
            out.push(ev(Event::Finished(pb::job_event::Finished {
                model: pb_digest(&job.model_digest),
                metrics: job.metrics(u64::from(job.valid.spec.rounds)),
                record_index,
            })));
            (out, true)
        }
        JobPhase::Failed => {
            out.push(ev(Event::Failed(pb::job_event::Failed {
                reason: job.reason.clone(),
                round: job.round_no,
                record_index,
            })));
            (out, true)
        }
        _ => (out, false),
    }
}

#[tonic::async_trait]
impl TrainingService for Coordinator {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> SResult<Response<pb::EnrollResponse>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let r = req.into_inner();
        let mut st = s.lock();
        let job = st
            .jobs
            .get(&r.job_id)
            .ok_or_else(|| job_not_found(r.job_id))?;
        let hospital = &s.hospitals[&h];
        let answer = |job: &Job, a: &EnrollAnswer| pb::EnrollResponse {
            public_key: s.pk.to_bytes(),
            spec: Some(job.valid.spec.clone()),
            spec_digest: pb_digest(&job.valid.digest),
            party: hospital.party as u32,
            deposit: a.deposit,
            record_index: a.record,
        };
        if let Some(a) = job.answers.get(&h) {
            let same = job
                .enrolled
                .iter()
                .any(|e| e.name == h && e.identity_key.as_slice() == r.identity_key);
            if !same {
                return Err(Status::already_exists(format!(
                    "hospital {h:?} is enrolled in job {} with another identity key",
                    r.job_id
                )));
            }
            return Ok(Response::new(answer(job, a)));
        }
        if !matches!(job.phase, JobPhase::Enrolling { .. }) {
            return Err(Status::failed_precondition(format!(
                "job {} no longer accepts enrollments (it is {})",
                r.job_id,
                job.state().as_str_name()
            )));
        }
        if r.identity_key != hospital.identity {
            let status = Status::permission_denied(format!(
                "the identity key is not the one the consortium provisioned for hospital {h:?} \
                 (hospitals/{h}/identity.vkey)"
            ));
            return Err(s.reject(
                &mut st,
                &h,
                format!("enroll/job/{}/hospital/{h}", r.job_id),
                status,
            ));
        }
        if r.declared_samples == 0 || r.declared_samples > job::MAX_DECLARED_SAMPLES {
            return Err(Status::invalid_argument(format!(
                "declared_samples must be between 1 and {}, got {}",
                job::MAX_DECLARED_SAMPLES,
                r.declared_samples
            )));
        }
        let deposit = s.config.deposit;
        let balance = st.store.credits().balance(&Account::Hospital(h.clone()));
        if balance < deposit {
            return Err(Status::failed_precondition(format!(
                "hospital {h:?} holds {balance} credits; enrolling needs a deposit of {deposit}"
            )));
        }
        let now = now_ms();
        let mut entries = vec![entry(
            now,
            &h,
            LRole::Hospital,
            Outcome::Success,
            Body::HospitalEnrolled {
                job: r.job_id,
                hospital: h.clone(),
                identity_key: hospital.identity,
                samples: r.declared_samples,
                deposit,
            },
        )];
        if deposit > 0 {
            entries.push(entry(
                now,
                &h,
                LRole::Hospital,
                Outcome::Success,
                Body::CreditsMoved {
                    movement: Movement::PostDeposit {
                        job: r.job_id,
                        hospital: h.clone(),
                        amount: deposit,
                    },
                },
            ));
        }
        let idx = s.append(&mut st, entries)?;
        s.fail_here("enrolled", r.job_id, 0);
        let a = EnrollAnswer {
            record: idx[0],
            deposit,
        };
        let job = st
            .jobs
            .get_mut(&r.job_id)
            .ok_or_else(|| internal("job vanished"))?;
        job.enrolled.push(Enrolled {
            name: h.clone(),
            identity_key: hospital.identity,
            samples: r.declared_samples,
            party: hospital.party,
        });
        job.answers.insert(h.clone(), a.clone());
        let response = answer(job, &a);
        s.step(&mut st, r.job_id, now)?;
        drop(st);
        s.bump();
        Ok(Response::new(response))
    }

    type TasksStream = BoxStream<pb::Task>;

    async fn tasks(&self, req: Request<pb::TaskRequest>) -> SResult<Response<Self::TasksStream>> {
        let h = self.shared.hospital_caller(&req, &req.get_ref().hospital)?;
        let shared = self.shared.clone();
        let mut version = shared.version.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut sent: HashSet<String> = HashSet::new();
            loop {
                let tasks = {
                    let st = shared.lock();
                    shared.tasks_for(&st, &h)
                };
                for (key, task) in tasks {
                    if sent.insert(key) && tx.send(Ok(task)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = version.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
                if shared.closing.load(Ordering::SeqCst) {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchModelStream = BoxStream<pb::Chunk>;

    async fn fetch_model(
        &self,
        req: Request<pb::ModelRequest>,
    ) -> SResult<Response<Self::FetchModelStream>> {
        let peer = self.shared.authorize(&req, &[Role::Hospital])?;
        let r = req.into_inner();
        let want = digest_of(&r.model)?;
        let st = self.shared.lock();
        let job = st.jobs.get(&r.job).ok_or_else(|| job_not_found(r.job))?;
        if !job.is_enrolled(&peer.name) {
            return Err(Status::permission_denied(format!(
                "{peer} is not enrolled in job {}",
                r.job
            )));
        }
        if want != job.model_digest {
            return Err(Status::not_found(
                "that model is not the job's current global model",
            ));
        }
        let msgs: Vec<SResult<pb::Chunk>> = chunks(&job.model_file)
            .map(|data| Ok(pb::Chunk { data }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::UpdateChunk>>,
    ) -> SResult<Response<pb::SubmitAck>> {
        use pb::update_chunk::Part;
        let peer = self.shared.authorize(&req, &[Role::Hospital])?;
        let s = &self.shared;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::UpdateChunk {
                part: Some(Part::Submission(s)),
            }) => s,
            _ => {
                return Err(s.refuse(
                    &peer.name,
                    format!("submit_update/hospital/{}", peer.name),
                    Status::invalid_argument("SubmitUpdate must start with a Submission header"),
                ))
            }
        };
        let request = format!(
            "submit_update/job/{}/round/{}/hospital/{}",
            header.job, header.round, peer.name
        );
        if header.hospital != peer.name || !s.hospitals.contains_key(&peer.name) {
            let status = Status::permission_denied(format!(
                "{peer} may not submit for hospital {:?}",
                header.hospital
            ));
            return Err(s.refuse(&peer.name, request, status));
        }
        let h = peer.name;
        let signature: [u8; 64] = match header.signature.as_slice().try_into() {
            Ok(sig) => sig,
            Err(_) => {
                let status =
                    Status::invalid_argument("the submission signature must be 64 bytes (Ed25519)");
                return Err(s.refuse(&h, request, status));
            }
        };
        let announced =
            digest_of(&header.ciphertext_digest).map_err(|e| s.refuse(&h, request.clone(), e))?;
        {
            // Refuse early, before reading megabytes, what cannot be accepted anyway.
            let mut st = s.lock();
            let open = st.jobs.get(&header.job).and_then(|j| {
                j.round
                    .as_ref()
                    .filter(|r| j.round_no == header.round && *r.phase() == Phase::Collecting)
            });
            if open.is_none() {
                let status = Status::failed_precondition(format!(
                    "job {} is not collecting submissions for round {}",
                    header.job, header.round
                ));
                return Err(s.reject(&mut st, &h, request, status));
            }
        }
        let bytes = read_body(
            &mut stream,
            header.total_bytes,
            |m: pb::UpdateChunk| match m.part {
                Some(Part::Chunk(c)) => Some(c),
                _ => None,
            },
        )
        .await
        .map_err(|e| s.refuse(&h, request.clone(), e))?;
        let digest = sha256(&bytes);
        if digest != announced {
            let status = Status::invalid_argument(
                "the ciphertext bytes do not match the digest the header announced",
            );
            return Err(s.refuse(&h, request, status));
        }
        let now = now_ms();
        let mut st = s.lock();
        let Some(job) = st.jobs.get_mut(&header.job) else {
            return Err(job_not_found(header.job));
        };
        if job.round_no != header.round {
            let status = Status::failed_precondition(format!(
                "job {} is in round {}, not {}",
                header.job, job.round_no, header.round
            ));
            return Err(s.reject(&mut st, &h, request, status));
        }
        let round = job.round.as_mut().ok_or_else(|| internal("no round"))?;
        let (entries, result) = round.submit(now, &h, &bytes, signature);
        if result.is_ok() {
            job.subs.insert(
                h.clone(),
                SubInfo {
                    digest,
                    signature,
                    ciphertexts: header.ciphertexts,
                    bytes: bytes.len() as u64,
                },
            );
            st.store.put_blob(&bytes).map_err(internal)?;
        }
        let idx = s.append(&mut st, entries)?;
        if let Err(e) = result {
            return Err(round_status(&e));
        }
        s.fail_here("submission-recorded", header.job, header.round);
        s.step(&mut st, header.job, now)?;
        drop(st);
        s.bump();
        Ok(Response::new(pb::SubmitAck {
            received_bytes: bytes.len() as u64,
            ciphertexts: pb_digest(&digest),
            record_index: idx.first().copied().unwrap_or(0),
        }))
    }

    type FetchRoundStream = BoxStream<pb::RoundBundle>;

    async fn fetch_round(
        &self,
        req: Request<pb::RoundRef>,
    ) -> SResult<Response<Self::FetchRoundStream>> {
        use pb::round_bundle::Part;
        let peer = self.shared.authorize(&req, &[Role::Hospital])?;
        let r = req.into_inner();
        let st = self.shared.lock();
        let job = st.jobs.get(&r.job).ok_or_else(|| job_not_found(r.job))?;
        if !job.is_enrolled(&peer.name) {
            return Err(Status::permission_denied(format!(
                "{peer} is not enrolled in job {}",
                r.job
            )));
        }
        let round = job
            .round
            .as_ref()
            .filter(|_| job.round_no == r.round)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "round {} of job {} is not the current round",
                    r.round, r.job
                ))
            })?;
        let (Some(digest), Some(record_index)) = (round.aggregate_digest(), job.closed_record)
        else {
            return Err(Status::failed_precondition(format!(
                "round {} of job {} has not closed yet",
                r.round, r.job
            )));
        };
        let mut msgs = Vec::new();
        let mut ciphertexts = 0;
        for (h, info) in &job.subs {
            let bytes = st
                .store
                .blob(&info.digest)
                .map_err(internal)?
                .ok_or_else(|| internal("a submission's blob is missing"))?;
            ciphertexts = info.ciphertexts;
            msgs.push(Ok(pb::RoundBundle {
                part: Some(Part::Submission(pb::Submission {
                    job: r.job,
                    round: r.round,
                    hospital: h.clone(),
                    ciphertexts: info.ciphertexts,
                    total_bytes: info.bytes,
                    ciphertext_digest: pb_digest(&info.digest),
                    signature: info.signature.to_vec(),
                })),
            }));
            msgs.extend(chunks(&bytes).map(|c| {
                Ok(pb::RoundBundle {
                    part: Some(Part::Chunk(c)),
                })
            }));
        }
        msgs.push(Ok(pb::RoundBundle {
            part: Some(Part::Aggregate(pb::Aggregate {
                job: r.job,
                round: r.round,
                contributors: round.submitted(),
                digest: pb_digest(&digest),
                ciphertexts,
                record_index,
            })),
        }));
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }

    async fn submit_decryption_share(
        &self,
        req: Request<Streaming<pb::ShareChunk>>,
    ) -> SResult<Response<pb::Ack>> {
        use pb::share_chunk::Part;
        let peer = self.shared.authorize(&req, &[Role::Hospital])?;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::ShareChunk {
                part: Some(Part::Share(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "SubmitDecryptionShare must start with a DecryptionShare header",
                ))
            }
        };
        let s = &self.shared;
        let request = format!(
            "submit_share/job/{}/round/{}/hospital/{}",
            header.job, header.round, peer.name
        );
        if header.hospital != peer.name || !s.hospitals.contains_key(&peer.name) {
            let status = Status::permission_denied(format!(
                "{peer} may not submit a share for hospital {:?}",
                header.hospital
            ));
            return Err(s.refuse(&peer.name, request, status));
        }
        let h = peer.name;
        let announced =
            digest_of(&header.share_digest).map_err(|e| s.refuse(&h, request.clone(), e))?;
        let bytes = read_body(
            &mut stream,
            header.total_bytes,
            |m: pb::ShareChunk| match m.part {
                Some(Part::Chunk(c)) => Some(c),
                _ => None,
            },
        )
        .await
        .map_err(|e| s.refuse(&h, request.clone(), e))?;
        if sha256(&bytes) != announced {
            let status = Status::invalid_argument(
                "the share bytes do not match the digest the header announced",
            );
            return Err(s.refuse(&h, request, status));
        }
        // Verify the share's proof (tens of ms of modular exponentiation) off the state lock and
        // off the async runtime: shares that arrive together are checked side by side, and no
        // other call waits for them. The round re-checks everything cheap under the lock and uses
        // this verdict only for these same bytes against the same aggregate.
        let check = {
            let mut st = s.lock();
            let check = st
                .jobs
                .get(&header.job)
                .filter(|job| job.round_no == header.round)
                .and_then(|job| job.round.as_ref())
                .and_then(|round| round.share_check(&h));
            check.filter(|_| st.checking_share.insert(h.clone()))
        };
        let (checked, bytes) = match check {
            Some(check) => {
                let joined = tokio::task::spawn_blocking(move || {
                    let checked = check.check(&bytes);
                    (checked, bytes)
                })
                .await;
                match joined {
                    Ok((checked, bytes)) => (Some(checked), bytes),
                    Err(e) => {
                        s.lock().checking_share.remove(&h);
                        return Err(internal(e));
                    }
                }
            }
            None => (None, bytes),
        };
        let now = now_ms();
        let mut st = s.lock();
        if checked.is_some() {
            st.checking_share.remove(&h);
        }
        let credits = st.store.credits().clone();
        let Some(job) = st.jobs.get_mut(&header.job) else {
            return Err(job_not_found(header.job));
        };
        if header.round < job.round_no
            || (header.round == job.round_no
                && job
                    .round
                    .as_ref()
                    .is_some_and(|r| *r.phase() == Phase::Finalized))
        {
            // A backup share that arrived after the round was decrypted: not needed, not wrong.
            return Err(Status::failed_precondition(format!(
                "round {} of job {} is already decrypted; the share is not needed",
                header.round, header.job
            )));
        }
        if job.round_no != header.round || job.round.is_none() {
            let status = Status::failed_precondition(format!(
                "job {} is in round {}, not {}",
                header.job, job.round_no, header.round
            ));
            return Err(s.reject(&mut st, &h, request, status));
        }
        let round = job.round.as_mut().ok_or_else(|| internal("no round"))?;
        if round.aggregate_digest().map(|d| pb_digest(&d)) != Some(header.aggregate.clone()) {
            let status =
                Status::invalid_argument("the share names another aggregate than this round's");
            return Err(s.reject(&mut st, &h, request, status));
        }
        let (entries, result) =
            round.submit_share(now, &h, header.party as usize, &bytes, checked, &credits);
        let finalized_at = entries
            .iter()
            .position(|e| matches!(e.body, Body::RoundFinalized { .. }));
        // The share's bytes are kept when a record names them (valid or not), not for a refusal.
        if entries
            .iter()
            .any(|e| matches!(e.body, Body::DecryptionShare { .. }))
        {
            st.store.put_blob(&bytes).map_err(internal)?;
        }
        let idx = s.append(&mut st, entries)?;
        if let (Some(k), Some(job)) = (finalized_at, st.jobs.get_mut(&header.job)) {
            job.finalized_record = idx.get(k).copied();
        }
        if let Err(e) = &result {
            if !matches!(e, RoundError::Finalize(_)) {
                return Err(round_status(e));
            }
        }
        let point = if finalized_at.is_some() {
            "round-finalized"
        } else {
            "share-recorded"
        };
        s.fail_here(point, header.job, header.round);
        s.step(&mut st, header.job, now)?;
        drop(st);
        s.bump();
        Ok(Response::new(pb::Ack {
            record_index: idx.first().copied(),
        }))
    }

    async fn submit_cosignature(
        &self,
        req: Request<pb::Cosignature>,
    ) -> SResult<Response<pb::Ack>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let incoming = note::parse(&req.get_ref().note)
            .map_err(|e| Status::invalid_argument(format!("not a signed note: {e}")))?;
        let cp = Checkpoint::from_text(&incoming.text)
            .map_err(|e| Status::invalid_argument(format!("not a checkpoint: {e}")))?;
        let mut st = s.lock();
        let stored = st
            .store
            .checkpoints()
            .map_err(internal)?
            .into_iter()
            .find(|(size, _)| *size == cp.size)
            .map(|(_, n)| n)
            .ok_or_else(|| Status::not_found(format!("no checkpoint of size {}", cp.size)))?;
        let mut merged = note::parse(&stored).map_err(internal)?;
        if merged.text != incoming.text {
            return Err(Status::invalid_argument(
                "the cosigned checkpoint is not the one the log signed at that size",
            ));
        }
        let mut added = false;
        for sig in incoming.signatures.into_iter().filter(|sig| sig.name == h) {
            if !merged.signatures.contains(&sig) {
                merged.signatures.push(sig);
                added = true;
            }
        }
        if !added && !merged.signatures.iter().any(|sig| sig.name == h) {
            return Err(Status::invalid_argument(format!(
                "the note carries no cosignature by {h:?}"
            )));
        }
        let text = merged.encode();
        st.store
            .add_cosignatures(&text, &s.known)
            .map_err(|e| Status::invalid_argument(format!("cosignature refused: {e}")))?;
        if let Some((size, note)) = st.checkpoint.as_mut() {
            if *size == cp.size {
                *note = text;
            }
        }
        let last = st.cosigned.entry(h).or_insert(0);
        *last = (*last).max(cp.size);
        Ok(Response::new(pb::Ack { record_index: None }))
    }

    async fn submit_evaluation(&self, req: Request<pb::Evaluation>) -> SResult<Response<pb::Ack>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let e = req.into_inner();
        let metrics: Vec<(String, f64)> = e
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect();
        job::validate_evaluation(e.rows, &metrics).map_err(Status::invalid_argument)?;
        let model = digest_of(&e.model)?;
        let signature = <[u8; 64]>::try_from(e.signature.as_slice()).map_err(|_| {
            Status::invalid_argument(format!(
                "an evaluation's signature is 64 bytes (Ed25519), got {}",
                e.signature.len()
            ))
        })?;
        let now = now_ms();
        let mut st = s.lock();
        let job = st.jobs.get(&e.job).ok_or_else(|| job_not_found(e.job))?;
        let Some(me) = job.enrolled.iter().find(|x| x.name == h) else {
            return Err(Status::permission_denied(format!(
                "hospital {h:?} is not enrolled in job {}",
                e.job
            )));
        };
        if job.terminal() || job.finalized.map(|(r, _)| r) != Some(e.round) {
            return Err(Status::failed_precondition(format!(
                "round {} of job {} has no model awaiting evaluation",
                e.round, e.job
            )));
        }
        if model != job.model_digest {
            return Err(Status::failed_precondition(format!(
                "the model evaluated ({}) is not round {}'s global model ({})",
                hex::encode(model),
                e.round,
                hex::encode(job.model_digest)
            )));
        }
        if job
            .evaluations
            .get(&e.round)
            .is_some_and(|reports| reports.contains_key(&h))
        {
            // A retry after a lost answer: the first report stands, and is on the ledger.
            return Ok(Response::new(pb::Ack { record_index: None }));
        }
        let message = Body::evaluation_message(e.job, e.round, &h, &model, e.rows, &metrics);
        if !signature_verifies(&me.identity_key, &message, &signature) {
            let status = Status::unauthenticated(format!(
                "the evaluation's signature does not verify with {h}'s identity key"
            ));
            let request = format!("evaluation/job/{}/round/{}/hospital/{h}", e.job, e.round);
            return Err(s.reject(&mut st, &h, request, status));
        }
        let record = entry(
            now,
            &h,
            LRole::Hospital,
            Outcome::Success,
            Body::ModelEvaluated {
                job: e.job,
                round: e.round,
                hospital: h.clone(),
                model,
                rows: e.rows,
                metrics: metrics.clone(),
                signature,
            },
        );
        let idx = s.append(&mut st, vec![record])?;
        if let Some(job) = st.jobs.get_mut(&e.job) {
            job.evaluations
                .entry(e.round)
                .or_default()
                .insert(h, (e.rows, metrics));
        }
        s.step(&mut st, e.job, now)?;
        drop(st);
        s.bump();
        Ok(Response::new(pb::Ack {
            record_index: idx.first().copied(),
        }))
    }

    async fn refuse_decryption(&self, req: Request<pb::Refusal>) -> SResult<Response<pb::Ack>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let r = req.into_inner();
        let mut st = s.lock();
        if !st.jobs.get(&r.job).is_some_and(|j| j.is_enrolled(&h)) {
            return Err(Status::permission_denied(format!(
                "hospital {h:?} is not enrolled in job {}",
                r.job
            )));
        }
        let reason: String = r.reason.chars().take(1000).collect();
        let e = entry(
            now_ms(),
            &h,
            LRole::Hospital,
            Outcome::SeriousFailure,
            Body::RequestRejected {
                request: format!("decrypt/job/{}/round/{}/hospital/{h}", r.job, r.round),
                reason: format!("hospital {h} refused to decrypt: {reason}"),
            },
        );
        let idx = s.append(&mut st, vec![e])?;
        Ok(Response::new(pb::Ack {
            record_index: idx.first().copied(),
        }))
    }
}

#[tonic::async_trait]
impl LedgerService for Coordinator {
    async fn get_checkpoint(
        &self,
        req: Request<pb::CheckpointRequest>,
    ) -> SResult<Response<pb::Checkpoint>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let st = self.shared.lock();
        let all = st.store.checkpoints().map_err(internal)?;
        let found = match req.get_ref().size {
            Some(size) => all.into_iter().find(|(s, _)| *s == size),
            None => all.into_iter().max_by_key(|(s, _)| *s),
        };
        let (_, note) = found.ok_or_else(|| Status::not_found("no checkpoint of that size"))?;
        Ok(Response::new(pb::Checkpoint { note }))
    }

    type GetRecordsStream = BoxStream<pb::RecordEntry>;

    async fn get_records(
        &self,
        req: Request<pb::RecordRange>,
    ) -> SResult<Response<Self::GetRecordsStream>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let r = req.into_inner();
        let st = self.shared.lock();
        if r.end > st.store.len() || r.start > r.end {
            return Err(Status::out_of_range(format!(
                "records {}..{} are not in a log of {} records",
                r.start,
                r.end,
                st.store.len()
            )));
        }
        let end = r.end.min(r.start + 100_000);
        let mut msgs = Vec::new();
        for index in r.start..end {
            let (_, record) = st.store.record(index).map_err(internal)?;
            msgs.push(Ok(pb::RecordEntry { index, record }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> SResult<Response<pb::Proof>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let r = req.get_ref();
        let st = self.shared.lock();
        let proof = st
            .store
            .inclusion_proof(r.index, r.size)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        Ok(Response::new(pb_proof(&proof)))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> SResult<Response<pb::Proof>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let r = req.get_ref();
        let st = self.shared.lock();
        let proof = st
            .store
            .consistency_proof(r.old_size, r.new_size)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        Ok(Response::new(pb_proof(&proof)))
    }

    type GetBlobStream = BoxStream<pb::Chunk>;

    async fn get_blob(&self, req: Request<pb::Digest>) -> SResult<Response<Self::GetBlobStream>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let digest = digest_of(&Some(req.get_ref().clone()))?;
        let st = self.shared.lock();
        // Submissions stay sealed until their round closes: no hospital may read another's
        // ciphertexts (and resubmit them as its own) while it could still submit.
        let sealed = st.jobs.values().any(|j| {
            j.round
                .as_ref()
                .is_some_and(|r| *r.phase() == Phase::Collecting)
                && j.subs.values().any(|s| s.digest == digest)
        });
        if sealed {
            return Err(Status::failed_precondition(
                "that blob is a submission of a round still collecting; it is sealed until the \
                 round closes",
            ));
        }
        let bytes = st
            .store
            .blob(&digest)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no blob {}", hex::encode(digest))))?;
        let msgs: Vec<SResult<pb::Chunk>> =
            chunks(&bytes).map(|data| Ok(pb::Chunk { data })).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }
}
