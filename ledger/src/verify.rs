//! The offline verifier: everything an auditor can check with the ledger folder and public keys.
//!
//! It reads the raw sled trees (not through [`crate::store::Store`], which refuses damaged data)
//! and reports every problem it finds instead of stopping at the first:
//! record encodings and event ids, contiguity, hospital signatures on submissions, the Merkle root
//! of every checkpoint (which also makes successive checkpoints consistent), checkpoint signatures
//! by the log key and cosignature quorums, blob digests, and the credit invariants (replaying every
//! movement). Records after the last checkpoint are counted but are not a failure: they are the
//! round in progress, and nothing has vouched for them yet. What stops an operator from deleting
//! its latest checkpoints and rewriting what followed is an outside anchor: the checkpoints
//! hospitals cosigned and keep ([`Trust::anchors`]), which must still be in the ledger.

use crate::credits::Credits;
use crate::error::{LedgerError, Result};
use crate::merkle;
use crate::note::{self, Checkpoint, NoteVerifier};
use crate::record::{signature_verifies, Body, Record};
use crate::store::DB_DIR;
use crate::{sha256, Hash};

use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// The keys an auditor trusts: the log's key and the witnesses (hospitals) with their quorum.
///
/// A witness key is also that hospital's identity key: the key it signs submissions with. So the
/// verifier checks every `hospital_enrolled` record against it, and an operator cannot enrol a
/// key of its own under a hospital's name.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Verifier of the coordinator's checkpoint signatures.
    pub log: NoteVerifier,
    /// Verifiers of the hospitals' cosignatures (named after the hospitals).
    pub witnesses: Vec<NoteVerifier>,
    /// Cosignatures required on every checkpoint.
    pub quorum: usize,
    /// Checkpoints that hospitals cosigned and keep (their witness state): the ledger must still
    /// contain them. Without such an outside anchor, an operator could delete its latest
    /// checkpoints and rewrite the records after the oldest one it kept.
    pub anchors: Vec<Checkpoint>,
}

impl Trust {
    /// Parses a trust file: one `log <vkey>` line, any number of `witness <vkey>` lines, and one
    /// `quorum <n>` line (default 0: signatures checked, no cosignatures required). `#` starts a
    /// comment.
    pub fn parse(text: &str) -> Result<Trust> {
        let mut log = None;
        let mut witnesses = Vec::new();
        let mut quorum = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |what: &str| {
                LedgerError::InvalidArgument(format!("trust file line {}: {what}", n + 1))
            };
            match line.split_once(char::is_whitespace) {
                Some(("log", v)) => log = Some(NoteVerifier::from_vkey(v.trim())?),
                Some(("witness", v)) => witnesses.push(NoteVerifier::from_vkey(v.trim())?),
                Some(("quorum", q)) => {
                    quorum = q
                        .trim()
                        .parse()
                        .map_err(|_| bad("quorum is not a number"))?
                }
                _ => return Err(bad("expected 'log VKEY', 'witness VKEY' or 'quorum N'")),
            }
        }
        let log = log.ok_or_else(|| {
            LedgerError::InvalidArgument("trust file has no 'log VKEY' line".into())
        })?;
        if quorum > witnesses.len() {
            return Err(LedgerError::InvalidArgument(format!(
                "quorum {quorum} exceeds the {} witnesses listed",
                witnesses.len()
            )));
        }
        Ok(Trust {
            log,
            witnesses,
            quorum,
            anchors: Vec::new(),
        })
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Record index, when the problem is about one record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// What kind of object: `record`, `checkpoint`, `blob`, `credits`, `log`.
    pub object: String,
    /// What is wrong, with the expected and found values where there are.
    pub problem: String,
}

/// The verifier's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Size of the latest checkpoint (0 if none).
    pub checkpointed_size: u64,
    /// Blobs checked.
    pub blobs: usize,
    /// Credits in circulation after replaying every movement.
    pub credit_supply: u64,
    /// Whether checkpoint signatures were checked against trusted keys.
    pub signatures_checked: bool,
    /// Checkpoints older than the newest that lack the quorum of cosignatures (size, and how
    /// many they have): superseded before their witnesses answered, as when the coordinator
    /// restarts right after signing one. Not a problem: the newest checkpoint, which must have
    /// its quorum, covers their records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub superseded_uncosigned: Vec<(u64, String)>,
    /// Problems; empty means the ledger verifies.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }
}

struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, record: Option<u64>, object: &str, problem: impl Into<String>) {
        self.0.push(Finding {
            record,
            object: object.to_string(),
            problem: problem.into(),
        });
    }
}

