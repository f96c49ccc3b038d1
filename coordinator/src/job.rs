//! One job's lifecycle as a pure machine, as [`Round`] is one round's: no I/O, no clock, no
//! network. Its caller feeds it requests, the time and the credit balances; it returns what to
//! write ([`Writes`]: blobs, ledger entries, a checkpoint, in that order), the tasks each hospital
//! has ([`Task`], domain types), and typed errors ([`JobError`]). The service maps those errors to
//! gRPC statuses in one place and is the only one that touches the store.
//!
//! Lifecycle: `Enrolling` (offers go to every hospital; the job starts when all the consortium's
//! hospitals enrolled, or at the enrollment deadline with at least `max(min_participants, t)`),
//! round 0 (statistics), rounds 1..=R, then `Evaluating` (hospitals score the final model), then
//! `Finished` with `JobFinished`, deposits returned and the rest of the escrow refunded. A round
//! that cannot complete fails the job the same way, with its reason.
//!
//! The machine changes its state before its caller writes what it returned: the caller must write
//! it, or stop (the coordinator stops on a storage error and restarts from the ledger, so no state
//! that did not reach the ledger is ever acted on). [`Job::recorded`] is the one place that notes
//! which ledger records it produced, whether they were just appended or read back on restore.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fedchain_crypto::keys::PublicKey;
use fedchain_datasets::{Standardizer, TaskKind};
use fedchain_ledger::credits::{end_movements, Account, Credits, Movement};
use fedchain_ledger::record::{
    signature_verifies, Actor, Body, JobStatus, Outcome, PrivacySpend, Role, MAX_DECLINE_REASON,
};
use fedchain_ledger::store::Entry;
use fedchain_ledger::{sha256, Hash};
use fedchain_model_core::{num_parameters, ModelDigest, ModelError, ModelFile, Preprocessing};
use fedchain_proto::limits;
use fedchain_proto::v1::Quantization;
use fedchain_protocol::decryption::{self, Ranges};
use fedchain_protocol::{self as protocol, RoundKind, RoundPlan, ValidJob};
use prost::bytes::Bytes;

use crate::decryptors::{Decryptors, ShareCosts};
use crate::round::{CheckedShare, Enrolled, Phase, Round, RoundConfig, RoundError};

/// The coordinator's party name, the actor of its own records.
const COORDINATOR: &str = fedchain_consortium::COORDINATOR_NAME;

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobPhase {
    /// Accepting enrollments until the deadline.
    Enrolling {
        /// When enrollment ends.
        deadline_ms: u64,
    },
    /// Rounds 0..=R.
    Running,
    /// The hospitals score the final model until the deadline.
    Evaluating {
        /// When the job finishes with whatever reports arrived.
        deadline_ms: u64,
    },
    /// Done, `JobFinished` recorded.
    Finished,
    /// Stopped with its reason, `JobFinished` (failed) recorded.
    Failed,
    /// Stopped by its researcher, `JobFinished` (cancelled) recorded.
    Cancelled,
}

/// A finalized model round's model, as `DownloadModel` serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Index of the round's `RoundFinalized` record.
    pub record: u64,
    /// The model's parameter digest (the record's `model_after`).
    pub model: Hash,
    /// SHA-256 of its file, a blob in the store.
    pub file: Hash,
}

/// A submission of the current round, as the hospitals' `FetchRound` serves it.
#[derive(Debug, Clone)]
pub struct SubInfo {
    /// Digest of its ciphertext vector (the blob).
    pub digest: Hash,
    /// The hospital's signature over job, round and digest.
    pub signature: [u8; 64],
    /// Ciphertexts in the vector.
    pub ciphertexts: u32,
    /// Bytes of the vector's encoding.
    pub bytes: u64,
}

/// A hospital's enrollment: its `HospitalEnrolled` record and the deposit it posted.
#[derive(Debug, Clone)]
pub struct EnrollAnswer {
    /// Ledger index of the `HospitalEnrolled` record.
    pub record: u64,
    /// Credits posted.
    pub deposit: u64,
}

/// What a job needs from around it that is not its own state.
pub struct JobEnv<'a> {
    /// The consortium's threshold public key.
    pub pk: &'a Arc<PublicKey>,
    /// How many hospitals the consortium has (a job starts once all of them enrolled).
    pub hospitals: usize,
    /// How long hospitals have to score the final model.
    pub evaluation_ms: u64,
    /// The credit balances now (deposits and escrow to release).
    pub credits: &'a Credits,
}

/// What the caller writes for a step, in this order, before it answers anyone: the blobs, then
/// the entries (one atomic, fsynced append), then a checkpoint if asked. The failpoint names say
/// where a crash test may stop the coordinator (see [`crate::failpoint`]).
#[derive(Debug, Default)]
pub struct Writes {
    /// Content-addressed blobs the entries name (shared, not copied, with what the job keeps).
    pub blobs: Vec<Bytes>,
    /// Failpoint between the blobs and the entries.
    pub after_blobs: Option<&'static str>,
    /// Ledger entries.
    pub entries: Vec<Entry>,
    /// Failpoint after the entries are appended.
    pub after_entries: Option<&'static str>,
    /// Sign a checkpoint after the entries.
    pub checkpoint: bool,
}

impl Writes {
    fn entries(entries: Vec<Entry>) -> Writes {
        Writes {
            entries,
            ..Writes::default()
        }
    }

    fn then(mut self, more: Writes) -> Writes {
        self.blobs.extend(more.blobs);
        self.entries.extend(more.entries);
        self.checkpoint |= more.checkpoint;
        self.after_blobs = self.after_blobs.or(more.after_blobs);
        self.after_entries = self.after_entries.or(more.after_entries);
        self
    }
}

