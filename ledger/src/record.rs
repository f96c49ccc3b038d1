//! Ledger records: one per event of a job, with ISO 27789 audit fields.
//!
//! Encoding: canonical JSON, the object's fields in declaration order, no whitespace, integers as
//! numbers, digests and keys as lower-case hex, with `"v": 1` first. JSON keeps the log readable by
//! an auditor with nothing but a text viewer, and serde's output for these types is deterministic
//! (no maps, no floats except metrics, which are finite and printed in shortest round-trip form).
//! **The bytes stored are the bytes hashed:** a record is never re-encoded to be verified; instead
//! [`Record::decode`] re-encodes what it parsed and refuses bytes that are not the one canonical
//! encoding, so two different byte strings can never claim to be the same record.
//!
//! Every record carries the ISO 27789 / FHIR AuditEvent fields: event id (its index in the log),
//! action code, time, actor identity and role, purpose of use, outcome, and the object acted on —
//! identifiers and digests only, never patient data.

use crate::credits::Movement;
use crate::error::{LedgerError, Result};
use crate::Hash;
use serde::{Deserialize, Serialize};

/// Current record encoding version.
pub const VERSION: u32 = 1;

/// ISO 27789 / FHIR AuditEvent action codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Create.
    C,
    /// Read.
    R,
    /// Update.
    U,
    /// Delete.
    D,
    /// Execute.
    E,
}

/// Who acts, in which role: the one list of roles, which records carry and certificates name
/// (`fedchain-consortium` writes it into them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The coordinator: the gRPC server, the log operator.
    Coordinator,
    /// A hospital: trains on its own data, holds a key share, cosigns checkpoints.
    Hospital,
    /// A researcher: submits jobs and receives the final model.
    Researcher,
    /// An auditor: reads the ledger.
    Auditor,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: [Role; 4] = [
        Role::Coordinator,
        Role::Hospital,
        Role::Researcher,
        Role::Auditor,
    ];

    /// The lowercase name used in records, certificates, files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Hospital => "hospital",
            Role::Researcher => "researcher",
            Role::Auditor => "auditor",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}"))
    }
}

/// FHIR AuditEvent outcome codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 0: success.
    Success,
    /// 4: minor failure (the request was refused, nothing changed).
    MinorFailure,
    /// 8: serious failure.
    SeriousFailure,
}

/// The actor of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Identity (certificate subject or key name).
    pub id: String,
    /// Role.
    pub role: Role,
}

/// Final state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Every round completed.
    Finished,
    /// Stopped early.
    Failed,
    /// Stopped by the researcher who submitted it (the record's actor).
    Cancelled,
}

