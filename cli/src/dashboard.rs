//! `fedchain dashboard`: serves the web dashboard (`fedchain-dashboard`) from a ledger folder, or
//! follows a running coordinator by mirroring its ledger over the ledger service.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use fedchain_dashboard::{build, Shared, View};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ledger", "coordinator"])))]
pub struct DashboardArgs {
    /// The ledger folder (a copy, or the folder of a stopped coordinator: a running one holds
    /// it; follow it with --coordinator instead).
    #[arg(long, value_name = "DIR")]
    pub ledger: Option<PathBuf>,
    /// Or follow a running coordinator: mirror its ledger over the ledger service every
    /// --refresh seconds, checking each copy against the checkpoint a quorum cosigned.
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,
    /// A party folder from `consortium init` (an auditor's): its consortium.json, trust.txt and
    /// public.key are what the pages are checked against; with --coordinator, it is also whom
    /// the dashboard connects as.
    #[arg(long, visible_alias = "as", value_name = "PARTY_DIR")]
    pub consortium: PathBuf,
    /// Witness state files of hospitals (anchors, as for `audit replay`); repeatable.
    #[arg(long, value_name = "FILE")]
    pub anchor: Vec<PathBuf>,
    /// Address to serve on. The default answers this machine only. Anyone who can load the
    /// page reads the whole ledger (job specs, who took part, every figure), so bind another
    /// address only on a network allowed to read it.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// With --coordinator: seconds between two mirrors of the live ledger.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub refresh: u64,
}

fn anchors(paths: &[PathBuf]) -> Result<Vec<fedchain_ledger::note::Checkpoint>> {
    paths.iter().map(|p| crate::audit::read_anchor(p)).collect()
}

/// Builds the view of the ledger folder `ledger`, naming `source` on the pages.
fn view_of(ledger: &Path, args: &DashboardArgs, source: String) -> Result<View> {
    build(ledger, &args.consortium, anchors(&args.anchor)?, source).map_err(|e| {
        let busy = e.to_string().contains("is in use by another process");
        let e = anyhow::Error::new(e).context(format!(
            "cannot check the ledger in {} with the public files of {}",
            ledger.display(),
            args.consortium.display()
        ));
        if busy {
            e.context(
                "a running coordinator holds this ledger folder: follow it live with \
                 `fedchain dashboard --coordinator URL --as PARTY_DIR`, or stop it, or copy the \
                 folder while it is stopped",
            )
        } else {
            e
        }
    })
}

/// Mirrors the coordinator's ledger into a fresh folder and builds its view.
async fn live_view(url: &str, args: &DashboardArgs) -> Result<View> {
    let tmp = tempfile::tempdir()?;
    crate::audit::mirror(url, &args.consortium, tmp.path()).await?;
    let dir = tmp.path().to_path_buf();
    let source = url.to_owned();
    // Replay is CPU work (share proofs, Paillier products): off the server's threads.
    let consortium = args.consortium.clone();
    let anchors = anchors(&args.anchor)?;
    tokio::task::spawn_blocking(move || {
        let _keep = tmp;
        build(&dir, &consortium, anchors, source).map_err(anyhow::Error::new)
    })
    .await?
}

fn say(view: &View, url: &str) {
    println!(
        "dashboard: {url} ({}: {} records, {} jobs, verdict {})",
        view.source,
        view.records.len(),
        view.jobs.len(),
        if view.ok() {
            "OK".to_owned()
        } else {
            format!("FAILED, {} problems", view.problems())
        }
    );
}

/// Serves until SIGINT or SIGTERM.
pub fn run(args: DashboardArgs) -> Result<()> {
    crate::serve::runtime()?.block_on(serve(args))
}

async fn serve(args: DashboardArgs) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        eprintln!(
            "warning: serving on {}: anyone who can reach this address reads the whole ledger",
            args.listen
        );
    }
    let view = match (&args.ledger, &args.coordinator) {
        (Some(dir), _) => view_of(dir, &args, dir.display().to_string())?,
        (None, Some(url)) => live_view(url, &args)
            .await
            .with_context(|| format!("following the ledger of {url}"))?,
        (None, None) => unreachable!("clap requires one source"),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let url = format!("http://{}/", listener.local_addr()?);
    say(&view, &url);
    let shared = Shared::new(view);
    if let Some(coordinator) = args.coordinator.clone() {
        let shared = shared.clone();
        let every = Duration::from_secs(args.refresh);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // A coordinator that is down or restarting leaves the last view up.
                match live_view(&coordinator, &args).await {
                    Ok(v) => shared.set(v),
                    Err(e) => {
                        eprintln!("dashboard: refreshing from {coordinator}: {e:#}");
                        let mut stale = (*shared.get()).clone();
                        stale.refresh_error = Some(format!("{e:#}"));
                        shared.set(stale);
                    }
                }
            }
        });
    }
    fedchain_dashboard::serve(listener, shared, crate::serve::stop_signal())
        .await
        .context("serving the dashboard")
}
