//! What this hospital has already answered, per job and round: the aggregate it decrypted and the
//! global model it trained. The worker does a task again when the coordinator asks again (it lost
//! the answer), but only for the same aggregate or model: two decryptions of different aggregates
//! of one round (all three hospitals, then two of them) could be subtracted to expose the third
//! hospital's update, and two trainings of one round from different models would say more about
//! this hospital's rows than one. Kept in the worker's state folder, written (fsynced) before the
//! answer leaves, so a restarted worker remembers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedchain_ledger::{durable, Hash};

/// What was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Act {
    /// A decryption share of an aggregate (the digest is the aggregate's).
    Decrypt,
    /// A trained, encrypted update (the digest is the global model's it started from).
    Train,
}

impl Act {
    fn as_str(self) -> &'static str {
        match self {
            Act::Decrypt => "decrypt",
            Act::Train => "train",
        }
    }
}

/// The answers given so far, persisted in one small text file (`ACT JOB ROUND HEX` per line).
#[derive(Debug)]
pub struct Commitments {
    path: PathBuf,
    given: BTreeMap<(Act, u64, u64), Hash>,
}

impl Commitments {
    /// Loads the file at `path` (none yet: nothing answered).
    pub fn open(path: &Path) -> Result<Commitments, String> {
        let mut given = BTreeMap::new();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        for (n, line) in text.lines().enumerate() {
            let bad = || {
                format!(
                    "{} line {}: {line:?} is not ACT JOB ROUND HEX",
                    path.display(),
                    n + 1
                )
            };
            let parts: Vec<&str> = line.split(' ').collect();
            let [act, job, round, hex] = parts[..] else {
                return Err(bad());
            };
            let act = match act {
                "decrypt" => Act::Decrypt,
                "train" => Act::Train,
                _ => return Err(bad()),
            };
            let digest: Hash = hex::decode(hex)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(bad)?;
            let job = job.parse().map_err(|_| bad())?;
            let round = round.parse().map_err(|_| bad())?;
            given.insert((act, job, round), digest);
        }
        Ok(Commitments {
            path: path.to_path_buf(),
            given,
        })
    }

    /// How many rounds of `job` other than `round` this hospital answered `act` for.
    pub fn rounds_besides(&self, act: Act, job: u64, round: u64) -> u64 {
        self.given
            .keys()
            .filter(|(a, j, r)| *a == act && *j == job && *r != round)
            .count() as u64
    }

    /// Records that this hospital answers `act` for `job` and `round` on `digest`, durably, unless
    /// it answered already: the same digest again is fine, another one is refused with the reason.
    pub fn commit(&mut self, act: Act, job: u64, round: u64, digest: Hash) -> Result<(), String> {
        match self.given.get(&(act, job, round)) {
            Some(d) if *d == digest => return Ok(()),
            Some(d) => {
                let what = match act {
                    Act::Decrypt => "decrypt another aggregate",
                    Act::Train => "train from another global model",
                };
                return Err(format!(
                    "asked to {what} ({}) for job {job} round {round} than the one this hospital \
                     already answered ({}); two answers in one round could expose a hospital's \
                     update",
                    hex::encode(digest),
                    hex::encode(d)
                ));
            }
            None => {}
        }
        self.given.insert((act, job, round), digest);
        let text: String = self
            .given
            .iter()
            .map(|((a, j, r), d)| format!("{} {j} {r} {}\n", a.as_str(), hex::encode(d)))
            .collect();
        durable::replace_file(&self.path, text.as_bytes()).map_err(|e| {
            self.given.remove(&(act, job, round));
            format!("cannot record the answer before giving it: {e}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_answer_again_is_fine_another_one_is_refused_and_it_survives_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("commitments.txt");
        let mut c = Commitments::open(&path).unwrap();
        c.commit(Act::Decrypt, 1, 2, [7; 32]).unwrap();
        c.commit(Act::Decrypt, 1, 2, [7; 32]).unwrap();
        c.commit(Act::Train, 1, 2, [9; 32]).unwrap();
        c.commit(Act::Decrypt, 1, 3, [8; 32]).unwrap();
        let e = c.commit(Act::Decrypt, 1, 2, [8; 32]).unwrap_err();
        assert!(e.contains("another aggregate"), "{e}");
        let mut again = Commitments::open(&path).unwrap();
        assert!(again.commit(Act::Train, 1, 2, [1; 32]).is_err());
        again.commit(Act::Decrypt, 1, 2, [7; 32]).unwrap();
        std::fs::write(&path, "decrypt x 2 00\n").unwrap();
        assert!(Commitments::open(&path).unwrap_err().contains("line 1"));
    }
}
