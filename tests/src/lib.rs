//! The one test harness of fedchain's end-to-end tests: one on-disk layout, configurations written
//! by serialising the real configuration types, one way to start a cluster, one replay helper.
//! Two tiers share it:
//!
//! - [`cluster`]: real processes. `fedchain coordinator` and one `fedchain worker` per hospital
//!   over mutual TLS on loopback, driven through the `fedchain` binary ([`bin`]).
//! - [`in_process`]: the same services and the workers' own logic in one process, over in-memory
//!   pipes (still mutual TLS, real keys, real sled, real libtorch), no ports: a whole job in
//!   seconds.

pub mod bin;
pub mod cluster;
pub mod disk;
pub mod in_process;
pub mod layout;

pub use bin::{failed_stderr, fedchain, fedchain_bin, json, ok_stdout, venv_python};
pub use cluster::{
    as_party, launch, launch_configured, logs, replay_ledger, spawn, spawn_coordinator, spawn_with,
    start, start_enrolling, start_with, write_coordinator_config, Cluster, Procs,
};
pub use layout::{s, Layout, HOSPITALS};
