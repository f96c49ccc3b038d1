//! Dialing the coordinator as a consortium party: mutual TLS with the party folder's
//! certificate, patience with a coordinator that is still starting. Shared by the researcher's
//! and the auditor's commands, so it is in both binaries (`fedchain`, `fedchain-server`).

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use fedchain_consortium::tls::client_tls_for;
use tonic::transport::{Channel, Endpoint};

/// Dials the coordinator with the party's certificate.
///
/// A refused connection is retried for up to [`REFUSED_PATIENCE`]: a coordinator that was just
/// started (or is restarting) takes a moment to listen, and a script that starts one and then
/// submits a job must not race it. Other failures (TLS, DNS, timeouts) are reported at once.
pub async fn connect(url: &str, party_dir: &Path) -> Result<Channel> {
    let endpoint = endpoint(url, party_dir)?;
    let deadline = std::time::Instant::now() + REFUSED_PATIENCE;
    let mut said = false;
    loop {
        match endpoint.connect().await {
            Ok(ch) => return Ok(ch),
            Err(e) if refused(&e) && std::time::Instant::now() < deadline => {
                if !said {
                    eprintln!("waiting for the coordinator at {url} (connection refused)");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                let hint = if refused(&e) {
                    " (nothing listens there: is the coordinator (`fedchain-server coordinator` or \
                     `fedchain coordinator`) running, with this \
                     address in its `listen`?)"
                } else {
                    ""
                };
                return Err(anyhow::Error::new(e)
                    .context(format!("cannot reach the coordinator at {url}{hint}")));
            }
        }
    }
}

/// How long [`connect`] waits for a coordinator that refuses connections.
const REFUSED_PATIENCE: Duration = Duration::from_secs(10);

/// Whether `e` is, at its root, a refused TCP connection.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// The coordinator at `url`, dialed with the certificate of the party folder `party_dir`.
pub fn endpoint(url: &str, party_dir: &Path) -> Result<Endpoint> {
    let name = party_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{} is not a party folder", party_dir.display()))?;
    let tls = client_tls_for(party_dir, &name, url)?;
    Ok(Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a URL"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10)))
}
