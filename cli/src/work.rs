//! `fedchain worker --config FILE`: a hospital's long-running process (training with libtorch,
//! so only in the `fedchain` binary). Stops cleanly on SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use fedchain_models::describe_device;
use fedchain_worker::node::{Node, WorkerConfig};

use crate::serve::{base_of, read_toml, resolve, runtime, stop_signal};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The hospital worker's TOML configuration (coordinator, dir, data, state, device).
    #[arg(long)]
    config: PathBuf,
}

pub fn worker(args: WorkerArgs) -> Result<()> {
    let mut config: WorkerConfig = read_toml(&args.config)?;
    let base = base_of(&args.config);
    config.dir = resolve(&base, &config.dir);
    config.data = resolve(&base, &config.data);
    config.state = resolve(&base, &config.state);
    let node = Node::open(config.clone())
        .with_context(|| format!("cannot start the worker from {}", config.dir.display()))?;
    eprintln!(
        "[{}] fedchain worker: data {}, device {}, coordinator {}",
        node.name(),
        config.data.display(),
        describe_device(node.device()),
        config.coordinator
    );
    runtime()?.block_on(async move {
        tokio::select! {
            r = node.run() => r.map_err(anyhow::Error::from),
            _ = stop_signal() => Ok(()),
        }
    })
}