/// Why the job refused a request. The service maps each to a gRPC status in one place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The job no longer accepts enrollments.
    #[error("job {job} no longer accepts enrollments (it is {state})")]
    NotEnrolling {
        /// The job.
        job: u64,
        /// Its state.
        state: &'static str,
    },
    /// The hospital is enrolled with another identity key.
    #[error("hospital {hospital:?} is enrolled in job {job} with another identity key")]
    OtherIdentity {
        /// The job.
        job: u64,
        /// The hospital.
        hospital: String,
    },
    /// The hospital cannot post the deposit.
    #[error(
        "hospital {hospital:?} holds {balance} credits; enrolling needs a deposit of {deposit}"
    )]
    CannotDeposit {
        /// The hospital.
        hospital: String,
        /// Its balance.
        balance: u64,
        /// The deposit asked.
        deposit: u64,
    },
    /// The researcher cannot fund the job's budget.
    #[error(
        "researcher {researcher:?} holds {balance} credits; the job's credit_budget is {budget}"
    )]
    CannotFund {
        /// The researcher.
        researcher: String,
        /// Its balance.
        balance: u64,
        /// The budget asked.
        budget: u64,
    },
    /// Declared rows out of range.
    #[error("declared_samples must be between 1 and {max}, got {0}", max = protocol::MAX_DECLARED_SAMPLES)]
    DeclaredSamples(u64),
    /// The hospital is not enrolled in the job.
    #[error("hospital {hospital:?} is not enrolled in job {job}")]
    NotEnrolled {
        /// The job.
        job: u64,
        /// The hospital.
        hospital: String,
    },
    /// A request for another round than the current one (or a round not in the right phase).
    #[error("{0}")]
    WrongRound(String),
    /// A backup share for a round that is already decrypted: not needed, not wrong.
    #[error("round {round} of job {job} is already decrypted; the share is not needed")]
    AlreadyDecrypted {
        /// The job.
        job: u64,
        /// The round.
        round: u64,
    },
    /// The job has finished, failed or was cancelled: nothing more is accepted for it.
    #[error("job {job} has ended ({state}); nothing more is accepted for it")]
    Ended {
        /// The job.
        job: u64,
        /// Its state.
        state: &'static str,
    },
    /// A share of another aggregate.
    #[error("the share names another aggregate than this round's")]
    OtherAggregate,
    /// No model awaits the hospital's evaluation.
    #[error("round {round} of job {job} has no model awaiting evaluation")]
    NoModelToEvaluate {
        /// The job.
        job: u64,
        /// The round named.
        round: u64,
    },
    /// An evaluation of another model than the round's.
    #[error("the model evaluated ({found}) is not round {round}'s global model ({expected})")]
    OtherModel {
        /// The round.
        round: u64,
        /// The round's model digest, hex.
        expected: String,
        /// The digest evaluated, hex.
        found: String,
    },
    /// A researcher acting on another researcher's job.
    #[error("job {job} belongs to researcher {researcher:?}")]
    NotTheResearcher {
        /// The job.
        job: u64,
        /// Its researcher.
        researcher: String,
    },
    /// An evaluation whose signature does not verify.
    #[error("the evaluation's signature does not verify with {0}'s identity key")]
    BadEvaluationSignature(String),
    /// A decline that is not one: its signature does not verify with the hospital's identity
    /// key, it names another spec, or its reason is too long.
    #[error("{0}")]
    BadDecline(String),
    /// A hospital enrolled in the job declines it.
    #[error(
        "hospital {hospital:?} is enrolled in job {job}: an enrolled hospital takes part (or \
         forfeits its deposit by not delivering); it cannot decline"
    )]
    EnrolledCannotDecline {
        /// The job.
        job: u64,
        /// The hospital.
        hospital: String,
    },
    /// The round refused it.
    #[error(transparent)]
    Round(#[from] RoundError),
    /// The ledger holds what this job cannot have produced (on restore), or the machine reached
    /// a state it should not (a bug).
    #[error("{0}")]
    Broken(String),
}

/// A hospital's decline of a job. The caller checked its certificate; `identity` is the identity
/// key the consortium provisioned for it, which must verify `signature`.
#[derive(Debug, Clone)]
pub struct Decline<'a> {
    /// The hospital.
    pub hospital: &'a str,
    /// Its provisioned identity key.
    pub identity: [u8; 32],
    /// The spec digest it was offered.
    pub spec: Hash,
    /// Why it declines.
    pub reason: &'a str,
    /// Its signature over [`Body::decline_message`].
    pub signature: [u8; 64],
}

/// A hospital's recorded decline of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declined {
    /// Its latest reason.
    pub reason: String,
    /// Index of the latest `JobDeclined` record.
    pub record: u64,
    /// How many declines of this hospital the ledger holds for the job.
    pub count: u32,
}

pub use fedchain_protocol::MAX_DECLINES;

/// A hospital's request to enroll. The caller checked its certificate and that `identity` is
/// the identity key the consortium provisioned for it.
#[derive(Debug, Clone)]
pub struct Enrollment<'a> {
    /// The hospital.
    pub hospital: &'a str,
    /// Its identity key.
    pub identity: [u8; 32],
    /// Its key share's index.
    pub share_index: usize,
    /// The training rows it declares.
    pub declared: u64,
    /// The deposit the consortium's policy asks.
    pub deposit: u64,
}

/// A hospital's encrypted update, read and checked against the digest its header announced.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    /// The hospital.
    pub hospital: &'a str,
    /// The round it is for.
    pub round: u64,
    /// The ciphertext vector's canonical bytes.
    pub bytes: &'a [u8],
    /// Their digest.
    pub digest: Hash,
    /// The hospital's signature over job, round and digest.
    pub signature: [u8; 64],
    /// Ciphertexts in the vector, as its header says.
    pub ciphertexts: u32,
}

/// A hospital's decryption share, read and checked against the digest its header announced.
#[derive(Debug)]
pub struct ShareSubmission<'a> {
    /// The hospital.
    pub hospital: &'a str,
    /// The round it is for.
    pub round: u64,
    /// The aggregate it names.
    pub aggregate: Option<Hash>,
    /// The key-share index it claims.
    pub share_index: usize,
    /// The ciphertexts it decrypts (empty: the whole aggregate).
    pub ranges: &'a [[u64; 2]],
    /// The share's bytes.
    pub bytes: &'a [u8],
    /// Its proof's verdict, checked off the lock, if it was.
    pub checked: Option<CheckedShare>,
}

/// One unit of work for a hospital, in domain terms (the service encodes it for the wire).
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Enroll in a job that is enrolling.
    Offer {
        /// The job.
        job: u64,
    },
    /// Train (or, in round 0, compute feature moments) and submit.
    Train {
        /// The job.
        job: u64,
        /// The round's plan.
        plan: RoundPlan,
        /// The global model to train (model rounds).
        model: Option<Hash>,
        /// The round's deadline.
        deadline_ms: u64,
    },
    /// Decrypt the round's aggregate.
    Decrypt {
        /// The job.
        job: u64,
        /// The round.
        round: u64,
        /// The aggregate's digest.
        aggregate: Hash,
        /// Who contributed to it.
        contributors: Vec<String>,
        /// What the share's proof is bound to.
        context: Vec<u8>,
        /// The ciphertexts to decrypt (empty: all of them).
        ciphertexts: Ranges,
    },
    /// Score a finalized round's model on held-out rows.
    Evaluate {
        /// The job.
        job: u64,
        /// The round.
        round: u64,
        /// The model's digest.
        model: Hash,
    },
}

impl Task {
    /// A key that names the task uniquely (a stream sends each once).
    pub fn key(&self) -> String {
        match self {
            Task::Offer { job } => format!("offer/{job}"),
            Task::Train { job, plan, .. } => format!("train/{job}/{}", plan.round),
            // A backup's extra ciphertexts are a new task, with a key of its own.
            Task::Decrypt {
                job,
                round,
                ciphertexts,
                ..
            } if !ciphertexts.is_empty() => {
                let r: Vec<String> = ciphertexts
                    .iter()
                    .map(|[s, e]| format!("{s}-{e}"))
                    .collect();
                format!("decrypt/{job}/{round}/{}", r.join(","))
            }
            Task::Decrypt { job, round, .. } => format!("decrypt/{job}/{round}"),
            Task::Evaluate { job, round, .. } => format!("evaluate/{job}/{round}"),
        }
    }
}

