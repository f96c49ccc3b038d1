//! What the dashboard shows, built once from a ledger folder: every record, the verdicts of
//! `audit verify` and `audit replay`, and per job, round, checkpoint, account and party the
//! figures the pages draw. Pages only render a [`View`]; nothing here is computed while serving.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use fedchain_audit::checkpoints::CheckpointView;
use fedchain_audit::ReplayReport;
use fedchain_consortium::AuditorFolder;
use fedchain_ledger::credits::{Account, Credits};
use fedchain_ledger::record::{Body, JobStatus, PrivacySpend, Record};
use fedchain_ledger::store::Store;
use fedchain_ledger::verify::Report;
use fedchain_ledger::{merkle, Hash};
use fedchain_proto::v1::JobSpec;
use prost::Message;

use crate::DashboardError;

/// One ledger record as listed.
#[derive(Debug, Clone)]
pub struct RecordRow {
    /// Its index in the log.
    pub index: u64,
    /// When, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The body's kind (`job_submitted`, `update_submitted`, ...).
    pub kind: String,
    /// The job it belongs to, if any.
    pub job: Option<u64>,
    /// The round it belongs to, if any.
    pub round: Option<u64>,
    /// The actor and every party the body names.
    pub parties: Vec<String>,
    /// The actor, as `role id`.
    pub actor: String,
    /// `success`, `minor_failure` or `serious_failure`.
    pub outcome: String,
    /// The record as stored (JSON).
    pub json: String,
    /// Its Merkle leaf hash.
    pub leaf: Hash,
    /// What `audit verify` or `audit replay` found wrong with this record.
    pub problems: Vec<String>,
}

/// One round of a job.
#[derive(Debug, Clone, Default)]
pub struct RoundView {
    /// The round (0 pools statistics).
    pub round: u64,
    /// Hospitals whose submissions were aggregated (from `RoundClosed`).
    pub participants: Vec<String>,
    /// Hospitals that submitted, with the record.
    pub submissions: Vec<(String, u64)>,
    /// Decryption shares: hospital, whether its proof verified, the record.
    pub shares: Vec<(String, bool, u64)>,
    /// The model digest after the round, hex (from `RoundFinalized`).
    pub model: Option<String>,
    /// The `RoundFinalized` record.
    pub finalized_record: Option<u64>,
    /// The round's model file, when the ledger folder holds it (the coordinator keeps each
    /// released model as a blob): its parameters have the digest of `model`.
    pub model_file: Option<Arc<Vec<u8>>>,
    /// The replay's report, when the round finalized.
    pub replayed: Option<fedchain_audit::replay::RoundReport>,
    /// Figures the replay confirmed: pooled from the evaluations that verified.
    pub metrics: Vec<(String, f64)>,
    /// Figures the ledger claims (pooled from every `ModelEvaluated` record of the round),
    /// shown only where they differ from what the replay confirmed.
    pub claimed: Vec<(String, f64)>,
    /// Privacy spent, per participant.
    pub privacy: Vec<PrivacySpend>,
    /// What does not check out in this round.
    pub problems: Vec<String>,
}

impl RoundView {
    /// The round's verdict for a page: `verified`, `failed`, or `not finalized`.
    pub fn verdict(&self) -> Verdict {
        if !self.problems.is_empty() {
            Verdict::Failed
        } else if self.replayed.as_ref().is_some_and(|r| r.finalized) {
            Verdict::Verified
        } else {
            Verdict::Unconfirmed
        }
    }

    /// A confirmed figure by name.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
}

/// What the replay says of a round or a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Re-derived from the records, and everything matched.
    Verified,
    /// Something did not match.
    Failed,
    /// Not re-derived (a round in progress, or one its job failed in).
    Unconfirmed,
}

impl Verdict {
    /// The word a page shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Failed => "failed",
            Verdict::Unconfirmed => "not finalized",
        }
    }
}

