//! One round of a job, as a pure state machine: no I/O, no clock, no randomness.
//!
//! The gRPC service feeds a [`Round`] the requests it receives (with the time and the caller's
//! name from its certificate), appends the ledger [`Entry`]s each call returns, maps the
//! [`RoundError`]s to gRPC statuses, and calls [`Round::try_close`] after every submission and on a
//! timer. Everything a round decides is therefore reproducible from its inputs and testable
//! without a network, a store or a clock.
//!
//! # Phases
//!
//! ```text
//!             every enrolled hospital submitted, or now >= deadline
//! Collecting ───────────────────────────────────────────────────────▶ Decrypting ──t valid shares of each ciphertext──▶ Finalized
//!     │          (with >= min_participants submissions)                   │
//!     └── now >= deadline with < min_participants ──▶ Failed              └── aggregate does not decode ──▶ Failed
//! ```
//!
//! - **Collecting** ([`Round::submit`]): a submission is accepted only while the round collects,
//!   before the (absolute) deadline, from an enrolled hospital that has not submitted yet, with
//!   exactly `codec.ciphertexts_for(len)` valid ciphertexts in their canonical encoding
//!   ([`djn::decode_ciphertexts`]), signed with `verify_strict` by the hospital's enrolled Ed25519
//!   identity key over [`Body::submission_message`]`(job, round, hospital, sha256(bytes))`. The
//!   checks run in that order, cheapest first (the signature before the ciphertexts' group
//!   checks). An accepted submission yields `UpdateSubmitted` (its `ciphertexts` digest is SHA-256
//!   of the bytes, the blob the store keeps); a refused one yields `RequestRejected` (outcome
//!   `MinorFailure`, naming hospital, job and round, with the reason) and leaves the round unchanged.
//! - **Closing** ([`Round::try_close`]): once every enrolled hospital submitted, or at the deadline,
//!   the submissions are multiplied ([`aggregate::aggregate`]) and `RoundClosed` is recorded with
//!   the sorted participants and the aggregate digest (SHA-256 of
//!   [`djn::encode_ciphertexts`] of the aggregate). With fewer than `min_participants`
//!   submissions at the deadline the round fails; it records nothing itself: the job layer records
//!   the failure (`JobFinished`, reason from [`Phase::Failed`]) and the refunds.
//! - **Decrypting** ([`Round::submit_share`]): hospitals decrypt the aggregate only, bound to
//!   [`decryption_context`]`(job, round, aggregate digest)`. Key shares belong to every hospital of
//!   the consortium, not just this round's participants, so any enrolled hospital's share is
//!   accepted. Each enrolled hospital carries its key share index ([`Enrolled::share_index`], from the
//!   consortium), and a share must carry its sender's index. Each share is
//!   checked on arrival ([`threshold::verify_share`]; the service may run that check away from the
//!   round with [`Round::share_check`], and the verdict counts only for the same bytes against the
//!   same aggregate) and recorded as `DecryptionShare { verified }`
//!   (an undecodable share counts as invalid); an invalid share is refused and counts against its
//!   sender. One share per hospital (spread: per ciphertext): a second one is refused, whatever
//!   the first one's verdict.
//!   When `t` (the key's threshold) valid shares are in, they are combined
//!   ([`threshold::combine_pieces`], each ciphertext from the `t` lowest parties). Under **spread decryption** (`RoundConfig::spread`, the
//!   job's `spread_decryption`) a share covers the ciphertext ranges it names (recorded in
//!   `DecryptionShare { ciphertexts }`) and is verified on exactly those; [`Round::assignment`]
//!   gives each decryptor its ranges. A hospital may then send further shares of other
//!   ciphertexts (a backup's), never a second one of the same ciphertext, and none after an
//!   invalid one; the round finalizes once every ciphertext has `t` valid shares, each combined
//!   from its own subset. The result is then decoded into the
//!   weighted average with the participants'
//!   total samples as divisor (workers encrypt their deltas with weight = their declared samples,
//!   which are their FedAvg weights), and applied to the global model ([`fedavg::apply`]).
//! - **Finalized**: `RoundFinalized` records the model digests ([`ModelDigest`]) before and after
//!   (metrics empty: hospitals report them on the next model, outside this machine), followed by one
//!   `CreditsMoved` per movement of [`round_movements_capped`] under [`Policy::V1`], computed from
//!   the enrolled hospitals, the participants and the share verdicts against the credit snapshot
//!   the caller passes in. `shares_expected` is [`Round::primaries`], the `t` enrolled hospitals
//!   with the lowest key-share indices (spread: the decryptors the assignment gives ciphertexts),
//!   which the service asks first: one of them without a share when the round finalizes made the
//!   others wait and is penalised for a missed share. A hospital with a valid and an invalid
//!   share is paid as invalid only.
//!
//! Inputs are untrusted: every call returns entries and a typed error, never panics.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fedchain_crypto::aggregate;
use fedchain_crypto::djn::{self, Ciphertext};
use fedchain_crypto::keys::PublicKey;
use fedchain_crypto::threshold::{self, DecryptionShare};
use fedchain_crypto::update::UpdateCodec;
use fedchain_crypto::CryptoError;
use fedchain_ledger::credits::{round_movements_capped, Credits, Policy, RoundOutcome};
use fedchain_ledger::record::{signature_verifies, Actor, Body, Outcome, Role};
use fedchain_ledger::store::Entry;
use fedchain_ledger::{sha256, Hash};
use fedchain_model_core::{fedavg, ModelDigest};