/// One job.
pub struct Job {
    /// Its id.
    pub id: u64,
    /// Its spec, validated, without what this coordinator never reads again: its encoding
    /// (`bytes`, a ledger blob since the submission) and, in a spec too large for a message, the
    /// TorchScript module (hospitals read such a spec from the ledger; this coordinator never
    /// loads a module). At 10M parameters each is 40 MB, held for the job's life.
    pub valid: ValidJob,
    /// Whether offers carry the spec itself (it fits a message) or name only its digest.
    pub spec_inline: bool,
    /// Who submitted it.
    pub researcher: String,
    /// Index of its `JobSubmitted` record.
    pub submitted_record: u64,
    /// Where it stands.
    pub phase: JobPhase,
    /// Why it failed.
    pub reason: String,
    /// The hospitals enrolled, in enrollment order.
    pub enrolled: Vec<Enrolled>,
    /// Each enrolled hospital's enrollment.
    pub answers: BTreeMap<String, EnrollAnswer>,
    /// The enrolled hospitals and their declared rows (fixed when round 0 opens).
    pub enrollment: protocol::Enrollment,
    /// The current round's number.
    pub round_no: u64,
    /// The current round.
    pub round: Option<Round>,
    /// The current round's quantization.
    pub quantization: Quantization,
    /// The current round's submissions.
    pub subs: BTreeMap<String, SubInfo>,
    /// Index of the current round's `RoundClosed` record.
    pub closed_record: Option<u64>,
    /// When the current round fails for want of shares.
    pub share_deadline_ms: Option<u64>,
    /// Who was asked for the current round's decryption shares, and when: the primaries at the
    /// round's closing (or, after a restart, the resumption), backups only for a decryptor that
    /// refused or ran late (see [`crate::decryptors`]).
    pub decryptors: Decryptors,
    /// What a decryption share costs each hospital per ciphertext, as reported and as shown.
    pub share_costs: ShareCosts,
    /// Decryption shares that arrived for a round already decrypted, from a hospital asked for
    /// it, once per hospital and round, before the next round closed, since this coordinator
    /// started: work a hospital did for nothing.
    pub wasted_shares: u64,
    /// The consortium's feature moments (round 0's result).
    pub stats: Vec<f32>,
    /// The current global model.
    pub global: Vec<f32>,
    /// Its file, as sent to hospitals and researchers.
    pub model_file: Bytes,
    /// Its digest.
    pub model_digest: Hash,
    /// The latest finalized model round, with its `RoundFinalized` record.
    pub finalized: Option<(u64, u64)>,
    /// Every finalized model round's model: what a researcher may download.
    pub released: BTreeMap<u64, Released>,
    /// Index of the `RoundFinalized` record of the round that just finalized.
    pub finalized_record: Option<u64>,
    /// Per round, per hospital: held-out rows and mean metrics (its `ModelEvaluated` record).
    pub evaluations: BTreeMap<u64, BTreeMap<String, protocol::Evaluation>>,
    /// Index of its `JobFinished` record.
    pub finished_record: Option<u64>,
    /// Hospitals that declined it (their latest `JobDeclined` record), by name.
    pub declined: BTreeMap<String, Declined>,
    /// For a job with differential privacy: the training rounds each hospital took part in, as
    /// the number of participants of each (distributed noise is accounted for them).
    pub privacy_rounds: BTreeMap<String, Vec<u64>>,
    /// The round after which the privacy budget stopped the job, and why.
    pub budget_stop: Option<(u64, String)>,
    /// Each hospital's latest `PrivacySpent` entry, as written or restored.
    pub privacy_spent: BTreeMap<String, PrivacySpend>,
}

fn entry(now: u64, id: &str, role: Role, outcome: Outcome, body: Body) -> Entry {
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
    entry(now, COORDINATOR, Role::Coordinator, Outcome::Success, body)
}

fn hospital(now: u64, h: &str, body: Body) -> Entry {
    entry(now, h, Role::Hospital, Outcome::Success, body)
}

impl Job {
    /// A job as submitted (its `JobSubmitted` record at `submitted_record`): enrolling until
    /// `enroll_deadline_ms`.
    pub fn new(
        id: u64,
        mut valid: ValidJob,
        researcher: String,
        submitted_record: u64,
        enroll_deadline_ms: u64,
    ) -> Job {
        let spec_inline = prost::Message::encoded_len(&valid.spec) <= limits::MAX_INLINE_SPEC_BYTES;
        valid.bytes = Vec::new();
        if !spec_inline {
            valid.spec.torchscript_module = Vec::new();
        }
        Job {
            id,
            spec_inline,
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
            enrollment: protocol::Enrollment::default(),
            round_no: 0,
            round: None,
            quantization: protocol::statistics_quantization(0),
            subs: BTreeMap::new(),
            closed_record: None,
            share_deadline_ms: None,
            decryptors: Decryptors::default(),
            share_costs: ShareCosts::default(),
            wasted_shares: 0,
            stats: Vec::new(),
            model_file: Bytes::new(),
            model_digest: [0; 32],
            finalized: None,
            released: BTreeMap::new(),
            finalized_record: None,
            evaluations: BTreeMap::new(),
            finished_record: None,
            declined: BTreeMap::new(),
            privacy_rounds: BTreeMap::new(),
            budget_stop: None,
            privacy_spent: BTreeMap::new(),
        }
    }

    /// The job's last model round: the rounds it asked for, or the round after which its privacy
    /// budget stopped it.
    pub fn last_round(&self) -> u64 {
        self.budget_stop
            .as_ref()
            .map_or(u64::from(self.valid.spec.rounds), |(r, _)| *r)
    }

    /// For a job with differential privacy, what the round that just closed spends: each
    /// participant's mechanism and its epsilon so far (`PrivacySpent`, written with
    /// `RoundClosed`, before any share can decrypt the round). Counts the round for them, also
    /// on restore, where the entry is already on the ledger and is dropped.
    fn privacy_spent(&mut self, now: u64) -> Option<Entry> {
        let privacy = protocol::privacy::JobPrivacy::of(&self.valid.spec)?;
        let round = self.round.as_ref().filter(|_| self.round_no > 0)?;
        let mut spent = Vec::new();
        let participants = round.submitted();
        let k = participants.len() as u64;
        for h in participants {
            let rows = self
                .enrolled
                .iter()
                .find(|e| e.name == h)
                .map_or(0, |e| e.samples);
            let history = self.privacy_rounds.entry(h.clone()).or_default();
            history.push(k);
            let (history, rounds) = (history.clone(), history.len() as u64);
            let m = protocol::privacy::Mechanism::of(&self.valid.spec, rows);
            // The round opened only because these figures were within the budget; the largest
            // finite number, should they not be, which the replay reports as past the budget.
            let (noise_multiplier, epsilon) = privacy
                .spend_in(&self.valid.spec, rows, &history)
                .map_or((f64::MAX, f64::MAX), |s| (s.noise_multiplier, s.epsilon));
            spent.push(PrivacySpend {
                hospital: h.clone(),
                sampling_rate: m.sampling_rate,
                noise_multiplier,
                steps: m.steps,
                rounds,
                epsilon,
            });
        }
        for s in &spent {
            self.privacy_spent.insert(s.hospital.clone(), s.clone());
        }
        Some(coord(
            now,
            Body::PrivacySpent {
                job: self.id,
                round: self.round_no,
                delta: privacy.delta,
                spent,
            },
        ))
    }

    /// Whether round `next` may open under the job's privacy budget: every enrolled hospital
    /// could take part, so each must stay within it after one more round.
    fn next_round_fits(&self) -> Result<(), protocol::privacy::OverBudget> {
        let Some(privacy) = protocol::privacy::JobPrivacy::of(&self.valid.spec) else {
            return Ok(());
        };
        protocol::privacy::next_round_fits(
            &privacy,
            &self.valid.spec,
            self.enrolled
                .iter()
                .map(|e| protocol::privacy::Participant {
                    hospital: &e.name,
                    rows: e.samples,
                    rounds: self
                        .privacy_rounds
                        .get(&e.name)
                        .map_or(0, |r| r.len() as u64),
                }),
        )
    }