/// What happened: one variant per kind of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    /// A researcher submitted a job.
    JobSubmitted {
        /// Job id.
        job: u64,
        /// SHA-256 of the job spec blob.
        #[serde(with = "hex32")]
        spec: Hash,
        /// The researcher.
        researcher: String,
        /// Credits the researcher puts in escrow.
        budget: u64,
    },
    /// A hospital enrolled in a job.
    HospitalEnrolled {
        /// Job id.
        job: u64,
        /// The hospital.
        hospital: String,
        /// Its Ed25519 identity key (signs its submissions).
        #[serde(with = "hex32")]
        identity_key: [u8; 32],
        /// Declared number of training rows (FedAvg weight).
        samples: u64,
        /// Credits posted as deposit.
        deposit: u64,
    },
    /// A hospital submitted its encrypted update for a round.
    UpdateSubmitted {
        /// Job id.
        job: u64,
        /// Round number (from 1).
        round: u64,
        /// The hospital.
        hospital: String,
        /// SHA-256 of the ciphertext vector blob.
        #[serde(with = "hex32")]
        ciphertexts: Hash,
        /// Ed25519 signature by the hospital's identity key over
        /// [`Body::submission_message`].
        #[serde(with = "hex64")]
        signature: [u8; 64],
    },
    /// A round stopped accepting submissions and its aggregate was computed.
    RoundClosed {
        /// Job id.
        job: u64,
        /// Round number.
        round: u64,
        /// Hospitals whose submissions were aggregated, sorted.
        participants: Vec<String>,
        /// SHA-256 of the aggregate ciphertext vector blob.
        #[serde(with = "hex32")]
        aggregate: Hash,
    },
    /// What a round of a job with differential privacy spends, per participant, written with
    /// its `RoundClosed` and so before any share decrypts the round: the mechanism each ran and
    /// the epsilon it has spent on the job so far. Anyone recomputes it from the job's spec, the
    /// declared rows and the rounds each took part in.
    PrivacySpent {
        /// Job id.
        job: u64,
        /// Round number (from 1).
        round: u64,
        /// The delta of every epsilon below.
        delta: f64,
        /// One per participant of the round, sorted by hospital.
        spent: Vec<PrivacySpend>,
    },
    /// A hospital's decryption share of a round's aggregate.
    DecryptionShare {
        /// Job id.
        job: u64,
        /// Round number.
        round: u64,
        /// The hospital.
        hospital: String,
        /// SHA-256 of the share blob.
        #[serde(with = "hex32")]
        share: Hash,
        /// Whether its proof verified.
        verified: bool,
        /// The ciphertexts it decrypts, as `[start, end)` index ranges (spread decryption);
        /// absent for a share of the whole aggregate.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ciphertexts: Vec<[u64; 2]>,
    },
    /// A round's new global model.
    RoundFinalized {
        /// Job id.
        job: u64,
        /// Round number.
        round: u64,
        /// Digest of the global model before the round.
        #[serde(with = "hex32")]
        model_before: Hash,
        /// Digest of the global model after the round.
        #[serde(with = "hex32")]
        model_after: Hash,
        /// Aggregate metrics reported for the new model, by name (sorted), e.g. accuracy.
        metrics: Vec<(String, f64)>,
    },
    /// A hospital's evaluation of a round's global model on its own held-out rows: the row count
    /// and mean metrics only, signed by the hospital so that no one else can put figures in its
    /// name.
    ModelEvaluated {
        /// Job id.
        job: u64,
        /// Round whose model was evaluated (from 1).
        round: u64,
        /// The hospital.
        hospital: String,
        /// Digest of the model evaluated.
        #[serde(with = "hex32")]
        model: Hash,
        /// Held-out rows evaluated: the weight of this report in the consortium's figure.
        rows: u64,
        /// Means over those rows, by name (sorted, unique), e.g. accuracy and loss.
        metrics: Vec<(String, f64)>,
        /// Ed25519 signature by the hospital's identity key over
        /// [`Body::evaluation_message`].
        #[serde(with = "hex64")]
        signature: [u8; 64],
    },
    /// Credits moved.
    CreditsMoved {
        /// The movement.
        movement: Movement,
    },
    /// A job ended.
    JobFinished {
        /// Job id.
        job: u64,
        /// How.
        status: JobStatus,
        /// Why (for failures), or a summary.
        reason: String,
    },
    /// A hospital declined a job it was offered, saying why (its data does not fit the schema, its
    /// policy refuses TorchScript modules, the module calls a refused operator). Signed by the
    /// hospital, so no one else can decline in its name.
    JobDeclined {
        /// Job id.
        job: u64,
        /// SHA-256 of the job spec the hospital was offered (the `JobSubmitted` record's).
        #[serde(with = "hex32")]
        spec: Hash,
        /// The hospital.
        hospital: String,
        /// Why, in the hospital's words (at most [`MAX_DECLINE_REASON`] bytes).
        reason: String,
        /// Ed25519 signature by the hospital's identity key over [`Body::decline_message`].
        #[serde(with = "hex64")]
        signature: [u8; 64],
    },
    /// A request was refused.
    RequestRejected {
        /// What was asked for (operation and object).
        request: String,
        /// Why it was refused.
        reason: String,
    },
}

/// One hospital's privacy spending in a round ([`Body::PrivacySpent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySpend {
    /// The hospital.
    pub hospital: String,
    /// Probability that a row was in a step's sample.
    pub sampling_rate: f64,
    /// Its noise standard deviation over the clipping norm.
    pub noise_multiplier: f64,
    /// DP-SGD steps it took in the round.
    pub steps: u64,
    /// Rounds of the job it took part in, this one included.
    pub rounds: u64,
    /// Epsilon it has spent on the job after this round.
    pub epsilon: f64,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Encoding version ([`VERSION`]).
    pub v: u32,
    /// Event id: the record's index in the log.
    pub event: u64,
    /// Time, milliseconds since the Unix epoch (UTC).
    pub time_ms: u64,
    /// Action code.
    pub action: Action,
    /// Who.
    pub actor: Actor,
    /// Purpose of use (HL7 PurposeOfUse code, e.g. `HRESCH` for healthcare research).
    pub purpose: String,
    /// Outcome.
    pub outcome: Outcome,
    /// The object acted on, as `type/id` (e.g. `job/7/round/3`).
    pub object: String,
    /// What happened.
    pub body: Body,
}

