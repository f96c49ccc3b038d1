//! Auditor replay: re-derive every round from the ledger alone, without trusting the coordinator.
//!
//! [`replay`] walks the records in order and, for every round of every job:
//! - checks the round numbers are contiguous (0, 1, 2, ...), one submission per enrolled hospital,
//!   each signed by the hospital's **trusted** identity key (from the consortium's trust file, not
//!   from the ledger), over its job, round and ciphertext digest;
//! - re-multiplies the submitted ciphertexts (blobs) and compares with the recorded aggregate, and
//!   checks its contributors and their number against the job's minimum;
//! - re-verifies every decryption share's proof against the aggregate and the decryption context
//!   and compares with the recorded verdict; recombines the first `t` valid shares, decodes the
//!   weighted average, re-applies FedAvg to the previous global model (round 0: the statistics) and
//!   compares both model digests;
//! - recomputes the round's credit movements from the policy and the balances before them and
//!   compares with the recorded `CreditsMoved` records; replays every movement;
//! - checks every hospital's evaluation of the round's model (`ModelEvaluated`): an enrolled
//!   hospital, once, signed by its trusted identity key, naming the round's model, with figures a
//!   hospital may report; and recomputes a finished job's summary (its `JobFinished` reason) from
//!   the evaluations of the final model.
//!
//! Every discrepancy names the job, round, record, what was expected and what was found. One
//! finding does not derail the rest: a round whose model cannot be re-derived still counts as that
//! round, and the next rounds start from the re-derived model. When that is not the model the
//! coordinator went on from (its shares did not recombine, or its next round starts elsewhere),
//! later rounds are checked in full except their model ([`RoundReport::model_checked`] says so),
//! so each fault is reported once, where it is.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use fedchain_crypto::aggregate::aggregate;
use fedchain_crypto::djn::{decode_ciphertexts, encode_ciphertexts, Ciphertext};
use fedchain_crypto::keys::PublicKey;
use fedchain_crypto::threshold::{combine_pieces, verify_piece, DecryptionShare, Piece};
use fedchain_ledger::credits::{
    end_movements, round_movements_capped, Credits, Movement, Policy, RoundOutcome,
};
use fedchain_ledger::record::{signature_verifies, Actor, Body, JobStatus, Role};
use fedchain_ledger::store::Store;
use fedchain_ledger::{sha256, Hash, LedgerError};
use fedchain_model_core::{fedavg, ModelDigest};
use fedchain_proto::v1::JobSpec;
use prost::Message;
use serde::Serialize;

use fedchain_protocol::decryption::{self, Ranges};
use fedchain_protocol::{self as protocol, RoundKind, RoundPlan, ValidJob};
use fedchain_protocol::{decryption_context, first_decryptors};

/// A hospital as the auditor trusts it (from `consortium.json` and the trust file, through
/// `fedchain_consortium::AuditorFolder`): its key-share index and identity key.
pub use fedchain_consortium::folder::EnrolledHospital as TrustedHospital;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Discrepancy {
    /// The job.
    pub job: u64,
    /// The round, when the problem belongs to one.
    pub round: Option<u64>,
    /// The record index, when one record is at fault.
    pub record: Option<u64>,
    /// What was checked.
    pub check: String,
    /// What the replay computed or required.
    pub expected: String,
    /// What the ledger holds.
    pub found: String,
}

/// What was verified for one round.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundReport {
    /// The job.
    pub job: u64,
    /// The round (0 is the statistics round).
    pub round: u64,
    /// Submissions whose signature verified.
    pub signatures_verified: usize,
    /// Whether the recomputed aggregate matched the recorded one.
    pub aggregate_matches: bool,
    /// Shares whose proof was re-verified (valid or not, as recorded).
    pub shares_checked: usize,
    /// Whether the recombined, decoded, re-averaged model has the recorded digest.
    pub model_matches: bool,
    /// Whether the model was re-derived at all: false after a round of the same job whose model
    /// could not be re-derived or did not match (the model it started from is then unknown).
    /// Everything else about such a round is still checked.
    pub model_checked: bool,
    /// Credit movements recomputed and found as recorded.
    pub credits_checked: usize,
    /// Hospitals' evaluations of the round's model whose signature, model and figures checked.
    pub evaluations_verified: usize,
    /// The consortium's figures for the round's model (e.g. accuracy, loss), pooled from the
    /// evaluations that verified only, weighted by their rows: what a dashboard may show as fact.
    pub metrics: Vec<(String, f64)>,
    /// Whether the round finalized (false for a round the job failed in, or one in progress).
    pub finalized: bool,
}

/// The replay's verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Records replayed.
    pub records: u64,
    /// Jobs found.
    pub jobs: usize,
    /// Per round, what was verified.
    pub rounds: Vec<RoundReport>,
    /// Jobs cancelled by their researcher (a `JobFinished` record of status cancelled, whose
    /// actor is the job's researcher).
    pub cancelled: usize,
    /// Movements that end a job (deposits returned, the escrow's rest refunded) recomputed and
    /// found as recorded.
    pub end_credits_checked: usize,
    /// Jobs declined by a hospital (a `JobDeclined` record signed by its trusted key, naming the
    /// job's spec, from a hospital not enrolled in it).
    pub declined: usize,
    /// Hospitals' privacy spending in a round (one entry of a `PrivacySpent` record) recomputed
    /// from the job's spec, the declared rows and the rounds taken part in, and found as recorded
    /// and within the job's budget.
    pub privacy_checked: usize,
    /// Everything that does not check out; empty when the ledger is consistent.
    pub discrepancies: Vec<Discrepancy>,
}