    /// What a researcher's submission of job `id` writes: the spec blob, `JobSubmitted` and the
    /// budget moved to the job's escrow, which the researcher must hold.
    pub fn submission(
        id: u64,
        valid: &ValidJob,
        researcher: &str,
        now: u64,
        credits: &Credits,
    ) -> Result<Writes, JobError> {
        let budget = valid.spec.credit_budget;
        let balance = credits.balance(&Account::Researcher(researcher.to_owned()));
        if balance < budget {
            return Err(JobError::CannotFund {
                researcher: researcher.to_owned(),
                balance,
                budget,
            });
        }
        let by = |body| entry(now, researcher, Role::Researcher, Outcome::Success, body);
        Ok(Writes {
            blobs: vec![Bytes::from(valid.bytes.clone())],
            entries: vec![
                by(Body::JobSubmitted {
                    job: id,
                    spec: valid.digest,
                    researcher: researcher.to_owned(),
                    budget,
                }),
                by(Body::CreditsMoved {
                    movement: Movement::Fund {
                        job: id,
                        researcher: researcher.to_owned(),
                        amount: budget,
                    },
                }),
            ],
            ..Writes::default()
        })
    }

    /// `h` measured what one decryption share costs it per ciphertext (microseconds; 0: not
    /// measured). Judges when it is late; never recorded. Kept whether or not its enrollment is
    /// recorded yet: `h` is one of the consortium's hospitals (its certificate says so), so the
    /// map stays as small as the consortium.
    pub fn report_share_cost(&mut self, h: &str, micros: u64) {
        self.share_costs.report(h, micros);
    }

    /// `h` refused to decrypt `round` (its refusal is recorded by the caller): if that is the
    /// current round, another hospital is asked in its place at the next step.
    pub fn decryption_refused(&mut self, h: &str, round: u64) {
        if round == self.round_no {
            self.decryptors.refused(h);
        }
    }

    /// Asks backup decryptors, at `now`, for those that refused or ran past their budget (see
    /// [`crate::decryptors`]). Returns the hospitals newly asked.
    fn ask_backups(&mut self, now: u64, t: usize) -> Vec<String> {
        let Some(round) = self.round.as_ref() else {
            return Vec::new();
        };
        let order = protocol::first_decryptors(
            self.enrolled
                .iter()
                .map(|e| (e.name.as_str(), e.share_index)),
            self.enrolled.len(),
        );
        let valid = round.valid_shares();
        let ciphertexts = round.ciphertexts();
        // A backup must have time left before the share deadline.
        let cap_ms = u64::from(self.valid.spec.round_deadline_seconds) * 1000 / 2;
        let costs = &self.share_costs;
        if self.valid.spec.spread_decryption {
            // The round's participants first (they were online to submit), then the others.
            let submitted = round.submitted();
            let (mut order, rest): (Vec<String>, Vec<String>) =
                order.into_iter().partition(|h| submitted.contains(h));
            order.extend(rest);
            let invalid: BTreeSet<String> = round.invalid_shares().into_iter().collect();
            // The driver calls this every 100 ms: the per-ciphertext search only when someone
            // refused, failed or is late.
            let answered = |h: &str, ranges: &Ranges| round.answered(h, ranges);
            let budget = |h: &str, n: usize| costs.budget_ms(h, n, cap_ms);
            if !self
                .decryptors
                .spread_may_need_backups(now, answered, &invalid, budget)
            {
                return Vec::new();
            }
            return self.decryptors.ask_spread_backups(
                now,
                &order,
                &round.coverage(),
                |h| round.covered_by(h),
                &invalid,
                t,
                |h, n| costs.budget_ms(h, n, cap_ms),
            );
        }
        let answered: BTreeSet<String> = valid
            .iter()
            .cloned()
            .chain(round.invalid_shares())
            .collect();
        self.decryptors
            .ask_backups(now, &order, &answered, valid.len(), t, |h| {
                costs.budget_ms(h, ciphertexts, cap_ms)
            })
    }

    /// Whether `hospital` enrolled.
    pub fn is_enrolled(&self, hospital: &str) -> bool {
        self.answers.contains_key(hospital)
    }

    /// Finished, failed or cancelled.
    pub fn terminal(&self) -> bool {
        matches!(
            self.phase,
            JobPhase::Finished | JobPhase::Failed | JobPhase::Cancelled
        )
    }

    /// Row-weighted means of the hospitals' reports on round `r`'s model.
    pub fn metrics(&self, r: u64) -> Vec<(String, f64)> {
        self.evaluations
            .get(&r)
            .map(|reports| protocol::pooled_metrics(reports.values()))
            .unwrap_or_default()
    }

    /// Whether every enrolled hospital reported on round `r`'s model.
    pub fn evaluated_by_all(&self, r: u64) -> bool {
        self.evaluations
            .get(&r)
            .is_some_and(|e| e.len() == self.enrolled.len())
    }

    /// Notes what a ledger record of this job says about where it stands: the indices of the
    /// records the machine produced (just appended, or read back on restore).
    pub fn recorded(&mut self, index: u64, body: &Body) {
        match body {
            Body::HospitalEnrolled {
                hospital, deposit, ..
            } => {
                self.answers.insert(
                    hospital.clone(),
                    EnrollAnswer {
                        record: index,
                        deposit: *deposit,
                    },
                );
            }
            Body::RoundClosed { .. } => self.closed_record = Some(index),
            Body::RoundFinalized { .. } => self.finalized_record = Some(index),
            Body::JobFinished { .. } => self.finished_record = Some(index),
            Body::JobDeclined {
                hospital, reason, ..
            } => {
                let d = self
                    .declined
                    .entry(hospital.clone())
                    .or_insert_with(|| Declined {
                        reason: String::new(),
                        record: index,
                        count: 0,
                    });
                d.reason = reason.clone();
                d.record = index;
                d.count += 1;
            }
            _ => {}
        }
    }

    /// Hospitals that declined the job and did not enroll since.
    fn declined_only(&self) -> usize {
        self.declined
            .keys()
            .filter(|h| !self.answers.contains_key(*h))
            .count()
    }

    /// A hospital declines the job: `JobDeclined`, signed by it, unless the ledger already holds
    /// this decline (the same reason) or [`MAX_DECLINES`] of its declines (`Ok(None)`: the caller
    /// answers with the recorded one).
    pub fn decline(&self, req: Decline<'_>, now: u64) -> Result<Option<Writes>, JobError> {
        let h = req.hospital;
        if self.terminal() {
            return Err(self.ended());
        }
        if self.answers.contains_key(h) {
            return Err(JobError::EnrolledCannotDecline {
                job: self.id,
                hospital: h.to_owned(),
            });
        }
        if req.spec != self.valid.digest {
            return Err(JobError::BadDecline(format!(
                "the decline names spec {}, but job {}'s spec is {}",
                hex::encode(req.spec),
                self.id,
                hex::encode(self.valid.digest)
            )));
        }
        if req.reason.len() > MAX_DECLINE_REASON {
            return Err(JobError::BadDecline(format!(
                "the reason is {} bytes long; at most {MAX_DECLINE_REASON} are recorded",
                req.reason.len()
            )));
        }
        let message = Body::decline_message(self.id, &req.spec, h, req.reason);
        if !signature_verifies(&req.identity, &message, &req.signature) {
            return Err(JobError::BadDecline(format!(
                "the decline's signature does not verify with {h}'s identity key"
            )));
        }
        if let Some(d) = self.declined.get(h) {
            if d.reason == req.reason || d.count >= MAX_DECLINES {
                return Ok(None);
            }
        }
        Ok(Some(Writes::entries(vec![hospital(
            now,
            h,
            Body::JobDeclined {
                job: self.id,
                spec: req.spec,
                hospital: h.to_owned(),
                reason: req.reason.to_owned(),
                signature: req.signature,
            },
        )])))
    }