/// Verifies the ledger in folder `dir`. With `trust`, checkpoint signatures and cosignature
/// quorums are checked against those keys; without, only the log's internal consistency.
pub fn verify(dir: &Path, trust: Option<&Trust>) -> Result<Report> {
    let db_path = dir.join(DB_DIR);
    if !db_path.exists() {
        return Err(LedgerError::InvalidArgument(format!(
            "{} is not a ledger folder (no {DB_DIR}/ inside)",
            dir.display()
        )));
    }
    let db = crate::store::open_db(&db_path)?;
    let mut f = Findings(Vec::new());

    // Records: contiguous, canonical, event ids, signatures, credits.
    let records = db.open_tree("records")?;
    let mut leaves: Vec<Hash> = Vec::new();
    let mut credits = Credits::new();
    let mut identity: HashMap<(u64, String), [u8; 32]> = HashMap::new();
    for item in records.iter() {
        let (key, bytes) = item?;
        let expected = leaves.len() as u64;
        let index = match <[u8; 8]>::try_from(key.as_ref()) {
            Ok(k) => u64::from_be_bytes(k),
            Err(_) => {
                f.add(None, "log", format!("a record key of {} bytes", key.len()));
                continue;
            }
        };
        if index != expected {
            f.add(
                Some(expected),
                "log",
                format!("record {expected} is missing: the next stored record is {index} (deleted or reordered)"),
            );
        }
        leaves.push(merkle::leaf_hash(&bytes));
        let record = match Record::decode(&bytes) {
            Ok(r) => r,
            Err(e) => {
                f.add(Some(index), "record", e.to_string());
                continue;
            }
        };
        if record.event != index {
            f.add(
                Some(index),
                "record",
                format!(
                    "{} carries event id {} at position {index} (reordered?)",
                    record.body.kind(),
                    record.event
                ),
            );
        }
        check_record(&record, index, trust, &mut identity, &mut credits, &mut f);
    }
    if let Err(e) = credits.check_invariants() {
        f.add(None, "credits", e.to_string());
    }

    // Checkpoints: signatures and quorums, and each signed root recomputed from the records.
    // Checkpoints are visited in increasing size (big-endian keys) while one Merkle frontier
    // absorbs the leaves, so this is a single O(n) pass however many checkpoints there are. Since
    // every root comes from the same leaf sequence, each checkpoint's tree is a prefix of the
    // next one's: successive checkpoints are consistent by construction, which is stronger than
    // checking a consistency proof between them.
    //
    // Quorum: the newest checkpoint must carry one; its records include every older checkpoint's,
    // so its cosignatures vouch for the whole log. An older checkpoint may have been superseded
    // before its witnesses answered (a coordinator that crashed or restarted right after signing
    // it): that is reported (`superseded_uncosigned`), not a finding, because it hides nothing.
    let checkpoints = db.open_tree("checkpoints")?;
    let mut count = 0;
    let mut frontier = merkle::Frontier::new();
    let mut checkpointed_size = 0;
    let mut short: Vec<(u64, String)> = Vec::new();
    let newest = checkpoints.last()?.map(|(k, _)| k);
    // Every checkpoint the log signed stays stored (cosignatures only add to it): an anchor must
    // find its own among these, not just records that hash to its root.
    let mut stored: std::collections::BTreeMap<u64, Hash> = Default::default();
    for item in checkpoints.iter() {
        let (key, value) = item?;
        count += 1;
        let text = String::from_utf8_lossy(&value);
        if let Ok(cp) = note::parse(&text).and_then(|n| note::Checkpoint::from_text(&n.text)) {
            stored.insert(cp.size, cp.root);
        }
        let cp = match check_checkpoint(&text, trust) {
            Ok((cp, None)) => cp,
            Ok((cp, Some(why))) => {
                if Some(&key) == newest.as_ref() {
                    f.add(None, "checkpoint", why);
                } else {
                    short.push((cp.size, why));
                }
                cp
            }
            Err(e) => {
                f.add(None, "checkpoint", e.to_string());
                continue;
            }
        };
        let size = cp.size;
        if key.as_ref() != size.to_be_bytes() {
            f.add(
                None,
                "checkpoint",
                format!("checkpoint of size {size} is stored under another size"),
            );
            continue;
        }
        if size > leaves.len() as u64 {
            f.add(
                None,
                "checkpoint",
                format!(
                    "checkpoint of size {size} but only {} records exist (records deleted?)",
                    leaves.len()
                ),
            );
            continue;
        }
        while frontier.size() < size {
            frontier.push(leaves[frontier.size() as usize]);
        }
        let root = frontier.root();
        if root != cp.root {
            f.add(
                None,
                "checkpoint",
                format!(
                    "size {size}: signed root {} but the records hash to {}",
                    hex::encode(cp.root),
                    hex::encode(root)
                ),
            );
        }
        checkpointed_size = size;
    }

    // Anchors: checkpoints hospitals cosigned must still be here, over the same records.
    for anchor in trust.map(|t| &t.anchors[..]).unwrap_or(&[]) {
        let size = anchor.size;
        let found = usize::try_from(size)
            .ok()
            .filter(|&s| s <= leaves.len())
            .map(|s| merkle::root(&leaves[..s]));
        if found != Some(anchor.root) {
            f.add(
                None,
                "checkpoint",
                format!(
                    "a hospital holds a cosigned checkpoint of size {size} (root {}) that this \
                     ledger no longer reproduces: history was rewritten or truncated",
                    hex::encode(anchor.root)
                ),
            );
        } else if stored.get(&size) != Some(&anchor.root) {
            f.add(
                None,
                "checkpoint",
                format!(
                    "a hospital holds a cosigned checkpoint of size {size} (root {}) that this \
                     ledger no longer holds: the checkpoint was deleted, though its records remain",
                    hex::encode(anchor.root)
                ),
            );
        }
    }
    if trust.is_some() && count == 0 && !leaves.is_empty() {
        f.add(
            None,
            "checkpoint",
            format!(
                "{} records but no checkpoint vouches for any of them",
                leaves.len()
            ),
        );
    }

    // Blobs: content addresses.
    let blobs = db.open_tree("blobs")?;
    let mut blob_count = 0;
    for item in blobs.iter() {
        let (key, value) = item?;
        blob_count += 1;
        let digest = sha256(&value);
        if key.as_ref() != digest {
            f.add(
                None,
                "blob",
                format!(
                    "blob stored under {} hashes to {} (altered or swapped)",
                    hex::encode(&key),
                    hex::encode(digest)
                ),
            );
        }
    }

    Ok(Report {
        records: leaves.len() as u64,
        checkpoints: count,
        checkpointed_size,
        superseded_uncosigned: short,
        blobs: blob_count,
        credit_supply: credits.total_supply(),
        signatures_checked: trust.is_some(),
        findings: f.0,
    })
}