impl ReplayReport {
    /// Whether nothing was found.
    pub fn ok(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

struct Member {
    name: String,
    samples: u64,
    share_index: usize,
}

#[derive(Default)]
struct RoundState {
    subs: BTreeMap<String, Hash>,
    aggregate: Option<Vec<Ciphertext>>,
    aggregate_digest: Option<Hash>,
    participants: Vec<String>,
    /// Valid shares in ledger order: hospital, share, the ciphertexts it names and their indices.
    valid: Vec<(String, DecryptionShare, Ranges, Vec<usize>)>,
    invalid: Vec<String>,
    /// The round's `PrivacySpent` record was seen (or its absence reported).
    privacy_recorded: bool,
    report: RoundReport,
}

struct JobReplay {
    /// The spec's digest, as its `JobSubmitted` record names it.
    spec: Hash,
    valid: Option<ValidJob>,
    researcher: String,
    members: Vec<Member>,
    enrollment: Option<protocol::Enrollment>,
    round: u64,
    state: RoundState,
    /// The global model the next round starts from, as re-derived; `None` once it cannot be
    /// known (a round's shares did not recombine, or the coordinator went on from a model other
    /// than the re-derived one): later rounds' models are then not checked (the rest still is).
    global: Option<Vec<f32>>,
    /// The last round's re-derived model differed from its record: the next round shows whether
    /// the coordinator went on from the re-derived model (only the record was wrong) or not.
    diverged: bool,
    finished: bool,
    last_finalized: Option<u64>,
    /// The latest finalized model round and the digests its evaluations may name: the recorded
    /// model, and the re-derived one when it differs (that fault is reported at the round).
    evaluating: Option<(u64, Vec<Hash>)>,
    /// The hospitals' evaluations of that model, by hospital.
    evaluated: BTreeMap<String, protocol::Evaluation>,
    /// Per hospital, its declines recorded so far and the latest reason.
    declines: BTreeMap<String, (u32, String)>,
    /// For a job with differential privacy: the training rounds each hospital took part in,
    /// counted from `RoundClosed` (not from what `PrivacySpent` records say), as the number of
    /// participants of each (distributed noise is accounted for them).
    privacy_rounds: BTreeMap<String, Vec<u64>>,
    /// The round after which the privacy budget stops the job, and the reason its summary
    /// starts with.
    budget_stop: Option<(u64, String)>,
    /// Why no round of the job fits its privacy budget, once that was reported: the job must
    /// run no round at all.
    fits_no_round: Option<String>,
}

/// Whether `valid` shares (at least one) cover each of `count` ciphertexts `t` times: the point
/// at which the coordinator's round finalizes.
fn covered_enough(
    valid: &[(String, DecryptionShare, Ranges, Vec<usize>)],
    count: usize,
    t: usize,
) -> bool {
    let mut times = vec![0usize; count];
    for (.., at) in valid {
        for &k in at {
            if let Some(n) = times.get_mut(k) {
                *n += 1;
            }
        }
    }
    !valid.is_empty() && times.iter().all(|&n| n >= t)
}

fn short(h: &Hash) -> String {
    hex::encode(h)
}

struct Replayer<'a> {
    store: &'a Store,
    pk: &'a PublicKey,
    hospitals: &'a BTreeMap<String, TrustedHospital>,
    jobs: BTreeMap<u64, JobReplay>,
    credits: Credits,
    /// Movements the policy prescribes, not seen yet: (job, round, movement), the round absent
    /// for the movements that end a job.
    expected: VecDeque<(u64, Option<u64>, Movement)>,
    expected_from: u64,
    report: ReplayReport,
}

impl Replayer<'_> {
    fn bad(
        &mut self,
        job: u64,
        round: Option<u64>,
        record: Option<u64>,
        check: &str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) {
        self.report.discrepancies.push(Discrepancy {
            job,
            round,
            record,
            check: check.into(),
            expected: expected.into(),
            found: found.into(),
        });
    }

    fn blob(&self, digest: &Hash) -> Option<Vec<u8>> {
        self.store
            .blob(digest)
            .ok()
            .flatten()
            .filter(|b| sha256(b) == *digest)
    }

    /// The recorded movements that should have followed a round are checked as they come; any
    /// still expected when another kind of record arrives are missing.
    fn flush_expected(&mut self) {
        while let Some((job, round, m)) = self.expected.pop_front() {
            let from = self.expected_from;
            let after = if round.is_some() {
                "RoundFinalized"
            } else {
                "JobFinished"
            };
            self.bad(
                job,
                round,
                Some(from),
                "credit movement prescribed by the policy",
                format!("{m:?}"),
                format!("no such CreditsMoved record after {after}"),
            );
        }
    }

