//! Where a test consortium's files live, in one place: both tiers and every test use it.
//!
//! ```text
//! DIR/
//!   c/                       the consortium (`consortium init`): researcher alice, auditor audra
//!   data/hospital-N.csv      hospital hN's rows (`data split`)
//!   ledger/                  the coordinator's ledger
//!   state-hN/                hospital hN's worker state (its witness file)
//!   coordinator.toml  hN.toml  the configurations, serialised from the real types
//!   coordinator.log   hN.log   what each process printed
//! ```

use std::path::{Path, PathBuf};

use fedchain_consortium::InitOptions;
use fedchain_coordinator::service::Config;
use fedchain_datasets::{partition, write_split, Builtin, Scheme};
use fedchain_worker::node::WorkerConfig;

/// The test consortium's hospitals (threshold 2).
pub const HOSPITALS: [&str; 3] = ["h1", "h2", "h3"];

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A test consortium's folder.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The folder.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout under `dir`.
    pub fn new(dir: &Path) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// The consortium folder.
    pub fn consortium(&self) -> PathBuf {
        self.dir.join("c")
    }

    /// A hospital's party folder.
    pub fn hospital(&self, h: &str) -> PathBuf {
        self.consortium().join("hospitals").join(h)
    }

    /// The researcher's party folder.
    pub fn alice(&self) -> PathBuf {
        self.consortium().join("researchers/alice")
    }

    /// The auditor's party folder.
    pub fn audra(&self) -> PathBuf {
        self.consortium().join("auditors/audra")
    }

    /// The coordinator's ledger.
    pub fn ledger(&self) -> PathBuf {
        self.dir.join("ledger")
    }

    /// Hospital `h`'s worker state folder.
    pub fn state(&self, h: &str) -> PathBuf {
        self.dir.join(format!("state-{h}"))
    }

    /// Hospital `h`'s witness file (the newest checkpoint it cosigned).
    pub fn witness(&self, h: &str) -> PathBuf {
        self.state(h).join("witness.txt")
    }

    /// Hospital `h`'s rows.
    pub fn data(&self, h: &str) -> PathBuf {
        let i = HOSPITALS
            .iter()
            .position(|x| *x == h)
            .expect("a test hospital")
            + 1;
        self.dir.join(format!("data/hospital-{i}.csv"))
    }

    /// A process's log.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Provisions the consortium (1024-bit key: quick on 2 cores, the same protocol as 2048;
    /// researcher alice, auditor audra) and splits breast-cancer across the hospitals by label
    /// skew, with the same library calls as `fedchain consortium init` and `fedchain data split`.
    pub fn provision(&self) {
        let hospitals: Vec<String> = HOSPITALS.iter().map(|h| h.to_string()).collect();
        let options = InitOptions {
            modulus_bits: 1024,
            researchers: vec!["alice".into()],
            auditors: vec!["audra".into()],
            ..InitOptions::default()
        };
        fedchain_consortium::init(&self.consortium(), &hospitals, 2, &options)
            .expect("provision the test consortium");
        let data = Builtin::BreastCancer.load().expect("the bundled dataset");
        let part = partition(&data, 3, Scheme::Dirichlet { alpha: 0.5 }, 3).expect("split");
        write_split(&data, &part, &self.dir.join("data")).expect("write the split");
    }

    /// The coordinator's settings, paths relative to the layout (where its file lives).
    pub fn coordinator_config(&self, listen: &str, enroll_seconds: u64) -> Config {
        let mut c = Config::new(
            PathBuf::from("c/coordinator"),
            PathBuf::from("ledger"),
            listen.parse().expect("a socket address"),
        );
        c.enroll_seconds = enroll_seconds;
        c.evaluation_seconds = 10;
        c
    }

    /// Hospital `h`'s worker settings, dialing `url`, on the CPU.
    pub fn worker_config(&self, h: &str, url: &str) -> WorkerConfig {
        let mut w = WorkerConfig::new(
            url.to_string(),
            PathBuf::from(format!("c/hospitals/{h}")),
            self.data(h)
                .strip_prefix(&self.dir)
                .expect("inside the layout")
                .to_path_buf(),
            PathBuf::from(format!("state-{h}")),
        );
        w.device = "cpu".into();
        // The test hospitals take researchers' TorchScript jobs (a worker's default is not to).
        w.torchscript = true;
        w
    }

    /// Writes `value` (a configuration) as TOML to `name` in the layout; returns the path.
    pub fn write_toml<T: serde::Serialize>(&self, name: &str, value: &T) -> PathBuf {
        let path = self.dir.join(name);
        let text = toml::to_string(value).expect("configurations serialise");
        std::fs::write(&path, text).expect("write a configuration");
        path
    }
}