/// The longest reason a hospital may give for declining a job (bytes).
pub const MAX_DECLINE_REASON: usize = 2000;

/// `text` cut to at most `max` bytes, at a character boundary: how a record's free text (a
/// decline's or a refusal's reason) is kept within its limit.
pub fn cut_text(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The purpose of use of everything fedchain does: healthcare research.
pub const PURPOSE_RESEARCH: &str = "HRESCH";

impl Body {
    /// The object this event acts on, as `type/id`.
    pub fn object(&self) -> String {
        match self {
            Body::JobSubmitted { job, .. } | Body::JobFinished { job, .. } => format!("job/{job}"),
            Body::HospitalEnrolled { job, hospital, .. }
            | Body::JobDeclined { job, hospital, .. } => {
                format!("job/{job}/hospital/{hospital}")
            }
            Body::UpdateSubmitted {
                job,
                round,
                hospital,
                ..
            }
            | Body::DecryptionShare {
                job,
                round,
                hospital,
                ..
            }
            | Body::ModelEvaluated {
                job,
                round,
                hospital,
                ..
            } => format!("job/{job}/round/{round}/hospital/{hospital}"),
            Body::RoundClosed { job, round, .. }
            | Body::PrivacySpent { job, round, .. }
            | Body::RoundFinalized { job, round, .. } => {
                format!("job/{job}/round/{round}")
            }
            Body::CreditsMoved { .. } => "credits".to_string(),
            Body::RequestRejected { request, .. } => format!("request/{request}"),
        }
    }

    /// The action code of this event.
    pub fn action(&self) -> Action {
        match self {
            Body::RoundClosed { .. }
            | Body::PrivacySpent { .. }
            | Body::RoundFinalized { .. }
            | Body::DecryptionShare { .. } => Action::E,
            Body::JobFinished { .. } | Body::CreditsMoved { .. } => Action::U,
            Body::RequestRejected { .. } | Body::JobDeclined { .. } => Action::E,
            _ => Action::C,
        }
    }

    /// The job this event belongs to, if any.
    pub fn job(&self) -> Option<u64> {
        match self {
            Body::JobSubmitted { job, .. }
            | Body::HospitalEnrolled { job, .. }
            | Body::UpdateSubmitted { job, .. }
            | Body::RoundClosed { job, .. }
            | Body::PrivacySpent { job, .. }
            | Body::DecryptionShare { job, .. }
            | Body::RoundFinalized { job, .. }
            | Body::ModelEvaluated { job, .. }
            | Body::JobDeclined { job, .. }
            | Body::JobFinished { job, .. } => Some(*job),
            Body::CreditsMoved { .. } | Body::RequestRejected { .. } => None,
        }
    }

    /// Short name of the kind, as in the encoding.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::JobSubmitted { .. } => "job_submitted",
            Body::HospitalEnrolled { .. } => "hospital_enrolled",
            Body::UpdateSubmitted { .. } => "update_submitted",
            Body::RoundClosed { .. } => "round_closed",
            Body::PrivacySpent { .. } => "privacy_spent",
            Body::DecryptionShare { .. } => "decryption_share",
            Body::RoundFinalized { .. } => "round_finalized",
            Body::ModelEvaluated { .. } => "model_evaluated",
            Body::CreditsMoved { .. } => "credits_moved",
            Body::JobFinished { .. } => "job_finished",
            Body::JobDeclined { .. } => "job_declined",
            Body::RequestRejected { .. } => "request_rejected",
        }
    }

    /// The exact bytes a hospital signs when submitting an update: domain, job, round, hospital
    /// name and ciphertext digest, each length-prefixed. Binding job and round makes a signed
    /// submission useless for any other round.
    pub fn submission_message(job: u64, round: u64, hospital: &str, ciphertexts: &Hash) -> Vec<u8> {
        length_prefixed(&[
            b"fedchain/submission/v1".as_slice(),
            &job.to_be_bytes(),
            &round.to_be_bytes(),
            hospital.as_bytes(),
            ciphertexts,
        ])
    }

    /// The exact bytes a hospital signs when reporting its evaluation of a model: domain, job,
    /// round, hospital name, model digest, row count, then each metric's name and the bits of its
    /// value (IEEE 754, big-endian), each length-prefixed.
    pub fn evaluation_message(
        job: u64,
        round: u64,
        hospital: &str,
        model: &Hash,
        rows: u64,
        metrics: &[(String, f64)],
    ) -> Vec<u8> {
        let (job, round, rows, count) = (
            job.to_be_bytes(),
            round.to_be_bytes(),
            rows.to_be_bytes(),
            (metrics.len() as u64).to_be_bytes(),
        );
        let values: Vec<[u8; 8]> = metrics
            .iter()
            .map(|(_, v)| v.to_bits().to_be_bytes())
            .collect();
        let mut parts: Vec<&[u8]> = vec![
            b"fedchain/evaluation/v1",
            &job,
            &round,
            hospital.as_bytes(),
            model,
            &rows,
            &count,
        ];
        for ((name, _), value) in metrics.iter().zip(&values) {
            parts.push(name.as_bytes());
            parts.push(value);
        }
        length_prefixed(&parts)
    }

    /// The exact bytes a hospital signs when declining a job: domain, job, spec digest, hospital
    /// name and reason, each length-prefixed.
    pub fn decline_message(job: u64, spec: &Hash, hospital: &str, reason: &str) -> Vec<u8> {
        length_prefixed(&[
            b"fedchain/decline/v1".as_slice(),
            &job.to_be_bytes(),
            spec,
            hospital.as_bytes(),
            reason.as_bytes(),
        ])
    }

    /// For a record a hospital signed: the hospital, the message its identity key signed, and
    /// the signature.
    pub fn hospital_signature(&self) -> Option<(&str, Vec<u8>, &[u8; 64])> {
        match self {
            Body::UpdateSubmitted {
                job,
                round,
                hospital,
                ciphertexts,
                signature,
            } => Some((
                hospital,
                Body::submission_message(*job, *round, hospital, ciphertexts),
                signature,
            )),
            Body::ModelEvaluated {
                job,
                round,
                hospital,
                model,
                rows,
                metrics,
                signature,
            } => Some((
                hospital,
                Body::evaluation_message(*job, *round, hospital, model, *rows, metrics),
                signature,
            )),
            Body::JobDeclined {
                job,
                spec,
                hospital,
                reason,
                signature,
            } => Some((
                hospital,
                Body::decline_message(*job, spec, hospital, reason),
                signature,
            )),
            _ => None,
        }
    }

    /// The metrics this event carries.
    fn metrics(&self) -> &[(String, f64)] {
        match self {
            Body::RoundFinalized { metrics, .. } | Body::ModelEvaluated { metrics, .. } => metrics,
            _ => &[],
        }
    }

    /// Digests of blobs this event refers to.
    pub fn blob_refs(&self) -> Vec<Hash> {
        match self {
            Body::JobSubmitted { spec, .. } => vec![*spec],
            Body::UpdateSubmitted { ciphertexts, .. } => vec![*ciphertexts],
            Body::RoundClosed { aggregate, .. } => vec![*aggregate],
            Body::DecryptionShare { share, .. } => vec![*share],
            Body::RoundFinalized { model_after, .. } => vec![*model_after],
            _ => Vec::new(),
        }
    }
}

