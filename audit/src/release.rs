//! What a researcher checks before using a released model (`fedchain job download`).
//!
//! The coordinator streams a [`pb::ModelRelease`] header and the model file. [`verify_release`]
//! accepts them only when: the file is the one announced (length and SHA-256), its parameters are
//! the announced model digest, the ledger record it comes with is a `RoundFinalized` of this job
//! and round whose `model_after` is that digest, and the record is included (Merkle proof) in a
//! checkpoint signed by the log and cosigned by a quorum of hospitals, all under the keys of the
//! researcher's own trust file. A coordinator cannot hand out a model the hospitals did not
//! commit to.
//!
//! The file also carries its preprocessing (features, target, task, the consortium's scaling and
//! the pooled moments it derives from), which the parameter digest does not cover.
//! [`verify_preprocessing`] checks it against two more records of the same checkpoint, fetched
//! over the ledger service: the job's `JobSubmitted` (its spec blob names the features, target and
//! task) and round 0's `RoundFinalized` (its `model_after` is the digest of the moments). A
//! coordinator cannot hand out a model with another scaling than the hospitals trained with.

use std::path::Path;

use fedchain_ledger::record::{Body, Record};
use fedchain_ledger::verify::Trust;
use fedchain_ledger::{merkle, note, sha256, Hash};
use fedchain_model_core::{ModelDigest, ModelFile};
use fedchain_proto::v1 as pb;
use pb::ledger_service_client::LedgerServiceClient;
use prost::Message;
use tonic::transport::Channel;

use crate::error::{rpc, untrusted, AuditError};
use crate::mirror::fetch_blob;

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
    /// The root of that checkpoint's tree.
    pub checkpoint_root: Hash,
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
        checkpoint_root: cp.root,
        cosigned_by: cosigners,
    })
}

/// The ledger records a release's preprocessing was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPreprocessing {
    /// Index of the job's `JobSubmitted` record.
    pub job_record: u64,
    /// Index of round 0's `RoundFinalized` record.
    pub statistics_record: u64,
    /// The job's TorchScript module, from its spec on the ledger (empty for a built-in model).
    pub torchscript_module: Vec<u8>,
    /// The job's rounds, from its spec on the ledger: the final model is this round's, unless
    /// the job has differential privacy and its budget stopped it earlier.
    pub rounds: u64,
    /// Whether the job's spec asks for differential privacy.
    pub private: bool,
}

/// Checks the preprocessing of a verified release `v` of job `job` against the ledger `client`
/// serves, up to the checkpoint `v` was verified in: the job's spec (features in order, target,
/// task) and round 0's result (the digest of the pooled moments the scaling derives from; the
/// file itself refuses a scaling its moments do not define). Both records are checked for
/// inclusion in that checkpoint, and the spec blob against its digest.
pub async fn verify_preprocessing(
    client: &mut LedgerServiceClient<Channel>,
    job: u64,
    v: &VerifiedRelease,
) -> Result<VerifiedPreprocessing, AuditError> {
    let p = v
        .model
        .preprocessing()
        .ok_or_else(|| untrusted("the released model carries no preprocessing"))?;
    let statistics = p.statistics.as_deref().ok_or_else(|| {
        untrusted("the released model's preprocessing does not carry the pooled statistics")
    })?;
    let (submitted, finalized) = find_job_records(client, job, v.checkpoint_size).await?;
    // What was read from these bytes is believed only once they are in the checkpoint's tree.
    for r in [&submitted, &finalized] {
        prove_included(client, r.index, &r.bytes, v).await?;
    }
    let (job_record, statistics_record) = (submitted.index, finalized.index);

    let spec_bytes = fetch_blob(client, &submitted.digest).await?;
    let spec = pb::JobSpec::decode(spec_bytes.as_slice())
        .map_err(|e| untrusted(format!("job {job}'s spec blob does not decode: {e}")))?;
    let valid = fedchain_protocol::validate(&spec)
        .map_err(|e| untrusted(format!("job {job}'s spec on the ledger is not valid: {e}")))?;
    let schema = valid.spec.schema.clone().unwrap_or_default();
    if p.scaling.feature_names != schema.features
        || p.scaling.image != valid.image
        || p.target != schema.target
        || p.task != valid.task
    {
        return Err(untrusted(format!(
            "the released model's preprocessing (features [{}], target {}, {}) is not job \
             {job}'s schema on the ledger (features [{}], target {}, {})",
            p.scaling.feature_names.join(", "),
            p.target,
            p.task,
            schema.features.join(", "),
            schema.target,
            valid.task
        )));
    }
    if ModelDigest::of(statistics).0 != finalized.digest {
        return Err(untrusted(format!(
            "the released model's scaling does not come from the statistics the hospitals \
             finalized in round 0 of job {job} (ledger record {statistics_record})"
        )));
    }
    if valid.model != *v.model.spec() {
        return Err(untrusted(format!(
            "the released model is a {}, but job {job}'s spec on the ledger trains a {}",
            v.model.spec(),
            valid.model
        )));
    }
    Ok(VerifiedPreprocessing {
        job_record,
        statistics_record,
        rounds: u64::from(valid.spec.rounds),
        private: valid.spec.privacy.is_some(),
        torchscript_module: valid.spec.torchscript_module,
    })
}

