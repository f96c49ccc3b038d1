//! `fedchain keys`: the threshold key ceremony and share checks.

use anyhow::{Context, Result};
use clap::Subcommand;
use fedchain_crypto::keys::{deal, write_ceremony, KeyShare, PublicKey, DEFAULT_MODULUS_BITS};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Run the dealer ceremony: a t-of-n threshold Paillier key from fresh safe primes. Writes
    /// DIR/public.key and DIR/share-I.key (owner-only) for I = 1..n; hand each share to its
    /// hospital and delete it here.
    Deal {
        /// Number of hospitals holding a share.
        #[arg(long)]
        parties: usize,
        /// Shares needed to decrypt.
        #[arg(long)]
        threshold: usize,
        /// Modulus size in bits (2048 default, 3072 supported).
        #[arg(long, default_value_t = DEFAULT_MODULUS_BITS)]
        bits: usize,
        /// Output folder; existing key files in it are never overwritten.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a key share against the public key's verification key.
    Check {
        /// The public key file.
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
        /// The share file.
        #[arg(long, value_name = "FILE")]
        share: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Deal {
            parties,
            threshold,
            bits,
            out,
            json,
        } => {
            let started = Instant::now();
            let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::from_os_rng();
            let (pk, shares) = deal(bits, parties, threshold, &mut rng)?;
            let files = write_ceremony(&out, &pk, &shares)
                .with_context(|| format!("writing the keys to {}", out.display()))?;
            let digest = hex::encode(pk.digest());
            if json {
                let out = json!({
                    "modulus_bits": pk.modulus_bits(),
                    "parties": parties,
                    "threshold": threshold,
                    "public_key_sha256": digest,
                    "files": files,
                    "seconds": started.elapsed().as_secs_f64(),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "dealt a {threshold}-of-{parties} threshold Paillier key, {}-bit N, in {:.1} s",
                    pk.modulus_bits(),
                    started.elapsed().as_secs_f64()
                );
                println!("public key sha256:{digest}");
                for f in &files {
                    println!("  wrote {}", f.display());
                }
                println!(
                    "Give share-<i>.key to hospital i only, then delete the shares here: whoever \
                     holds {threshold} shares can decrypt."
                );
            }
            Ok(())
        }
        KeysCommand::Check {
            public,
            share,
            json,
        } => {
            let pk = PublicKey::load(&public)?;
            let s = KeyShare::load(&share)?;
            let verdict = s.verify(&pk);
            if json {
                let out = json!({
                    "share": share,
                    "party": s.index(),
                    "public_key_sha256": hex::encode(pk.digest()),
                    "valid": verdict.is_ok(),
                    "error": verdict.as_ref().err().map(|e| e.to_string()),
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if verdict.is_ok() {
                println!(
                    "ok: {} is party {}'s share of the {}-of-{} key sha256:{}",
                    share.display(),
                    s.index(),
                    pk.threshold(),
                    pk.parties(),
                    hex::encode(pk.digest())
                );
            }
            verdict.with_context(|| {
                format!("{} does not match {}", share.display(), public.display())
            })?;
            Ok(())
        }
    }
}