    fn record(&mut self, index: u64, actor: &Actor, body: Body) {
        if !matches!(body, Body::CreditsMoved { .. }) {
            self.flush_expected();
        }
        match body {
            Body::CreditsMoved { movement } => {
                if let Some((job, round, want)) = self.expected.pop_front() {
                    if want == movement {
                        match round {
                            Some(round) => {
                                if let Some(r) = self.round_report(job, round) {
                                    r.credits_checked += 1;
                                }
                            }
                            None => self.report.end_credits_checked += 1,
                        }
                    } else {
                        self.bad(
                            job,
                            round,
                            Some(index),
                            "credit movement prescribed by the policy",
                            format!("{want:?}"),
                            format!("{movement:?}"),
                        );
                    }
                }
                if let Err(e) = self.credits.apply(&movement) {
                    self.bad(
                        0,
                        None,
                        Some(index),
                        "credit movement applies",
                        "a movement the balances allow",
                        e.to_string(),
                    );
                }
            }
            Body::JobSubmitted {
                job,
                spec,
                researcher,
                ..
            } => {
                let valid = match self.blob(&spec) {
                    None => {
                        self.bad(
                            job,
                            None,
                            Some(index),
                            "job spec blob",
                            short(&spec),
                            "missing",
                        );
                        None
                    }
                    Some(bytes) => match JobSpec::decode(bytes.as_slice())
                        .map_err(|e| e.to_string())
                        .and_then(|s| protocol::validate(&s).map_err(|e| e.to_string()))
                    {
                        Ok(v) => Some(v),
                        Err(e) => {
                            self.bad(job, None, Some(index), "job spec", "a valid spec", e);
                            None
                        }
                    },
                };
                self.report.jobs += 1;
                self.jobs.insert(
                    job,
                    JobReplay {
                        spec,
                        valid,
                        researcher,
                        members: Vec::new(),
                        enrollment: None,
                        round: 0,
                        state: RoundState::default(),
                        global: Some(Vec::new()),
                        diverged: false,
                        finished: false,
                        last_finalized: None,
                        evaluating: None,
                        evaluated: BTreeMap::new(),
                        declines: BTreeMap::new(),
                        privacy_rounds: BTreeMap::new(),
                        budget_stop: None,
                        fits_no_round: None,
                    },
                );
            }
            Body::HospitalEnrolled {
                job,
                hospital,
                identity_key,
                samples,
                ..
            } => {
                let trusted = self.hospitals.get(&hospital).cloned();
                match trusted {
                    None => self.bad(
                        job,
                        None,
                        Some(index),
                        "enrolled hospital is in the trust file",
                        "a trusted hospital",
                        hospital.clone(),
                    ),
                    Some(t) if t.identity != identity_key => self.bad(
                        job,
                        None,
                        Some(index),
                        "enrolled identity key",
                        hex::encode(t.identity),
                        hex::encode(identity_key),
                    ),
                    Some(t) => {
                        if let Some(j) = self.jobs.get_mut(&job) {
                            j.members.push(Member {
                                name: hospital,
                                samples,
                                share_index: t.share_index,
                            });
                        }
                    }
                }
            }
            Body::UpdateSubmitted {
                job,
                round,
                hospital,
                ciphertexts,
                signature,
            } => self.submission(index, job, round, hospital, ciphertexts, signature),
            Body::RoundClosed {
                job,
                round,
                participants,
                aggregate,
            } => self.closed(index, job, round, participants, aggregate),
            Body::PrivacySpent {
                job,
                round,
                delta,
                spent,
            } => self.privacy(index, job, round, delta, spent),
            Body::DecryptionShare {
                job,
                round,
                hospital,
                share,
                verified,
                ciphertexts,
            } => self.share(index, job, round, hospital, share, verified, ciphertexts),
            Body::RoundFinalized {
                job,
                round,
                model_before,
                model_after,
                ..
            } => self.finalized(index, job, round, model_before, model_after),
            body @ Body::ModelEvaluated { .. } => self.evaluation(index, body),
            Body::JobFinished {
                job,
                status,
                reason,
            } => {
                let Some(j) = self.jobs.get_mut(&job) else {
                    return;
                };
                if j.finished {
                    self.bad(
                        job,
                        None,
                        Some(index),
                        "a job ends once",
                        "no second JobFinished",
                        format!("{status:?}"),
                    );
                    return;
                }
                let j = self.jobs.get_mut(&job).expect("just found");
                j.finished = true;
                // What ending the job moves, checked as the records that follow it come.
                let hospitals = j.members.iter().map(|m| m.name.as_str());
                self.expected = end_movements(job, &j.researcher, hospitals, &self.credits)
                    .into_iter()
                    .map(|m| (job, None, m))
                    .collect();
                self.expected_from = index;
                let researcher = j.researcher.clone();
                let j = &self.jobs[&job];
                let rounds = match &j.budget_stop {
                    Some((last, _)) => Some(*last),
                    None => j.valid.as_ref().map(|v| u64::from(v.spec.rounds)),
                };
                let done = j.last_finalized;
                let mut summary = protocol::final_summary(j.evaluated.values());
                if let Some((_, why)) = &j.budget_stop {
                    summary = format!("{why}; {summary}");
                }
                if status == JobStatus::Finished && done != rounds {
                    self.bad(
                        job,
                        None,
                        Some(index),
                        "a finished job completed all its rounds",
                        format!("{} rounds", rounds.unwrap_or(0)),
                        format!("last finalized round {done:?}"),
                    );
                } else if status == JobStatus::Finished && reason != summary {
                    self.bad(
                        job,
                        done,
                        Some(index),
                        "final summary recomputed from the hospitals' signed evaluations",
                        summary,
                        reason,
                    );
                } else if status == JobStatus::Cancelled {
                    if actor.role == Role::Researcher && actor.id == researcher {
                        self.report.cancelled += 1;
                    } else {
                        self.bad(
                            job,
                            done,
                            Some(index),
                            "a job is cancelled by the researcher who submitted it",
                            format!("researcher {researcher}"),
                            format!("{:?} {}", actor.role, actor.id),
                        );
                    }
                }
            }
            body @ Body::JobDeclined { .. } => self.declined(index, actor, &body),
            Body::RequestRejected { .. } => {}
        }
    }