/// Per-record semantic checks: the signatures of hospitals' submissions and evaluations against
/// their enrolled identity keys, of their declines against their trusted keys, credits.
fn check_record(
    record: &Record,
    index: u64,
    trust: Option<&Trust>,
    identity: &mut HashMap<(u64, String), [u8; 32]>,
    credits: &mut Credits,
    f: &mut Findings,
) {
    match &record.body {
        Body::HospitalEnrolled {
            job,
            hospital,
            identity_key,
            ..
        } => {
            if let Some(t) = trust {
                match t.witnesses.iter().find(|w| w.name() == hospital) {
                    Some(w) if &w.public_key() != identity_key => f.add(
                        Some(index),
                        "record",
                        format!(
                            "hospital_enrolled: {hospital} enrolled with key {} but the trusted \
                             key of {hospital} is {}",
                            hex::encode(identity_key),
                            hex::encode(w.public_key())
                        ),
                    ),
                    Some(_) => {}
                    None => f.add(
                        Some(index),
                        "record",
                        format!("hospital_enrolled: {hospital} is not a trusted hospital"),
                    ),
                }
            }
            if let Some(previous) = identity.insert((*job, hospital.clone()), *identity_key) {
                if &previous != identity_key {
                    f.add(
                        Some(index),
                        "record",
                        format!("hospital_enrolled: {hospital} enrolled in job {job} again with another key"),
                    );
                }
            }
        }
        Body::UpdateSubmitted { job, .. } | Body::ModelEvaluated { job, .. } => {
            let Some((hospital, msg, signature)) = record.body.hospital_signature() else {
                return;
            };
            let kind = record.body.kind();
            match identity.get(&(*job, hospital.to_string())) {
                None => f.add(
                    Some(index),
                    "record",
                    format!("{kind} by {hospital}, who never enrolled in job {job}"),
                ),
                Some(key) => {
                    if !signature_verifies(key, &msg, signature) {
                        f.add(
                            Some(index),
                            "record",
                            format!("{kind}: {hospital}'s signature does not verify"),
                        );
                    }
                }
            }
        }
        Body::JobDeclined { hospital, .. } => {
            // A declining hospital is not enrolled: its trusted key is the one to check.
            let (Some(t), Some((_, msg, signature))) = (trust, record.body.hospital_signature())
            else {
                return;
            };
            match t.witnesses.iter().find(|w| w.name() == hospital) {
                None => f.add(
                    Some(index),
                    "record",
                    format!("job_declined: {hospital} is not a trusted hospital"),
                ),
                Some(w) if !signature_verifies(&w.public_key(), &msg, signature) => f.add(
                    Some(index),
                    "record",
                    format!(
                        "job_declined: {hospital}'s signature does not verify with its trusted key"
                    ),
                ),
                Some(_) => {}
            }
        }
        Body::CreditsMoved { movement } => {
            if let Err(e) = credits.apply(movement) {
                f.add(Some(index), "credits", e.to_string());
            }
        }
        _ => {}
    }
}

/// The checkpoint, after checking every signature on it that a trusted key can verify, and, when
/// it lacks the trust file's quorum of cosignatures, why.
fn check_checkpoint(text: &str, trust: Option<&Trust>) -> Result<(Checkpoint, Option<String>)> {
    match trust {
        Some(t) => {
            let c = note::cosigned(text, &t.log, &t.witnesses)?;
            let short = c.shortfall(t.quorum);
            Ok((c.checkpoint, short))
        }
        None => {
            let signed = note::parse(text)?;
            Ok((Checkpoint::from_text(&signed.text)?, None))
        }
    }
}