/// Whether `signature` is the Ed25519 signature of `message` by `key` (strict verification: no
/// small-order keys, no malleable signatures).
pub fn signature_verifies(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(key).is_ok_and(|k| {
        k.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
            .is_ok()
    })
}

/// Each part preceded by its length (u32, big-endian), so no two part lists give the same bytes.
fn length_prefixed(parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Vec::with_capacity(parts.iter().map(|p| 4 + p.len()).sum());
    for part in parts {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part);
    }
    m
}

impl Record {
    /// A record of `body` by `actor` at `time_ms`, with `event` its log index; action, object
    /// and purpose derived from the body.
    pub fn new(event: u64, time_ms: u64, actor: Actor, outcome: Outcome, body: Body) -> Record {
        Record {
            v: VERSION,
            event,
            time_ms,
            action: body.action(),
            actor,
            purpose: PURPOSE_RESEARCH.to_string(),
            outcome,
            object: body.object(),
            body,
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if let Some((name, v)) = self.body.metrics().iter().find(|(_, v)| !v.is_finite()) {
            return Err(LedgerError::InvalidArgument(format!(
                "metric {name} is {v}; records hold finite numbers only"
            )));
        }
        if let Body::PrivacySpent { delta, spent, .. } = &self.body {
            let figures = spent
                .iter()
                .flat_map(|s| [s.sampling_rate, s.noise_multiplier, s.epsilon]);
            if let Some(v) = std::iter::once(*delta)
                .chain(figures)
                .find(|v| !v.is_finite())
            {
                return Err(LedgerError::InvalidArgument(format!(
                    "a privacy figure is {v}; records hold finite numbers only"
                )));
            }
        }
        serde_json::to_vec(self).map_err(|e| LedgerError::InvalidArgument(format!("record: {e}")))
    }

    /// Decodes bytes and checks they are the canonical encoding of what they contain.
    pub fn decode(bytes: &[u8]) -> Result<Record> {
        let bad = |reason: String| LedgerError::Decode {
            what: "record",
            reason,
        };
        let record: Record = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if record.v != VERSION {
            return Err(bad(format!(
                "encoding version {} is not supported (this build reads {VERSION})",
                record.v
            )));
        }
        if record.encode()? != bytes {
            return Err(bad(
                "bytes are not the canonical encoding of the record".into()
            ));
        }
        if record.object != record.body.object() || record.action != record.body.action() {
            return Err(bad("object or action does not match the body".into()));
        }
        Ok(record)
    }
}

/// Lower-case hex for fixed-size byte arrays in JSON.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

mod hex64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(&s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::new(
            3,
            1_700_000_000_000,
            Actor {
                id: "coordinator".into(),
                role: Role::Coordinator,
            },
            Outcome::Success,
            Body::RoundClosed {
                job: 7,
                round: 2,
                participants: vec!["st-olav".into(), "charite".into()],
                aggregate: [0xab; 32],
            },
        )
    }