    /// Moves the job one transition forward if it can go at `now`. `None`: nothing to do now;
    /// `Some(writes)` (possibly empty): something changed, and the caller writes `writes` and
    /// calls again.
    pub fn step(&mut self, now: u64, env: &JobEnv<'_>) -> Result<Option<Writes>, JobError> {
        match self.phase.clone() {
            JobPhase::Enrolling { deadline_ms } => {
                let t = env.pk.threshold();
                let needed = (self.valid.spec.min_participants as usize).max(t);
                let all = self.enrolled.len() == env.hospitals;
                // Every hospital enrolled or declined: waiting longer changes nothing.
                let answered = self.enrolled.len() + self.declined_only() >= env.hospitals;
                let enough = self.enrolled.len() >= needed;
                if answered && !enough && self.declined_only() > 0 {
                    let why: Vec<String> = self
                        .declined
                        .iter()
                        .filter(|(h, _)| !self.answers.contains_key(*h))
                        .map(|(h, d)| format!("{h}: {}", d.reason))
                        .collect();
                    let reason = format!(
                        "only {} hospitals enrolled and every other hospital declined ({}); the \
                         job needs at least {needed} (min_participants {}, decryption threshold \
                         {t})",
                        self.enrolled.len(),
                        why.join("; "),
                        self.valid.spec.min_participants
                    );
                    return Ok(Some(self.fail(reason, now, env)));
                }
                if all || (enough && (answered || now >= deadline_ms)) {
                    self.phase = JobPhase::Running;
                    self.enrollment =
                        protocol::Enrollment::of(self.enrolled.iter().map(|e| e.samples));
                    // Not even round 0 (whose pooled moments the budget does not cover) for a
                    // job none of whose rounds fits.
                    if let Err(over) = self.next_round_fits() {
                        let reason = format!("no round fits the job's privacy budget: {over}");
                        return Ok(Some(self.fail(reason, now, env)));
                    }
                    return Ok(Some(self.open_round(0, now, env)));
                }
                if now >= deadline_ms {
                    let reason = format!(
                        "only {} hospitals enrolled before the enrollment deadline; the job \
                         needs at least {needed} (min_participants {}, decryption threshold {t})",
                        self.enrolled.len(),
                        self.valid.spec.min_participants
                    );
                    return Ok(Some(self.fail(reason, now, env)));
                }
                Ok(None)
            }
            JobPhase::Running => {
                let Some(round) = self.round.as_mut() else {
                    return Ok(None);
                };
                match round.phase().clone() {
                    Phase::Collecting => {
                        let mut entries = round.try_close(now);
                        if !entries.is_empty() {
                            self.share_deadline_ms = Some(
                                now + u64::from(self.valid.spec.round_deadline_seconds) * 1000,
                            );
                            self.decryptors = Decryptors::open(
                                self.round_no,
                                round.ciphertexts(),
                                round.assignment(),
                                now,
                            );
                            let blobs = round
                                .aggregate_bytes()
                                .into_iter()
                                .map(Bytes::from)
                                .collect();
                            entries.extend(self.privacy_spent(now));
                            return Ok(Some(Writes {
                                blobs,
                                after_blobs: Some("aggregate-stored"),
                                entries,
                                after_entries: Some("round-closed"),
                                checkpoint: false,
                            }));
                        }
                        if let Phase::Failed(why) = round.phase().clone() {
                            return Ok(Some(self.fail(why, now, env)));
                        }
                        Ok(None)
                    }
                    Phase::Decrypting => {
                        let valid = round.valid_shares().len();
                        let t = env.pk.threshold();
                        if !self.ask_backups(now, t).is_empty() {
                            // Nothing to write; the new tasks go out with the state change.
                            return Ok(Some(Writes::default()));
                        }
                        if self.share_deadline_ms.is_some_and(|d| now >= d) {
                            let (short, count) = self.round.as_ref().map_or((0, 0), |r| {
                                let short = r.coverage().iter().filter(|&&n| n < t).count();
                                (short, r.ciphertexts())
                            });
                            let reason = if self.valid.spec.spread_decryption {
                                format!(
                                    "round {}: {short} of {count} ciphertexts lacked valid \
                                     decryption shares, fewer than the {t} needed arrived before \
                                     the share deadline ({valid} hospitals sent valid ones)",
                                    self.round_no
                                )
                            } else {
                                format!(
                                    "round {}: only {valid} valid decryption shares of the {t} \
                                     needed arrived before the share deadline",
                                    self.round_no
                                )
                            };
                            return Ok(Some(self.fail(reason, now, env)));
                        }
                        Ok(None)
                    }
                    Phase::Finalized => self.round_finalized(now, env, false).map(Some),
                    Phase::Failed(why) => {
                        let reason = format!("round {}: {why}", self.round_no);
                        Ok(Some(self.fail(reason, now, env)))
                    }
                }
            }
            JobPhase::Evaluating { deadline_ms } => {
                let last = self.last_round();
                if self.evaluated_by_all(last) || now >= deadline_ms {
                    return Ok(Some(self.finish(now, env)));
                }
                Ok(None)
            }
            JobPhase::Finished | JobPhase::Failed | JobPhase::Cancelled => Ok(None),
        }
    }

    /// Opens round `r` as the protocol plans it; a round that cannot open fails the job.
    fn open_round(&mut self, r: u64, now: u64, env: &JobEnv<'_>) -> Writes {
        let plan = RoundPlan::new(&self.valid, r, self.enrollment);
        let opened = plan
            .codec(env.pk)
            .map_err(|e| e.to_string())
            .and_then(|codec| {
                let cfg = RoundConfig {
                    job: self.id,
                    round: r,
                    min_participants: self.valid.spec.min_participants as usize,
                    deadline_ms: now + u64::from(self.valid.spec.round_deadline_seconds) * 1000,
                    len: plan.len,
                    spread: self.valid.spec.spread_decryption,
                };
                let base = plan.base(&self.global);
                Round::new(cfg, env.pk.clone(), codec, self.enrolled.clone(), base)
                    .map_err(|e| e.to_string())
            });
        match opened {
            Ok(round) => {
                self.round_no = r;
                self.round = Some(round);
                self.quantization = plan.quantization;
                self.subs.clear();
                self.closed_record = None;
                self.share_deadline_ms = None;
                Writes::default()
            }
            Err(why) => self.fail(format!("round {r} cannot open: {why}"), now, env),
        }
    }