use fedchain_consortium::COORDINATOR_NAME;
use fedchain_protocol::decryption::{self, Ranges};
pub use fedchain_protocol::decryption::{decryption_context, first_decryptors};

/// What a round is about; fixed when it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundConfig {
    /// Job id.
    pub job: u64,
    /// Round number (from 1).
    pub round: u64,
    /// Fewest submissions with which the round may close at its deadline (at least 1).
    pub min_participants: usize,
    /// Absolute deadline, milliseconds since the Unix epoch: submissions are accepted while
    /// `now_ms < deadline_ms`, and the round closes when `now_ms >= deadline_ms`.
    pub deadline_ms: u64,
    /// Number of model parameters (length of the global model and of every update).
    pub len: usize,
    /// The job's `spread_decryption`: shares cover the ranges of ciphertexts
    /// [`fedchain_protocol::spread`] gives each decryptor, not the whole aggregate.
    pub spread: bool,
}

/// A hospital enrolled in the job, as recorded by `HospitalEnrolled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The hospital's party name (from its certificate).
    pub name: String,
    /// Its Ed25519 identity key, which signs its submissions.
    pub identity_key: [u8; 32],
    /// Declared training rows: its FedAvg weight (and its encryption weight).
    pub samples: u64,
    /// Its 1-based index in the consortium's threshold key (the index of its key share).
    pub share_index: usize,
}

/// Where a round stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Accepting encrypted updates.
    Collecting,
    /// The aggregate is computed; accepting decryption shares.
    Decrypting,
    /// The new global model is computed.
    Finalized,
    /// The round cannot complete, and why.
    Failed(String),
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Collecting => f.write_str("collecting"),
            Phase::Decrypting => f.write_str("decrypting"),
            Phase::Finalized => f.write_str("finalized"),
            Phase::Failed(why) => write!(f, "failed ({why})"),
        }
    }
}

/// Why a request was refused (or, for [`RoundError::InvalidConfig`] and
/// [`RoundError::Finalize`], why the round could not be built or completed). The service maps each
/// variant to a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoundError {
    /// [`Round::new`] was given an inconsistent configuration.
    #[error("invalid round configuration: {0}")]
    InvalidConfig(String),
    /// A submission arrived after collection ended.
    #[error("the round closed before this submission (round is {phase})")]
    Closed {
        /// The round's phase.
        phase: String,
    },
    /// A submission arrived at or after the deadline (before the round was closed).
    #[error("the submission arrived at {now_ms} ms, at or after the deadline {deadline_ms} ms")]
    PastDeadline {
        /// When it arrived.
        now_ms: u64,
        /// The deadline.
        deadline_ms: u64,
    },
    /// The caller is not enrolled in the job.
    #[error("hospital {0:?} is not enrolled in this job")]
    NotEnrolled(String),
    /// The hospital already submitted its update for this round (a replay or a resend).
    #[error("hospital {0:?} already submitted an update for this round")]
    DuplicateSubmission(String),
    /// The ciphertext vector has the wrong number of ciphertexts.
    #[error("expected {expected} ciphertexts, found {found}")]
    WrongLength {
        /// `codec.ciphertexts_for(len)`.
        expected: usize,
        /// What the bytes declare.
        found: usize,
    },
    /// The ciphertext bytes do not decode or a ciphertext is invalid.
    #[error("invalid ciphertexts: {0}")]
    InvalidCiphertexts(String),
    /// The signature does not verify with the hospital's identity key over this job, round,
    /// hospital and ciphertext digest.
    #[error("the signature of hospital {0:?} does not verify for this job, round and update")]
    BadSignature(String),
    /// A decryption share arrived while the round was not decrypting.
    #[error("the round is not accepting decryption shares (round is {phase})")]
    NotDecrypting {
        /// The round's phase.
        phase: String,
    },
    /// A share carries another party's index than its sender's.
    #[error("hospital {hospital:?} holds key share {expected}, but sent a share of party {party}")]
    WrongParty {
        /// The sender.
        hospital: String,
        /// The index in the share.
        party: usize,
        /// The sender's index.
        expected: usize,
    },
    /// The hospital already sent a decryption share for this round (of these ciphertexts).
    #[error("hospital {0:?} already sent a decryption share of these ciphertexts for this round")]
    DuplicateShare(String),
    /// A share's ciphertext ranges are not canonical, go past the aggregate, or are given in a
    /// job whose shares decrypt the whole aggregate.
    #[error("decryption share of hospital {hospital:?}: {reason}")]
    BadRanges {
        /// The sender.
        hospital: String,
        /// Why.
        reason: String,
    },
    /// The share does not decode, or its proof does not verify against the aggregate and context.
    #[error("invalid decryption share from hospital {hospital:?}: {reason}")]
    InvalidShare {
        /// The sender.
        hospital: String,
        /// Why.
        reason: String,
    },
    /// Enough valid shares arrived but the aggregate could not be turned into a model (the
    /// decrypted slots are out of range: some participant encrypted out-of-range values). The
    /// round is then [`Phase::Failed`].
    #[error("the round cannot be finalized: {0}")]
    Finalize(String),
}

