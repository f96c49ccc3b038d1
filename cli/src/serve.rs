//! `coordinator --config FILE`, the coordinator's long-running process (in both binaries:
//! `fedchain` and the torch-free `fedchain-server`), and what every long-running command shares:
//! configuration files, the async runtime, stopping cleanly on SIGINT or SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use fedchain_coordinator::service::{Config, Coordinator};

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// The coordinator's TOML configuration (see README: dir, state, listen, ...).
    #[arg(long)]
    config: PathBuf,
    /// Write the address the coordinator listens on to this file once it is ready (useful with
    /// `listen = "127.0.0.1:0"`).
    #[arg(long)]
    address_file: Option<PathBuf>,
}

/// Reads a TOML file into `T`, resolving nothing yet.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    toml::from_str(&text)
        .with_context(|| format!("{} is not a valid configuration", path.display()))
}

/// Paths in a configuration file are relative to the file's folder.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub fn base_of(config: &Path) -> PathBuf {
    config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Completes on SIGINT or SIGTERM.
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub fn coordinator(args: CoordinatorArgs) -> Result<()> {
    let mut config: Config = read_toml(&args.config)?;
    let base = base_of(&args.config);
    config.dir = resolve(&base, &config.dir);
    config.state = resolve(&base, &config.state);
    let coordinator = Coordinator::open(config.clone()).with_context(|| {
        format!(
            "cannot start the coordinator from {} (ledger in {})",
            config.dir.display(),
            config.state.display()
        )
    })?;
    runtime()?.block_on(async move {
        let (listener, addr) = coordinator.bind().await?;
        eprintln!(
            "fedchain coordinator listening on {addr} (mutual TLS); ledger in {}",
            config.state.display()
        );
        if let Some(path) = &args.address_file {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, addr.to_string())
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        coordinator.serve(listener, stop_signal()).await?;
        eprintln!("fedchain coordinator stopped");
        Ok(())
    })
}