    /// The current round finalized: installs its result as the statistics or the new global
    /// model (its file is a blob), checkpoints (not on restore: the ledger already holds what
    /// followed), and opens the next round or the evaluation of the final model.
    fn round_finalized(
        &mut self,
        now: u64,
        env: &JobEnv<'_>,
        restoring: bool,
    ) -> Result<Writes, JobError> {
        let round = self
            .round
            .as_mut()
            .ok_or_else(|| JobError::Broken("a finalized round that is not there".into()))?;
        // Moved, not copied: at millions of parameters every copy of the model is tens of MB.
        let new = round
            .take_new_global()
            .ok_or_else(|| JobError::Broken("a finalized round without a result".into()))?;
        let r = self.round_no;
        if r == 0 {
            self.stats = new;
            self.global = protocol::starting_model(&self.valid);
        } else {
            self.global = new;
        }
        self.model_digest = ModelDigest::of(&self.global).0;
        // The file carries how the hospitals prepared their rows, so a researcher can apply the
        // released model to raw data. The parameters go into it and come back out.
        let preprocessing = self
            .preprocessing()
            .map_err(|e| JobError::Broken(format!("the new model's file: {e}")))?;
        let file = ModelFile::new(self.valid.model.clone(), std::mem::take(&mut self.global))
            .and_then(|f| f.with_preprocessing(preprocessing))
            .and_then(|f| {
                let bytes = f.to_bytes()?;
                Ok((bytes, f.into_parts().1))
            });
        let (file, global) =
            file.map_err(|e| JobError::Broken(format!("the new model's file: {e}")))?;
        self.global = global;
        self.model_file = file.into();
        if r > 0 {
            self.finalized = self.finalized_record.map(|i| (r, i));
            if let Some(record) = self.finalized_record {
                self.released.insert(
                    r,
                    Released {
                        record,
                        model: self.model_digest,
                        file: sha256(&self.model_file),
                    },
                );
            }
        }
        let mut writes = Writes {
            blobs: vec![self.model_file.clone()],
            checkpoint: !restoring,
            ..Writes::default()
        };
        let fits = self.next_round_fits();
        if let (true, Err(over)) = (r < u64::from(self.valid.spec.rounds), &fits) {
            if r == 0 {
                let reason = format!("no round fits the job's privacy budget: {over}");
                return Ok(writes.then(self.fail(reason, now, env)));
            }
            let rounds = u64::from(self.valid.spec.rounds);
            let why = protocol::privacy::budget_stop_reason(r, rounds, over);
            // What `job status` shows; the ledger has it in the job's JobFinished summary.
            self.reason = why.clone();
            self.budget_stop = Some((r, why));
        }
        if r < self.last_round() {
            writes = writes.then(self.open_round(r + 1, now, env));
        } else {
            self.phase = JobPhase::Evaluating {
                deadline_ms: now + env.evaluation_ms,
            };
        }
        Ok(writes)
    }

    /// The features, target, task and the consortium's pooled scaling (round 0's result).
    fn preprocessing(&self) -> fedchain_model_core::Result<Preprocessing> {
        let schema = self.valid.spec.schema.clone().unwrap_or_default();
        let regression = self.valid.task == TaskKind::Regression;
        let scaling = Standardizer::from_moments(&schema.features, regression, &self.stats)
            .map_err(|e| ModelError::InvalidArgument(format!("the pooled statistics: {e}")))?
            .with_image(self.valid.image);
        Ok(Preprocessing {
            target: schema.target,
            task: self.valid.task,
            scaling,
            statistics: Some(self.stats.clone()),
        })
    }

    /// Ends the job, `Finished` with the pooled figures of the final model as its summary.
    fn finish(&mut self, now: u64, env: &JobEnv<'_>) -> Writes {
        let last = self.last_round();
        let mut summary = match self.evaluations.get(&last) {
            Some(reports) => protocol::final_summary(reports.values()),
            None => protocol::final_summary(std::iter::empty()),
        };
        if let Some((_, why)) = &self.budget_stop {
            summary = format!("{why}; {summary}");
        }
        self.phase = JobPhase::Finished;
        self.end(JobStatus::Finished, summary, now, env)
    }

    /// Ends the job as failed, with `reason`.
    pub fn fail(&mut self, reason: String, now: u64, env: &JobEnv<'_>) -> Writes {
        self.reason = reason.clone();
        self.phase = JobPhase::Failed;
        self.end(JobStatus::Failed, reason, now, env)
    }

    /// Its researcher `by` cancels the job: `JobFinished` (cancelled, with `by` as its actor),
    /// deposits returned and the rest of the escrow refunded, as for a failure. Whatever is in
    /// flight is refused from then on, as after any end.
    pub fn cancel(&mut self, by: &str, now: u64, env: &JobEnv<'_>) -> Result<Writes, JobError> {
        if self.terminal() {
            return Err(JobError::Ended {
                job: self.id,
                state: self.state_name(),
            });
        }
        if by != self.researcher {
            return Err(JobError::NotTheResearcher {
                job: self.id,
                researcher: self.researcher.clone(),
            });
        }
        let reason = format!("cancelled by researcher {by}");
        let mut writes = self.end(JobStatus::Cancelled, reason.clone(), now, env);
        writes.entries[0].actor = Actor {
            id: by.to_owned(),
            role: Role::Researcher,
        };
        self.reason = reason;
        self.phase = JobPhase::Cancelled;
        Ok(writes)
    }

    fn end(&self, status: JobStatus, reason: String, now: u64, env: &JobEnv<'_>) -> Writes {
        let mut entries = vec![coord(
            now,
            Body::JobFinished {
                job: self.id,
                status,
                reason,
            },
        )];
        entries.extend(self.release_funds(now, env.credits));
        Writes {
            entries,
            checkpoint: true,
            ..Writes::default()
        }
    }

    /// Deposits back to the hospitals and the rest of the escrow back to the researcher.
    fn release_funds(&self, now: u64, credits: &Credits) -> Vec<Entry> {
        let hospitals = self.enrolled.iter().map(|e| e.name.as_str());
        end_movements(self.id, &self.researcher, hospitals, credits)
            .into_iter()
            .map(|movement| coord(now, Body::CreditsMoved { movement }))
            .collect()
    }

    /// A hospital's enrollment: `Ok(None)` when it is already enrolled with the same identity
    /// key (a rejoining worker gets its recorded enrollment), otherwise the records of its
    /// enrollment and deposit. The caller checked the identity key against the consortium's.
    pub fn enroll(
        &mut self,
        req: Enrollment<'_>,
        now: u64,
        credits: &Credits,
    ) -> Result<Option<Writes>, JobError> {
        let Enrollment {
            hospital: h,
            identity,
            share_index,
            declared,
            deposit,
        } = req;
        if self.answers.contains_key(h) {
            let same = self
                .enrolled
                .iter()
                .any(|e| e.name == h && e.identity_key == identity);
            if !same {
                return Err(JobError::OtherIdentity {
                    job: self.id,
                    hospital: h.to_owned(),
                });
            }
            return Ok(None);
        }
        if !matches!(self.phase, JobPhase::Enrolling { .. }) {
            return Err(JobError::NotEnrolling {
                job: self.id,
                state: self.state_name(),
            });
        }
        if declared == 0 || declared > protocol::MAX_DECLARED_SAMPLES {
            return Err(JobError::DeclaredSamples(declared));
        }
        let balance = credits.balance(&Account::Hospital(h.to_owned()));
        if balance < deposit {
            return Err(JobError::CannotDeposit {
                hospital: h.to_owned(),
                balance,
                deposit,
            });
        }
        let mut entries = vec![hospital(
            now,
            h,
            Body::HospitalEnrolled {
                job: self.id,
                hospital: h.to_owned(),
                identity_key: identity,
                samples: declared,
                deposit,
            },
        )];
        if deposit > 0 {
            entries.push(hospital(
                now,
                h,
                Body::CreditsMoved {
                    movement: Movement::PostDeposit {
                        job: self.id,
                        hospital: h.to_owned(),
                        amount: deposit,
                    },
                },
            ));
        }
        self.enrolled.push(Enrolled {
            name: h.to_owned(),
            identity_key: identity,
            samples: declared,
            share_index,
        });
        Ok(Some(Writes {
            entries,
            after_entries: Some("enrolled"),
            ..Writes::default()
        }))
    }

    fn ended(&self) -> JobError {
        JobError::Ended {
            job: self.id,
            state: self.state_name(),
        }
    }