/// One accepted submission.
#[derive(Debug, Clone)]
struct Submission {
    ciphertexts: Vec<Ciphertext>,
}

/// The aggregate of a closed round.
#[derive(Debug, Clone)]
struct Closed {
    ciphertexts: Arc<Vec<Ciphertext>>,
    digest: Hash,
    context: Vec<u8>,
}

/// What verifying a decryption share against a round's aggregate needs, taken from the round
/// ([`Round::share_check`]) so that the proof check (tens of milliseconds of modular
/// exponentiation) runs without holding the round, or the coordinator's lock around it.
#[derive(Debug, Clone)]
pub struct ShareCheck {
    pk: Arc<PublicKey>,
    ciphertexts: Arc<Vec<Ciphertext>>,
    ranges: Ranges,
    aggregate: Hash,
    context: Vec<u8>,
}

impl ShareCheck {
    /// Decodes `share_bytes` and verifies its proof against the ciphertexts it was asked for.
    pub fn check(&self, share_bytes: &[u8]) -> CheckedShare {
        let verified = verify_covered(
            &self.pk,
            &self.ciphertexts,
            &self.ranges,
            share_bytes,
            &self.context,
        )
        .map(|_| ());
        CheckedShare {
            aggregate: self.aggregate,
            share: sha256(share_bytes),
            ranges: self.ranges.clone(),
            verified,
        }
    }
}

/// Decodes a share of the ciphertexts `ranges` names (checked) and verifies it against exactly
/// those; returns the share and the index of each of its values.
fn verify_covered(
    pk: &PublicKey,
    all: &[Ciphertext],
    ranges: &[[u64; 2]],
    share_bytes: &[u8],
    context: &[u8],
) -> Result<(DecryptionShare, Vec<usize>), CryptoError> {
    let at = decryption::indices(ranges, all.len());
    let share = DecryptionShare::from_bytes(pk, share_bytes, at.len())?;
    let piece = threshold::Piece {
        share: &share,
        at: &at,
    };
    threshold::verify_piece(pk, all, piece, context)?;
    Ok((share, at))
}

/// The verdict of a [`ShareCheck`], for [`Round::submit_share`]: used only for the same share
/// bytes against the same aggregate, otherwise the round verifies the share itself.
#[derive(Debug)]
pub struct CheckedShare {
    aggregate: Hash,
    share: Hash,
    ranges: Ranges,
    verified: Result<(), CryptoError>,
}

/// A valid share, with the ciphertexts it covers.
#[derive(Debug, Clone)]
struct Held {
    ranges: Ranges,
    at: Vec<usize>,
    share: DecryptionShare,
}

/// The state of one round of one job. See the [module docs](self).
#[derive(Debug)]
pub struct Round {
    cfg: RoundConfig,
    pk: Arc<PublicKey>,
    codec: UpdateCodec,
    enrolled: Vec<Enrolled>,
    /// The model the round starts from; emptied when the round finalizes (the new one follows).
    global: Vec<f32>,
    phase: Phase,
    submissions: BTreeMap<String, Submission>,
    closed: Option<Closed>,
    /// Shares that verified, by hospital (more than one only under spread decryption, for
    /// disjoint ciphertexts: a backup's share of another decryptor's ranges).
    valid_shares: BTreeMap<String, Vec<Held>>,
    /// Hospitals whose share was refused as invalid.
    invalid_shares: BTreeSet<String>,
    new_global: Option<Vec<f32>>,
}

fn hospital_actor(hospital: &str) -> Actor {
    Actor {
        id: hospital.to_owned(),
        role: Role::Hospital,
    }
}

fn coordinator_entry(now_ms: u64, body: Body) -> Entry {
    Entry {
        time_ms: now_ms,
        actor: Actor {
            id: COORDINATOR_NAME.to_owned(),
            role: Role::Coordinator,
        },
        outcome: Outcome::Success,
        body,
    }
}