    /// A hospital's decline: by that hospital (the record's actor and its signature with its
    /// trusted key), of the job's spec as submitted, while it is not enrolled in the job, with a
    /// reason of at most `MAX_DECLINE_REASON` bytes.
    fn declined(&mut self, index: u64, actor: &Actor, body: &Body) {
        let Body::JobDeclined {
            job,
            spec,
            hospital,
            reason,
            ..
        } = body
        else {
            return;
        };
        let (job, spec, hospital, reason) = (*job, *spec, hospital.clone(), reason.clone());
        if !self.known_job(index, job, 0) {
            return;
        }
        let j = &self.jobs[&job];
        let (want_spec, enrolled) = (j.spec, j.members.iter().any(|m| m.name == hospital));
        let (finished, earlier) = (j.finished, j.declines.get(&hospital).cloned());
        let trusted = self.hospitals.get(&hospital).map(|t| t.identity);
        let signed = body
            .hospital_signature()
            .is_some_and(|(_, message, signature)| {
                trusted.is_some_and(|key| signature_verifies(&key, &message, signature))
            });
        let by = actor.role == Role::Hospital && actor.id == hospital;
        let problem = if !signed {
            Some((
                "decline signature by the hospital's trusted identity key",
                format!("a signature by {hospital}"),
                "one that does not verify".to_string(),
            ))
        } else if !by {
            Some((
                "a decline is recorded as the declining hospital's act",
                format!("hospital {hospital}"),
                format!("{:?} {}", actor.role, actor.id),
            ))
        } else if spec != want_spec {
            Some((
                "a decline names the job's spec",
                short(&want_spec),
                short(&spec),
            ))
        } else if finished {
            Some((
                "no record after JobFinished",
                "none".to_string(),
                format!("a decline by {hospital}"),
            ))
        } else if earlier.as_ref().is_some_and(|(_, r)| *r == reason) {
            Some((
                "a decline is recorded once per reason",
                "another reason".to_string(),
                format!("{hospital}'s previous reason again"),
            ))
        } else if earlier
            .as_ref()
            .is_some_and(|(n, _)| *n >= protocol::MAX_DECLINES)
        {
            Some((
                "a hospital's declines of a job are few",
                format!("at most {}", protocol::MAX_DECLINES),
                format!("a decline by {hospital} after that"),
            ))
        } else if enrolled {
            Some((
                "a hospital declines only a job it is not enrolled in",
                format!("{hospital} not enrolled"),
                "enrolled".to_string(),
            ))
        } else if reason.len() > fedchain_ledger::record::MAX_DECLINE_REASON {
            Some((
                "a decline's reason is short",
                format!(
                    "at most {} bytes",
                    fedchain_ledger::record::MAX_DECLINE_REASON
                ),
                format!("{} bytes", reason.len()),
            ))
        } else {
            None
        };
        match problem {
            Some((check, expected, found)) => {
                self.bad(job, None, Some(index), check, expected, found)
            }
            None => {
                self.report.declined += 1;
                if let Some(j) = self.jobs.get_mut(&job) {
                    let d = j.declines.entry(hospital).or_insert((0, String::new()));
                    *d = (d.0 + 1, reason);
                }
            }
        }
    }

    /// Whether `job` was submitted; a record of an unknown job is a discrepancy.
    fn known_job(&mut self, index: u64, job: u64, round: u64) -> bool {
        let known = self.jobs.contains_key(&job);
        if !known {
            self.bad(
                job,
                Some(round),
                Some(index),
                "known job",
                "a JobSubmitted record",
                "none",
            );
        }
        known
    }

    fn job_round(&mut self, index: u64, job: u64, round: u64) -> bool {
        if !self.known_job(index, job, round) {
            return false;
        }
        let j = &self.jobs[&job];
        if j.fits_no_round.is_some() {
            // Reported once, at the job's first round record.
            return false;
        }
        if j.finished {
            self.bad(
                job,
                Some(round),
                Some(index),
                "job still running",
                "no record after JobFinished",
                "a round record",
            );
            return false;
        }
        if let Some((last, why)) = j.budget_stop.as_ref().filter(|(last, _)| round > *last) {
            let (last, why) = (*last, why.clone());
            self.bad(
                job,
                Some(round),
                Some(index),
                "no round past the job's privacy budget",
                format!("no round after round {last} ({why})"),
                format!("a record of round {round}"),
            );
            return false;
        }
        if j.round != round {
            let expected = j.round;
            self.bad(
                job,
                Some(round),
                Some(index),
                "contiguous rounds",
                format!("round {expected}"),
                format!("round {round}"),
            );
            return false;
        }
        true
    }

    fn submission(
        &mut self,
        index: u64,
        job: u64,
        round: u64,
        hospital: String,
        digest: Hash,
        signature: [u8; 64],
    ) {
        if !self.job_round(index, job, round) {
            return;
        }
        let trusted = self.hospitals.get(&hospital).map(|t| t.identity);
        let j = self.jobs.get_mut(&job).expect("checked");
        if j.enrollment.is_none() {
            j.enrollment = Some(protocol::Enrollment::of(
                j.members.iter().map(|m| m.samples),
            ));
            // The coordinator's rule: a private job none of whose rounds fits its budget runs no
            // round, not even round 0.
            let over = j.valid.as_ref().and_then(|v| {
                let p = protocol::privacy::JobPrivacy::of(&v.spec)?;
                let who = j.members.iter().map(|m| protocol::privacy::Participant {
                    hospital: &m.name,
                    rows: m.samples,
                    rounds: 0,
                });
                protocol::privacy::next_round_fits(&p, &v.spec, who).err()
            });
            if let Some(over) = over {
                j.fits_no_round = Some(over.to_string());
                self.bad(
                    job,
                    Some(round),
                    Some(index),
                    "no round of a job none of whose rounds fits its privacy budget",
                    format!("no round ({over})"),
                    format!("a submission for round {round}"),
                );
                return;
            }
        }
        let enrolled = j.members.iter().any(|m| m.name == hospital);
        let duplicate = j.state.subs.contains_key(&hospital);
        let message = Body::submission_message(job, round, &hospital, &digest);
        let signed = trusted.is_some_and(|key| signature_verifies(&key, &message, &signature));
        if !enrolled {
            self.bad(
                job,
                Some(round),
                Some(index),
                "submitter enrolled",
                "an enrolled hospital",
                hospital,
            );
        } else if duplicate {
            self.bad(
                job,
                Some(round),
                Some(index),
                "one submission per hospital per round",
                "one",
                format!("a second from {hospital}"),
            );
        } else if !signed {
            self.bad(
                job,
                Some(round),
                Some(index),
                "submission signature by the hospital's trusted identity key",
                "a valid Ed25519 signature",
                format!("an invalid signature for {hospital}"),
            );
        } else {
            j.state.subs.insert(hospital, digest);
            j.state.report.signatures_verified += 1;
        }
    }