/// A record as served: its index, its bytes (the Merkle leaf) and what they say.
struct Served<T> {
    index: u64,
    bytes: Vec<u8>,
    digest: T,
}

/// Scans records `[0, size)` for job `job`'s `JobSubmitted` (with its spec digest) and round 0's
/// `RoundFinalized` (with the statistics' digest).
async fn find_job_records(
    client: &mut LedgerServiceClient<Channel>,
    job: u64,
    size: u64,
) -> Result<(Served<Hash>, Served<Hash>), AuditError> {
    let mut submitted = None;
    let mut statistics = None;
    let mut next = 0;
    // The service streams a bounded number of records per call: ask again from where it stopped.
    while next < size && (submitted.is_none() || statistics.is_none()) {
        let before = next;
        let mut records = client
            .get_records(pb::RecordRange {
                start: next,
                end: size,
            })
            .await
            .map_err(rpc("GetRecords"))?
            .into_inner();
        while let Some(entry) = records.message().await.map_err(rpc("GetRecords"))? {
            if entry.index != next {
                return Err(untrusted(format!(
                    "record {} arrived out of order (expected {next})",
                    entry.index
                )));
            }
            next += 1;
            // Other records are not checked here (only the two found are, by their proofs):
            // skip what does not decode rather than trust or refuse it.
            let Ok(record) = Record::decode(&entry.record) else {
                continue;
            };
            match record.body {
                Body::JobSubmitted { job: j, spec, .. } if j == job && submitted.is_none() => {
                    submitted = Some(Served {
                        index: entry.index,
                        bytes: entry.record,
                        digest: spec,
                    });
                }
                Body::RoundFinalized {
                    job: j,
                    round: 0,
                    model_after,
                    ..
                } if j == job && statistics.is_none() => {
                    statistics = Some(Served {
                        index: entry.index,
                        bytes: entry.record,
                        digest: model_after,
                    });
                }
                _ => {}
            }
        }
        if next == before {
            return Err(untrusted(format!(
                "the coordinator served no records from {before} on, though its checkpoint \
                 covers {size}"
            )));
        }
    }
    match (submitted, statistics) {
        (Some(submitted), Some(statistics)) => Ok((submitted, statistics)),
        (None, _) => Err(untrusted(format!(
            "the ledger up to the checkpoint holds no JobSubmitted record of job {job}"
        ))),
        (_, None) => Err(untrusted(format!(
            "the ledger up to the checkpoint holds no RoundFinalized record of job {job}'s \
             round 0 (its statistics)"
        ))),
    }
}

/// Checks that `record`, the bytes served as record `index`, is in the tree of the checkpoint `v`
/// verified.
async fn prove_included(
    client: &mut LedgerServiceClient<Channel>,
    index: u64,
    record: &[u8],
    v: &VerifiedRelease,
) -> Result<(), AuditError> {
    let proof = client
        .get_inclusion_proof(pb::InclusionProofRequest {
            index,
            size: v.checkpoint_size,
        })
        .await
        .map_err(rpc("GetInclusionProof"))?
        .into_inner();
    let hashes: Vec<Hash> = proof
        .hashes
        .iter()
        .map(|h| Hash::try_from(h.sha256.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|_| untrusted("a proof hash is not 32 bytes"))?;
    merkle::verify_inclusion(
        &merkle::leaf_hash(record),
        index,
        v.checkpoint_size,
        &hashes,
        &v.checkpoint_root,
    )
    .map_err(|e| {
        untrusted(format!(
            "record {index} is not in the checkpoint's tree: {e}"
        ))
    })
}
