//! The web dashboard: what a ledger says, drawn for researchers and auditors, and only what an
//! auditor's replay confirmed drawn as fact.
//!
//! - [`view`]: builds a [`View`] from a ledger folder: runs `audit verify` and `audit replay`
//!   (`fedchain-audit`) with the consortium's public files, then reads every record once into
//!   the jobs, rounds, checkpoints, credit balances and parties the pages show. A round's figures
//!   are the replay's (pooled from the hospitals' evaluations that verified); a round the replay
//!   failed is marked failed, and what the ledger claims beyond that is labelled unconfirmed.
//! - [`html`] and [`chart`]: pages and inline SVG charts, rendered from a `View` as strings.
//! - [`serve`](mod@serve): the read-only HTTP server (axum), every asset compiled in.
//!
//! Architecture invariant: like the auditor, it trusts only public files: the ledger, the trust
//! file, the threshold public key and `consortium.json`. It never depends on the coordinator
//! crate, holds no secret key, runs no script in the browser and loads nothing from elsewhere
//! (a hospital's closed network has no CDN). It never writes to a ledger: the folder is opened
//! to read (`Store::open_to_read`, which refuses writes) and only while a view is built.
#![deny(missing_docs)]

pub mod chart;
pub mod html;
mod parties;
pub mod serve;
pub mod view;

pub use serve::{router, serve, Shared};
pub use view::{build, View};

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The party folder's public files.
    #[error(transparent)]
    Consortium(#[from] fedchain_consortium::ConsortiumError),
    /// The ledger folder.
    #[error(transparent)]
    Ledger(#[from] fedchain_ledger::LedgerError),
    /// The replay could not run.
    #[error(transparent)]
    Audit(#[from] fedchain_audit::AuditError),
}