    /// A hospital's evaluation: of the job's latest finalized model, by an enrolled hospital,
    /// once, signed by its trusted identity key, with figures a hospital may report.
    fn evaluation(&mut self, index: u64, body: Body) {
        let signed = body
            .hospital_signature()
            .is_some_and(|(hospital, message, signature)| {
                self.hospitals
                    .get(hospital)
                    .is_some_and(|t| signature_verifies(&t.identity, &message, signature))
            });
        let Body::ModelEvaluated {
            job,
            round,
            hospital,
            model,
            rows,
            metrics,
            ..
        } = body
        else {
            return;
        };
        let report = (rows, metrics);
        if !self.known_job(index, job, round) {
            return;
        }
        let j = &self.jobs[&job];
        let latest = j.evaluating.as_ref().map(|(r, _)| *r);
        let models = j
            .evaluating
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        let enrolled = j.members.iter().any(|m| m.name == hospital);
        let duplicate = j.evaluated.contains_key(&hospital);
        let finished = j.finished;
        let fault = if finished {
            Some((
                "job still running",
                "no record after JobFinished".to_string(),
                "an evaluation".to_string(),
            ))
        } else if latest != Some(round) {
            Some((
                "evaluation of the latest finalized model",
                format!("round {latest:?}"),
                format!("round {round}"),
            ))
        } else if !enrolled {
            Some((
                "evaluator enrolled",
                "an enrolled hospital".to_string(),
                hospital.clone(),
            ))
        } else if !signed {
            Some((
                "evaluation signature by the hospital's trusted identity key",
                "a valid Ed25519 signature".to_string(),
                format!("an invalid signature for {hospital}"),
            ))
        } else if duplicate {
            Some((
                "one evaluation per hospital per model",
                "one".to_string(),
                format!("a second from {hospital}"),
            ))
        } else if !models.contains(&model) {
            Some((
                "evaluated model is the round's model",
                models.iter().map(short).collect::<Vec<_>>().join(" or "),
                short(&model),
            ))
        } else if let Err(e) = protocol::validate_evaluation(report.0, &report.1) {
            Some((
                "evaluation figures",
                "rows and metrics a hospital may report".to_string(),
                e.to_string(),
            ))
        } else {
            None
        };
        if let Some((check, expected, found)) = fault {
            self.bad(job, Some(round), Some(index), check, expected, found);
            return;
        }
        let pooled = match self.jobs.get_mut(&job) {
            Some(j) => {
                j.evaluated.insert(hospital, report);
                protocol::pooled_metrics(j.evaluated.values())
            }
            None => Vec::new(),
        };
        if let Some(r) = self.round_report(job, round) {
            r.evaluations_verified += 1;
            r.metrics = pooled;
        }
    }

    /// The report of a finalized round, to count the checks of the records that follow it.
    fn round_report(&mut self, job: u64, round: u64) -> Option<&mut RoundReport> {
        self.report
            .rounds
            .iter_mut()
            .rev()
            .find(|r| r.job == job && r.round == round)
    }

    fn round_plan(j: &JobReplay, round: u64) -> Option<RoundPlan> {
        Some(RoundPlan::new(j.valid.as_ref()?, round, j.enrollment?))
    }

    fn closed(
        &mut self,
        index: u64,
        job: u64,
        round: u64,
        participants: Vec<String>,
        digest: Hash,
    ) {
        if !self.job_round(index, job, round) {
            return;
        }
        let j = self.jobs.get_mut(&job).expect("checked");
        // A training round of a job with privacy counts for its participants, whatever its
        // `PrivacySpent` record says (or whether there is one): figures are recomputed from this.
        if round > 0 && j.valid.as_ref().is_some_and(|v| v.spec.privacy.is_some()) {
            for h in &participants {
                j.privacy_rounds
                    .entry(h.clone())
                    .or_default()
                    .push(participants.len() as u64);
            }
        }
        let submitters: Vec<String> = j.state.subs.keys().cloned().collect();
        let min = j
            .valid
            .as_ref()
            .map(|v| v.spec.min_participants as usize)
            .unwrap_or(2);
        let digests: Vec<Hash> = j.state.subs.values().copied().collect();
        let Some(plan) = Self::round_plan(j, round) else {
            self.bad(
                job,
                Some(round),
                Some(index),
                "round parameters",
                "a valid job spec",
                "none",
            );
            return;
        };
        let len = plan.len;
        if participants != submitters {
            self.bad(
                job,
                Some(round),
                Some(index),
                "aggregate contributors are the submitters",
                format!("{submitters:?}"),
                format!("{participants:?}"),
            );
        }
        if participants.len() < min.max(2) {
            self.bad(
                job,
                Some(round),
                Some(index),
                "contributors at least the job's minimum",
                format!("{}", min.max(2)),
                format!("{}", participants.len()),
            );
        }
        // The plan's codec: the job's quantization, or its distributed noise.
        let codec = match plan.codec(self.pk) {
            Ok(c) => c,
            Err(e) => {
                self.bad(
                    job,
                    Some(round),
                    Some(index),
                    "round codec",
                    "a valid codec",
                    e.to_string(),
                );
                return;
            }
        };
        let expected = codec.ciphertexts_for(len);
        let mut vectors = Vec::new();
        for d in &digests {
            match self
                .blob(d)
                .map(|b| decode_ciphertexts(self.pk, &b, Some(expected)))
            {
                Some(Ok(v)) => vectors.push(v),
                Some(Err(e)) => {
                    self.bad(
                        job,
                        Some(round),
                        Some(index),
                        "submitted ciphertexts decode",
                        format!("{expected} valid ciphertexts"),
                        e.to_string(),
                    );
                    return;
                }
                None => {
                    self.bad(
                        job,
                        Some(round),
                        Some(index),
                        "submitted ciphertexts present",
                        short(d),
                        "missing or altered blob",
                    );
                    return;
                }
            }
        }
        let product = match aggregate(self.pk, &vectors) {
            Ok(p) => p,
            Err(e) => {
                self.bad(
                    job,
                    Some(round),
                    Some(index),
                    "aggregation",
                    "a product",
                    e.to_string(),
                );
                return;
            }
        };
        let rebuilt = sha256(&encode_ciphertexts(self.pk, &product));
        let matches = rebuilt == digest;
        if !matches {
            self.bad(
                job,
                Some(round),
                Some(index),
                "aggregate re-multiplied from the submissions",
                short(&rebuilt),
                short(&digest),
            );
        }
        let j = self.jobs.get_mut(&job).expect("checked");
        j.state.aggregate = Some(product);
        j.state.aggregate_digest = Some(digest);
        j.state.participants = participants;
        j.state.report.aggregate_matches = matches;
    }

