//! `fedchain consortium`: provisioning a consortium's identities and keys.

use anyhow::Result;
use clap::Subcommand;
use fedchain_consortium::revocation::{self, Reason};
use fedchain_consortium::{init, InitOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum ConsortiumCommand {
    /// Create a consortium: a CA, certificates for the coordinator, hospitals, researchers and
    /// auditors (role in the certificate), each hospital's identity key, and the t-of-n threshold
    /// key ceremony. Writes one folder per party holding only what that party may hold; hand each
    /// folder to its party and move DIR/ca offline.
    Init {
        /// The consortium folder (created; must be empty).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Hospital names, comma-separated (lower-case letters, digits, '-').
        #[arg(long, value_delimiter = ',', required = true)]
        hospitals: Vec<String>,
        /// Hospitals needed to decrypt an aggregate (and to cosign a checkpoint).
        #[arg(long)]
        threshold: usize,
        /// Researcher names, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "researcher")]
        researchers: Vec<String>,
        /// Auditor names, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "auditor")]
        auditors: Vec<String>,
        /// Host names and IP addresses the coordinator's certificate is valid for.
        #[arg(long, value_delimiter = ',', default_value = "localhost,127.0.0.1")]
        coordinator_hosts: Vec<String>,
        /// Paillier modulus size in bits (2048 default, 3072 supported).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Print the consortium description as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a party's certificate: sign, with the CA key in DIR/ca/, a new revocation list
    /// (CRL) listing it with every certificate revoked before, and write it to DIR/ca/crl.pem and
    /// DIR/coordinator/crl.pem. A coordinator refuses the party within a second of that copy
    /// reaching its folder, without a restart.
    Revoke {
        /// The consortium folder, with the CA key (run this where the CA key is kept).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The party whose certificate is revoked.
        #[arg(long)]
        party: String,
        /// Its certificate, when its folder is no longer in DIR.
        #[arg(long, value_name = "FILE")]
        cert: Option<PathBuf>,
        /// Why: unspecified, key-compromise, affiliation-changed, superseded or
        /// cessation-of-operation.
        #[arg(long, default_value = "unspecified")]
        reason: Reason,
        /// Print what was done as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: ConsortiumCommand) -> Result<()> {
    match cmd {
        ConsortiumCommand::Init {
            dir,
            hospitals,
            threshold,
            researchers,
            auditors,
            coordinator_hosts,
            bits,
            json,
        } => {
            let started = Instant::now();
            let options = InitOptions {
                modulus_bits: bits,
                researchers,
                auditors,
                coordinator_hosts,
                ..InitOptions::default()
            };
            let c = init(&dir, &hospitals, threshold, &options)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c.description)?);
                return Ok(());
            }
            let d = &c.description;
            println!(
                "consortium in {}: {} hospitals, threshold {}, {}-bit key ({:.1} s)",
                dir.display(),
                d.hospitals().count(),
                d.threshold,
                d.modulus_bits,
                started.elapsed().as_secs_f64()
            );
            println!("  threshold public key sha256:{}", d.public_key_sha256);
            for p in &d.parties {
                println!("  {:<12} {:<14} {}/", p.role.to_string(), p.name, p.dir);
            }
            println!(
                "  trust file for auditors: {}",
                dir.join("trust.txt").display()
            );
            println!(
                "Hand each folder to its party only. Move {} offline: whoever holds the CA key can \
                 issue identities.",
                dir.join("ca").display()
            );
            Ok(())
        }
        ConsortiumCommand::Revoke {
            dir,
            party,
            cert,
            reason,
            json,
        } => {
            let now = time::OffsetDateTime::now_utc();
            let r = revocation::revoke(&dir, &party, cert.as_deref(), reason, now)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(());
            }
            println!(
                "revoked {} {} (certificate serial {}, {}): CRL {} lists {} certificate(s)",
                r.role, r.party, r.serial, r.reason, r.crl_number, r.revoked
            );
            for path in &r.written {
                println!("  wrote {}", path.display());
            }
            println!(
                "Copy {} into the coordinator's folder where it runs, if that is another machine: \
                 it refuses {} from then on, without a restart.",
                revocation::CRL_FILE,
                r.party
            );
            Ok(())
        }
    }
}
