//! Consortium provisioning: every key and certificate a consortium needs, one folder per party.
//!
//! [`init`] runs once, by the operator, in an empty folder `DIR`, and writes:
//!
//! ```text
//! DIR/
//!   consortium.json            public description (parties, roles, fingerprints, threshold, keys)
//!   trust.txt                  the auditors' trust file: log key, witness keys, quorum
//!   ca/                        the consortium CA; move ca.key OFFLINE once init is done
//!     ca.pem  ca.key*          (and crl.pem once `revocation::revoke` revoked a certificate)
//!   coordinator/               the coordinator (gRPC server, log operator)
//!     ca.pem  coordinator.pem  coordinator.key*  log.skey*  log.vkey  public.key
//!   hospitals/<name>/          one per hospital
//!     ca.pem  <name>.pem  <name>.key*  identity.skey*  identity.vkey  share.key*  public.key
//!     log.vkey
//!   researchers/<name>/        one per researcher
//!     ca.pem  <name>.pem  <name>.key*
//!   auditors/<name>/           one per auditor
//!     ca.pem  <name>.pem  <name>.key*
//! ```
//!
//! Every party folder also holds copies of the public `consortium.json`, `trust.txt` and
//! `public.key`.
//!
//! Files marked `*` are secrets, created with mode 0600 (given to `open(2)`, so never briefly
//! readable by others); every folder `init` creates is 0700. Each party folder holds only what
//! that party may hold: the operator hands `hospitals/st-marys/` to St Mary's and nothing else.
//! In particular the coordinator's folder holds no key share (it must never be able to decrypt)
//! and no hospital's identity key, and no folder but `ca/` holds the CA key.
//!
//! - **Certificates** (ECDSA P-256, accepted by rustls for client and server authentication):
//!   one self-signed CA, then one leaf per party with CN = its name and two SAN URIs,
//!   `urn:fedchain:role:<role>` and `urn:fedchain:party:<name>` (read back by
//!   [`crate::tls::peer_from_der`]). Client certificates carry the clientAuth extended key usage;
//!   the coordinator's carries serverAuth and its DNS names and IP addresses.
//! - **Signed-note keys** (Ed25519, in the Go `golang.org/x/mod/sumdb/note` text forms): the log's
//!   `log.skey`/`log.vkey` (key name [`InitOptions::log_name`]) signs checkpoints; each hospital's
//!   `identity.skey`/`identity.vkey` (key name = hospital name) signs its submissions and its
//!   cosignatures. One key can serve both because the two messages cannot be confused: a
//!   submission message (`fedchain_ledger::record::Body::submission_message`) starts with a
//!   length prefix holding zero bytes, which no note text may contain.
//! - **Threshold Paillier key**: [`fedchain_crypto::keys::deal`] with `t` = the threshold; hospital
//!   number `i` (1-based, the order given to [`init`]) gets share `i`. This is the trusted-dealer
//!   ceremony of the trust model: the shares exist in this process's memory only until written to
//!   the hospitals' folders.
//!
//! Party names are 1 to 63 characters of `a-z`, `0-9` and `-`, not starting with `-`, unique
//! across all parties; `coordinator` is taken by the coordinator.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use fedchain_crypto::keys::{self, KeyShare, PublicKey, PUBLIC_KEY_FILE};
use fedchain_ledger::note::NoteSigner;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ConsortiumError, Result};
use crate::files::{self, PUBLIC_MODE, SECRET_MODE};
use crate::party::*;

/// Version of the [`Description`] format.
pub const DESCRIPTION_VERSION: u32 = 1;

