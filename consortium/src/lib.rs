//! Who is who in a fedchain consortium, and nothing about jobs.
//!
//! - [`party`]: the rules every party applies: the roles ([`Role`], the same one records carry),
//!   party names, the SAN URIs that carry them in certificates, and the names of the files and
//!   folders of a party folder.
//! - [`init`](init()): provisioning. Once, by the operator, in an empty folder: a consortium
//!   certificate authority, one certificate per party with its role written in it, the
//!   coordinator's checkpoint-signing key, each hospital's identity key, the threshold Paillier
//!   key ceremony, the auditors' trust file and a public description. Every party gets a folder
//!   holding only what it may hold, secrets owner-only from the moment they are created.
//! - [`folder`]: a party folder opened and checked once, typed by role
//!   ([`CoordinatorFolder`], [`HospitalFolder`], [`ResearcherFolder`], [`AuditorFolder`]), so that
//!   every process that reads one applies the same consistency checks.
//! - [`revocation`]: CA-signed certificate revocation lists, and the coordinator's watched copy.
//! - [`tls`]: mutual TLS. Every party authenticates with its certificate (the consortium CA as the
//!   only root); a certificate names exactly one role and one party as SAN URIs, and
//!   [`tls::caller`] lets an RPC through only for the roles it allows.
//!
//! Design choice: roles live in the certificates, not in a table the coordinator keeps. The
//! coordinator is trusted for availability only, so it must not be able to promote a researcher to
//! a hospital by editing its own state; only the CA key (kept by the operator, offline) can.
//!
//! Architecture invariant: this crate knows who the parties are and what each holds; it knows
//! nothing of jobs, rounds, models or the ledger's records beyond the [`Role`] they share. It
//! never writes a key share into the coordinator's folder.
#![deny(missing_docs)]

mod error;
mod files;
pub mod folder;
pub mod init;
pub mod party;
pub mod revocation;
pub mod tls;

pub use error::{ConsortiumError, Result};
pub use folder::{AuditorFolder, CoordinatorFolder, HospitalFolder, ResearcherFolder};
pub use init::{init, Consortium, Description, InitOptions, PartyEntry, DESCRIPTION_VERSION};
pub use party::*;
