//! The coordinator process: the three gRPC services over mutual TLS, the job lifecycle and the
//! ledger.
//!
//! One state behind a mutex holds the ledger [`Store`] (sled) and every job. Handlers check
//! the caller's role and name from its certificate ([`fedchain_consortium::tls::caller`]), read streamed bytes
//! outside the lock, then take the lock, let the job and its [`Round`](crate::round::Round) decide, append the
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
//!
//! This module holds the state and what every handler shares (appending, authorization,
//! refusals); `jobs` moves jobs through their lifecycle over that state (restore, the deadline
//! driver, each phase, the tasks a hospital is given); `researchers`, `hospitals` and `auditors`
//! are the three gRPC services.

mod auditors;
mod hospitals;
mod incident;
mod jobs;

use jobs::{declined, job_state, job_status, progress, wire_metrics, wire_spec};
mod researchers;

pub use incident::INCIDENT_FILE;

use crate::failpoint;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedchain_crypto::keys::PublicKey;
use fedchain_ledger::credits::{Account, Movement};
use fedchain_ledger::note::{self, Checkpoint, NoteSigner, NoteVerifier};
use fedchain_ledger::record::{Actor, Body, Outcome, Role as LRole};
use fedchain_ledger::store::{Entry, Store};
use fedchain_ledger::{sha256, Hash, LedgerError};
use fedchain_proto::limits;
use fedchain_proto::v1 as pb;
use pb::job_service_server::{JobService, JobServiceServer};
use pb::ledger_service_server::{LedgerService, LedgerServiceServer};
use pb::training_service_server::{TrainingService, TrainingServiceServer};
use prost::bytes::Bytes;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use fedchain_consortium::folder::EnrolledHospital;
use fedchain_consortium::revocation::{self, RevocationError, WatchedCrl, CRL_FILE};
use fedchain_consortium::tls::{self, caller, Role, TlsError};
use fedchain_consortium::{ConsortiumError, CoordinatorFolder, CA_CERT_FILE, COORDINATOR_NAME};

use crate::job::{
    Decline, Enrollment, Job, JobEnv, JobError, JobPhase, ShareSubmission, Submission, Task, Writes,
};
use crate::refusals::{self, Admit, RefusalMeter};
use crate::round::{Phase, RoundError};
use fedchain_protocol::{self as protocol, RoundKind};

/// The coordinator's settings (`fedchain coordinator --config FILE`, TOML). Tools that write one
/// serialize this type (`toml::to_string`), so a written file always reads back.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// Largest model file sent inside a task; a larger one the hospital fetches with
    /// `FetchModel`. Capped at `limits::MAX_INLINE_MODEL_BYTES` (1 MiB), the default. Tests set 0
    /// so that small models take the path that large ones take.
    #[serde(default = "defaults::inline_model_bytes")]
    pub inline_model_bytes: usize,
}

impl Config {
    /// The settings for a coordinator of the folder `dir` keeping its ledger in `state` and
    /// listening on `listen`, everything else at its default.
    pub fn new(dir: PathBuf, state: PathBuf, listen: SocketAddr) -> Config {
        Config {
            dir,
            state,
            listen,
            enroll_seconds: defaults::enroll_seconds(),
            deposit: defaults::deposit(),
            initial_credits: defaults::initial_credits(),
            evaluation_seconds: defaults::evaluation_seconds(),
            revoked: Vec::new(),
            inline_model_bytes: defaults::inline_model_bytes(),
        }
    }