impl Round {
    /// Opens a round in [`Phase::Collecting`].
    ///
    /// `codec` must be the job's codec for `pk`; `enrolled` lists the job's hospitals in key-share
    /// order (hospital `i`, 1-based, holds key share `i`); `global` is the model the participants
    /// trained from. Refused ([`RoundError::InvalidConfig`]) unless: `global` has `cfg.len >= 1`
    /// finite values; names are non-empty and distinct; every hospital declares at least one
    /// sample and all samples together fit the codec's total weight; `threshold <= enrolled <=
    /// parties`; `1 <= min_participants <= enrolled`.
    pub fn new(
        cfg: RoundConfig,
        pk: Arc<PublicKey>,
        codec: UpdateCodec,
        enrolled: Vec<Enrolled>,
        global: Vec<f32>,
    ) -> Result<Round, RoundError> {
        let bad = |m: String| Err(RoundError::InvalidConfig(m));
        if cfg.len == 0 || global.len() != cfg.len {
            return bad(format!(
                "the global model has {} parameters, the round expects {} (at least 1)",
                global.len(),
                cfg.len
            ));
        }
        if let Some(i) = global.iter().position(|v| !v.is_finite()) {
            return bad(format!("global parameter {i} is not finite"));
        }
        let mut names = BTreeSet::new();
        let mut total: u64 = 0;
        for e in &enrolled {
            if e.name.is_empty() || !names.insert(e.name.as_str()) {
                return bad(format!("hospital name {:?} is empty or repeated", e.name));
            }
            if e.samples == 0 {
                return bad(format!("hospital {:?} declares 0 samples", e.name));
            }
            if e.share_index == 0 || e.share_index > pk.parties() {
                return bad(format!(
                    "hospital {:?} has key share index {}; the key has shares 1 to {}",
                    e.name,
                    e.share_index,
                    pk.parties()
                ));
            }
            if enrolled
                .iter()
                .filter(|o| o.share_index == e.share_index)
                .count()
                > 1
            {
                return bad(format!("key share index {} is given twice", e.share_index));
            }
            total = match total.checked_add(e.samples) {
                Some(t) => t,
                None => return bad("the declared samples overflow".into()),
            };
        }
        if total > codec.total_weight() {
            return bad(format!(
                "the hospitals declare {total} samples, more than the codec's total weight {}",
                codec.total_weight()
            ));
        }
        // The scaled layout's levels follow from the enrolled count: a codec built for another
        // count would decode every average at the wrong scale.
        if let Some(built_for) = codec.contributors() {
            if enrolled.len() as u64 != built_for {
                return bad(format!(
                    "{} hospitals enrolled, but the codec was built for {built_for} contributions",
                    enrolled.len()
                ));
            }
        }
        if enrolled.len() < pk.threshold() || enrolled.len() > pk.parties() {
            return bad(format!(
                "{} hospitals enrolled; the key needs between {} (its threshold) and {} (its parties)",
                enrolled.len(),
                pk.threshold(),
                pk.parties()
            ));
        }
        if cfg.min_participants == 0 || cfg.min_participants > enrolled.len() {
            return bad(format!(
                "min_participants {} must be between 1 and the {} enrolled hospitals",
                cfg.min_participants,
                enrolled.len()
            ));
        }
        Ok(Round {
            cfg,
            pk,
            codec,
            enrolled,
            global,
            phase: Phase::Collecting,
            submissions: BTreeMap::new(),
            closed: None,
            valid_shares: BTreeMap::new(),
            invalid_shares: BTreeSet::new(),
            new_global: None,
        })
    }

    /// Moves the submission deadline (a coordinator that restarted gives the round it resumes a
    /// fresh one). Only the deadline changes; what was decided stays decided.
    pub fn set_deadline(&mut self, deadline_ms: u64) {
        self.cfg.deadline_ms = deadline_ms;
    }

