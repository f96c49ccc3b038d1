//! `fedchain audit export --format fhir-auditevent`: the ledger as FHIR R4 AuditEvent resources
//! (IHE Basic Audit Log Patterns style) for a hospital's SIEM.
//!
//! One AuditEvent per ledger record, in a `collection` Bundle: the record's action (C/R/U/D/E),
//! time, outcome (0 success, 4 minor failure, 8 serious failure), purpose of use (v3 ActReason
//! `HRESCH`), the acting party as the requesting agent (role from fedchain's roles), the
//! coordinator as the observing source, and the ledger record as the entity: its index, the
//! SHA-256 of its canonical bytes (the Merkle leaf's input) and the record itself. Nothing in a
//! record is patient data, so the export is safe to ship to a SIEM.

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use fedchain_ledger::record::{Outcome, Record, Role};
use fedchain_ledger::sha256;
use fedchain_ledger::store::Store;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn role_code(role: Role) -> (&'static str, &'static str) {
    match role {
        Role::Coordinator => ("coordinator", "fedchain coordinator"),
        Role::Hospital => ("hospital", "hospital worker"),
        Role::Researcher => ("researcher", "researcher"),
        Role::Auditor => ("auditor", "auditor"),
    }
}

/// The AuditEvent of one record.
pub fn audit_event(origin: &str, index: u64, record: &Record, bytes: &[u8]) -> Result<Value> {
    let recorded =
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.time_ms) * 1_000_000)
            .context("record time out of range")?
            .format(&Rfc3339)?;
    let outcome = match record.outcome {
        Outcome::Success => "0",
        Outcome::MinorFailure => "4",
        Outcome::SeriousFailure => "8",
    };
    let body = serde_json::to_value(&record.body)?;
    let kind = body["kind"].as_str().unwrap_or("unknown").to_string();
    let (role, role_display) = role_code(record.actor.role);
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": format!("fedchain-{index}"),
        "type": {
            "system": "urn:fedchain:audit-event-type",
            "code": kind,
        },
        "action": serde_json::to_value(record.action)?,
        "recorded": recorded,
        "outcome": outcome,
        "purposeOfEvent": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": record.purpose,
            }]
        }],
        "agent": [{
            "type": {"coding": [{"system": "urn:fedchain:role", "code": role, "display": role_display}]},
            "who": {"identifier": {"system": "urn:fedchain:party", "value": record.actor.id}},
            "requestor": true,
        }],
        "source": {
            "site": origin,
            "observer": {"identifier": {"system": "urn:fedchain:party", "value": "coordinator"}},
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }],
        },
        "entity": [{
            "what": {"identifier": {"system": format!("urn:fedchain:ledger:{origin}"), "value": index.to_string()}},
            "type": {
                "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                "code": "2",
                "display": "System Object",
            },
            "name": record.object,
            "detail": [
                {"type": "record-sha256", "valueString": hex::encode(sha256(bytes))},
                {"type": "record", "valueBase64Binary": base64::engine::general_purpose::STANDARD.encode(bytes)},
            ],
        }],
    });
    use fedchain_ledger::record::Body;
    if let Body::RequestRejected { reason, .. } | Body::JobDeclined { reason, .. } = &record.body {
        event["outcomeDesc"] = json!(reason);
    }
    Ok(event)
}

/// The whole ledger as a FHIR Bundle of AuditEvents.
pub fn export(ledger: &Path, origin: &str) -> Result<Value> {
    let store =
        Store::open(ledger, origin).with_context(|| format!("opening {}", ledger.display()))?;
    let mut entries = Vec::with_capacity(store.len() as usize);
    for index in 0..store.len() {
        let (record, bytes) = store.record(index)?;
        entries.push(json!({
            "fullUrl": format!("urn:fedchain:ledger:{origin}:{index}"),
            "resource": audit_event(origin, index, &record, &bytes)?,
        }));
    }
    Ok(json!({
        "resourceType": "Bundle",
        "type": "collection",
        "total": entries.len(),
        "entry": entries,
    }))
}
