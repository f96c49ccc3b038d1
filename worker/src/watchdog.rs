//! A time limit on a researcher's TorchScript module.
//!
//! libtorch cannot interrupt a module while it runs, and a module may loop (TorchScript has
//! `while`). So a module that runs past the hospital's limit (`torchscript_seconds` in
//! `worker.toml`) stops the worker: the module's code digest is first written, fsynced, to
//! [`STOPPED_FILE`] in the worker's state folder, then the process exits with [`EXIT_STOPPED`].
//! The restarted worker refuses every job that runs that code, so a module costs the hospital one
//! limit's worth of computing and a restart. Only that code: a researcher who changes it gets a
//! new digest, and the hospital's `[policy] researchers` is how it stops taking their jobs. (A
//! child process that could be killed would keep the worker running; that needs a sandbox, which
//! fedchain does not have yet.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use fedchain_ledger::durable;

/// The file, in the worker's state folder, of the modules it stopped: `CODE_SHA256 WHAT` lines.
pub const STOPPED_FILE: &str = "stopped-modules.txt";

/// The worker's exit status when it stopped a module that ran past its limit.
pub const EXIT_STOPPED: i32 = 3;

/// The modules this worker stopped, by code digest, with what they were doing.
#[derive(Debug, Default)]
pub struct StoppedModules {
    stopped: BTreeMap<String, String>,
}

impl StoppedModules {
    /// Reads `path` (missing: none stopped).
    pub fn open(path: &Path) -> Result<StoppedModules, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut stopped = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let (digest, what) = line.split_once(' ').unwrap_or((line, ""));
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{} line {}: {line:?} does not start with a code digest (64 hex digits)",
                    path.display(),
                    n + 1
                ));
            }
            stopped.insert(digest.to_ascii_lowercase(), what.to_string());
        }
        Ok(StoppedModules { stopped })
    }

    /// What the module of code digest `digest` was doing when this worker stopped it, if it did.
    pub fn get(&self, digest: &str) -> Option<&str> {
        self.stopped.get(digest).map(String::as_str)
    }
}

/// Runs `work` (which runs the module of code digest `digest`), stopping the process if it is not
/// done within `limit`; `state` is the worker's state folder, `what` says what the module was
/// doing (`job 3, round 1: training`).
pub fn within_limit<T>(
    limit: Duration,
    state: &Path,
    digest: &str,
    what: &str,
    work: impl FnOnce() -> T,
) -> T {
    let (done, wait) = mpsc::channel::<()>();
    let path: PathBuf = state.join(STOPPED_FILE);
    let (digest, what) = (digest.to_string(), what.to_string());
    let watchdog =
        std::thread::spawn(move || {
            // Done, or the work unwound (the sender dropped): nothing to do.
            if wait.recv_timeout(limit) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            let recorded = record(&path, &digest, &what);
            eprintln!(
            "fedchain worker: {what}: the researcher's TorchScript module (code sha256 {digest}) \
             ran for more than {} s (torchscript_seconds in worker.toml) and cannot be \
             interrupted; the worker stops. {}",
            limit.as_secs(),
            match recorded {
                Ok(()) => format!(
                    "It will not run this module again ({}); start it again.",
                    path.display()
                ),
                Err(e) => format!("It could not record the module ({e}): remove the job's \
                                   module by hand before starting it again."),
            }
        );
            // Not std::process::exit: its atexit handlers and libtorch's static destructors would run
            // while the module still runs on another thread. The record is fsynced, stderr unbuffered.
            // SAFETY: _exit ends the process at once; it touches no memory of this one.
            unsafe { libc::_exit(EXIT_STOPPED) }
        });
    let out = work();
    let _ = done.send(());
    let _ = watchdog.join();
    out
}

/// Adds `digest` to the file at `path`, durably, before the process stops.
fn record(path: &Path, digest: &str, what: &str) -> Result<(), String> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e.to_string()),
    };
    text.push_str(&format!("{digest} {}\n", what.replace('\n', " ")));
    durable::replace_file(path, text.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_within_its_limit_returns_and_records_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let digest = "ab".repeat(32);
        let got = within_limit(Duration::from_secs(5), tmp.path(), &digest, "job 1", || 7);
        assert_eq!(got, 7);
        assert!(!tmp.path().join(STOPPED_FILE).exists());
    }

    #[test]
    fn recorded_modules_read_back_and_a_bad_line_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(STOPPED_FILE);
        let digest = "cd".repeat(32);
        record(&path, &digest, "job 2, round 1: training").unwrap();
        let stopped = StoppedModules::open(&path).unwrap();
        assert_eq!(stopped.get(&digest), Some("job 2, round 1: training"));
        assert_eq!(stopped.get(&"ab".repeat(32)), None);
        std::fs::write(&path, "not-a-digest training\n").unwrap();
        assert!(StoppedModules::open(&path).unwrap_err().contains("line 1"));
    }
}