    /// The lowercase name of the job's state, for messages.
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            JobPhase::Enrolling { .. } => "enrolling",
            JobPhase::Running | JobPhase::Evaluating { .. } => "running",
            JobPhase::Finished => "finished",
            JobPhase::Failed => "failed",
            JobPhase::Cancelled => "cancelled",
        }
    }

    /// The current round when it is `round` and collecting submissions.
    pub fn collecting(&self, round: u64) -> Result<&Round, JobError> {
        self.round
            .as_ref()
            .filter(|r| self.round_no == round && *r.phase() == Phase::Collecting)
            .ok_or_else(|| {
                JobError::WrongRound(format!(
                    "job {} is not collecting submissions for round {round}",
                    self.id
                ))
            })
    }

    /// A hospital's encrypted update. Refusals come back as entries to record with the error.
    pub fn submit(&mut self, now: u64, sub: Submission<'_>) -> (Writes, Result<(), JobError>) {
        let Submission {
            hospital: h,
            round,
            bytes,
            digest,
            signature,
            ciphertexts,
        } = sub;
        if self.terminal() {
            return (Writes::default(), Err(self.ended()));
        }
        if self.round_no != round {
            let why = format!("job {} is in round {}, not {round}", self.id, self.round_no);
            return (Writes::default(), Err(JobError::WrongRound(why)));
        }
        let Some(r) = self.round.as_mut() else {
            let why = format!("job {} has no open round", self.id);
            return (Writes::default(), Err(JobError::WrongRound(why)));
        };
        let (entries, result) = r.submit(now, h, bytes, signature);
        let mut writes = Writes::entries(entries);
        match result {
            Ok(_) => {
                self.subs.insert(
                    h.to_owned(),
                    SubInfo {
                        digest,
                        signature,
                        ciphertexts,
                        bytes: bytes.len() as u64,
                    },
                );
                writes.blobs.push(Bytes::copy_from_slice(bytes));
                writes.after_entries = Some("submission-recorded");
                (writes, Ok(()))
            }
            Err(e) => (writes, Err(e.into())),
        }
    }

    /// A hospital's decryption share. A share that finalizes the round also
    /// yields the round's result and credits; a `RoundError::Finalize` is the round's failure,
    /// not a refusal of the share.
    pub fn submit_share(
        &mut self,
        now: u64,
        share: ShareSubmission<'_>,
        credits: &Credits,
    ) -> (Writes, Result<(), JobError>) {
        let ShareSubmission {
            hospital: h,
            round,
            aggregate,
            share_index,
            ranges,
            bytes,
            checked,
        } = share;
        // A backup share that arrives after the job ended (at a share deadline, say) must not
        // finalize a round of a failed job.
        if self.terminal() {
            return (Writes::default(), Err(self.ended()));
        }
        let decrypted = round < self.round_no
            || (round == self.round_no
                && self
                    .round
                    .as_ref()
                    .is_some_and(|r| *r.phase() == Phase::Finalized));
        if decrypted {
            // Still what h's share took (a late primary's budget must grow, or it is late
            // again next round), and work done for nothing: counted once per asked hospital.
            if self.decryptors.round() == Some(round) {
                if let Some(at) = self.decryptors.asked_at(h, ranges) {
                    let ciphertexts = self.decryptors.count(ranges);
                    self.share_costs
                        .observe(h, now.saturating_sub(at), ciphertexts);
                }
                if self.decryptors.wasted(h) {
                    self.wasted_shares += 1;
                }
            }
            let e = JobError::AlreadyDecrypted {
                job: self.id,
                round,
            };
            return (Writes::default(), Err(e));
        }
        let current = self.round.as_mut().filter(|_| self.round_no == round);
        let Some(r) = current else {
            let why = format!("job {} is in round {}, not {round}", self.id, self.round_no);
            return (Writes::default(), Err(JobError::WrongRound(why)));
        };
        if r.aggregate_digest() != aggregate {
            return (Writes::default(), Err(JobError::OtherAggregate));
        }
        let (entries, result) =
            r.submit_share(now, h, share_index, ranges, bytes, checked, credits);
        if result.is_ok() {
            // What this share took shows what h's next ones will.
            if let Some(at) = self.decryptors.asked_at(h, ranges) {
                let ciphertexts = decryption::covered(ranges, r.ciphertexts());
                self.share_costs
                    .observe(h, now.saturating_sub(at), ciphertexts);
            }
        }
        let finalizes = entries
            .iter()
            .any(|e| matches!(e.body, Body::RoundFinalized { .. }));
        let mut writes = Writes::entries(entries);
        // The share's bytes are kept when a record names them (valid or not), not for a refusal.
        if writes
            .entries
            .iter()
            .any(|e| matches!(e.body, Body::DecryptionShare { .. }))
        {
            writes.blobs.push(Bytes::copy_from_slice(bytes));
        }
        writes.after_entries = Some(if finalizes {
            "round-finalized"
        } else {
            "share-recorded"
        });
        match result {
            Ok(_) | Err(RoundError::Finalize(_)) => (writes, Ok(())),
            Err(e) => (writes, Err(e.into())),
        }
    }

    /// A hospital's evaluation of round `round`'s model: `Ok(None)` for a retry of one already
    /// recorded (the first report stands), otherwise its record. The caller checked the metrics'
    /// shape (`protocol::validate_evaluation`).
    pub fn evaluate(
        &mut self,
        now: u64,
        h: &str,
        round: u64,
        model: Hash,
        report: protocol::Evaluation,
        signature: [u8; 64],
    ) -> Result<Option<Writes>, JobError> {
        let (rows, metrics) = report;
        let Some(me) = self.enrolled.iter().find(|x| x.name == h) else {
            return Err(JobError::NotEnrolled {
                job: self.id,
                hospital: h.to_owned(),
            });
        };
        if self.terminal() || self.finalized.map(|(r, _)| r) != Some(round) {
            return Err(JobError::NoModelToEvaluate {
                job: self.id,
                round,
            });
        }
        if model != self.model_digest {
            return Err(JobError::OtherModel {
                round,
                expected: hex::encode(self.model_digest),
                found: hex::encode(model),
            });
        }
        if self
            .evaluations
            .get(&round)
            .is_some_and(|reports| reports.contains_key(h))
        {
            return Ok(None);
        }
        let message = Body::evaluation_message(self.id, round, h, &model, rows, &metrics);
        if !signature_verifies(&me.identity_key, &message, &signature) {
            return Err(JobError::BadEvaluationSignature(h.to_owned()));
        }
        let record = hospital(
            now,
            h,
            Body::ModelEvaluated {
                job: self.id,
                round,
                hospital: h.to_owned(),
                model,
                rows,
                metrics: metrics.clone(),
                signature,
            },
        );
        self.evaluations
            .entry(round)
            .or_default()
            .insert(h.to_owned(), (rows, metrics));
        Ok(Some(Writes::entries(vec![record])))
    }

    /// Rebuilds the job's state from one of its records, read back from the ledger after a
    /// restart: the same machine is fed what it decided before, so it decides the same. `blob`:
    /// the blob the record names, when it names one. Records the job's own bookkeeping with
    /// [`Job::recorded`] too.
    pub fn restore(
        &mut self,
        index: u64,
        time_ms: u64,
        body: &Body,
        blob: Option<&[u8]>,
        share_index: usize,
        env: &JobEnv<'_>,
    ) -> Result<(), JobError> {
        let broken = |what: String| JobError::Broken(what);
        self.recorded(index, body);
        match body {
            Body::HospitalEnrolled {
                hospital,
                identity_key,
                samples,
                ..
            } => {
                self.enrolled.push(Enrolled {
                    name: hospital.clone(),
                    identity_key: *identity_key,
                    samples: *samples,
                    share_index,
                });
            }
            Body::UpdateSubmitted {
                round,
                hospital,
                ciphertexts,
                signature,
                ..
            } => {
                let bytes = blob.ok_or_else(|| broken("a submission blob is missing".into()))?;
                if matches!(self.phase, JobPhase::Enrolling { .. }) && *round == 0 {
                    self.phase = JobPhase::Running;
                    self.enrollment =
                        protocol::Enrollment::of(self.enrolled.iter().map(|e| e.samples));
                    let w = self.open_round(0, time_ms, env);
                    if self.phase == JobPhase::Failed {
                        let _ = w;
                        return Err(broken(format!("round 0 cannot open: {}", self.reason)));
                    }
                }
                let Some(r) = self.round.as_mut().filter(|_| self.round_no == *round) else {
                    return Err(broken(format!("a submission for round {round}, not open")));
                };
                r.set_deadline(u64::MAX);
                if r.submit(time_ms, hospital, bytes, *signature).1.is_ok() {
                    let count = r.submission(hospital).map_or(0, |c| c.len());
                    self.subs.insert(
                        hospital.clone(),
                        SubInfo {
                            digest: *ciphertexts,
                            signature: *signature,
                            ciphertexts: count as u32,
                            bytes: bytes.len() as u64,
                        },
                    );
                }
            }
            Body::RoundClosed { round, .. } => {
                let Some(r) = self.round.as_mut().filter(|_| self.round_no == *round) else {
                    return Err(broken(format!("round {round} is not open")));
                };
                r.set_deadline(time_ms);
                if r.try_close(time_ms).is_empty() {
                    return Err(broken(format!("round {round} does not close again")));
                }
                self.decryptors =
                    Decryptors::open(*round, r.ciphertexts(), r.assignment(), time_ms);
                // Counts the round for its participants; the record is on the ledger already.
                let _ = self.privacy_spent(time_ms);
                self.share_deadline_ms =
                    Some(time_ms + u64::from(self.valid.spec.round_deadline_seconds) * 1000);
            }
            Body::DecryptionShare {
                round,
                hospital,
                ciphertexts,
                ..
            } => {
                let bytes = blob.ok_or_else(|| broken("a share blob is missing".into()))?;
                let Some(r) = self.round.as_mut().filter(|_| self.round_no == *round) else {
                    return Err(broken(format!("round {round} is not open")));
                };
                let _ = r.submit_share(
                    time_ms,
                    hospital,
                    share_index,
                    ciphertexts,
                    bytes,
                    None,
                    env.credits,
                );
            }
            Body::RoundFinalized { round, .. } => {
                let finalized = self.round_no == *round
                    && self
                        .round
                        .as_ref()
                        .is_some_and(|r| *r.phase() == Phase::Finalized);
                if !finalized {
                    return Err(broken(format!("round {round} does not finalize again")));
                }
                self.round_finalized(time_ms, env, true)?;
            }
            Body::JobFinished { status, reason, .. } => {
                self.phase = match status {
                    JobStatus::Finished => JobPhase::Finished,
                    JobStatus::Failed => JobPhase::Failed,
                    JobStatus::Cancelled => JobPhase::Cancelled,
                };
                if *status != JobStatus::Finished {
                    self.reason = reason.clone();
                }
            }
            Body::ModelEvaluated {
                round,
                hospital,
                rows,
                metrics,
                ..
            } => {
                self.evaluations
                    .entry(*round)
                    .or_default()
                    .insert(hospital.clone(), (*rows, metrics.clone()));
            }
            _ => {}
        }
        Ok(())
    }

    /// After a restore: the end of a job that restore decided (a round that could not open again)
    /// but that the ledger does not hold yet, to be written now.
    pub fn unrecorded_end(&self, now: u64, env: &JobEnv<'_>) -> Option<Writes> {
        if self.finished_record.is_some() {
            return None;
        }
        match self.phase {
            JobPhase::Failed => Some(self.end(JobStatus::Failed, self.reason.clone(), now, env)),
            _ => None,
        }
    }

    /// After a restore: fresh deadlines for whatever is in progress, counted from `back`, when
    /// the workers can be back (a hospital must not miss a deadline, and be penalised, for the
    /// coordinator's crash).
    pub fn resume(&mut self, back: u64, enroll_ms: u64, evaluation_ms: u64) {
        let deadline = back + u64::from(self.valid.spec.round_deadline_seconds) * 1000;
        match &mut self.phase {
            JobPhase::Enrolling { deadline_ms } => *deadline_ms = back + enroll_ms,
            JobPhase::Evaluating { deadline_ms } => *deadline_ms = back + evaluation_ms,
            JobPhase::Running => {
                if let Some(r) = self.round.as_mut() {
                    match r.phase() {
                        Phase::Collecting => r.set_deadline(deadline),
                        Phase::Decrypting => {
                            self.share_deadline_ms = Some(deadline);
                            // The primaries are asked again, their budgets counted from then.
                            self.decryptors = Decryptors::open(
                                self.round_no,
                                r.ciphertexts(),
                                r.assignment(),
                                back,
                            );
                        }
                        _ => {}
                    }
                }
            }
            JobPhase::Finished | JobPhase::Failed | JobPhase::Cancelled => {}
        }
    }

    /// The tasks hospital `h` has pending in this job. `member`: whether `h` is one of the
    /// consortium's hospitals (only they get offers).
    pub fn tasks_for(&self, h: &str, member: bool) -> Vec<Task> {
        let mut out = Vec::new();
        if let JobPhase::Enrolling { .. } = self.phase {
            if !self.is_enrolled(h) && member {
                out.push(Task::Offer { job: self.id });
            }
            return out;
        }
        if self.terminal() || !self.is_enrolled(h) {
            return out;
        }
        if let Some((r, _)) = self.finalized {
            let done = self.evaluations.get(&r).is_some_and(|e| e.contains_key(h));
            if !done {
                out.push(Task::Evaluate {
                    job: self.id,
                    round: r,
                    model: self.model_digest,
                });
            }
        }
        let Some(round) = self.round.as_ref() else {
            return out;
        };
        match round.phase() {
            Phase::Collecting if !self.subs.contains_key(h) => {
                let plan = RoundPlan::new(&self.valid, self.round_no, self.enrollment);
                out.push(Task::Train {
                    job: self.id,
                    model: (plan.kind == RoundKind::Model).then_some(self.model_digest),
                    plan,
                    deadline_ms: round.config().deadline_ms,
                });
            }
            Phase::Decrypting => {
                // The first decryptors are asked when the round closes (spread: each for its
                // ciphertexts); others only in place of one that refused or ran late. Each ask is
                // a task of its own, sent until a share answers it, so a backup's later ask does
                // not repeat ciphertexts the hospital is already decrypting.
                let asks = self.decryptors.asks(h);
                let invalid = round.invalid_shares().iter().any(|v| v == h);
                let (Some(aggregate), Some(context), false, false) = (
                    round.aggregate_digest(),
                    round.context(),
                    invalid,
                    asks.is_empty(),
                ) else {
                    return out;
                };
                let covered = round.covered_by(h);
                for ask in asks {
                    let outstanding = if ask.ranges.is_empty() {
                        // The whole aggregate: done once any share of it is in.
                        covered.is_empty().then(Vec::new)
                    } else {
                        let left: BTreeSet<u64> =
                            decryption::index_set(&ask.ranges, round.ciphertexts())
                                .difference(&covered)
                                .copied()
                                .collect();
                        (!left.is_empty()).then(|| decryption::ranges_of(&left))
                    };
                    if let Some(ciphertexts) = outstanding {
                        out.push(Task::Decrypt {
                            job: self.id,
                            round: self.round_no,
                            aggregate,
                            contributors: round.submitted(),
                            context: context.clone(),
                            ciphertexts,
                        });
                    }
                }
            }
            _ => {}
        }
        out
    }
}