    #[allow(clippy::too_many_arguments)] // the record's fields, as the other record handlers take them
    fn share(
        &mut self,
        index: u64,
        job: u64,
        round: u64,
        hospital: String,
        digest: Hash,
        verified: bool,
        ranges: Ranges,
    ) {
        if !self.job_round(index, job, round) {
            return;
        }
        let j = self.jobs.get_mut(&job).expect("checked");
        let private = j.valid.as_ref().is_some_and(|v| v.spec.privacy.is_some());
        if private && round > 0 && !j.state.privacy_recorded {
            j.state.privacy_recorded = true;
            self.bad(
                job,
                Some(round),
                Some(index),
                "privacy spent recorded before the round is decrypted",
                "a PrivacySpent record after RoundClosed",
                "a decryption share",
            );
        }
        let j = self.jobs.get(&job).expect("checked");
        let (Some(agg), Some(agg_digest)) = (j.state.aggregate.clone(), j.state.aggregate_digest)
        else {
            self.bad(
                job,
                Some(round),
                Some(index),
                "share follows RoundClosed",
                "an aggregate",
                "none",
            );
            return;
        };
        let party = j
            .members
            .iter()
            .find(|m| m.name == hospital)
            .map(|m| m.share_index);
        let context = decryption_context(job, round, &agg_digest);
        let Some(bytes) = self.blob(&digest) else {
            self.bad(
                job,
                Some(round),
                Some(index),
                "decryption share present",
                short(&digest),
                "missing or altered blob",
            );
            return;
        };
        // What the coordinator's round refuses before looking at a share (it is then not
        // recorded as one): ranges the job does not take, or a second share of a ciphertext.
        let spread = j.valid.as_ref().is_some_and(|v| v.spec.spread_decryption);
        let refusal = if !spread && !ranges.is_empty() {
            Some("ciphertext ranges in a job whose shares decrypt the whole aggregate".to_string())
        } else if let Err(e) = decryption::check_ranges(&ranges, agg.len() as u64) {
            Some(e.to_string())
        } else if j.state.invalid.contains(&hospital)
            || j.state
                .valid
                .iter()
                .any(|(h, _, r, _)| *h == hospital && decryption::overlap(r, &ranges))
        {
            Some(format!(
                "a second share from {hospital} of the same ciphertexts"
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.bad(
                job,
                Some(round),
                Some(index),
                "a decryption share the round accepts",
                "a share of ciphertexts the hospital had not decrypted, as the job's rule allows",
                why,
            );
            return;
        }
        // The round finalizes at the share that gives every ciphertext t valid shares, and takes
        // none after it: a later share was asked for nothing (and is paid as if it were needed).
        let j = self.jobs.get(&job).expect("checked");
        if covered_enough(&j.state.valid, agg.len(), self.pk.threshold()) {
            self.bad(
                job,
                Some(round),
                Some(index),
                "decryption shares stop once every ciphertext has t valid shares",
                "RoundFinalized at the share that completed them",
                format!("another share, from {hospital}"),
            );
        }
        let at = decryption::indices(&ranges, agg.len());
        let checked = DecryptionShare::from_bytes(self.pk, &bytes, at.len()).and_then(|s| {
            if Some(s.party()) != party {
                return Err(fedchain_crypto::CryptoError::InvalidParameter(format!(
                    "share of party {} from {hospital}",
                    s.party()
                )));
            }
            let piece = Piece { share: &s, at: &at };
            verify_piece(self.pk, &agg, piece, &context).map(|()| s)
        });
        let ok = checked.is_ok();
        if ok != verified {
            self.bad(
                job,
                Some(round),
                Some(index),
                "decryption share verdict",
                format!("verified = {ok}"),
                format!("verified = {verified}"),
            );
        }
        let j = self.jobs.get_mut(&job).expect("checked");
        j.state.report.shares_checked += 1;
        match checked {
            Ok(s) => j.state.valid.push((hospital, s, ranges, at)),
            Err(_) => j.state.invalid.push(hospital),
        }
    }

    fn finalized(&mut self, index: u64, job: u64, round: u64, before: Hash, after: Hash) {
        if !self.job_round(index, job, round) {
            return;
        }
        let threshold = self.pk.threshold();
        let j = self.jobs.get(&job).expect("checked");
        // The hospitals asked to decrypt first (the coordinator's rule, derived here from the
        // enrollments and the participants): the t enrolled ones with the lowest key-share
        // indices, or under spread decryption those the spread gives ciphertexts.
        let members = j.members.iter().map(|m| (m.name.as_str(), m.share_index));
        let primaries = if j.valid.as_ref().is_some_and(|v| v.spec.spread_decryption) {
            let decryptors =
                decryption::spread_decryptors(members, &j.state.participants, threshold);
            let count = j.state.aggregate.as_ref().map_or(0, Vec::len) as u64;
            decryption::spread(count, &decryptors, threshold)
                .into_iter()
                .map(|(h, _)| h)
                .collect()
        } else {
            first_decryptors(members, threshold)
        };
        // A hospital whose later share was invalid is paid as invalid, not also as valid.
        let shares_valid: BTreeSet<String> = j
            .state
            .valid
            .iter()
            .map(|(h, ..)| h.clone())
            .filter(|h| !j.state.invalid.contains(h))
            .collect();
        let outcome = RoundOutcome {
            enrolled: j
                .members
                .iter()
                .map(|m| (m.name.clone(), m.samples))
                .collect(),
            submitted: j.state.subs.keys().cloned().collect(),
            shares_valid: shares_valid.into_iter().collect(),
            shares_invalid: j.state.invalid.clone(),
            shares_expected: primaries,
        };
        // Round 0 (statistics) starts from nothing; later rounds from the previous model, unless
        // an earlier round's model could not be re-derived.
        let plan = j
            .valid
            .as_ref()
            .zip(j.enrollment)
            .map(|(v, w)| RoundPlan::new(v, round, w));
        let previous = match (&j.global, plan) {
            (_, None) => None,
            (_, Some(p)) if p.kind == RoundKind::Statistics => Some((p.base(&[]), p)),
            (Some(g), Some(p)) => Some((p.base(g), p)),
            (None, Some(_)) => None,
        };
        let diverged = j.diverged;
        let previous = previous.filter(|(previous, _)| {
            let same = ModelDigest::of(previous).0 == before;
            if !same && !diverged {
                self.bad(
                    job,
                    Some(round),
                    Some(index),
                    "model before the round",
                    short(&ModelDigest::of(previous).0),
                    short(&before),
                );
            }
            // After a round whose model differed (already reported), the coordinator went on
            // from a model the replay cannot reproduce: do not report the same fault again.
            same || !diverged
        });
        let model = previous.map(|(previous, plan)| self.rederive(job, &previous, &plan));
        let (checked, matches, new) = match model {
            None => (false, false, None),
            Some(Err(e)) => {
                self.bad(
                    job,
                    Some(round),
                    Some(index),
                    "recombination of the valid shares",
                    "a decodable average",
                    e,
                );
                (true, false, None)
            }
            Some(Ok(new)) => {
                let digest = ModelDigest::of(&new).0;
                if digest != after {
                    self.bad(
                        job,
                        Some(round),
                        Some(index),
                        "model after the round (recombined, decoded, FedAvg re-applied)",
                        short(&digest),
                        short(&after),
                    );
                }
                (true, digest == after, Some(new))
            }
        };
        // The policy's movements for this round, against the balances before them: they depend
        // on who took part, not on the model, so they are checked either way.
        let movements = round_movements_capped(&Policy::V1, job, round, &outcome, &self.credits);
        self.expected = movements
            .into_iter()
            .map(|m| (job, Some(round), m))
            .collect();
        self.expected_from = index;
        let j = self.jobs.get_mut(&job).expect("checked");
        let mut report = std::mem::take(&mut j.state).report;
        report.job = job;
        report.round = round;
        report.model_matches = matches;
        report.model_checked = checked;
        report.finalized = true;
        j.evaluated.clear();
        if round == 0 {
            j.global = j.valid.as_ref().map(protocol::starting_model);
            j.diverged = false;
            j.evaluating = None;
        } else {
            let mut models = vec![after];
            models.extend(
                new.as_ref()
                    .map(|m| ModelDigest::of(m).0)
                    .filter(|d| *d != after),
            );
            j.evaluating = Some((round, models));
            j.diverged = new.is_some() && !matches;
            j.global = new;
        }
        j.round = round + 1;
        j.last_finalized = Some(round);
        // The coordinator's rule: the next round opens only if every enrolled hospital could take
        // it within the job's budget.
        if let Some((v, privacy)) = j
            .valid
            .as_ref()
            .and_then(|v| Some((v, protocol::privacy::JobPrivacy::of(&v.spec)?)))
        {
            let rounds = u64::from(v.spec.rounds);
            let who = j.members.iter().map(|m| protocol::privacy::Participant {
                hospital: &m.name,
                rows: m.samples,
                rounds: j.privacy_rounds.get(&m.name).map_or(0, |r| r.len() as u64),
            });
            if round < rounds {
                if let Err(over) = protocol::privacy::next_round_fits(&privacy, &v.spec, who) {
                    let why = protocol::privacy::budget_stop_reason(round, rounds, &over);
                    j.budget_stop = Some((round, why));
                }
            }
        }
        // The report of the next round starts empty; keep this one.
        j.state.report = RoundReport {
            job,
            round: round + 1,
            ..RoundReport::default()
        };
        self.report.rounds.push(report);
    }

    /// A round's `PrivacySpent`: right after its `RoundClosed`, for a job with privacy, naming
    /// the round's participants, each entry recomputed from the spec, the declared rows and the
    /// rounds the hospital took part in, and within the job's budget.
    fn privacy(
        &mut self,
        index: u64,
        job: u64,
        round: u64,
        delta: f64,
        spent: Vec<fedchain_ledger::record::PrivacySpend>,
    ) {
        if !self.job_round(index, job, round) {
            return;
        }
        let j = self.jobs.get(&job).expect("checked");
        let Some((spec, privacy)) = j
            .valid
            .as_ref()
            .and_then(|v| Some((v.spec.clone(), protocol::privacy::JobPrivacy::of(&v.spec)?)))
        else {
            self.bad(
                job,
                Some(round),
                Some(index),
                "privacy spent by a job with privacy",
                "a job spec with privacy",
                "a spec without",
            );
            return;
        };
        let fresh = round > 0
            && j.state.aggregate_digest.is_some()
            && !j.state.privacy_recorded
            && j.state.valid.is_empty()
            && j.state.invalid.is_empty();
        if !fresh {
            self.bad(
                job,
                Some(round),
                Some(index),
                "privacy spent recorded once, right after a training round closes",
                "one PrivacySpent between RoundClosed and the first share",
                "another place",
            );
            return;
        }
        let named: Vec<String> = spent.iter().map(|s| s.hospital.clone()).collect();
        let participants = j.state.participants.clone();
        let rows: BTreeMap<String, u64> = j
            .members
            .iter()
            .map(|m| (m.name.clone(), m.samples))
            .collect();
        let before = j.privacy_rounds.clone();
        if named != participants {
            self.bad(
                job,
                Some(round),
                Some(index),
                "privacy spent by the round's participants",
                format!("{participants:?}"),
                format!("{named:?}"),
            );
        }
        if delta != privacy.delta {
            self.bad(
                job,
                Some(round),
                Some(index),
                "the job's delta",
                privacy.delta.to_string(),
                delta.to_string(),
            );
        }
        for s in &spent {
            let Some(&n) = rows.get(&s.hospital) else {
                continue;
            };
            let history = before.get(&s.hospital).cloned().unwrap_or_default();
            let rounds = history.len() as u64;
            let spend = privacy.spend_in(&spec, n, &history);
            let want = match &spend {
                Ok(x) => format!(
                    "rate {}, noise {}, {} steps, {rounds} rounds, epsilon {}",
                    x.mechanism.sampling_rate, x.noise_multiplier, x.mechanism.steps, x.epsilon
                ),
                Err(e) => format!("{rounds} rounds, figures the accountant computes ({e})"),
            };
            let found = format!(
                "rate {}, noise {}, {} steps, {} rounds, epsilon {}",
                s.sampling_rate, s.noise_multiplier, s.steps, s.rounds, s.epsilon
            );
            let same = spend.as_ref().is_ok_and(|x| {
                protocol::privacy::same_epsilon(s.epsilon, x.epsilon)
                    && protocol::privacy::same_epsilon(s.noise_multiplier, x.noise_multiplier)
                    && protocol::privacy::same_epsilon(s.sampling_rate, x.mechanism.sampling_rate)
                    && s.steps == x.mechanism.steps
                    && s.rounds == rounds
            });
            if !same {
                self.bad(
                    job,
                    Some(round),
                    Some(index),
                    &format!("privacy spent by {} recomputed", s.hospital),
                    want,
                    found,
                );
            } else if s.epsilon > privacy.epsilon {
                self.bad(
                    job,
                    Some(round),
                    Some(index),
                    &format!("privacy spent by {} within the job's budget", s.hospital),
                    format!("epsilon at most {}", privacy.epsilon),
                    format!("epsilon {}", s.epsilon),
                );
            } else {
                self.report.privacy_checked += 1;
            }
        }
        let j = self.jobs.get_mut(&job).expect("checked");
        j.state.privacy_recorded = true;
    }

    /// Recombines the round's first `t` valid shares, decodes the weighted average and applies it
    /// to `previous`.
    fn rederive(&self, job: u64, previous: &[f32], plan: &RoundPlan) -> Result<Vec<f32>, String> {
        let j = &self.jobs[&job];
        let weight: u64 = j
            .members
            .iter()
            .filter(|m| j.state.participants.contains(&m.name))
            .map(|m| m.samples)
            .sum();
        let n = j.state.aggregate.as_ref().map(Vec::len).unwrap_or(0);
        let codec = plan.codec(self.pk).map_err(|e| e.to_string())?;
        // Whole shares are pieces of every ciphertext, as the round combines them.
        let pieces: Vec<Piece<'_>> = j
            .state
            .valid
            .iter()
            .map(|(_, share, _, at)| Piece { share, at })
            .collect();
        let plain = combine_pieces(self.pk, n, &pieces).map_err(|e| e.to_string())?;
        let avg = codec
            .decode_average(&plain, plan.len, weight)
            .map_err(|e| e.to_string())?;
        fedavg::apply(previous, avg).map_err(|e| e.to_string())
    }
}

/// Replays the ledger in `store`. `pk` is the consortium's public key and `hospitals` the
/// hospitals the auditor trusts (names, key-share indices, identity keys), both from the
/// consortium's public files, never from the ledger.
pub fn replay(
    store: &Store,
    pk: &PublicKey,
    hospitals: &BTreeMap<String, TrustedHospital>,
) -> Result<ReplayReport, LedgerError> {
    let mut r = Replayer {
        store,
        pk,
        hospitals,
        jobs: BTreeMap::new(),
        credits: Credits::new(),
        expected: VecDeque::new(),
        expected_from: 0,
        report: ReplayReport::default(),
    };
    for index in 0..store.len() {
        let (record, _) = store.record(index)?;
        r.record(index, &record.actor, record.body);
    }
    r.flush_expected();
    r.report.records = store.len();
    Ok(r.report)
}