/// Options of [`init`] beyond the hospitals and the threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// Bits of the Paillier modulus N (default [`keys::DEFAULT_MODULUS_BITS`], 2048).
    pub modulus_bits: usize,
    /// Researcher names (default `["researcher"]`).
    pub researchers: Vec<String>,
    /// Auditor names (default `["auditor"]`).
    pub auditors: Vec<String>,
    /// DNS names and IP addresses the coordinator's certificate is valid for; clients connect to
    /// one of them (default `["localhost", "127.0.0.1"]`).
    pub coordinator_hosts: Vec<String>,
    /// Days every certificate is valid from now (default 365).
    pub validity_days: u32,
    /// Key name of the log's signed-note key, as written in checkpoint signatures (default
    /// `"fedchain-log"`; no whitespace, no `+`).
    pub log_name: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            modulus_bits: keys::DEFAULT_MODULUS_BITS,
            researchers: vec!["researcher".into()],
            auditors: vec!["auditor".into()],
            coordinator_hosts: vec!["localhost".into(), "127.0.0.1".into()],
            validity_days: 365,
            log_name: "fedchain-log".into(),
        }
    }
}

/// One party in the [`Description`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyEntry {
    /// The party's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its folder, relative to the consortium folder.
    pub dir: String,
    /// SHA-256 of its certificate (DER), lowercase hex.
    pub cert_sha256: String,
    /// Hospitals only: its 1-based party index, which is its key share's index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// Hospitals only: its signed-note verifier key (submissions and cosignatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_vkey: Option<String>,
}

/// The public description of a consortium (`consortium.json`): nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// Format version ([`DESCRIPTION_VERSION`]).
    pub version: u32,
    /// Decryption shares needed (t), which is also the cosignature quorum.
    pub threshold: usize,
    /// Bits of the Paillier modulus.
    pub modulus_bits: usize,
    /// SHA-256 of the threshold public key's canonical encoding (`PublicKey::digest`), hex.
    pub public_key_sha256: String,
    /// SHA-256 of the CA certificate (DER), hex.
    pub ca_cert_sha256: String,
    /// The log's signed-note verifier key.
    pub log_vkey: String,
    /// Every party: the coordinator, then hospitals in index order, researchers, auditors.
    pub parties: Vec<PartyEntry>,
}

impl Description {
    /// The hospitals, in index order.
    pub fn hospitals(&self) -> impl Iterator<Item = &PartyEntry> {
        self.parties.iter().filter(|p| p.role == Role::Hospital)
    }

    /// The party named `name`.
    pub fn party(&self, name: &str) -> Option<&PartyEntry> {
        self.parties.iter().find(|p| p.name == name)
    }
}

/// A provisioned consortium: its folder and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consortium {
    /// The consortium folder.
    pub dir: PathBuf,
    /// What `consortium.json` says.
    pub description: Description,
}

impl Consortium {
    /// Reads the description of the consortium in `dir`.
    pub fn load(dir: &Path) -> Result<Consortium> {
        let path = dir.join(DESCRIPTION_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ConsortiumError::Io {
            path: path.clone(),
            source,
        })?;
        let description: Description =
            serde_json::from_slice(&bytes).map_err(|source| ConsortiumError::Json {
                path: path.clone(),
                source,
            })?;
        if description.version != DESCRIPTION_VERSION {
            return Err(ConsortiumError::InvalidOption(format!(
                "{} has format version {}, this build reads {DESCRIPTION_VERSION}",
                path.display(),
                description.version
            )));
        }
        Ok(Consortium {
            dir: dir.to_path_buf(),
            description,
        })
    }

    /// The CA's folder.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join(CA_DIR)
    }

    /// The coordinator's folder.
    pub fn coordinator_dir(&self) -> PathBuf {
        self.dir.join(COORDINATOR_DIR)
    }

    /// A hospital's folder.
    pub fn hospital_dir(&self, name: &str) -> PathBuf {
        self.dir.join(HOSPITALS_DIR).join(name)
    }

    /// A researcher's folder.
    pub fn researcher_dir(&self, name: &str) -> PathBuf {
        self.dir.join(RESEARCHERS_DIR).join(name)
    }

    /// An auditor's folder.
    pub fn auditor_dir(&self, name: &str) -> PathBuf {
        self.dir.join(AUDITORS_DIR).join(name)
    }
}