    /// Whether a task carries a model file of `len` bytes inline (rather than a `FetchModel`
    /// request).
    fn inlines_model(&self, len: usize) -> bool {
        len <= self.inline_model_bytes.min(limits::MAX_INLINE_MODEL_BYTES)
    }
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
    pub fn inline_model_bytes() -> usize {
        fedchain_proto::limits::MAX_INLINE_MODEL_BYTES
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
    /// The consortium CA's revocation list in the coordinator's folder.
    #[error("{0}; fix or remove it (a new one comes from `fedchain consortium revoke`)")]
    Revocation(#[from] RevocationError),
    /// Writing the ledger failed; the coordinator stopped so that a restart resumes from the
    /// ledger (see `service/incident.rs`).
    #[error(
        "{0}; restart the coordinator once the disk is fixed: it resumes every job from the ledger"
    )]
    Storage(String),
    /// An incident stopped the coordinator (see [`INCIDENT_FILE`]): it must not go on from this
    /// ledger until an operator has resolved it.
    #[error(
        "{summary}. The coordinator does not start while {path} exists: it says what was found \
         and how to recover"
    )]
    Incident {
        /// The incident report.
        path: PathBuf,
        /// Its first line.
        summary: String,
    },
}

type SResult<T> = Result<T, Status>;

pub use crate::decryptors::BACKUP_DECRYPT_MS;
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

/// The DER certificate a request's TLS client presented, if any.
fn leaf_cert<T>(req: &Request<T>) -> Option<Vec<u8>> {
    req.peer_certs()
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
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

/// `bytes` as a stream of `CHUNK_BYTES` slices, each copied into its message only when the
/// transport takes it. `Bytes` is shared, not copied: three hospitals fetching a 40 MB model hold
/// the one file the job keeps and a few chunks each, not three copies cut in advance.
fn chunk_stream<T>(
    bytes: Bytes,
    message: impl Fn(Vec<u8>) -> T + Send + 'static,
) -> impl Stream<Item = SResult<T>> + Send + 'static {
    let starts = (0..bytes.len()).step_by(limits::CHUNK_BYTES);
    tokio_stream::iter(starts.map(move |start| {
        let end = (start + limits::CHUNK_BYTES).min(bytes.len());
        Ok(message(bytes[start..end].to_vec()))
    }))
}

/// A response rewriter, as a function pointer (a nameable layer type).
type TooLarge = fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>;

