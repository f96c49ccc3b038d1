//! What a researcher checks before using a released model (`fedchain job download`).
//!
//! The coordinator streams a [`pb::ModelRelease`] header and the model file. [`verify_release`]
//! accepts them only when: the file is the one announced (length and SHA-256), its parameters are
//! the announced model digest, the ledger record it comes with is a `RoundFinalized` of this job
//! and round whose `model_after` is that digest, and the record is included (Merkle proof) in a
//! checkpoint signed by the log and cosigned by a quorum of hospitals, all under the keys of the
//! researcher's own trust file. A coordinator cannot hand out a model the hospitals did not
//! commit to.

use std::path::Path;

use fedchain_ledger::record::{Body, Record};
use fedchain_ledger::verify::Trust;
use fedchain_ledger::{merkle, note, sha256, Hash};
use fedchain_model_core::ModelFile;
use fedchain_proto::v1 as pb;

use crate::error::{untrusted, AuditError};

/// A release that verified.
#[derive(Debug, Clone)]
pub struct VerifiedRelease {
    /// The model.
    pub model: ModelFile,
    /// The job's last round, which produced it.
    pub round: u64,
    /// The digest of its parameters.
    pub model_digest: Hash,
    /// The ledger index of its `RoundFinalized` record.
    pub record_index: u64,
    /// The size of the checkpoint that includes the record.
    pub checkpoint_size: u64,
    /// The hospitals whose cosignatures on that checkpoint verified.
    pub cosigned_by: Vec<String>,
}

fn digest(d: &Option<pb::Digest>) -> Result<Hash, AuditError> {
    d.as_ref()
        .and_then(|d| Hash::try_from(d.sha256.as_slice()).ok())
        .ok_or_else(|| untrusted("the release carries a malformed digest"))
}

/// Checks the release `r` of job `job` and the model `file` that came with it against `trust`.
/// `round`: the round whose model was asked for (the job's last, for its final model), which the
/// release must be; a coordinator must not pass off an earlier round's model as the final one.
pub fn verify_release(
    job: u64,
    round: u64,
    r: &pb::ModelRelease,
    file: &[u8],
    trust: &Trust,
) -> Result<VerifiedRelease, AuditError> {
    if r.round != round {
        return Err(untrusted(format!(
            "the release is round {}'s model, not round {round}'s",
            r.round
        )));
    }
    if sha256(file) != digest(&r.file)? || file.len() as u64 != r.file_bytes {
        return Err(untrusted(
            "the downloaded file does not match the digest and length the release announced",
        ));
    }
    let model = ModelFile::from_bytes(file, Path::new("<the released model>"))?;
    let model_digest = model.digest().0;
    if model_digest != digest(&r.model)? {
        return Err(untrusted(
            "the model's parameters do not match the release's model digest",
        ));
    }
    let record = Record::decode(&r.record)
        .map_err(|e| untrusted(format!("the release's ledger record: {e}")))?;
    match record.body {
        Body::RoundFinalized {
            job: j,
            round,
            model_after,
            ..
        } if j == job && round == r.round && model_after == model_digest => {}
        other => {
            return Err(untrusted(format!(
                "the ledger record {} does not finalize this model for job {job}: {other:?}",
                r.record_index
            )))
        }
    }
    let note_text = r.checkpoint.as_ref().map(|c| c.note.as_str()).unwrap_or("");
    let (cp, cosigners) = note::quorum(note_text, &trust.log, &trust.witnesses, trust.quorum)
        .map_err(|e| {
            untrusted(format!(
                "the checkpoint does not carry the log's signature and a quorum of hospitals: {e}"
            ))
        })?;
    let proof: Vec<Hash> = r
        .inclusion
        .as_ref()
        .map(|p| p.hashes.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|h| Hash::try_from(h.sha256.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|_| untrusted("a proof hash is not 32 bytes"))?;
    merkle::verify_inclusion(
        &merkle::leaf_hash(&r.record),
        r.record_index,
        cp.size,
        &proof,
        &cp.root,
    )
    .map_err(|e| untrusted(format!("the record is not in the checkpoint's tree: {e}")))?;
    Ok(VerifiedRelease {
        model,
        round: r.round,
        model_digest,
        record_index: r.record_index,
        checkpoint_size: cp.size,
        cosigned_by: cosigners,
    })
}