fn validate(hospitals: &[String], threshold: usize, options: &InitOptions) -> Result<()> {
    if hospitals.is_empty() {
        return Err(ConsortiumError::InvalidOption(
            "a consortium needs at least one hospital".into(),
        ));
    }
    let mut seen = HashSet::from([COORDINATOR_NAME]);
    for name in hospitals
        .iter()
        .chain(&options.researchers)
        .chain(&options.auditors)
    {
        validate_name(name)?;
        if !seen.insert(name) {
            return Err(ConsortiumError::DuplicateName { name: name.clone() });
        }
    }
    if threshold == 0 || threshold > hospitals.len() {
        return Err(ConsortiumError::InvalidThreshold {
            threshold,
            hospitals: hospitals.len(),
        });
    }
    if options.coordinator_hosts.is_empty() {
        return Err(ConsortiumError::InvalidOption(
            "the coordinator's certificate needs at least one DNS name or IP address".into(),
        ));
    }
    if options.validity_days == 0 {
        return Err(ConsortiumError::InvalidOption(
            "certificates must be valid for at least one day".into(),
        ));
    }
    // The ceremony checks the modulus size too, but only after the caller waited for safe primes.
    if options.modulus_bits < keys::MIN_MODULUS_BITS || !options.modulus_bits.is_multiple_of(2) {
        return Err(ConsortiumError::InvalidOption(format!(
            "the modulus must be an even number of bits, at least {} ({} in production); got {}",
            keys::MIN_MODULUS_BITS,
            keys::DEFAULT_MODULUS_BITS,
            options.modulus_bits
        )));
    }
    // Checks the key name; the key itself is thrown away.
    NoteSigner::new(&options.log_name, [0; 32])?;
    Ok(())
}

/// Whether `dir` may receive a consortium: it does not exist, or is an empty folder.
fn check_target(dir: &Path) -> Result<bool> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ConsortiumError::Io {
            path: dir.to_path_buf(),
            source,
        }),
        Ok(meta) if !meta.is_dir() => Err(ConsortiumError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(|source| ConsortiumError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            if entries.next().is_some() {
                return Err(ConsortiumError::NotEmpty {
                    path: dir.to_path_buf(),
                });
            }
            Ok(true)
        }
    }
}

/// A leaf certificate and its key, in PEM.
struct Issued {
    cert_pem: String,
    key_pem: String,
    cert_sha256: String,
}

/// Validity window: from a few minutes ago (clocks differ) to `days` from now.
fn validity(days: u32) -> Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let now = time::OffsetDateTime::now_utc();
    let not_after = now
        .checked_add(time::Duration::days(i64::from(days)))
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| {
            ConsortiumError::InvalidOption(format!("a validity of {days} days ends after 9999"))
        })?;
    Ok((now - time::Duration::minutes(5), not_after))
}

/// A random positive serial number of 16 bytes (RFC 5280 allows up to 20).
fn serial(rng: &mut ChaCha20Rng) -> SerialNumber {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn cert_error(party: &str) -> impl FnOnce(rcgen::Error) -> ConsortiumError + '_ {
    move |source| ConsortiumError::Certificate {
        party: party.to_string(),
        source,
    }
}

fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Issues a leaf certificate for `name` with `role`; `hosts` (DNS names, IP addresses) only for
/// the coordinator.
fn issue(
    ca: &Issuer<'_, KeyPair>,
    name: &str,
    role: Role,
    hosts: &[String],
    window: (time::OffsetDateTime, time::OffsetDateTime),
    rng: &mut ChaCha20Rng,
) -> Result<Issued> {
    let err = || cert_error(name);
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(err())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "fedchain consortium");
    for uri in [role_uri(role), party_uri(name)] {
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().map_err(err())?));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if role == Role::Coordinator {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial(rng));
    (params.not_before, params.not_after) = window;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err())?;
    let cert = params.signed_by(&key, ca).map_err(err())?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_sha256: fingerprint(cert.der()),
    })
}