/// tonic answers a message larger than the decoding limit with `OUT_OF_RANGE` before any handler
/// runs; gRPC's convention, and this service's own answer to an oversized stream, is
/// `RESOURCE_EXHAUSTED`. Such an answer is headers only, so the status is rewritten there.
fn too_large_is_resource_exhausted(
    mut res: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = res.headers_mut();
    let out_of_range = headers.get("grpc-status").map(|v| v.as_bytes()) == Some(b"11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("too large") || m.contains("too%20large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
}

/// A message of a stream over the decoding limit: the same answer as [`too_large_is_resource_exhausted`].
fn too_large(s: Status) -> Status {
    if s.code() == tonic::Code::OutOfRange && s.message().contains("too large") {
        Status::resource_exhausted(s.message().to_string())
    } else {
        s
    }
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
    while let Some(msg) = stream.message().await.map_err(too_large)? {
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

struct Shared {
    config: Config,
    pk: Arc<PublicKey>,
    signer: NoteSigner,
    known: Vec<NoteVerifier>,
    /// Cosignatures a checkpoint needs (the trust file's quorum).
    quorum: usize,
    hospitals: BTreeMap<String, EnrolledHospital>,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    /// Set when the server shuts down: long-lived streams end so the shutdown can complete.
    closing: AtomicBool,
    /// A crash test's failpoint ([`crate::failpoint`]); `None` in every real deployment.
    failpoint: Option<failpoint::Armed>,
    /// The consortium CA's CRL in the coordinator's folder, re-read by the driver when the
    /// file changes.
    crl: Mutex<WatchedCrl>,
    /// The incident that stopped this coordinator ([`incident`]): nothing more is appended.
    halted: Mutex<Option<incident::Halt>>,
    /// Wakes [`Coordinator::serve`] to stop on an incident.
    halt: tokio::sync::Notify,
}

/// The coordinator: open it, then [`Coordinator::serve`].
#[derive(Clone)]
pub struct Coordinator {
    shared: Arc<Shared>,
}

impl Coordinator {
    /// Opens the coordinator's folder and ledger: checks the folder holds the coordinator's
    /// material, mints the initial credits into a new ledger, and closes jobs a previous run left
    /// unfinished.
    pub fn open(config: Config) -> Result<Coordinator, ServiceError> {
        let failpoint = failpoint::from_env().map_err(ServiceError::Environment)?;
        let folder = CoordinatorFolder::open(&config.dir)?;
        let CoordinatorFolder {
            description,
            public_key: pk,
            log: signer,
            trust,
            hospitals,
            ..
        } = folder;
        let mut known = vec![signer.verifier()];
        known.extend(trust.witnesses.iter().cloned());

        fedchain_ledger::durable::create_dir_all(&config.state)?;
        incident::refuse_open_incident(&config.state)?;
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
        let dir = &config.dir;
        let crl = WatchedCrl::open(&dir.join(CRL_FILE), &dir.join(CA_CERT_FILE))?;
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
                crl: Mutex::new(crl),
                halted: Mutex::new(None),
                halt: tokio::sync::Notify::new(),
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
        self.serve_incoming(TcpListenerStream::new(listener), shutdown)
            .await
    }

    /// As [`Coordinator::serve`], on connections from `incoming`: a listener's, or in-memory
    /// pipes (the in-process tests), each still authenticated by mutual TLS. A connection's
    /// `ConnectInfo` must be `TcpConnectInfo`, which tonic reads the client's certificates under.
    pub async fn serve_incoming<S, IO>(
        self,
        incoming: S,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServiceError>
    where
        S: Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
        IO: tokio::io::AsyncRead
            + tokio::io::AsyncWrite
            + tonic::transport::server::Connected<
                ConnectInfo = tonic::transport::server::TcpConnectInfo,
            > + Unpin
            + Send
            + 'static,
    {
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
            let halted = tokio::select! {
                () = shutdown => false,
                () = shared.halt.notified() => true,
            };
            if !halted {
                shared.await_cosigned(Duration::from_secs(5)).await;
            }
            // End the task and watch streams, which would otherwise hold the shutdown forever.
            shared.closing.store(true, Ordering::SeqCst);
            shared.bump();
            let _ = fired_tx.send(());
        };
        let server = tonic::transport::Server::builder()
            .tls_config(tls)?
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .layer(tls::rpc_name_layer())
            .layer(tower::util::MapResponseLayer::new(
                too_large_is_resource_exhausted as TooLarge,
            ))
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
            .serve_with_incoming_shutdown(incoming, shutdown);
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
        if self.shared.halted().is_none() {
            self.shared.lock().store.flush()?;
        }
        result?;
        match self.shared.halted() {
            Some(incident::Halt::Fork(summary)) => Err(ServiceError::Incident {
                path: self.shared.config.state.join(INCIDENT_FILE),
                summary,
            }),
            Some(incident::Halt::Storage(cause)) => Err(ServiceError::Storage(cause)),
            None => Ok(()),
        }
    }
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

    /// Whether `note` carries the cosignatures of a quorum of the consortium's hospitals (counted
    /// by name; `add_cosignatures` verified every line before it was stored).
    fn has_quorum(&self, note: &str) -> bool {
        note::parse(note).is_ok_and(|n| {
            n.signatures
                .iter()
                .filter(|sig| self.hospitals.contains_key(&sig.name))
                .count()
                >= self.quorum
        })
    }

    /// On a clean stop: gives the hospitals up to `limit` to cosign the newest checkpoint, so that
    /// the ledger left behind verifies as it is (the newest checkpoint carries its quorum).
    async fn await_cosigned(&self, limit: Duration) {
        let started = std::time::Instant::now();
        loop {
            let pending = {
                let st = self.lock();
                st.checkpoint
                    .as_ref()
                    .filter(|(_, note)| !self.has_quorum(note))
                    .map(|(size, _)| *size)
            };
            let Some(size) = pending else { return };
            if started.elapsed() >= limit {
                eprintln!(
                    "fedchain coordinator: stopping with checkpoint {size} short of its quorum; \
                     the hospitals cosign it when the coordinator is back"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Appends `entries` and flushes; returns their record indices. A hospital's refusals beyond
    /// its [`RefusalMeter`] budget are not appended (empty indices): the caller still answers.
    fn append(&self, st: &mut State, entries: Vec<Entry>) -> SResult<Vec<u64>> {
        if let Some(who) = refused_party(&entries) {
            match st.refusals.admit(&who, now_ms()) {
                Admit::Record => {}
                Admit::FirstUnrecorded => {
                    eprintln!(
                        "fedchain coordinator: {who} was refused more than {} times in a \
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
        self.refuse_if_halted()?;
        // The append is the commit point: if it fails, memory may be ahead of the ledger, so
        // the coordinator stops rather than act on it (see `service/incident.rs`).
        let records = st
            .store
            .append_all(entries)
            .map_err(|e| self.storage_failed(e))?;
        // Durable before anyone is told: a coordinator killed after answering must not lose
        // what it acknowledged.
        st.store.flush().map_err(|e| self.storage_failed(e))?;
        Ok(records.iter().map(|r| r.event).collect())
    }

    /// Once stopped (see [`incident`]), nothing more goes on the ledger and nothing is answered
    /// but why.
    fn refuse_if_halted(&self) -> SResult<()> {
        match self.halt_status() {
            Some(status) => Err(status),
            None => Ok(()),
        }
    }

    fn checkpoint(&self, st: &mut State) -> SResult<()> {
        self.refuse_if_halted()?;
        let note = st
            .store
            .checkpoint(&self.signer)
            .map_err(|e| self.storage_failed(e))?;
        st.checkpoint = Some((st.store.len(), note));
        Ok(())
    }

    /// [`caller`], and refuses a revoked certificate.
    fn authorize<T>(
        &self,
        req: &Request<T>,
        allowed: &[Role],
    ) -> SResult<fedchain_consortium::tls::Peer> {
        self.refuse_if_halted()?;
        if let Some(leaf) = leaf_cert(req) {
            self.check_revoked(&leaf)?;
        }
        caller(req, allowed)
    }

    /// Refuses a certificate that the consortium revoked: listed in the CA's CRL, or by its
    /// fingerprint in the configuration's `revoked`.
    fn check_revoked(&self, leaf: &[u8]) -> SResult<()> {
        if !self.config.revoked.is_empty() {
            let fingerprint = hex::encode(sha256(leaf));
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
        let crl = self.crl.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(crl), Some(serial)) = (crl.crl(), revocation::serial_of(leaf)) {
            if let Some(r) = crl.revoked(&serial) {
                return Err(Status::permission_denied(format!(
                    "certificate {} has been revoked by the consortium CA on {} ({}; CRL {})",
                    r.serial, r.revoked_at, r.reason, crl.number
                )));
            }
        }
        Ok(())
    }

    /// Re-reads the CRL if its file changed; returns whether a new one is in force.
    fn refresh_crl(&self) -> bool {
        let mut watched = self.crl.lock().unwrap_or_else(|e| e.into_inner());
        match watched.refresh() {
            Ok(Some(crl)) => {
                eprintln!(
                    "fedchain coordinator: CRL {} of the consortium CA in force: {} revoked \
                     certificate(s)",
                    crl.number,
                    crl.entries().count()
                );
                true
            }
            Ok(None) => false,
            Err(e) => {
                eprintln!("fedchain coordinator: the CRL in force stays: {e}");
                false
            }
        }
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

    /// Records a hospital's request refused before it reached a round (unknown job, wrong round).
    fn reject(&self, st: &mut State, hospital: &str, request: String, status: Status) -> Status {
        self.reject_as(st, LRole::Hospital, hospital, request, status)
    }

    /// Records a request of `party` (a hospital or a researcher) refused, as its act; metered
    /// per party (see [`refusals`]).
    fn reject_as(
        &self,
        st: &mut State,
        role: LRole,
        party: &str,
        request: String,
        status: Status,
    ) -> Status {
        let e = entry(
            now_ms(),
            party,
            role,
            Outcome::MinorFailure,
            Body::RequestRejected {
                request,
                reason: recorded_reason(status.message()),
            },
        );
        let _ = self.append(st, vec![e]);
        status
    }
}

/// The most of a refusal's message a record keeps (bytes): a refused request's message may repeat
/// what the caller sent.
const MAX_RECORDED_REASON: usize = 2000;

/// `message`, cut to [`MAX_RECORDED_REASON`] bytes at a character boundary.
fn recorded_reason(message: &str) -> String {
    let kept = fedchain_ledger::record::cut_text(message, MAX_RECORDED_REASON);
    if kept.len() < message.len() {
        format!("{kept}…")
    } else {
        kept.to_string()
    }
}

/// The party (`hospital h1`, `researcher alice`) whose refusals `entries` are, if they are
/// nothing but one hospital's or researcher's refusals: the key of its refusal bucket.
fn refused_party(entries: &[Entry]) -> Option<String> {
    let first = entries.first()?;
    let role = match first.actor.role {
        LRole::Hospital => "hospital",
        LRole::Researcher => "researcher",
        _ => return None,
    };
    let refusal = |e: &Entry| {
        matches!(e.body, Body::RequestRejected { .. })
            && e.actor.role == first.actor.role
            && e.actor.id == first.actor.id
    };
    entries
        .iter()
        .all(refusal)
        .then(|| format!("{role} {}", first.actor.id))
}

fn job_not_found(id: u64) -> Status {
    Status::not_found(format!("no job {id} on this coordinator"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README lists every setting of `coordinator.toml`; the block reads as a `Config`, and
    /// a model larger than a task carries is fetched whatever `inline_model_bytes` says.
    #[test]
    fn the_readmes_coordinator_toml_reads_as_written() {
        let readme = include_str!("../../README.md");
        let at = readme
            .find("Every setting of the coordinator (`coordinator.toml`")
            .expect("the README shows a coordinator.toml");
        let block = &readme[at..];
        let start = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + block[start..].find("```").expect("its end");
        let mut cfg: Config = toml::from_str(&block[start..end]).unwrap();
        assert_eq!(cfg.inline_model_bytes, limits::MAX_INLINE_MODEL_BYTES);
        assert!(cfg.inlines_model(limits::MAX_INLINE_MODEL_BYTES));
        assert!(!cfg.inlines_model(limits::MAX_INLINE_MODEL_BYTES + 1));
        cfg.inline_model_bytes = usize::MAX;
        assert!(!cfg.inlines_model(limits::MAX_INLINE_MODEL_BYTES + 1));
        cfg.inline_model_bytes = 0;
        assert!(!cfg.inlines_model(1));
    }

    /// The chunks cut on demand are the bytes, in order, each at most `CHUNK_BYTES`; nothing is
    /// sent for nothing.
    #[tokio::test]
    async fn a_chunk_stream_carries_the_bytes_whole() {
        use tokio_stream::StreamExt;
        let c = limits::CHUNK_BYTES;
        for len in [0, 1, c - 1, c, c + 1, 3 * c + 17] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let got: Vec<Vec<u8>> = chunk_stream(Bytes::from(bytes.clone()), |data| data)
                .map(Result::unwrap)
                .collect()
                .await;
            assert_eq!(got.len(), len.div_ceil(c), "{len} bytes");
            assert!(got
                .iter()
                .all(|chunk| !chunk.is_empty() && chunk.len() <= c));
            assert_eq!(got.concat(), bytes, "{len} bytes");
        }
    }
}
