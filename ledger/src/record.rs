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

/// Who acts, in which role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The coordinator service.
    Coordinator,
    /// A hospital's worker.
    Hospital,
    /// A researcher who submits jobs.
    Researcher,
    /// An auditor.
    Auditor,
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
    /// A request was refused.
    RequestRejected {
        /// What was asked for (operation and object).
        request: String,
        /// Why it was refused.
        reason: String,
    },
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

/// The purpose of use of everything fedchain does: healthcare research.
pub const PURPOSE_RESEARCH: &str = "HRESCH";

impl Body {
    /// The object this event acts on, as `type/id`.
    pub fn object(&self) -> String {
        match self {
            Body::JobSubmitted { job, .. } | Body::JobFinished { job, .. } => format!("job/{job}"),
            Body::HospitalEnrolled { job, hospital, .. } => {
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
            } => format!("job/{job}/round/{round}/hospital/{hospital}"),
            Body::RoundClosed { job, round, .. } | Body::RoundFinalized { job, round, .. } => {
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
            | Body::RoundFinalized { .. }
            | Body::DecryptionShare { .. } => Action::E,
            Body::JobFinished { .. } | Body::CreditsMoved { .. } => Action::U,
            Body::RequestRejected { .. } => Action::E,
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
            | Body::DecryptionShare { job, .. }
            | Body::RoundFinalized { job, .. }
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
            Body::DecryptionShare { .. } => "decryption_share",
            Body::RoundFinalized { .. } => "round_finalized",
            Body::CreditsMoved { .. } => "credits_moved",
            Body::JobFinished { .. } => "job_finished",
            Body::RequestRejected { .. } => "request_rejected",
        }
    }

    /// The exact bytes a hospital signs when submitting an update: domain, job, round, hospital
    /// name and ciphertext digest, each length-prefixed. Binding job and round makes a signed
    /// submission useless for any other round.
    pub fn submission_message(job: u64, round: u64, hospital: &str, ciphertexts: &Hash) -> Vec<u8> {
        let mut m = Vec::with_capacity(96 + hospital.len());
        for part in [
            b"fedchain/submission/v1".as_slice(),
            &job.to_be_bytes(),
            &round.to_be_bytes(),
            hospital.as_bytes(),
            ciphertexts,
        ] {
            m.extend_from_slice(&(part.len() as u32).to_be_bytes());
            m.extend_from_slice(part);
        }
        m
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
        if let Body::RoundFinalized { metrics, .. } = &self.body {
            if let Some((name, v)) = metrics.iter().find(|(_, v)| !v.is_finite()) {
                return Err(LedgerError::InvalidArgument(format!(
                    "metric {name} is {v}; records hold finite numbers only"
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
    fn non_finite_metrics_are_refused() {
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