/// Everything [`init`] writes, made in memory first so that nothing is written unless every key
/// could be made.
struct Plan {
    /// (relative path, contents, mode); folders are created as their files need them.
    files: Vec<(PathBuf, Vec<u8>, u32)>,
    /// Key shares, written by [`KeyShare::save`] (0600, never overwriting).
    shares: Vec<(PathBuf, KeyShare)>,
    /// The public key, written by [`PublicKey::save`] into each of these folders.
    public_key: PublicKey,
    public_key_dirs: Vec<PathBuf>,
    /// Party folders, which each get a copy of the public `consortium.json`.
    party_dirs: Vec<PathBuf>,
    /// Folders to create, parents first.
    dirs: Vec<PathBuf>,
}

/// Creates a consortium in `dir` (created if missing, refused unless empty): a CA, the
/// coordinator, `hospitals` (in party-index order) with a `threshold`-of-n Paillier key, the
/// researchers and auditors of `options`. See the [module documentation](self) for the layout.
///
/// Everything is validated and generated in memory before the first file is written; if writing
/// fails part-way, what was written is removed again (the folder was empty, so nothing else is
/// touched).
///
/// After `init`, the operator should move `DIR/ca/` (above all `ca.key`) to offline storage: the
/// CA key is only needed to issue certificates, and whoever holds it can mint any role.
pub fn init(
    dir: &Path,
    hospitals: &[String],
    threshold: usize,
    options: &InitOptions,
) -> Result<Consortium> {
    validate(hospitals, threshold, options)?;
    let existed = check_target(dir)?;
    let (plan, description) = plan(hospitals, threshold, options)?;

    if !existed {
        files::create_dir_all(dir).map_err(|source| ConsortiumError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    if let Err(e) = write(dir, &plan, &description) {
        remove_written(dir, existed, &plan);
        return Err(e);
    }
    Ok(Consortium {
        dir: dir.to_path_buf(),
        description,
    })
}

fn plan(
    hospitals: &[String],
    threshold: usize,
    options: &InitOptions,
) -> Result<(Plan, Description)> {
    let mut rng = ChaCha20Rng::from_os_rng();
    let window = validity(options.validity_days)?;

    // The threshold key: share i goes to hospitals[i - 1].
    let (public_key, shares) =
        keys::deal(options.modulus_bits, hospitals.len(), threshold, &mut rng)?;

    // The CA.
    let ca_key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_error("the CA"))?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fedchain consortium CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "fedchain consortium");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.serial_number = Some(serial(&mut rng));
    (ca_params.not_before, ca_params.not_after) = window;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(cert_error("the CA"))?;
    let ca_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let ca = Issuer::new(ca_params, ca_key);

    let mut plan = Plan {
        files: Vec::new(),
        shares: Vec::new(),
        public_key,
        public_key_dirs: Vec::new(),
        party_dirs: Vec::new(),
        dirs: Vec::new(),
    };
    let mut parties = Vec::new();
    let ca_dir = PathBuf::from(CA_DIR);
    plan.dirs.push(ca_dir.clone());
    plan.files.push((
        ca_dir.join(CA_CERT_FILE),
        ca_pem.clone().into(),
        PUBLIC_MODE,
    ));
    plan.files
        .push((ca_dir.join(CA_KEY_FILE), ca_key_pem.into(), SECRET_MODE));

    // Adds a party folder with the CA certificate and the party's certificate and key.
    let add_party = |plan: &mut Plan,
                     rel: PathBuf,
                     name: &str,
                     role: Role,
                     hosts: &[String],
                     rng: &mut ChaCha20Rng|
     -> Result<PartyEntry> {
        let issued = issue(&ca, name, role, hosts, window, rng)?;
        plan.dirs.push(rel.clone());
        plan.party_dirs.push(rel.clone());
        plan.files
            .push((rel.join(CA_CERT_FILE), ca_pem.clone().into(), PUBLIC_MODE));
        plan.files.push((
            rel.join(cert_file_name(name)),
            issued.cert_pem.into(),
            PUBLIC_MODE,
        ));
        plan.files.push((
            rel.join(key_file_name(name)),
            issued.key_pem.into(),
            SECRET_MODE,
        ));
        Ok(PartyEntry {
            name: name.to_string(),
            role,
            dir: rel.to_string_lossy().into_owned(),
            cert_sha256: issued.cert_sha256,
            index: None,
            identity_vkey: None,
        })
    };

    // The coordinator: TLS server identity, the log key, the public key. No share.
    let coordinator_dir = PathBuf::from(COORDINATOR_DIR);
    parties.push(add_party(
        &mut plan,
        coordinator_dir.clone(),
        COORDINATOR_NAME,
        Role::Coordinator,
        &options.coordinator_hosts,
        &mut rng,
    )?);
    let log = NoteSigner::new(&options.log_name, secret32(&mut rng))?;
    let log_vkey = log.verifier().to_vkey();
    plan.files.push((
        coordinator_dir.join(LOG_SKEY_FILE),
        line(&log.to_skey()),
        SECRET_MODE,
    ));
    plan.files.push((
        coordinator_dir.join(LOG_VKEY_FILE),
        line(&log_vkey),
        PUBLIC_MODE,
    ));
    plan.public_key_dirs.push(coordinator_dir);

    // Hospitals: identity key, key share, public key, and the log's key to check what they cosign.
    let hospitals_dir = PathBuf::from(HOSPITALS_DIR);
    plan.dirs.push(hospitals_dir.clone());
    let mut witness_vkeys = Vec::new();
    for (name, share) in hospitals.iter().zip(shares) {
        let rel = hospitals_dir.join(name);
        let mut entry = add_party(&mut plan, rel.clone(), name, Role::Hospital, &[], &mut rng)?;
        let identity = NoteSigner::new(name, secret32(&mut rng))?;
        let vkey = identity.verifier().to_vkey();
        plan.files.push((
            rel.join(IDENTITY_SKEY_FILE),
            line(&identity.to_skey()),
            SECRET_MODE,
        ));
        plan.files
            .push((rel.join(IDENTITY_VKEY_FILE), line(&vkey), PUBLIC_MODE));
        plan.files
            .push((rel.join(LOG_VKEY_FILE), line(&log_vkey), PUBLIC_MODE));
        entry.index = Some(share.index());
        entry.identity_vkey = Some(vkey.clone());
        witness_vkeys.push(vkey);
        plan.shares.push((rel.join(SHARE_FILE), share));
        plan.public_key_dirs.push(rel);
        parties.push(entry);
    }

    // The auditors' trust file, at the top and in each auditor's folder.
    let mut trust = format!(
        "# fedchain trust file: the keys an auditor trusts (fedchain audit verify --trust).\n\
         # The coordinator's checkpoint-signing (log) key:\n\
         log {log_vkey}\n\
         # Hospitals (witnesses) whose cosignatures count:\n"
    );
    for vkey in &witness_vkeys {
        trust.push_str(&format!("witness {vkey}\n"));
    }
    trust.push_str(&format!(
        "# Cosignatures every checkpoint needs (the decryption threshold):\nquorum {threshold}\n"
    ));
    plan.files
        .push((PathBuf::from(TRUST_FILE), trust.clone().into(), PUBLIC_MODE));
    // Public, so every party gets it: the coordinator counts cosignatures with it, hospitals check
    // each other's submission signatures with it, researchers check released models with it.
    for rel in plan.party_dirs.clone() {
        plan.files
            .push((rel.join(TRUST_FILE), trust.clone().into(), PUBLIC_MODE));
    }

    for (group, role, names) in [
        (RESEARCHERS_DIR, Role::Researcher, &options.researchers),
        (AUDITORS_DIR, Role::Auditor, &options.auditors),
    ] {
        let group = PathBuf::from(group);
        plan.dirs.push(group.clone());
        for name in names {
            let rel = group.join(name);
            parties.push(add_party(
                &mut plan,
                rel.clone(),
                name,
                role,
                &[],
                &mut rng,
            )?);
            plan.files
                .push((rel.join(TRUST_FILE), trust.clone().into(), PUBLIC_MODE));
            // Researchers and auditors check (and replay) with the public key too.
            plan.public_key_dirs.push(rel);
        }
    }

    let description = Description {
        version: DESCRIPTION_VERSION,
        threshold,
        modulus_bits: plan.public_key.modulus_bits(),
        public_key_sha256: hex::encode(plan.public_key.digest()),
        ca_cert_sha256: fingerprint(ca_cert.der()),
        log_vkey,
        parties,
    };
    Ok((plan, description))
}

