//! What this hospital's rows have spent, by its own count: for each job with differential
//! privacy it trained in, the mechanism of one of its rounds (sampling rate, noise multiplier,
//! steps, delta) and the job's budget, written (fsynced) before the first such update leaves.
//! With the rounds it trained (its [`crate::commitments`]), this is what the accountant needs,
//! without a figure from the coordinator: the worker ran the mechanism itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedchain_ledger::durable;
use fedchain_protocol::accountant::epsilon_of;

/// One job's mechanism per round, and its budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobMechanism {
    /// Probability that a row is in a step's sample.
    pub sampling_rate: f64,
    /// Noise standard deviation over the clipping norm.
    pub noise_multiplier: f64,
    /// Steps per round.
    pub steps: u64,
    /// The delta of the guarantee.
    pub delta: f64,
    /// The job's epsilon budget.
    pub budget: f64,
}

impl JobMechanism {
    /// Epsilon spent after `rounds` rounds.
    pub fn spent(&self, rounds: u64) -> f64 {
        epsilon_of(
            self.sampling_rate,
            self.noise_multiplier,
            self.steps.saturating_mul(rounds),
            self.delta,
        )
        // A mechanism that cannot be accounted is no guarantee: all of the budget.
        .unwrap_or(self.budget)
    }
}

/// The jobs' mechanisms, persisted in one small text file (`JOB RATE NOISE STEPS DELTA BUDGET`
/// per line, floats as their bits in hex so they come back exactly).
#[derive(Debug)]
pub struct PrivacyLog {
    path: PathBuf,
    jobs: BTreeMap<u64, JobMechanism>,
}

impl PrivacyLog {
    /// Loads the file at `path` (none yet: no private job trained).
    pub fn open(path: &Path) -> Result<PrivacyLog, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut jobs = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let bad = || {
                format!(
                    "{} line {}: {line:?} is not JOB RATE NOISE STEPS DELTA BUDGET",
                    path.display(),
                    n + 1
                )
            };
            let parts: Vec<&str> = line.split(' ').collect();
            let [job, rate, noise, steps, delta, budget] = parts[..] else {
                return Err(bad());
            };
            let float = |s: &str| {
                u64::from_str_radix(s, 16)
                    .map(f64::from_bits)
                    .map_err(|_| bad())
            };
            jobs.insert(
                job.parse().map_err(|_| bad())?,
                JobMechanism {
                    sampling_rate: float(rate)?,
                    noise_multiplier: float(noise)?,
                    steps: steps.parse().map_err(|_| bad())?,
                    delta: float(delta)?,
                    budget: float(budget)?,
                },
            );
        }
        Ok(PrivacyLog {
            path: path.to_path_buf(),
            jobs,
        })
    }

    /// Records `job`'s mechanism, durably (again: nothing to do).
    pub fn record(&mut self, job: u64, m: JobMechanism) -> Result<(), String> {
        if self.jobs.get(&job) == Some(&m) {
            return Ok(());
        }
        let before = self.jobs.insert(job, m);
        let text: String = self
            .jobs
            .iter()
            .map(|(j, m)| {
                format!(
                    "{j} {:x} {:x} {} {:x} {:x}\n",
                    m.sampling_rate.to_bits(),
                    m.noise_multiplier.to_bits(),
                    m.steps,
                    m.delta.to_bits(),
                    m.budget.to_bits()
                )
            })
            .collect();
        durable::replace_file(&self.path, text.as_bytes()).map_err(|e| {
            match before {
                Some(b) => self.jobs.insert(job, b),
                None => self.jobs.remove(&job),
            };
            format!("cannot record the job's privacy before training: {e}")
        })
    }

    /// The jobs with differential privacy this hospital trained in.
    pub fn jobs(&self) -> &BTreeMap<u64, JobMechanism> {
        &self.jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanisms_survive_a_restart_exactly_and_a_bad_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privacy.txt");
        let m = JobMechanism {
            sampling_rate: 32.0 / 331.0,
            noise_multiplier: 1.234_567_890_123,
            steps: 22,
            delta: 1e-5,
            budget: 3.0,
        };
        let mut log = PrivacyLog::open(&path).unwrap();
        log.record(7, m).unwrap();
        let again = PrivacyLog::open(&path).unwrap();
        assert_eq!(again.jobs()[&7], m);
        assert!(m.spent(2) > m.spent(1) && m.spent(1) > 0.0);
        std::fs::write(&path, "7 nope\n").unwrap();
        assert!(PrivacyLog::open(&path).unwrap_err().contains("line 1"));
    }
}