/// One job.
#[derive(Debug, Clone, Default)]
pub struct JobView {
    /// Its id.
    pub id: u64,
    /// Who submitted it.
    pub researcher: String,
    /// Its spec digest, hex.
    pub spec: String,
    /// The `JobSubmitted` record.
    pub submitted_record: u64,
    /// When it was submitted.
    pub submitted_ms: u64,
    /// The model (`mlp`, `cnn`, `torchscript`, ...), when the spec is on the ledger.
    pub model: String,
    /// Rounds asked for.
    pub rounds_planned: Option<u32>,
    /// Credits put in escrow.
    pub budget: u64,
    /// Credits the escrow paid out (rewards); the rest went back to the researcher.
    pub spent: u64,
    /// Enrolled hospitals and their declared rows.
    pub enrolled: Vec<(String, u64)>,
    /// Hospitals that declined, and why.
    pub declined: Vec<(String, String)>,
    /// How it ended, and why.
    pub end: Option<(JobStatus, String)>,
    /// Rounds, in order (round 0 first).
    pub rounds: Vec<RoundView>,
    /// Problems the replay found that belong to the job but to no round.
    pub problems: Vec<String>,
}

impl JobView {
    /// `running`, `finished`, `failed` or `cancelled`.
    pub fn state(&self) -> &'static str {
        match &self.end {
            None => "running",
            Some((JobStatus::Finished, _)) => "finished",
            Some((JobStatus::Failed, _)) => "failed",
            Some((JobStatus::Cancelled, _)) => "cancelled",
        }
    }

    /// The job's verdict: failed when any of its rounds or itself failed.
    pub fn verdict(&self) -> Verdict {
        if !self.problems.is_empty() || self.rounds.iter().any(|r| r.verdict() == Verdict::Failed) {
            Verdict::Failed
        } else if self.rounds.iter().any(|r| r.verdict() == Verdict::Verified) {
            Verdict::Verified
        } else {
            Verdict::Unconfirmed
        }
    }

    /// The last finalized model round.
    pub fn last_model_round(&self) -> Option<&RoundView> {
        self.rounds
            .iter()
            .rev()
            .find(|r| r.round > 0 && r.finalized_record.is_some())
    }
}

/// One party of the consortium.
#[derive(Debug, Clone)]
pub struct PartyView {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its key-share index (hospitals).
    pub index: Option<usize>,
    /// SHA-256 of its certificate.
    pub cert_sha256: String,
    /// Its identity key (hospitals).
    pub identity: Option<String>,
    /// Records it acted in.
    pub records: usize,
    /// Checkpoints it cosigned (hospitals).
    pub cosigned: usize,
    /// Its certificate's state: `in force`, `revoked ...`, or why it could not be told.
    pub certificate: String,
}

/// A balance that changed, for the credit charts.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// The record that moved it.
    pub record: u64,
    /// When.
    pub time_ms: u64,
    /// The balance after it.
    pub balance: u64,
}

/// Everything the pages show.
#[derive(Debug, Clone)]
pub struct View {
    /// Where the records came from (a folder, or a coordinator's address).
    pub source: String,
    /// When the view was built, milliseconds since the Unix epoch.
    pub built_ms: u64,
    /// Seconds `audit verify` and `audit replay` took.
    pub check_seconds: f64,
    /// `audit verify`'s report.
    pub verify: Report,
    /// `audit replay`'s report.
    pub replay: ReplayReport,
    /// Every record, in log order.
    pub records: Vec<RecordRow>,
    /// Every signed checkpoint, checked.
    pub checkpoints: Vec<CheckpointView>,
    /// Jobs by id.
    pub jobs: BTreeMap<u64, JobView>,
    /// Balances over time of researchers, hospitals and the treasury.
    pub credits: BTreeMap<String, Vec<Point>>,
    /// The consortium's parties.
    pub parties: Vec<PartyView>,
    /// The decryption threshold, which is also the cosignature quorum.
    pub threshold: usize,
    /// Why the records could not be read for the replay (records missing, reordered or not
    /// decoding): then only `verify`'s findings are shown.
    pub unreadable: Option<String>,
    /// Why the last refresh of a live view failed, when it did: the pages are older than said.
    pub refresh_error: Option<String>,
}

impl View {
    /// Whether both `audit verify` and `audit replay` passed.
    pub fn ok(&self) -> bool {
        self.verify.ok() && self.replay.ok() && self.unreadable.is_none()
    }

