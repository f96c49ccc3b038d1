//! Failpoints: named places in a round where a crash test can stop the coordinator dead.
//!
//! A crash test must `kill -9` the coordinator in every phase of a round, but most phases last
//! milliseconds (closing a round, or the instant between a round's last share being recorded and
//! its checkpoint being signed), so killing at a random time cannot be aimed at them. With the
//! `failpoints` feature, `FEDCHAIN_FAILPOINT=NAME` or `NAME@ROUND` makes the coordinator, the
//! first time it passes `NAME` (in round `ROUND` of any job, if given) while serving (never while
//! restoring from its ledger), print
//!
//! ```text
//! fedchain coordinator: failpoint NAME reached (job J, round R); stopping here for a crash test
//! ```
//!
//! to stderr and stop there for good, holding its state lock, so nothing else happens until the
//! test kills it. The end-to-end tests turn the feature on; release builds do not have it, and
//! refuse to start when the variable is set rather than silently ignore it.
//!
//! The names, in the order a round passes them:
//!
//! | name | where | what a crash there leaves behind |
//! |---|---|---|
//! | `enrolled` | a hospital's enrollment is recorded, the answer not yet sent | an enrolling job |
//! | `submission-recorded` | an update is recorded, the answer not yet sent | a collecting round |
//! | `aggregate-stored` | a closing round's aggregate blob is stored, its `RoundClosed` not yet recorded | a half-closed round |
//! | `round-closed` | `RoundClosed` is recorded, no decryption asked for yet | an aggregated round |
//! | `share-recorded` | a decryption share is recorded, the round still short of `t` | a decrypting round |
//! | `round-finalized` | `RoundFinalized` and its credits are recorded, the model blob and checkpoint not yet written | a finalizing round |

use std::fmt;

/// The environment variable that arms a failpoint.
pub const VAR: &str = "FEDCHAIN_FAILPOINT";

/// Every failpoint, in the order a round passes them.
pub const NAMES: &[&str] = &[
    "enrolled",
    "submission-recorded",
    "aggregate-stored",
    "round-closed",
    "share-recorded",
    "round-finalized",
];

/// An armed failpoint: a name and, optionally, the round it waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed {
    /// One of [`NAMES`].
    pub name: String,
    /// Stop only in this round.
    pub round: Option<u64>,
}

impl fmt::Display for Armed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.round {
            Some(r) => write!(f, "{}@{r}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Parses `NAME` or `NAME@ROUND`.
pub fn parse(text: &str) -> Result<Armed, String> {
    let (name, round) = match text.split_once('@') {
        Some((n, r)) => {
            let r = r
                .parse::<u64>()
                .map_err(|_| format!("{VAR}={text:?}: {r:?} is not a round number"))?;
            (n, Some(r))
        }
        None => (text, None),
    };
    if !NAMES.contains(&name) {
        return Err(format!(
            "{VAR}={text:?}: unknown failpoint {name:?}; known: {}",
            NAMES.join(", ")
        ));
    }
    Ok(Armed {
        name: name.to_string(),
        round,
    })
}

/// Reads [`VAR`]: `Ok(None)` when unset. Set in a build without the `failpoints` feature it is
/// an error, so that a crash test cannot pass by never crashing.
pub fn from_env() -> Result<Option<Armed>, String> {
    let Ok(text) = std::env::var(VAR) else {
        return Ok(None);
    };
    let armed = parse(&text)?;
    if cfg!(feature = "failpoints") {
        Ok(Some(armed))
    } else {
        Err(format!(
            "{VAR} is set ({armed}), but this coordinator was built without the `failpoints` \
             feature; unset it (failpoints are for crash tests only)"
        ))
    }
}

/// Stops the coordinator for good if `name` is armed for `round` and has not fired yet.
pub(crate) fn hit(armed: &Option<Armed>, name: &'static str, job: u64, round: u64) {
    #[cfg(feature = "failpoints")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static FIRED: AtomicBool = AtomicBool::new(false);
        let Some(a) = armed else { return };
        if a.name != name
            || a.round.is_some_and(|r| r != round)
            || FIRED.swap(true, Ordering::SeqCst)
        {
            return;
        }
        eprintln!(
            "fedchain coordinator: failpoint {name} reached (job {job}, round {round}); stopping \
             here for a crash test"
        );
        loop {
            std::thread::park();
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (armed, name, job, round);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rounds_and_rejects_the_rest() {
        assert_eq!(
            parse("round-closed@2").unwrap(),
            Armed {
                name: "round-closed".into(),
                round: Some(2)
            }
        );
        assert_eq!(parse("enrolled").unwrap().round, None);
        assert!(parse("round-closed@two")
            .unwrap_err()
            .contains("round number"));
        assert!(parse("closing").unwrap_err().contains("known: enrolled"));
    }
}