fn secret32(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    secret
}

fn line(s: &str) -> Vec<u8> {
    format!("{s}\n").into_bytes()
}

fn write(dir: &Path, plan: &Plan, description: &Description) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConsortiumError::Io { path, source }
    };
    // Folders first (all 0700), so every file lands in an owner-only folder.
    for rel in &plan.dirs {
        let path = dir.join(rel);
        files::create_dir(&path).map_err(io(&path))?;
    }
    for (rel, bytes, mode) in &plan.files {
        let path = dir.join(rel);
        files::write_new(&path, bytes, *mode).map_err(io(&path))?;
    }
    for (rel, share) in &plan.shares {
        share.save(&dir.join(rel))?;
    }
    for rel in &plan.public_key_dirs {
        plan.public_key.save(&dir.join(rel).join(PUBLIC_KEY_FILE))?;
    }
    let mut json =
        serde_json::to_vec_pretty(description).map_err(|source| ConsortiumError::Json {
            path: dir.join(DESCRIPTION_FILE),
            source,
        })?;
    json.push(b'\n');
    for rel in &plan.party_dirs {
        let path = dir.join(rel).join(DESCRIPTION_FILE);
        files::write_new(&path, &json, PUBLIC_MODE).map_err(io(&path))?;
    }
    let path = dir.join(DESCRIPTION_FILE);
    files::write_new(&path, &json, PUBLIC_MODE).map_err(io(&path))
}

