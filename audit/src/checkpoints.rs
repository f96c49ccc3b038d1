//! The checkpoints of a ledger, each checked against the trust file: what `fedchain audit
//! checkpoints` lists, from a ledger folder or from a running coordinator's ledger service.

use fedchain_ledger::note;
use fedchain_ledger::store::Store;
use fedchain_ledger::verify::Trust;
use fedchain_proto::v1 as pb;
use pb::ledger_service_client::LedgerServiceClient;
use serde::Serialize;
use tonic::transport::Channel;

use crate::error::{rpc, AuditError};

/// Most checkpoints an auditor reads from one coordinator: a bound on what a hostile service can
/// make it hold (a checkpoint per finalized round for a thousand years of daily rounds is fewer).
pub const MAX_CHECKPOINTS: usize = 1_000_000;

/// One signed checkpoint, as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointView {
    /// Tree size.
    pub size: u64,
    /// Merkle root, hex.
    pub root: String,
    /// Hospitals whose cosignatures verified.
    pub cosigners: Vec<String>,
    /// Cosignatures the trust file requires.
    pub quorum: usize,
    /// Whether the log's signature verified and the quorum is met.
    pub ok: bool,
    /// What is wrong, when something is: a signature that does not verify, or a short quorum.
    pub problem: Option<String>,
}

/// Checks the signed checkpoint notes `notes` (smallest size first) against `trust`. A
/// checkpoint short of its quorum is a problem only when it is the newest: an older one may have
/// been superseded before its witnesses answered, which hides nothing (the newest covers it).
/// `live`: the notes come from a running coordinator, whose newest checkpoint may still be
/// collecting cosignatures; then that is a note too, provided an older one carries the quorum.
pub fn check(notes: &[String], trust: &Trust, live: bool) -> Vec<CheckpointView> {
    let mut views = check_strict(notes, trust);
    let earlier_quorum = views
        .iter()
        .rev()
        .skip(1)
        .any(|v| v.ok && v.problem.is_none());
    if let Some(newest) = views.last_mut() {
        let signed = newest
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("cosigned by"));
        if live && !newest.ok && signed && earlier_quorum {
            newest.ok = true;
            newest.problem = newest
                .problem
                .take()
                .map(|p| format!("{p} (still collecting cosignatures)"));
        }
    }
    views
}

fn check_strict(notes: &[String], trust: &Trust) -> Vec<CheckpointView> {
    let last = notes.len().saturating_sub(1);
    notes
        .iter()
        .enumerate()
        .map(
            |(i, text)| match note::cosigned(text, &trust.log, &trust.witnesses) {
                Ok(c) => {
                    let short = c.shortfall(trust.quorum);
                    let problem = match short {
                        Some(why) if i == last => Some(why),
                        Some(why) => {
                            Some(format!("{why} (superseded before its witnesses answered)"))
                        }
                        None => None,
                    };
                    CheckpointView {
                        size: c.checkpoint.size,
                        root: hex::encode(c.checkpoint.root),
                        ok: problem.is_none() || i != last,
                        cosigners: c.cosigners,
                        quorum: trust.quorum,
                        problem,
                    }
                }
                Err(e) => {
                    let cp = note::checkpoint_in(text).ok();
                    CheckpointView {
                        size: cp.as_ref().map_or(0, |c| c.size),
                        root: cp.map(|c| hex::encode(c.root)).unwrap_or_default(),
                        cosigners: Vec::new(),
                        quorum: trust.quorum,
                        ok: false,
                        problem: Some(e.to_string()),
                    }
                }
            },
        )
        .collect()
}

/// The checkpoints stored in a ledger folder, checked, each against the folder's records too:
/// a signed root the records do not reproduce is a failure.
pub fn of_store(store: &Store, trust: &Trust) -> Result<Vec<CheckpointView>, AuditError> {
    let notes: Vec<String> = store.checkpoints()?.into_iter().map(|(_, n)| n).collect();
    let mut views = check(&notes, trust, false);
    for (view, text) in views.iter_mut().zip(&notes) {
        let Ok(cp) = note::checkpoint_in(text) else {
            continue;
        };
        if let Err(e) = store.reproduces(&cp) {
            view.ok = false;
            view.problem = Some(e.to_string());
        }
    }
    Ok(views)
}

/// Every checkpoint a coordinator's ledger service lists, page by page, checked.
pub async fn of_service(
    client: &mut LedgerServiceClient<Channel>,
    trust: &Trust,
) -> Result<Vec<CheckpointView>, AuditError> {
    let mut notes = Vec::new();
    let mut after = 0;
    loop {
        if notes.len() > MAX_CHECKPOINTS {
            return Err(crate::error::untrusted(format!(
                "the coordinator lists more than {MAX_CHECKPOINTS} checkpoints"
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
    Ok(check(&notes, trust, true))
}
