//! Party folders, opened and checked once.
//!
//! `init` writes one folder per party; the processes that read them (the coordinator, a hospital's
//! worker, a researcher's and an auditor's commands) used to re-read the files by hand, each with
//! its own checks. Each type here opens one kind of folder and checks, once, that its files agree
//! with each other and with the public description (`consortium.json`), so a folder handed to the
//! wrong party, or mixed from two consortiums, is refused with a message that names the file.
//!
//! | folder | holds | checked |
//! |---|---|---|
//! | [`CoordinatorFolder`] | TLS identity, log signing key, public key, description, trust file | log key and public key are the description's; every hospital has a key index and identity key |
//! | [`HospitalFolder`] | TLS identity, identity key, key share, public key, log key, trust file | identity key is the hospital's; the share belongs to the public key; log key is the trust file's |
//! | [`ResearcherFolder`] | TLS identity, trust file | the certificate is a researcher's |
//! | [`AuditorFolder`] | description, trust file, public key | the public key and log key are the description's |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedchain_crypto::keys::{KeyShare, PublicKey, PUBLIC_KEY_FILE};
use fedchain_ledger::note::{NoteSigner, NoteVerifier};
use fedchain_ledger::verify::Trust;

use crate::error::{ConsortiumError, Result};
use crate::init::{Consortium, Description};
use crate::party::{
    validate_name, Role, COORDINATOR_NAME, IDENTITY_SKEY_FILE, LOG_SKEY_FILE, LOG_VKEY_FILE,
    SHARE_FILE, TRUST_FILE,
};
use crate::tls;

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ConsortiumError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn folder(dir: &Path, reason: impl Into<String>) -> ConsortiumError {
    ConsortiumError::Folder {
        dir: dir.to_path_buf(),
        reason: reason.into(),
    }
}

fn trust_of(dir: &Path) -> Result<Trust> {
    let path = dir.join(TRUST_FILE);
    Trust::parse(&read(&path)?).map_err(|e| folder(dir, format!("{TRUST_FILE}: {e}")))
}

fn public_key_of(dir: &Path) -> Result<PublicKey> {
    Ok(PublicKey::load(&dir.join(PUBLIC_KEY_FILE))?)
}

/// The name of the party whose folder is `dir`: `name` if given, else the folder's own name.
fn party_name(dir: &Path, name: Option<&str>) -> Result<String> {
    let name = match name {
        Some(n) => n.to_string(),
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| folder(dir, "the folder has no name; give the party's name"))?,
    };
    validate_name(&name)?;
    Ok(name)
}

/// Checks that the public key in `dir` is the consortium's.
fn check_public_key(dir: &Path, pk: &PublicKey, description: &Description) -> Result<()> {
    if hex::encode(pk.digest()) != description.public_key_sha256 {
        return Err(folder(
            dir,
            format!(
                "{PUBLIC_KEY_FILE} is not the consortium's public key ({} names another digest)",
                crate::party::DESCRIPTION_FILE
            ),
        ));
    }
    Ok(())
}

/// Every hospital of `description`, with its key-share index and identity key, each identity key
/// also in `trust` (as the witness key auditors count cosignatures with).
fn hospitals_of(
    dir: &Path,
    description: &Description,
    trust: &Trust,
) -> Result<BTreeMap<String, EnrolledHospital>> {
    let mut hospitals = BTreeMap::new();
    for h in description.hospitals() {
        let (Some(share_index), Some(vkey)) = (h.index, h.identity_vkey.as_deref()) else {
            return Err(folder(
                dir,
                format!(
                    "consortium.json: hospital {:?} has no key index or identity key",
                    h.name
                ),
            ));
        };
        let identity = NoteVerifier::from_vkey(vkey)?.public_key();
        if !trust.witnesses.iter().any(|w| w.public_key() == identity) {
            return Err(folder(
                dir,
                format!(
                    "hospital {:?}'s identity key is not in {TRUST_FILE}",
                    h.name
                ),
            ));
        }
        hospitals.insert(
            h.name.clone(),
            EnrolledHospital {
                share_index,
                identity,
            },
        );
    }
    Ok(hospitals)
}

/// What the coordinator and auditors know of one hospital.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledHospital {
    /// The index of its key share (1-based; the order hospitals were given to `init`).
    pub share_index: usize,
    /// Its identity key (Ed25519 public key): submissions, evaluations and cosignatures.
    pub identity: [u8; 32],
}

/// The coordinator's folder (`DIR/coordinator`).
pub struct CoordinatorFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The consortium's public description.
    pub description: Description,
    /// The threshold public key (the coordinator holds no share).
    pub public_key: PublicKey,
    /// The log's checkpoint-signing key.
    pub log: NoteSigner,
    /// The trust file: the log key, the hospitals' keys and the cosignature quorum.
    pub trust: Trust,
    /// Every hospital by name.
    pub hospitals: BTreeMap<String, EnrolledHospital>,
}