    /// The round's configuration.
    pub fn config(&self) -> &RoundConfig {
        &self.cfg
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Hospitals whose submission was accepted, sorted.
    pub fn submitted(&self) -> Vec<String> {
        self.submissions.keys().cloned().collect()
    }

    /// The accepted submission of `hospital`, as its ciphertexts, while the round collects (once
    /// it closes, only the aggregate is kept).
    pub fn submission(&self, hospital: &str) -> Option<&[Ciphertext]> {
        self.submissions
            .get(hospital)
            .map(|s| s.ciphertexts.as_slice())
    }

    /// Hospitals whose decryption share verified, sorted.
    pub fn valid_shares(&self) -> Vec<String> {
        self.valid_shares.keys().cloned().collect()
    }

    /// Hospitals whose decryption share was refused as invalid, sorted.
    pub fn invalid_shares(&self) -> Vec<String> {
        self.invalid_shares.iter().cloned().collect()
    }

    /// The decryption context ([`decryption_context`] of this job, round and aggregate digest),
    /// once the round is closed; `None` while collecting or when it failed before closing.
    pub fn context(&self) -> Option<Vec<u8>> {
        self.closed.as_ref().map(|c| c.context.clone())
    }

    /// SHA-256 of the aggregate's canonical encoding, once closed.
    pub fn aggregate_digest(&self) -> Option<Hash> {
        self.closed.as_ref().map(|c| c.digest)
    }

    /// The aggregate's canonical encoding ([`djn::encode_ciphertexts`]), once closed.
    pub fn aggregate_bytes(&self) -> Option<Vec<u8>> {
        self.closed
            .as_ref()
            .map(|c| djn::encode_ciphertexts(&self.pk, &c.ciphertexts))
    }

    /// How many ciphertexts the aggregate has (a decryption share has one value per ciphertext it
    /// covers: all of them under the first-t rule); 0 before the round closes.
    pub fn ciphertexts(&self) -> usize {
        self.closed.as_ref().map_or(0, |c| c.ciphertexts.len())
    }

    /// The new global model, once finalized.
    pub fn new_global(&self) -> Option<&[f32]> {
        self.new_global.as_deref()
    }

    /// Moves the new global model out to whoever keeps it from here on (the job), so that a
    /// model of millions of parameters is held once; [`Round::new_global`] is `None` after.
    pub fn take_new_global(&mut self) -> Option<Vec<f32>> {
        self.new_global.take()
    }

    /// The 1-based key share index of `hospital`, if enrolled.
    pub fn share_index(&self, hospital: &str) -> Option<usize> {
        self.enrolled
            .iter()
            .find(|e| e.name == hospital)
            .map(|e| e.share_index)
    }

    fn enrolled(&self, hospital: &str) -> Option<&Enrolled> {
        self.enrolled.iter().find(|e| e.name == hospital)
    }

    fn reject<T>(
        &self,
        now_ms: u64,
        operation: &str,
        hospital: &str,
        err: RoundError,
    ) -> (Vec<Entry>, Result<T, RoundError>) {
        let entry = Entry {
            time_ms: now_ms,
            actor: hospital_actor(hospital),
            outcome: Outcome::MinorFailure,
            body: Body::RequestRejected {
                request: format!(
                    "{operation}/job/{}/round/{}/hospital/{hospital}",
                    self.cfg.job, self.cfg.round
                ),
                reason: err.to_string(),
            },
        };
        (vec![entry], Err(err))
    }

    /// A hospital's encrypted update: `ciphertext_bytes` is the canonical encoding of its
    /// ciphertext vector, `signature` its Ed25519 signature over
    /// [`Body::submission_message`]`(job, round, hospital, sha256(ciphertext_bytes))`.
    ///
    /// Returns the entries to append (`UpdateSubmitted`, or `RequestRejected` with outcome
    /// `MinorFailure`) and the RPC's result. A refusal leaves the round unchanged.
    pub fn submit(
        &mut self,
        now_ms: u64,
        hospital: &str,
        ciphertext_bytes: &[u8],
        signature: [u8; 64],
    ) -> (Vec<Entry>, Result<(), RoundError>) {
        const OP: &str = "submit_update";
        if self.phase != Phase::Collecting {
            let err = RoundError::Closed {
                phase: self.phase.to_string(),
            };
            return self.reject(now_ms, OP, hospital, err);
        }
        if now_ms >= self.cfg.deadline_ms {
            let err = RoundError::PastDeadline {
                now_ms,
                deadline_ms: self.cfg.deadline_ms,
            };
            return self.reject(now_ms, OP, hospital, err);
        }
        let Some(identity_key) = self.enrolled(hospital).map(|e| e.identity_key) else {
            return self.reject(
                now_ms,
                OP,
                hospital,
                RoundError::NotEnrolled(hospital.into()),
            );
        };
        if self.submissions.contains_key(hospital) {
            let err = RoundError::DuplicateSubmission(hospital.into());
            return self.reject(now_ms, OP, hospital, err);
        }
        let digest = sha256(ciphertext_bytes);
        let message = Body::submission_message(self.cfg.job, self.cfg.round, hospital, &digest);
        if !signature_verifies(&identity_key, &message, &signature) {
            return self.reject(
                now_ms,
                OP,
                hospital,
                RoundError::BadSignature(hospital.into()),
            );
        }
        let expected = self.codec.ciphertexts_for(self.cfg.len);
        let ciphertexts = match djn::decode_ciphertexts(&self.pk, ciphertext_bytes, Some(expected))
        {
            Ok(c) => c,
            Err(CryptoError::WrongLength {
                expected, found, ..
            }) => {
                let err = RoundError::WrongLength { expected, found };
                return self.reject(now_ms, OP, hospital, err);
            }
            Err(e) => {
                let err = RoundError::InvalidCiphertexts(e.to_string());
                return self.reject(now_ms, OP, hospital, err);
            }
        };
        self.submissions
            .insert(hospital.to_owned(), Submission { ciphertexts });
        let entry = Entry {
            time_ms: now_ms,
            actor: hospital_actor(hospital),
            outcome: Outcome::Success,
            body: Body::UpdateSubmitted {
                job: self.cfg.job,
                round: self.cfg.round,
                hospital: hospital.to_owned(),
                ciphertexts: digest,
                signature,
            },
        };
        (vec![entry], Ok(()))
    }

    /// Closes collection when every enrolled hospital submitted, or when `now_ms >= deadline`.
    /// With at least `min_participants` submissions the aggregate is computed, the round moves to
    /// [`Phase::Decrypting`] and `RoundClosed` is returned; with fewer at the deadline the round is
    /// [`Phase::Failed`] and nothing is returned. Otherwise (still collecting, or not collecting
    /// any more) nothing happens.
    pub fn try_close(&mut self, now_ms: u64) -> Vec<Entry> {
        if self.phase != Phase::Collecting {
            return Vec::new();
        }
        let everyone = self.submissions.len() == self.enrolled.len();
        if !everyone && now_ms < self.cfg.deadline_ms {
            return Vec::new();
        }
        if self.submissions.len() < self.cfg.min_participants {
            self.phase = Phase::Failed(format!(
                "only {} of {} hospitals submitted before the deadline; at least {} needed",
                self.submissions.len(),
                self.enrolled.len(),
                self.cfg.min_participants
            ));
            return Vec::new();
        }
        let vectors: Vec<&[Ciphertext]> = self
            .submissions
            .values()
            .map(|s| s.ciphertexts.as_slice())
            .collect();
        let ciphertexts = match aggregate::aggregate(&self.pk, &vectors) {
            Ok(a) => a,
            Err(e) => {
                // Unreachable with validated submissions of equal length; fail rather than panic.
                self.phase = Phase::Failed(format!("aggregation failed: {e}"));
                return Vec::new();
            }
        };
        // Hospitals rebuild the aggregate from the submissions' blobs on the ledger; the decoded
        // vectors (three times the aggregate, for three hospitals) are not needed any more.
        for s in self.submissions.values_mut() {
            s.ciphertexts = Vec::new();
        }
        let digest = sha256(&djn::encode_ciphertexts(&self.pk, &ciphertexts));
        let context = decryption_context(self.cfg.job, self.cfg.round, &digest);
        self.closed = Some(Closed {
            ciphertexts: Arc::new(ciphertexts),
            digest,
            context,
        });
        self.phase = Phase::Decrypting;
        vec![coordinator_entry(
            now_ms,
            Body::RoundClosed {
                job: self.cfg.job,
                round: self.cfg.round,
                participants: self.submitted(),
                aggregate: digest,
            },
        )]
    }

    /// What checking `hospital`'s decryption share needs, to do it away from the round (see
    /// [`ShareCheck`]); `None` when [`Round::submit_share`] would refuse the share without looking
    /// at it (not decrypting, not enrolled, a share already in), so no work is spent on those.
    pub fn share_check(&self, hospital: &str, ranges: &[[u64; 2]]) -> Option<ShareCheck> {
        if self.phase != Phase::Decrypting
            || self.share_index(hospital).is_none()
            || self.share_refusal(hospital, ranges).is_some()
        {
            return None;
        }
        self.closed.as_ref().map(|c| ShareCheck {
            pk: Arc::clone(&self.pk),
            ciphertexts: Arc::clone(&c.ciphertexts),
            ranges: ranges.to_vec(),
            aggregate: c.digest,
            context: c.context.clone(),
        })
    }

    /// Why `hospital`'s share of `ranges` would be refused without looking at it: ranges this
    /// job does not take, or a share it already sent (an invalid one, or a valid one of some of
    /// the same ciphertexts).
    fn share_refusal(&self, hospital: &str, ranges: &[[u64; 2]]) -> Option<RoundError> {
        let bad = |reason: String| RoundError::BadRanges {
            hospital: hospital.into(),
            reason,
        };
        if !self.cfg.spread && !ranges.is_empty() {
            return Some(bad(
                "this job's shares decrypt the whole aggregate, not ciphertext ranges".into(),
            ));
        }
        if let Err(e) = decryption::check_ranges(ranges, self.ciphertexts() as u64) {
            return Some(bad(e.to_string()));
        }
        let again = self.invalid_shares.contains(hospital)
            || self
                .valid_shares
                .get(hospital)
                .is_some_and(|held| held.iter().any(|h| decryption::overlap(&h.ranges, ranges)));
        again.then(|| RoundError::DuplicateShare(hospital.into()))
    }

    /// The hospitals that decrypt this round first, in key-share order: under spread
    /// decryption the participants topped up to `t` ([`decryption::spread_decryptors`]),
    /// otherwise the `t` lowest key-share indices ([`first_decryptors`]).
    fn decryptors(&self) -> Vec<String> {
        let all = self
            .enrolled
            .iter()
            .map(|e| (e.name.as_str(), e.share_index));
        if self.cfg.spread {
            decryption::spread_decryptors(all, &self.submitted(), self.pk.threshold())
        } else {
            first_decryptors(all, self.pk.threshold())
        }
    }

    /// Once closed, what each first decryptor is asked to decrypt: its ranges under spread
    /// decryption ([`decryption::spread`]), the whole aggregate (no ranges) otherwise.
    pub fn assignment(&self) -> Vec<(String, Ranges)> {
        let decryptors = self.decryptors();
        if !self.cfg.spread {
            return decryptors.into_iter().map(|d| (d, Vec::new())).collect();
        }
        decryption::spread(self.ciphertexts() as u64, &decryptors, self.pk.threshold())
    }

    /// The ciphertexts `hospital`'s valid shares cover, by index (a set, not [`Ranges`], whose
    /// empty list would mean everything).
    pub fn covered_by(&self, hospital: &str) -> BTreeSet<u64> {
        let mut set = BTreeSet::new();
        for h in self.valid_shares.get(hospital).into_iter().flatten() {
            set.extend(h.at.iter().map(|&j| j as u64));
        }
        set
    }

    /// Whether a valid share of `hospital` covers exactly `ranges` (answers the ask of them).
    pub fn answered(&self, hospital: &str, ranges: &[[u64; 2]]) -> bool {
        self.valid_shares
            .get(hospital)
            .is_some_and(|held| held.iter().any(|h| h.ranges == ranges))
    }

    /// How many valid shares cover each ciphertext of the aggregate.
    pub fn coverage(&self) -> Vec<usize> {
        let mut times = vec![0; self.ciphertexts()];
        for h in self.valid_shares.values().flatten() {
            for &j in &h.at {
                times[j] += 1;
            }
        }
        times
    }

    /// A hospital's decryption share of the ciphertexts `ranges` names (empty: the whole
    /// aggregate; `share_bytes`: its canonical encoding), claimed as key share `party`, with the
    /// verdict of a [`ShareCheck`] made outside the round if there is one (`checked`).
    ///
    /// Refused with `RequestRejected` (nothing recorded as the hospital's share) when the round is
    /// not decrypting, the hospital is not enrolled, the ranges are not canonical or not this
    /// job's kind, it already sent an invalid share or a valid one of some of these ciphertexts,
    /// or `party` (or the share's own index) is not the hospital's index. Otherwise the share is
    /// verified on its ciphertexts and recorded as `DecryptionShare { verified, ciphertexts }`; an
    /// invalid one is refused. When every ciphertext has the key's threshold of valid shares, the
    /// round is finalized: `RoundFinalized` and the
    /// credit movements (computed against `credits`, the balances before this round's movements)
    /// follow, and `Ok(true)` says the new global model is [`Round::new_global`].
    #[allow(clippy::too_many_arguments)] // the share's header fields, as the service received them
    pub fn submit_share(
        &mut self,
        now_ms: u64,
        hospital: &str,
        party: usize,
        ranges: &[[u64; 2]],
        share_bytes: &[u8],
        checked: Option<CheckedShare>,
        credits: &Credits,
    ) -> (Vec<Entry>, Result<bool, RoundError>) {
        const OP: &str = "submit_share";
        if self.phase != Phase::Decrypting {
            let err = RoundError::NotDecrypting {
                phase: self.phase.to_string(),
            };
            return self.reject(now_ms, OP, hospital, err);
        }
        let Some(expected) = self.share_index(hospital) else {
            return self.reject(
                now_ms,
                OP,
                hospital,
                RoundError::NotEnrolled(hospital.into()),
            );
        };
        if let Some(err) = self.share_refusal(hospital, ranges) {
            return self.reject(now_ms, OP, hospital, err);
        }
        if party != expected {
            let err = RoundError::WrongParty {
                hospital: hospital.into(),
                party,
                expected,
            };
            return self.reject(now_ms, OP, hospital, err);
        }
        let Some(closed) = self.closed.as_ref() else {
            // Decrypting always has an aggregate; refuse rather than panic.
            let err = RoundError::NotDecrypting {
                phase: self.phase.to_string(),
            };
            return self.reject(now_ms, OP, hospital, err);
        };
        let at = decryption::indices(ranges, closed.ciphertexts.len());
        let decoded = DecryptionShare::from_bytes(&self.pk, share_bytes, at.len());
        if let Ok(share) = &decoded {
            if share.party() != expected {
                let err = RoundError::WrongParty {
                    hospital: hospital.into(),
                    party: share.party(),
                    expected,
                };
                return self.reject(now_ms, OP, hospital, err);
            }
        }
        let verdict = decoded.and_then(|share| {
            let verified = match checked {
                Some(c)
                    if c.aggregate == closed.digest
                        && c.share == sha256(share_bytes)
                        && c.ranges == ranges =>
                {
                    c.verified
                }
                _ => {
                    let piece = threshold::Piece {
                        share: &share,
                        at: &at,
                    };
                    threshold::verify_piece(&self.pk, &closed.ciphertexts, piece, &closed.context)
                }
            };
            verified.map(|()| (share, at))
        });
        let verified = verdict.is_ok();
        let mut entries = vec![Entry {
            time_ms: now_ms,
            actor: hospital_actor(hospital),
            outcome: if verified {
                Outcome::Success
            } else {
                Outcome::MinorFailure
            },
            body: Body::DecryptionShare {
                job: self.cfg.job,
                round: self.cfg.round,
                hospital: hospital.to_owned(),
                share: sha256(share_bytes),
                verified,
                ciphertexts: ranges.to_vec(),
            },
        }];
        match verdict {
            Err(e) => {
                self.invalid_shares.insert(hospital.to_owned());
                let err = RoundError::InvalidShare {
                    hospital: hospital.into(),
                    reason: e.to_string(),
                };
                (entries, Err(err))
            }
            Ok((share, at)) => {
                self.valid_shares
                    .entry(hospital.to_owned())
                    .or_default()
                    .push(Held {
                        ranges: ranges.to_vec(),
                        at,
                        share,
                    });
                let t = self.pk.threshold();
                if self.coverage().iter().any(|&n| n < t) {
                    return (entries, Ok(false));
                }
                match self.finalize(now_ms, credits) {
                    Ok(more) => {
                        entries.extend(more);
                        (entries, Ok(true))
                    }
                    Err(why) => {
                        self.phase = Phase::Failed(why.clone());
                        (entries, Err(RoundError::Finalize(why)))
                    }
                }
            }
        }
    }

    /// The hospitals asked for a decryption share first: the `t` enrolled hospitals with the lowest
    /// key-share indices, or under spread decryption those [`Round::assignment`] gives
    /// ciphertexts. One of them that gave no share by the time the round finalized stalled
    /// decryption (others had to be asked) and is penalised for a missed share. Derived from the
    /// enrollments and the participants alone, so an auditor recomputes it from the ledger.
    pub fn primaries(&self) -> Vec<String> {
        self.assignment().into_iter().map(|(h, _)| h).collect()
    }

    /// Combines the valid shares, decodes, applies FedAvg and prices the round. The new model
    /// replaces the round's base: at millions of parameters each copy is tens of megabytes.
    fn finalize(&mut self, now_ms: u64, credits: &Credits) -> Result<Vec<Entry>, String> {
        let closed = self.closed.as_ref().ok_or("the round has no aggregate")?;
        // Whole shares are pieces of every ciphertext: any t valid shares give the same sums.
        let pieces: Vec<threshold::Piece<'_>> = self
            .valid_shares
            .values()
            .flatten()
            .map(|h| threshold::Piece {
                share: &h.share,
                at: &h.at,
            })
            .collect();
        let plaintexts = threshold::combine_pieces(&self.pk, closed.ciphertexts.len(), &pieces)
            .map_err(|e| format!("combining the shares failed: {e}"))?;
        let weight: u64 = self
            .enrolled
            .iter()
            .filter(|e| self.submissions.contains_key(&e.name))
            .map(|e| e.samples)
            .sum();
        let average = self
            .codec
            .decode_average(&plaintexts, self.cfg.len, weight)
            .map_err(|e| format!("the aggregate does not decode: {e}"))?;
        drop(plaintexts);
        let global = fedavg::apply(&self.global, average)
            .map_err(|e| format!("the averaged update cannot be applied: {e}"))?;

        let mut entries = vec![coordinator_entry(
            now_ms,
            Body::RoundFinalized {
                job: self.cfg.job,
                round: self.cfg.round,
                model_before: ModelDigest::of(&self.global).0,
                model_after: ModelDigest::of(&global).0,
                metrics: Vec::new(),
            },
        )];
        let outcome = RoundOutcome {
            enrolled: self
                .enrolled
                .iter()
                .map(|e| (e.name.clone(), e.samples))
                .collect(),
            submitted: self.submitted(),
            // A hospital whose later share was invalid is paid as invalid, not also as valid.
            shares_valid: self
                .valid_shares()
                .into_iter()
                .filter(|h| !self.invalid_shares.contains(h))
                .collect(),
            shares_invalid: self.invalid_shares(),
            shares_expected: self.primaries(),
        };
        let movements =
            round_movements_capped(&Policy::V1, self.cfg.job, self.cfg.round, &outcome, credits);
        entries.extend(
            movements
                .into_iter()
                .map(|movement| coordinator_entry(now_ms, Body::CreditsMoved { movement })),
        );
        self.phase = Phase::Finalized;
        self.global = Vec::new();
        self.new_global = Some(global);
        Ok(entries)
    }
}