/// Best-effort removal of a half-written consortium: the folder was empty (or missing) before.
fn remove_written(dir: &Path, existed: bool, plan: &Plan) {
    if !existed {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    let mut tops: Vec<PathBuf> = plan
        .dirs
        .iter()
        .chain(plan.files.iter().map(|(rel, _, _)| rel))
        .filter_map(|rel| rel.components().next())
        .map(|c| dir.join(c))
        .collect();
    tops.push(dir.join(DESCRIPTION_FILE));
    tops.sort();
    tops.dedup();
    for path in tops {
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "st-marys", "h1", "0", "a-", &"a".repeat(MAX_NAME_LEN)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "St-Marys",
            "st marys",
            "st_marys",
            "a/b",
            "..",
            "a+b",
            "é",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            let err = ConsortiumError::from(validate_name(bad).unwrap_err());
            assert!(
                matches!(err, ConsortiumError::InvalidName { ref name, .. } if name == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn options_are_validated_before_any_work() {
        let hospitals = vec!["a".to_string(), "b".to_string()];
        let ok = InitOptions::default();
        assert!(validate(&hospitals, 2, &ok).is_ok());
        for (options, needle) in [
            (
                InitOptions {
                    modulus_bits: 255,
                    ..ok.clone()
                },
                "modulus",
            ),
            (
                InitOptions {
                    coordinator_hosts: vec![],
                    ..ok.clone()
                },
                "DNS name",
            ),
            (
                InitOptions {
                    validity_days: 0,
                    ..ok.clone()
                },
                "one day",
            ),
            (
                InitOptions {
                    log_name: "a log".into(),
                    ..ok.clone()
                },
                "key name",
            ),
        ] {
            let err = validate(&hospitals, 2, &options).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let err = validate(&[], 1, &ok).unwrap_err().to_string();
        assert!(err.contains("at least one hospital"), "{err}");
    }

    #[test]
    fn validity_window() {
        let (from, to) = validity(30).unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert!(from < now && now < to);
        assert!((to - now) > time::Duration::days(29));
        assert!(validity(u32::MAX).is_err());
    }
}