impl CoordinatorFolder {
    /// Opens and checks the coordinator's folder: its TLS identity is the coordinator's, its
    /// public key and log key are the ones `consortium.json` names, and every hospital there has a
    /// key index and an identity key.
    pub fn open(dir: &Path) -> Result<CoordinatorFolder> {
        tls::server_tls(dir)?;
        let description = Consortium::load(dir)?.description;
        let public_key = public_key_of(dir)?;
        check_public_key(dir, &public_key, &description)?;
        let log = NoteSigner::from_skey(read(&dir.join(LOG_SKEY_FILE))?.trim())?;
        if log.verifier().to_vkey() != description.log_vkey {
            return Err(folder(
                dir,
                format!("{LOG_SKEY_FILE} does not match the log key of consortium.json"),
            ));
        }
        let trust = trust_of(dir)?;
        let hospitals = hospitals_of(dir, &description, &trust)?;
        Ok(CoordinatorFolder {
            dir: dir.to_path_buf(),
            description,
            public_key,
            log,
            trust,
            hospitals,
        })
    }

    /// The party names of the consortium's researchers.
    pub fn researchers(&self) -> impl Iterator<Item = &str> {
        self.description
            .parties
            .iter()
            .filter(|p| p.role == Role::Researcher)
            .map(|p| p.name.as_str())
    }
}

/// A hospital's folder (`DIR/hospitals/<name>`).
pub struct HospitalFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The hospital's name.
    pub name: String,
    /// Its identity key: signs submissions, evaluations and cosignatures.
    pub identity: NoteSigner,
    /// The threshold public key.
    pub public_key: PublicKey,
    /// Its share of the threshold key.
    pub share: KeyShare,
    /// The log's verifier key.
    pub log: NoteVerifier,
    /// The trust file: the log key and every hospital's identity key.
    pub trust: Trust,
}

impl HospitalFolder {
    /// Opens and checks a hospital's folder; `name` defaults to the folder's name. Its identity
    /// key must carry the hospital's name, its key share must belong to the public key, and its
    /// log key must be the trust file's.
    pub fn open(dir: &Path, name: Option<&str>) -> Result<HospitalFolder> {
        let name = party_name(dir, name)?;
        if name == COORDINATOR_NAME {
            return Err(folder(
                dir,
                "a hospital cannot be named after the coordinator",
            ));
        }
        let identity = NoteSigner::from_skey(read(&dir.join(IDENTITY_SKEY_FILE))?.trim())?;
        if identity.name() != name {
            return Err(folder(
                dir,
                format!(
                    "{IDENTITY_SKEY_FILE} belongs to {:?}, not {name:?}",
                    identity.name()
                ),
            ));
        }
        let public_key = public_key_of(dir)?;
        let share = KeyShare::load(&dir.join(SHARE_FILE))?;
        share.verify(&public_key)?;
        let trust = trust_of(dir)?;
        let log = NoteVerifier::from_vkey(read(&dir.join(LOG_VKEY_FILE))?.trim())?;
        if log.public_key() != trust.log.public_key() {
            return Err(folder(
                dir,
                format!("{LOG_VKEY_FILE} and {TRUST_FILE} name different log keys"),
            ));
        }
        Ok(HospitalFolder {
            dir: dir.to_path_buf(),
            name,
            identity,
            public_key,
            share,
            log,
            trust,
        })
    }

    /// The identity keys of the consortium's hospitals (this one included), by name.
    pub fn peers(&self) -> BTreeMap<String, [u8; 32]> {
        self.trust
            .witnesses
            .iter()
            .map(|w| (w.name().to_owned(), w.public_key()))
            .collect()
    }
}

/// A researcher's folder (`DIR/researchers/<name>`).
pub struct ResearcherFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The researcher's name.
    pub name: String,
    /// The trust file, to check what the coordinator releases.
    pub trust: Trust,
}

impl ResearcherFolder {
    /// Opens a researcher's folder; `name` defaults to the folder's name. Its certificate must be
    /// a researcher's, issued by the CA beside it.
    pub fn open(dir: &Path, name: Option<&str>) -> Result<ResearcherFolder> {
        let name = party_name(dir, name)?;
        tls::verify_party_certificate(dir, &name, Role::Researcher)?;
        Ok(ResearcherFolder {
            trust: trust_of(dir)?,
            dir: dir.to_path_buf(),
            name,
        })
    }
}

/// An auditor's folder (`DIR/auditors/<name>`), or any party folder used for its public files.
pub struct AuditorFolder {
    /// The folder.
    pub dir: PathBuf,
    /// The consortium's public description.
    pub description: Description,
    /// The trust file.
    pub trust: Trust,
    /// The threshold public key.
    pub public_key: PublicKey,
    /// Every hospital by name.
    pub hospitals: BTreeMap<String, EnrolledHospital>,
}

impl AuditorFolder {
    /// Opens the public files of a party folder (an auditor's, or any party's): the description,
    /// the trust file and the public key, which must be the description's, as must the trust
    /// file's log key; every hospital's identity key must be in the trust file.
    pub fn open(dir: &Path) -> Result<AuditorFolder> {
        let description = Consortium::load(dir)?.description;
        let trust = trust_of(dir)?;
        let public_key = public_key_of(dir)?;
        check_public_key(dir, &public_key, &description)?;
        if trust.log.to_vkey() != description.log_vkey {
            return Err(folder(
                dir,
                format!("{TRUST_FILE} names another log key than consortium.json"),
            ));
        }
        let hospitals = hospitals_of(dir, &description, &trust)?;
        Ok(AuditorFolder {
            dir: dir.to_path_buf(),
            description,
            trust,
            public_key,
            hospitals,
        })
    }
}
