//! A fork is an incident, not a retry.
//!
//! Every hospital keeps the newest checkpoint it cosigned (its witness state, signed by the log)
//! and shows it when it opens its task stream. If this ledger no longer reproduces that
//! checkpoint, records the hospitals cosigned were lost (a storage fault, a restored backup) and
//! anything appended now would fork the log away from what they signed: the hospitals would
//! refuse every later checkpoint and auditors would find two histories. So the coordinator
//! answers `DATA_LOSS`, writes what it found to [`INCIDENT_FILE`] in its ledger folder (fsynced),
//! appends nothing more, and stops serving with an error. While that file exists it refuses to
//! start, so a supervisor's restart cannot paper over the loss: an operator restores the ledger
//! from a copy that reproduces the hospitals' checkpoints, then removes the file.

use super::*;
use fedchain_ledger::durable;

/// The incident report in the ledger folder; while it exists the coordinator does not start.
pub const INCIDENT_FILE: &str = "INCIDENT.txt";

/// Refuses to start over a ledger folder with an open incident.
pub(super) fn refuse_open_incident(state: &Path) -> Result<(), ServiceError> {
    let path = state.join(INCIDENT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(report) => Err(ServiceError::Incident {
            path,
            summary: report.lines().next().unwrap_or_default().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ServiceError::Io { path, source }),
    }
}

/// Why the coordinator stopped serving on its own.
#[derive(Debug, Clone)]
pub(super) enum Halt {
    /// The ledger lost records a hospital cosigned: an incident, recorded in [`INCIDENT_FILE`].
    Fork(String),
    /// Writing the ledger failed (a full or failing disk). Nothing that failed to be written was
    /// acknowledged, and memory may hold state the ledger does not, so the coordinator stops; a
    /// restart resumes from what the ledger holds.
    Storage(String),
}

impl Shared {
    /// Why this coordinator stopped, if it did.
    pub(super) fn halted(&self) -> Option<Halt> {
        self.halted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The answer to every request once stopped.
    pub(super) fn halt_status(&self) -> Option<Status> {
        self.halted().map(|h| match h {
            Halt::Fork(why) => {
                Status::data_loss(format!("the coordinator stopped after an incident: {why}"))
            }
            Halt::Storage(why) => Status::unavailable(format!(
                "{why}; the coordinator stopped and resumes from its ledger when restarted"
            )),
        })
    }

    /// Stops the coordinator (the first halt wins): no append, no deadline, no answer but the
    /// halt's, and the server ends with an error.
    fn halt(&self, halt: Halt) {
        let mut halted = self.halted.lock().unwrap_or_else(|p| p.into_inner());
        if halted.is_none() {
            *halted = Some(halt);
            self.closing.store(true, Ordering::SeqCst);
            self.halt.notify_one();
            self.bump();
        }
    }

    /// A write to the ledger failed: stops, naming the folder and the cause, and returns the
    /// status for the request that was being answered (it was not acknowledged). The store
    /// refusing what the coordinator produced (a credit invariant, an encoding) is a bug, not the
    /// disk: it stops the same way, and says which.
    pub(super) fn storage_failed(&self, e: LedgerError) -> Status {
        let why = match &e {
            LedgerError::Storage(_) | LedgerError::Io { .. } => format!(
                "writing the ledger in {} failed: {e}",
                self.config.state.display()
            ),
            _ => format!(
                "the ledger in {} refused what the coordinator produced, a bug to report: {e}",
                self.config.state.display()
            ),
        };
        if self.halted().is_none() {
            eprintln!(
                "fedchain coordinator: STORAGE ERROR: {why}\n\
                 fedchain coordinator: stopping; nothing that failed to be written was \
                 acknowledged, and a restart resumes every job from the ledger"
            );
        }
        self.halt(Halt::Storage(why));
        self.halt_status()
            .unwrap_or_else(|| Status::unavailable("the coordinator is stopping"))
    }

    /// Checks a hospital's witness state (`note`, the newest checkpoint it cosigned) against the
    /// ledger; on a fork, declares the incident.
    pub(super) fn check_witnessed(&self, hospital: &str, note_text: &str) -> SResult<()> {
        let (signed, _) = note::open(note_text, std::slice::from_ref(&self.signer.verifier()))
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "your witness state is not a checkpoint this log signed: {e}"
                ))
            })?;
        let cp = Checkpoint::from_text(&signed.text)
            .map_err(|e| Status::invalid_argument(format!("your witness state: {e}")))?;
        // Under the state lock, so that no append slips in between the check and the halt.
        let st = self.lock();
        match st.store.reproduces(&cp) {
            Ok(()) => Ok(()),
            Err(LedgerError::Inconsistent(why)) => {
                Err(self.declare_fork(&st, hospital, note_text, &why))
            }
            Err(e) => Err(Status::invalid_argument(format!("your witness state: {e}"))),
        }
    }

    /// Records the incident (the report file first, fsynced), stops every append and the server,
    /// and returns the status for the hospital that showed it. `_st`: the state lock, held so that
    /// appends see the halt at once.
    fn declare_fork(&self, _st: &State, hospital: &str, note_text: &str, why: &str) -> Status {
        let summary = format!(
            "ledger fork: hospital {hospital} cosigned a checkpoint this ledger does not \
             reproduce ({why})"
        );
        let path = self.config.state.join(INCIDENT_FILE);
        let report = format!(
            "{summary}\n\n\
             Detected at {} ms since the Unix epoch, when {hospital} opened its task stream.\n\
             Records the hospitals had cosigned were lost (a storage fault, or a ledger folder \
             restored from an older copy). Appending now would fork the log away from what they \
             signed, so the coordinator stopped and will not start while this file exists.\n\n\
             To recover: restore the ledger folder from a backup that reproduces the hospitals' \
             newest checkpoints, check it with `fedchain audit verify --ledger DIR --trust \
             trust.txt --anchor WITNESS_FILE` for each hospital's witness file, then remove this \
             file.\n\n\
             The checkpoint {hospital} holds, signed by this log:\n\n{note_text}",
            now_ms()
        );
        if self.halted().is_none() {
            let written = durable::replace_file(&path, report.as_bytes());
            eprintln!(
                "fedchain coordinator: INCIDENT: {summary}\n\
                 fedchain coordinator: stopping; report {} ({})",
                path.display(),
                match written {
                    Ok(()) => "written".to_string(),
                    Err(e) => format!("NOT written: {e}"),
                }
            );
            self.halt(Halt::Fork(summary.clone()));
        }
        Status::data_loss(format!(
            "{summary}; the coordinator stopped (see {INCIDENT_FILE} in its ledger folder)"
        ))
    }
}