    #[test]
    fn encoding_roundtrips_and_is_pinned() {
        let r = sample();
        let bytes = r.encode().unwrap();
        assert_eq!(Record::decode(&bytes).unwrap(), r);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                r#"{{"v":1,"event":3,"time_ms":1700000000000,"action":"E","actor":{{"id":"coordinator","role":"coordinator"}},"purpose":"HRESCH","outcome":"success","object":"job/7/round/2","body":{{"kind":"round_closed","job":7,"round":2,"participants":["st-olav","charite"],"aggregate":"{}"}}}}"#,
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let bytes = sample().encode().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        for variant in [
            text.replacen(',', ", ", 1),                     // whitespace
            text.replacen("\"event\":3", "\"event\":03", 1), // not JSON at all
            text.replacen("ab", "AB", 1),                    // upper-case hex
            text.replacen("round/2", "round/9", 1),          // object disagrees with body
            format!("{text} "),                              // trailing space
        ] {
            assert!(Record::decode(variant.as_bytes()).is_err(), "{variant}");
        }
        assert!(Record::decode(b"").is_err());
        assert!(Record::decode(b"{}").is_err());
    }

    #[test]
    fn every_single_byte_change_is_refused_or_changes_the_record() {
        let r = sample();
        let bytes = r.encode().unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok(other) = Record::decode(&b) {
                assert_ne!(other, r, "byte {i}");
            }
        }
    }

    #[test]
    fn submission_messages_bind_job_round_hospital_and_digest() {
        let d = [1u8; 32];
        let m = Body::submission_message(1, 2, "a", &d);
        assert_ne!(m, Body::submission_message(1, 3, "a", &d));
        assert_ne!(m, Body::submission_message(2, 2, "a", &d));
        assert_ne!(m, Body::submission_message(1, 2, "b", &d));
        assert_ne!(m, Body::submission_message(1, 2, "a", &[2u8; 32]));
    }

    #[test]
    fn declines_roundtrip_and_their_messages_bind_job_spec_hospital_and_reason() {
        let body = Body::JobDeclined {
            job: 4,
            spec: [3; 32],
            hospital: "h2".into(),
            reason: "my data does not fit its schema: no column \"age\"".into(),
            signature: [5; 64],
        };
        let r = Record::new(
            9,
            1,
            Actor {
                id: "h2".into(),
                role: Role::Hospital,
            },
            Outcome::Success,
            body.clone(),
        );
        let back = Record::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.object, "job/4/hospital/h2");
        assert_eq!(back.body.job(), Some(4));
        let (who, msg, _) = back.body.hospital_signature().unwrap();
        assert_eq!(who, "h2");
        let m = |job, spec: [u8; 32], h: &str, why: &str| Body::decline_message(job, &spec, h, why);
        assert_eq!(
            msg,
            m(
                4,
                [3; 32],
                "h2",
                "my data does not fit its schema: no column \"age\""
            )
        );
        let base = m(4, [3; 32], "h2", "no");
        for other in [
            m(5, [3; 32], "h2", "no"),
            m(4, [4; 32], "h2", "no"),
            m(4, [3; 32], "h1", "no"),
            m(4, [3; 32], "h2", "No"),
            m(4, [3; 32], "h2n", "o"),
        ] {
            assert_ne!(base, other);
        }
    }

    fn evaluation(metrics: Vec<(String, f64)>) -> Body {
        Body::ModelEvaluated {
            job: 1,
            round: 2,
            hospital: "h1".into(),
            model: [7; 32],
            rows: 40,
            metrics,
            signature: [9; 64],
        }
    }

    #[test]
    fn evaluations_roundtrip_with_their_metrics_exact() {
        // Shortest round-trip printing: the decoded value is the signed value, bit for bit.
        let body = evaluation(vec![
            ("accuracy".into(), 0.9736842105263158),
            ("loss".into(), 1.0 / 3.0),
        ]);
        let r = Record::new(
            5,
            1,
            Actor {
                id: "h1".into(),
                role: Role::Hospital,
            },
            Outcome::Success,
            body.clone(),
        );
        let bytes = r.encode().unwrap();
        let back = Record::decode(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.object, "job/1/round/2/hospital/h1");
        assert_eq!(
            back.body.hospital_signature().unwrap().1,
            body.hospital_signature().unwrap().1
        );
        assert!(body.blob_refs().is_empty(), "the model is the round's blob");
    }

    #[test]
    fn every_finite_metric_survives_the_canonical_encoding() {
        // Accuracies k/n of held-out sets of every size up to 300, and some awkward values: each
        // must decode to the same bits and so re-encode to the same bytes (serde_json's
        // `float_roundtrip`; without it some of these decode one ulp off and are refused).
        let mut values = vec![f64::MIN_POSITIVE, 5e-324, 1e300, 0.1 + 0.2, 2f64.sqrt()];
        for n in 1..=300u32 {
            values.extend((0..=n).map(|k| f64::from(k) / f64::from(n)));
        }
        for v in values {
            let r = Record::new(
                0,
                0,
                Actor {
                    id: "h1".into(),
                    role: Role::Hospital,
                },
                Outcome::Success,
                evaluation(vec![("loss".into(), v)]),
            );
            let back = Record::decode(&r.encode().unwrap()).unwrap();
            let Body::ModelEvaluated { metrics, .. } = back.body else {
                unreachable!()
            };
            assert_eq!(metrics[0].1.to_bits(), v.to_bits(), "{v:e}");
        }
    }

    #[test]
    fn evaluation_messages_bind_every_field() {
        let m = |job, round, hospital: &str, model: &Hash, rows, metrics: &[(String, f64)]| {
            Body::evaluation_message(job, round, hospital, model, rows, metrics)
        };
        let acc = |v: f64| vec![("accuracy".to_string(), v)];
        let base = m(1, 2, "a", &[1; 32], 10, &acc(0.5));
        for other in [
            m(2, 2, "a", &[1; 32], 10, &acc(0.5)),
            m(1, 3, "a", &[1; 32], 10, &acc(0.5)),
            m(1, 2, "b", &[1; 32], 10, &acc(0.5)),
            m(1, 2, "a", &[2; 32], 10, &acc(0.5)),
            m(1, 2, "a", &[1; 32], 11, &acc(0.5)),
            m(1, 2, "a", &[1; 32], 10, &acc(0.5000001)),
            m(1, 2, "a", &[1; 32], 10, &[("loss".to_string(), 0.5)]),
            m(1, 2, "a", &[1; 32], 10, &[]),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(
            base,
            Body::submission_message(1, 2, "a", &[1; 32]),
            "the domains keep a submission from passing for an evaluation"
        );
    }

    #[test]
    fn non_finite_metrics_are_refused() {
        let r = Record::new(
            0,
            0,
            Actor {
                id: "h".into(),
                role: Role::Hospital,
            },
            Outcome::Success,
            evaluation(vec![("loss".into(), f64::INFINITY)]),
        );
        assert!(r.encode().is_err());
        let r = Record::new(
            0,
            0,
            Actor {
                id: "c".into(),
                role: Role::Coordinator,
            },
            Outcome::Success,
            Body::RoundFinalized {
                job: 1,
                round: 1,
                model_before: [0; 32],
                model_after: [1; 32],
                metrics: vec![("accuracy".into(), f64::NAN)],
            },
        );
        assert!(r.encode().is_err());
    }
}