    /// Problems found, all told.
    pub fn problems(&self) -> usize {
        self.verify.findings.len() + self.replay.discrepancies.len()
    }

    /// The inclusion proof of record `index` in the newest good checkpoint that covers it:
    /// `(size, root hex, proof)`.
    pub fn inclusion(&self, index: u64) -> Option<(u64, String, Vec<Hash>)> {
        let cp = self
            .checkpoints
            .iter()
            .rev()
            .find(|c| c.ok && c.problem.is_none() && c.size > index)?;
        let leaves: Vec<Hash> = self.records.iter().map(|r| r.leaf).collect();
        let proof = merkle::inclusion_proof(&leaves, index, cp.size).ok()?;
        Some((cp.size, cp.root.clone(), proof))
    }
}

/// Builds the view of the ledger folder `ledger`, trusting the public files of the party folder
/// `party` (an auditor's, or any party's), with `anchors` (checkpoints hospitals kept) as for
/// `audit replay`. Runs `audit verify` and `audit replay` first. Opens the ledger only while
/// building, so that a stopped coordinator can start again meanwhile.
pub fn build(
    ledger: &Path,
    party: &Path,
    anchors: Vec<fedchain_ledger::note::Checkpoint>,
    source: String,
) -> Result<View, DashboardError> {
    let started = std::time::Instant::now();
    let folder = AuditorFolder::open(party)?;
    let mut trust = folder.trust.clone();
    trust.anchors.extend(anchors);
    let verify = fedchain_ledger::verify::verify(ledger, Some(&trust))?;
    // A ledger whose records no longer reproduce its checkpoints is still replayed: `verify`
    // reports the damage, and the replay says which rounds the changed records touch.
    let store = match Store::open_to_read(ledger, trust.log.name()) {
        Ok((store, _damaged)) => store,
        // Records the replay cannot even read: show what `verify` found, which names them.
        Err(e) => {
            return Ok(View {
                source,
                built_ms: now_ms(),
                check_seconds: started.elapsed().as_secs_f64(),
                verify,
                replay: ReplayReport::default(),
                records: Vec::new(),
                checkpoints: Vec::new(),
                jobs: BTreeMap::new(),
                credits: BTreeMap::new(),
                parties: parties_of(&folder, party, &[], &[]),
                threshold: folder.description.threshold,
                unreadable: Some(e.to_string()),
                refresh_error: None,
            })
        }
    };
    let replay = fedchain_audit::replay(&store, &folder.public_key, &folder.hospitals)?;
    let check_seconds = started.elapsed().as_secs_f64();
    let checkpoints = fedchain_audit::checkpoints::of_store(&store, &trust)?;

    let mut records = Vec::with_capacity(store.len() as usize);
    let mut jobs: BTreeMap<u64, JobView> = BTreeMap::new();
    let mut evaluations: Evaluations = BTreeMap::new();
    let mut credits = Credits::new();
    let mut series: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    let mut referenced: BTreeSet<Hash> = BTreeSet::new();
    for index in 0..store.len() {
        let (record, bytes) = store.record(index)?;
        if let Body::JobSubmitted { spec: d, .. }
        | Body::UpdateSubmitted { ciphertexts: d, .. }
        | Body::RoundClosed { aggregate: d, .. }
        | Body::DecryptionShare { share: d, .. } = &record.body
        {
            referenced.insert(*d);
        }
        let row = row(index, &record, &bytes);
        follow(&store, &mut jobs, &mut evaluations, index, &record);
        if let Body::CreditsMoved { movement } = &record.body {
            // The store refuses to open over a movement the credit rules refuse; should one
            // get here all the same, the chart skips it (and `verify` reports it).
            if credits.apply(movement).is_ok() {
                for (account, balance) in credits.balances() {
                    if matches!(account, Account::Escrow(_) | Account::Deposit { .. }) {
                        continue;
                    }
                    let s = series.entry(account.to_string()).or_default();
                    if s.last().is_none_or(|p| p.balance != *balance) {
                        s.push(Point {
                            record: index,
                            time_ms: record.time_ms,
                            balance: *balance,
                        });
                    }
                }
            }
        }
        records.push(row);
    }
    attach_model_files(&store, &referenced, &mut jobs)?;
    drop(store);

    // Attach what the checks found to records, rounds and jobs.
    for f in &verify.findings {
        let problem = format!("{}: {}", f.object, f.problem);
        if let Some(r) = f.record.and_then(|i| records.get_mut(i as usize)) {
            r.problems.push(problem.clone());
            if let Some(j) = r.job.and_then(|j| jobs.get_mut(&j)) {
                match r.round {
                    Some(n) => round_mut(j, n).problems.push(problem),
                    None => j.problems.push(problem),
                }
            }
        }
    }
    for d in &replay.discrepancies {
        let problem = format!("{}: expected {}, found {}", d.check, d.expected, d.found);
        if let Some(r) = d.record.and_then(|i| records.get_mut(i as usize)) {
            r.problems.push(problem.clone());
        }
        if let Some(j) = jobs.get_mut(&d.job) {
            match d.round {
                Some(n) => round_mut(j, n).problems.push(problem),
                None => j.problems.push(problem),
            }
        }
    }
    for r in &replay.rounds {
        if let Some(j) = jobs.get_mut(&r.job) {
            let x = round_mut(j, r.round);
            x.metrics = r.metrics.clone();
            x.replayed = Some(r.clone());
        }
    }
    for ((job, round), reports) in &evaluations {
        if let Some(j) = jobs.get_mut(job) {
            let x = round_mut(j, *round);
            // Pooled in hospital order, as the replay pools: an honest round's figures are the
            // same bits, and the tolerance only forgives the last one.
            let claimed = fedchain_protocol::pooled_metrics(reports.values());
            let same = claimed.len() == x.metrics.len()
                && claimed.iter().zip(&x.metrics).all(|((a, u), (b, v))| {
                    a == b && (u - v).abs() <= 1e-12 * u.abs().max(v.abs()).max(1.0)
                });
            if !same {
                x.claimed = claimed;
            }
        }
    }

    let parties = parties_of(&folder, party, &records, &checkpoints);

    Ok(View {
        source,
        built_ms: now_ms(),
        check_seconds,
        verify,
        replay,
        records,
        checkpoints,
        jobs,
        credits: series,
        parties,
        threshold: folder.description.threshold,
        unreadable: None,
        refresh_error: None,
    })
}

