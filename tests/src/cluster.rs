//! The real-process tier: `fedchain coordinator` and one `fedchain worker` per hospital, over
//! mutual TLS on loopback, in a [`Layout`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fedchain_coordinator::service::Config;

use crate::bin::{fedchain, fedchain_bin};
use crate::layout::{s, Layout, HOSPITALS};

/// Processes killed when the test ends, whatever happens.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `fedchain ARGS`, its stderr into `log`.
pub fn spawn(args: &[&str], log: &Path) -> Child {
    spawn_with(args, log, &[])
}

/// As [`spawn`], with extra environment variables.
pub fn spawn_with(args: &[&str], log: &Path, env: &[(&str, &str)]) -> Child {
    Command::new(fedchain_bin())
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn fedchain")
}

/// Writes `dir/coordinator.toml` from `config`.
pub fn write_coordinator_config(dir: &Path, config: &Config) {
    Layout::new(dir).write_toml("coordinator.toml", config);
}

/// Starts the coordinator of `dir` (logging to `log`, with extra environment `env`) and waits
/// until it listens; returns it with the address it bound.
pub fn spawn_coordinator(dir: &Path, log: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let addr_file = log.with_extension("addr");
    let _ = std::fs::remove_file(&addr_file);
    // Killed if it never starts listening.
    let mut child = Procs(vec![spawn_with(
        &[
            "coordinator",
            "--config",
            s(&dir.join("coordinator.toml")),
            "--address-file",
            s(&addr_file),
        ],
        log,
        env,
    )]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            return (child.0.pop().unwrap(), a.trim().to_string());
        }
        let exited = child.0[0].try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "the coordinator did not start ({exited:?}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `fedchain audit replay --json` of `dir/ledger` as the auditor audra, anchored on `anchor`
/// (a hospital's witness file) when given. The caller checks the exit status.
pub fn replay_ledger(dir: &Path, anchor: Option<&Path>) -> std::process::Output {
    let layout = Layout::new(dir);
    let (ledger, auditor) = (layout.ledger(), layout.audra());
    let mut args = vec![
        "audit",
        "replay",
        "--ledger",
        s(&ledger),
        "--consortium",
        s(&auditor),
        "--json",
    ];
    if let Some(a) = anchor {
        args.extend(["--anchor", s(a)]);
    }
    fedchain(&args)
}

/// A running consortium: its folder, the coordinator's URL, and the processes (the coordinator
/// first, then the workers in hospital order).
pub struct Cluster {
    /// The layout's folder.
    pub dir: PathBuf,
    /// `https://ADDR` of the coordinator.
    pub url: String,
    /// The processes.
    pub procs: Procs,
}

/// Provisions a consortium, splits breast-cancer across 3 hospitals and starts the coordinator and
/// the workers.
pub fn start(dir: &Path) -> Cluster {
    start_with(dir, &HOSPITALS)
}

/// As [`start`], running workers for `workers` only (the test plays the others).
pub fn start_with(dir: &Path, workers: &[&str]) -> Cluster {
    start_enrolling(dir, workers, 120)
}

/// As [`start_with`], with jobs enrolling for `enroll_seconds`.
pub fn start_enrolling(dir: &Path, workers: &[&str], enroll_seconds: u64) -> Cluster {
    Layout::new(dir).provision();
    launch(dir, workers, enroll_seconds)
}

/// Starts the coordinator and the workers of `workers` in the provisioned layout `dir`, jobs
/// enrolling for `enroll_seconds`.
pub fn launch(dir: &Path, workers: &[&str], enroll_seconds: u64) -> Cluster {
    let config = Layout::new(dir).coordinator_config("127.0.0.1:0", enroll_seconds);
    launch_configured(dir, workers, &config)
}

/// As [`launch`], the coordinator with `config`.
pub fn launch_configured(dir: &Path, workers: &[&str], config: &Config) -> Cluster {
    let layout = Layout::new(dir);
    write_coordinator_config(dir, config);
    let (coordinator, addr) = spawn_coordinator(dir, &layout.log("coordinator"), &[]);
    let mut procs = Procs(vec![coordinator]);
    let url = format!("https://{addr}");
    for h in HOSPITALS {
        if !workers.contains(&h) {
            continue;
        }
        let cfg = layout.write_toml(&format!("{h}.toml"), &layout.worker_config(h, &url));
        procs
            .0
            .push(spawn(&["worker", "--config", s(&cfg)], &layout.log(h)));
    }
    Cluster {
        dir: dir.to_path_buf(),
        url,
        procs,
    }
}

/// Every process's log, for a failing assertion's message.
pub fn logs(dir: &Path) -> String {
    ["coordinator", "h1", "h2", "h3"]
        .iter()
        .map(|n| {
            format!(
                "--- {n} ---\n{}",
                std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default()
            )
        })
        .collect()
}

/// `args` with `--coordinator URL --as PARTY`.
pub fn as_party<'a>(args: &[&'a str], url: &'a str, party: &'a str) -> Vec<&'a str> {
    let mut v = args.to_vec();
    v.extend(["--coordinator", url, "--as", party]);
    v
}
