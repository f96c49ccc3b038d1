//! Mirroring a running coordinator's ledger over its ledger service, trusting nothing it serves.
//!
//! [`mirror`] copies into a new ledger folder the coordinator's newest checkpoint that is signed by
//! the log and cosigned by a quorum of the trust file's hospitals, every record up to it
//! (each canonical, in order, and together reproducing the checkpoint's Merkle root), and every
//! blob the records name (each checked against its digest). What it copies verifies offline like
//! the coordinator's own folder; anything that does not check is an [`AuditError::Untrusted`].

use std::path::Path;

use fedchain_ledger::note;
use fedchain_ledger::record::{Body, Record};
use fedchain_ledger::store::{Entry, Store};
use fedchain_ledger::verify::Trust;
use fedchain_ledger::{sha256, Hash};
use fedchain_proto::v1 as pb;
use pb::ledger_service_client::LedgerServiceClient;
use tonic::transport::Channel;

use crate::error::{rpc, untrusted, AuditError};

/// What [`mirror`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// Records copied: the checkpoint's tree size.
    pub records: u64,
    /// Blobs copied (job specs, submissions, decryption shares).
    pub blobs: usize,
    /// The hospitals whose cosignatures on the checkpoint verified.
    pub cosigners: Vec<String>,
}

/// The blobs a replay needs from a record.
fn blobs_of(body: &Body) -> Vec<[u8; 32]> {
    match body {
        Body::JobSubmitted { spec, .. } => vec![*spec],
        Body::UpdateSubmitted { ciphertexts, .. } => vec![*ciphertexts],
        Body::DecryptionShare { share, .. } => vec![*share],
        _ => Vec::new(),
    }
}

/// Copies the ledger `client` serves into the new folder `into`, checking it against `trust`.
pub async fn mirror(
    client: &mut LedgerServiceClient<Channel>,
    trust: &Trust,
    into: &Path,
) -> Result<Mirrored, AuditError> {
    // The newest checkpoint a quorum already cosigned: a live coordinator's very newest one may
    // still be collecting cosignatures.
    let mut notes = Vec::new();
    let mut after = 0;
    loop {
        if notes.len() > crate::checkpoints::MAX_CHECKPOINTS {
            return Err(untrusted(format!(
                "the coordinator lists more than {} checkpoints",
                crate::checkpoints::MAX_CHECKPOINTS
            )));
        }
        let page = client
            .list_checkpoints(pb::ListCheckpointsRequest { after })
            .await
            .map_err(rpc("ListCheckpoints"))?
            .into_inner();
        notes.extend(page.checkpoints.into_iter().map(|c| c.note));
        match page.next_after {
            Some(next) if next > after => after = next,
            _ => break,
        }
    }
    let newest = notes.iter().rev().find_map(|text| {
        note::quorum(text, &trust.log, &trust.witnesses, trust.quorum)
            .ok()
            .map(|(cp, cosigners)| (text.clone(), cp, cosigners))
    });
    let Some((note_text, cp, cosigners)) = newest else {
        return Err(untrusted(format!(
            "none of the coordinator's {} checkpoints is signed by the log and cosigned by a \
             quorum of {} hospitals",
            notes.len(),
            trust.quorum
        )));
    };
    let mut store = Store::open(into, trust.log.name())?;
    if !store.is_empty() {
        return Err(untrusted(format!(
            "{} already holds a ledger; mirror into a new folder",
            into.display()
        )));
    }
    let mut blobs = 0;
    // The service streams a bounded number of records per call: ask again from where it stopped.
    while store.len() < cp.size {
        let before = store.len();
        let mut records = client
            .get_records(pb::RecordRange {
                start: before,
                end: cp.size,
            })
            .await
            .map_err(rpc("GetRecords"))?
            .into_inner();
        while let Some(entry) = records.message().await.map_err(rpc("GetRecords"))? {
            if entry.index != store.len() {
                return Err(untrusted(format!(
                    "record {} arrived out of order (expected {})",
                    entry.index,
                    store.len()
                )));
            }
            let record = Record::decode(&entry.record)
                .map_err(|e| untrusted(format!("record {} is not canonical: {e}", entry.index)))?;
            for digest in blobs_of(&record.body) {
                let bytes = fetch_blob(client, &digest).await?;
                store.put_blob(&bytes)?;
                blobs += 1;
            }
            let appended = store.append_all(vec![Entry {
                time_ms: record.time_ms,
                actor: record.actor.clone(),
                outcome: record.outcome,
                body: record.body.clone(),
            }])?;
            if appended[0].encode()? != entry.record {
                return Err(untrusted(format!(
                    "record {} does not re-encode to the bytes served",
                    entry.index
                )));
            }
        }
        if store.len() == before {
            return Err(untrusted(format!(
                "the coordinator served no records from {before} on, though its checkpoint \
                 covers {}",
                cp.size
            )));
        }
    }
    if store.len() != cp.size || store.root() != cp.root {
        return Err(untrusted(format!(
            "the records served do not reproduce the checkpoint's tree (size {}, root {})",
            cp.size,
            hex::encode(cp.root)
        )));
    }
    // The coordinator's checkpoint goes with the copy, so the copy verifies (and anchors apply).
    let mut known = vec![trust.log.clone()];
    known.extend(trust.witnesses.iter().cloned());
    store.import_checkpoint(&note_text, &known)?;
    store.flush()?;
    Ok(Mirrored {
        records: cp.size,
        blobs,
        cosigners,
    })
}

/// A blob by its digest from the ledger service, checked against it and the stream limit.
pub(crate) async fn fetch_blob(
    client: &mut LedgerServiceClient<Channel>,
    digest: &Hash,
) -> Result<Vec<u8>, AuditError> {
    let mut stream = client
        .get_blob(pb::Digest {
            sha256: digest.to_vec(),
        })
        .await
        .map_err(rpc("GetBlob"))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(c) = stream.message().await.map_err(rpc("GetBlob"))? {
        bytes.extend_from_slice(&c.data);
        if bytes.len() as u64 > fedchain_proto::limits::MAX_STREAM_BYTES {
            return Err(untrusted(format!(
                "blob {} is larger than the protocol allows",
                hex::encode(digest)
            )));
        }
    }
    if sha256(&bytes) != *digest {
        return Err(untrusted(format!(
            "blob {} does not match its digest",
            hex::encode(digest)
        )));
    }
    Ok(bytes)
}