/// The consortium's parties, with what the records and checkpoints say of each.
fn parties_of(
    folder: &AuditorFolder,
    party: &Path,
    records: &[RecordRow],
    checkpoints: &[CheckpointView],
) -> Vec<PartyView> {
    folder
        .description
        .parties
        .iter()
        .map(|p| PartyView {
            name: p.name.clone(),
            role: p.role.to_string(),
            index: p.index,
            cert_sha256: p.cert_sha256.clone(),
            identity: p.identity_vkey.clone(),
            records: records
                .iter()
                .filter(|r| r.parties.contains(&p.name))
                .count(),
            cosigned: checkpoints
                .iter()
                .filter(|c| c.cosigners.contains(&p.name))
                .count(),
            certificate: crate::parties::certificate_state(party, p),
        })
        .collect()
}

/// Each round's first evaluation by each hospital, by (job, round) and hospital.
type Evaluations = BTreeMap<(u64, u64), BTreeMap<String, fedchain_protocol::Evaluation>>;

/// Model files the pages serve, at most this many bytes in all (the most recently finalized
/// rounds first); older rounds of a larger ledger are downloaded with `fedchain job download
/// --round`.
pub const MAX_MODEL_BYTES: usize = 256 << 20;

/// Finds each finalized round's model file among the blobs no record names (records name specs,
/// ciphertexts, aggregates and shares; the coordinator keeps released model files beside them)
/// by the digest of its parameters, and keeps the most recent within [`MAX_MODEL_BYTES`]. One
/// blob is held at a time while looking.
fn attach_model_files(
    store: &Store,
    referenced: &BTreeSet<Hash>,
    jobs: &mut BTreeMap<u64, JobView>,
) -> Result<(), DashboardError> {
    // Model digest -> (finalized record, job, round) of every round that released it.
    let mut wanted: HashMap<String, Vec<(u64, u64, u64)>> = HashMap::new();
    for j in jobs.values() {
        for r in j.rounds.iter().filter(|r| r.round > 0) {
            if let (Some(m), Some(rec)) = (&r.model, r.finalized_record) {
                wanted
                    .entry(m.clone())
                    .or_default()
                    .push((rec, j.id, r.round));
            }
        }
    }
    let mut found: Vec<(u64, u64, u64, Hash, usize)> = Vec::new();
    for digest in store.blob_digests()? {
        if referenced.contains(&digest) {
            continue;
        }
        let Some(bytes) = store.blob(&digest)? else {
            continue;
        };
        // A safetensors file opens with its header's length, then the JSON header.
        let header = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        if !header.is_some_and(|n| n < bytes.len() as u64 && bytes.get(8) == Some(&b'{')) {
            continue;
        }
        let Ok(file) = fedchain_model_core::ModelFile::from_bytes(&bytes, Path::new("<blob>"))
        else {
            continue;
        };
        for &(rec, job, round) in wanted
            .get(&hex::encode(file.digest().0))
            .into_iter()
            .flatten()
        {
            found.push((rec, job, round, digest, bytes.len()));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut kept = 0;
    let mut loaded: HashMap<Hash, Arc<Vec<u8>>> = HashMap::new();
    for (_, job, round, digest, len) in found {
        if let std::collections::hash_map::Entry::Vacant(slot) = loaded.entry(digest) {
            if kept + len > MAX_MODEL_BYTES {
                continue;
            }
            let Some(bytes) = store.blob(&digest)? else {
                continue;
            };
            kept += len;
            slot.insert(Arc::new(bytes));
        }
        if let Some(j) = jobs.get_mut(&job) {
            round_mut(j, round).model_file = loaded.get(&digest).cloned();
        }
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The round `n` of `j`, added in order when new.
fn round_mut(j: &mut JobView, n: u64) -> &mut RoundView {
    let at = match j.rounds.binary_search_by_key(&n, |r| r.round) {
        Ok(at) => at,
        Err(at) => {
            j.rounds.insert(
                at,
                RoundView {
                    round: n,
                    ..RoundView::default()
                },
            );
            at
        }
    };
    &mut j.rounds[at]
}

/// A record as listed: its kind, job, round and parties read from its JSON, so that every kind
/// of body, present and future, is listed without a case here.
fn row(index: u64, record: &Record, bytes: &[u8]) -> RecordRow {
    let body = serde_json::to_value(&record.body).unwrap_or_default();
    let mut job = body.get("job").and_then(|v| v.as_u64());
    let mut round = body.get("round").and_then(|v| v.as_u64());
    let mut parties = vec![record.actor.id.clone()];
    let mut named = |v: &serde_json::Value| {
        for key in ["hospital", "researcher"] {
            if let Some(s) = v.get(key).and_then(|s| s.as_str()) {
                if !parties.iter().any(|p| p == s) {
                    parties.push(s.to_owned());
                }
            }
        }
    };
    named(&body);
    if let Some(m) = body.get("movement") {
        // Movements are tagged by kind, with the job and parties as fields; a minted account
        // is `{"hospital": name}` or `{"researcher": name}`.
        named(m);
        job = job.or_else(|| m.get("job").and_then(|v| v.as_u64()));
        round = round.or_else(|| m.get("round").and_then(|v| v.as_u64()));
        if let Some(account) = m.get("to").and_then(|a| a.as_object()) {
            for s in account.values().filter_map(|v| v.as_str()) {
                if !parties.iter().any(|p| p == s) {
                    parties.push(s.to_owned());
                }
            }
        }
    }
    if let Some(list) = body.get("participants").and_then(|v| v.as_array()) {
        for p in list.iter().filter_map(|p| p.as_str()) {
            if !parties.iter().any(|x| x == p) {
                parties.push(p.to_owned());
            }
        }
    }
    RecordRow {
        index,
        time_ms: record.time_ms,
        kind: body
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("unknown")
            .to_owned(),
        job,
        round,
        parties,
        actor: format!("{} {}", record.actor.role, record.actor.id),
        outcome: serde_json::to_value(record.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        json: String::from_utf8_lossy(bytes).into_owned(),
        leaf: merkle::leaf_hash(bytes),
        problems: Vec::new(),
    }
}

/// Notes what `record` says about its job.
fn follow(
    store: &Store,
    jobs: &mut BTreeMap<u64, JobView>,
    evaluations: &mut Evaluations,
    index: u64,
    record: &Record,
) {
    match &record.body {
        Body::JobSubmitted {
            job,
            spec,
            researcher,
            budget,
        } => {
            let spec_msg = store
                .blob(spec)
                .ok()
                .flatten()
                .and_then(|b| JobSpec::decode(b.as_slice()).ok());
            let model = spec_msg.as_ref().map_or_else(String::new, |s| {
                if !s.torchscript_module.is_empty() {
                    format!("torchscript ({} bytes)", s.torchscript_module.len())
                } else {
                    s.model
                        .as_ref()
                        .and_then(|m| {
                            serde_json::from_str::<serde_json::Value>(&m.canonical_json).ok()
                        })
                        .and_then(|v| v.get("name").and_then(|k| k.as_str()).map(str::to_owned))
                        .unwrap_or_else(|| "built-in".to_owned())
                }
            });
            jobs.insert(
                *job,
                JobView {
                    id: *job,
                    researcher: researcher.clone(),
                    spec: hex::encode(spec),
                    submitted_record: index,
                    submitted_ms: record.time_ms,
                    model,
                    rounds_planned: spec_msg.map(|s| s.rounds),
                    budget: *budget,
                    ..JobView::default()
                },
            );
        }
        Body::HospitalEnrolled {
            job,
            hospital,
            samples,
            ..
        } => {
            if let Some(j) = jobs.get_mut(job) {
                j.enrolled.push((hospital.clone(), *samples));
            }
        }
        Body::UpdateSubmitted {
            job,
            round,
            hospital,
            ..
        } => {
            if let Some(j) = jobs.get_mut(job) {
                round_mut(j, *round)
                    .submissions
                    .push((hospital.clone(), index));
            }
        }
        Body::RoundClosed {
            job,
            round,
            participants,
            ..
        } => {
            if let Some(j) = jobs.get_mut(job) {
                round_mut(j, *round).participants = participants.clone();
            }
        }
        Body::PrivacySpent {
            job, round, spent, ..
        } => {
            if let Some(j) = jobs.get_mut(job) {
                round_mut(j, *round).privacy = spent.clone();
            }
        }
        Body::DecryptionShare {
            job,
            round,
            hospital,
            verified,
            ..
        } => {
            if let Some(j) = jobs.get_mut(job) {
                round_mut(j, *round)
                    .shares
                    .push((hospital.clone(), *verified, index));
            }
        }
        Body::RoundFinalized {
            job,
            round,
            model_after,
            ..
        } => {
            if let Some(j) = jobs.get_mut(job) {
                let r = round_mut(j, *round);
                r.model = Some(hex::encode(model_after));
                r.finalized_record = Some(index);
            }
        }
        Body::ModelEvaluated {
            job,
            round,
            hospital,
            rows,
            metrics,
            ..
        } => {
            // The first report of a hospital counts, as in the replay, which refuses a second.
            evaluations
                .entry((*job, *round))
                .or_default()
                .entry(hospital.clone())
                .or_insert_with(|| (*rows, metrics.clone()));
        }
        Body::CreditsMoved { movement } => {
            use fedchain_ledger::credits::Movement;
            if let Movement::Reward { job, amount, .. } = movement {
                if let Some(j) = jobs.get_mut(job) {
                    j.spent += amount;
                }
            }
        }
        Body::JobDeclined {
            job,
            hospital,
            reason,
            ..
        } => {
            if let Some(j) = jobs.get_mut(job) {
                j.declined.push((hospital.clone(), reason.clone()));
            }
        }
        Body::JobFinished {
            job,
            status,
            reason,
        } => {
            if let Some(j) = jobs.get_mut(job) {
                j.end = Some((*status, reason.clone()));
            }
        }
        _ => {}
    }
}
