//! Certificate revocation through the consortium CA's certificate revocation list (RFC 5280).
//!
//! [`revoke`] (`fedchain consortium revoke`) runs where the CA key is kept. It signs, with the CA
//! key, a CRL listing every certificate revoked so far (serial, date, reason) under a CRL number
//! one above the last, and writes it to `ca/crl.pem` and to the coordinator's folder, each by an
//! atomic rename (a reader never sees half a file). The operator deploys the coordinator's copy
//! next to its certificate.
//!
//! The coordinator reads its folder's `crl.pem` at start ([`Crl::load`]: it must be signed by the
//! consortium CA) and again whenever the file changes, so a revocation takes effect without a
//! restart; a CRL whose number is lower than the one in force is refused (a rollback would
//! un-revoke). Every RPC, and every open task or watch stream, from a listed certificate is
//! refused with `PERMISSION_DENIED`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::error::ConsortiumError;
use crate::files::{self, PUBLIC_MODE};
use crate::init::Consortium;
use crate::party::{cert_file_name, Role, CA_CERT_FILE, CA_KEY_FILE, COORDINATOR_NAME};

/// The CRL's file name, in `ca/` and in the coordinator's folder.
pub const CRL_FILE: &str = "crl.pem";
/// How long a CRL says it is current (its next update). The coordinator keeps enforcing a CRL
/// past that date: refusing everyone instead would be an outage, and accepting everyone would
/// un-revoke.
pub const CRL_VALIDITY_DAYS: i64 = 365;

/// What can go wrong reading or writing a CRL.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CRL or certificate is not what it must be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The consortium's description could not be read.
    #[error(transparent)]
    Consortium(#[from] ConsortiumError),
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Refused(String),
}

type Result<T> = std::result::Result<T, RevocationError>;

/// Why a certificate was revoked (the RFC 5280 reason codes an operator has a use for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// No reason given.
    Unspecified,
    /// The party's private key is, or may be, known to someone else.
    KeyCompromise,
    /// The party left the consortium or changed its name.
    AffiliationChanged,
    /// A new certificate replaces this one.
    Superseded,
    /// The party no longer operates.
    CessationOfOperation,
}

impl Reason {
    /// Every reason, with its command-line name.
    pub const ALL: [(Reason, &'static str); 5] = [
        (Reason::Unspecified, "unspecified"),
        (Reason::KeyCompromise, "key-compromise"),
        (Reason::AffiliationChanged, "affiliation-changed"),
        (Reason::Superseded, "superseded"),
        (Reason::CessationOfOperation, "cessation-of-operation"),
    ];

    /// The command-line name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("unspecified", |(_, name)| name)
    }

    fn to_rcgen(self) -> RevocationReason {
        match self {
            Reason::Unspecified => RevocationReason::Unspecified,
            Reason::KeyCompromise => RevocationReason::KeyCompromise,
            Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
            Reason::Superseded => RevocationReason::Superseded,
            Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
        }
    }

    fn from_code(code: u8) -> Reason {
        match code {
            1 => Reason::KeyCompromise,
            3 => Reason::AffiliationChanged,
            4 => Reason::Superseded,
            5 => Reason::CessationOfOperation,
            _ => Reason::Unspecified,
        }
    }
}

impl std::str::FromStr for Reason {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Reason, String> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(r, _)| *r)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown reason {s:?}; one of {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Revoked {
    /// Its serial number, lower-case hex.
    pub serial: String,
    /// When it was revoked (RFC 3339, UTC).
    pub revoked_at: String,
    /// Why.
    pub reason: Reason,
    #[serde(skip)]
    at: OffsetDateTime,
}

/// A CRL signed by the consortium CA: the certificates revoked so far.
#[derive(Debug, Clone)]
pub struct Crl {
    /// Its CRL number: every new CRL's is one higher.
    pub number: u64,
    /// When it was issued.
    pub this_update: OffsetDateTime,
    /// When it says the next one is due.
    pub next_update: Option<OffsetDateTime>,
    /// By serial number (big-endian bytes, no leading zeros).
    revoked: BTreeMap<Vec<u8>, Revoked>,
}

fn invalid(path: &Path, reason: impl Into<String>) -> RevocationError {
    RevocationError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| RevocationError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The DER contents of a PEM file's first block, which must have `label`.
fn pem_der(path: &Path, bytes: &[u8], label: &str) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(bytes)
        .map_err(|e| invalid(path, format!("not a PEM file: {e}")))?;
    if pem.label != label {
        return Err(invalid(
            path,
            format!("holds a {:?} PEM block, not {label:?}", pem.label),
        ));
    }
    Ok(pem.contents)
}

fn to_time(path: &Path, t: x509_parser::time::ASN1Time) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| invalid(path, e.to_string()))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A certificate's serial number as the CRL compares it: big-endian, no leading zeros. `None`
/// when the bytes are not a DER certificate.
pub fn serial_of(cert_der: &[u8]) -> Option<Vec<u8>> {
    X509Certificate::from_der(cert_der)
        .ok()
        .map(|(_, cert)| cert.tbs_certificate.serial.to_bytes_be())
}

impl Crl {
    /// Parses a PEM CRL and checks it: issued by the CA whose PEM certificate is `ca_pem`, signed
    /// with its key, with a CRL number. `path` names the file in errors.
    pub fn parse(path: &Path, pem: &[u8], ca_pem: &[u8]) -> Result<Crl> {
        Crl::from_der(path, &pem_der(path, pem, "X509 CRL")?, ca_pem)
    }

    fn from_der(path: &Path, der: &[u8], ca_pem: &[u8]) -> Result<Crl> {
        let (rest, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| invalid(path, format!("not a DER CRL: {e}")))?;
        if !rest.is_empty() {
            return Err(invalid(path, "bytes follow the CRL"));
        }
        let ca_path = Path::new(CA_CERT_FILE);
        let ca_der = pem_der(ca_path, ca_pem, "CERTIFICATE")?;
        let (_, ca) = X509Certificate::from_der(&ca_der)
            .map_err(|e| invalid(ca_path, format!("not a DER certificate: {e}")))?;
        if crl.issuer().as_raw() != ca.subject().as_raw() {
            return Err(invalid(
                path,
                format!(
                    "issued by {:?}, not by the consortium CA {:?}",
                    crl.issuer().to_string(),
                    ca.subject().to_string()
                ),
            ));
        }
        crl.verify_signature(ca.public_key()).map_err(|e| {
            invalid(
                path,
                format!("its signature does not verify with the consortium CA's key: {e}"),
            )
        })?;
        let number = crl
            .crl_number()
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| invalid(path, "no CRL number (or one beyond 2^64)"))?;
        let mut revoked = BTreeMap::new();
        for r in crl.iter_revoked_certificates() {
            let at = to_time(path, r.revocation_date)?;
            let reason = r
                .reason_code()
                .map_or(Reason::Unspecified, |(_, code)| Reason::from_code(code.0));
            let serial = r.serial().to_bytes_be();
            revoked.insert(
                serial.clone(),
                Revoked {
                    serial: hex::encode(&serial),
                    revoked_at: rfc3339(at),
                    reason,
                    at,
                },
            );
        }
        Ok(Crl {
            number,
            this_update: to_time(path, crl.last_update())?,
            next_update: crl.next_update().map(|t| to_time(path, t)).transpose()?,
            revoked,
        })
    }

    /// Reads and checks the CRL at `path` against the CA certificate at `ca_path`.
    pub fn load(path: &Path, ca_path: &Path) -> Result<Crl> {
        Crl::parse(path, &read(path)?, &read(ca_path)?)
    }

    /// The entry of the certificate with this serial number (as [`serial_of`] gives it), if it
    /// is revoked.
    pub fn revoked(&self, serial: &[u8]) -> Option<&Revoked> {
        self.revoked.get(serial)
    }

    /// Every revoked certificate, by serial number.
    pub fn entries(&self) -> impl Iterator<Item = &Revoked> {
        self.revoked.values()
    }
}

/// What [`revoke`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Revocation {
    /// The revoked certificate's party.
    pub party: String,
    /// Its role.
    pub role: Role,
    /// Its serial number, lower-case hex.
    pub serial: String,
    /// Why.
    pub reason: Reason,
    /// The new CRL's number.
    pub crl_number: u64,
    /// Certificates the new CRL lists, this one included.
    pub revoked: usize,
    /// The files written: the CA's CRL and the coordinator's copy.
    pub written: Vec<PathBuf>,
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so that a
/// reader (the coordinator watching its CRL) sees the old file or the new one, never a part.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("pem.tmp");
    let io = |source| RevocationError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    files::write_new(&tmp, bytes, PUBLIC_MODE).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    // The revocation is in force once the rename survives a crash.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    std::fs::File::open(dir.unwrap_or(Path::new(".")))
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Revokes the certificate of `party` in the consortium at `dir`, read from the party's folder
/// (or from `cert` when given, e.g. a copy kept after the folder was handed over): signs a new
/// CRL with the CA key in `dir/ca/`, listing it with every certificate revoked before, and
/// writes it to `dir/ca/crl.pem` and `dir/coordinator/crl.pem`.
pub fn revoke(
    dir: &Path,
    party: &str,
    cert: Option<&Path>,
    reason: Reason,
    now: OffsetDateTime,
) -> Result<Revocation> {
    let consortium = Consortium::load(dir)?;
    let entry = consortium.description.party(party).ok_or_else(|| {
        let names: Vec<&str> = consortium
            .description
            .parties
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        RevocationError::Refused(format!(
            "{party:?} is not a party of the consortium in {} (parties: {})",
            dir.display(),
            names.join(", ")
        ))
    })?;
    if entry.name == COORDINATOR_NAME {
        return Err(RevocationError::Refused(
            "the coordinator's certificate is checked by the hospitals, which do not read the \
             CRL: to replace the coordinator, provision a new consortium"
                .into(),
        ));
    }
    let cert_path = cert.map_or_else(
        || consortium.dir.join(&entry.dir).join(cert_file_name(party)),
        Path::to_path_buf,
    );
    let cert_der = match read(&cert_path) {
        Ok(pem) => pem_der(&cert_path, &pem, "CERTIFICATE")?,
        Err(RevocationError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && cert.is_none() =>
        {
            return Err(RevocationError::Refused(format!(
                "{} is not here (the folder was handed over?): give a copy of {party}'s \
                 certificate with --cert FILE",
                cert_path.display()
            )))
        }
        Err(e) => return Err(e),
    };
    let fingerprint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&cert_der));
    if fingerprint != entry.cert_sha256 {
        return Err(invalid(
            &cert_path,
            format!(
                "is not the certificate consortium.json lists for {party} (SHA-256 {fingerprint}, \
                 expected {})",
                entry.cert_sha256
            ),
        ));
    }
    let serial = serial_of(&cert_der).ok_or_else(|| invalid(&cert_path, "not a certificate"))?;

    let ca_dir = consortium.ca_dir();
    let ca_path = ca_dir.join(CA_CERT_FILE);
    let key_path = ca_dir.join(CA_KEY_FILE);
    let ca_pem = read(&ca_path)?;
    let key_pem = match std::fs::read_to_string(&key_path) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RevocationError::Refused(format!(
                "{} is not here: a revocation is signed by the consortium CA, so run this where \
                 the CA key is kept (with the consortium folder)",
                key_path.display()
            )))
        }
        Err(source) => {
            return Err(RevocationError::Io {
                path: key_path,
                source,
            })
        }
    };
    let crl_path = ca_dir.join(CRL_FILE);
    let previous = match std::fs::read(&crl_path) {
        Ok(bytes) => Some(Crl::parse(&crl_path, &bytes, &ca_pem)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(RevocationError::Io {
                path: crl_path,
                source,
            })
        }
    };
    if let Some(r) = previous.as_ref().and_then(|p| p.revoked(&serial)) {
        return Err(RevocationError::Refused(format!(
            "{party}'s certificate (serial {}) was already revoked on {} ({})",
            r.serial, r.revoked_at, r.reason
        )));
    }
    let mut revoked_certs: Vec<RevokedCertParams> = previous
        .iter()
        .flat_map(|p| p.revoked.iter())
        .map(|(serial, r)| RevokedCertParams {
            serial_number: SerialNumber::from_slice(serial),
            revocation_time: r.at,
            reason_code: Some(r.reason.to_rcgen()),
            invalidity_date: None,
        })
        .collect();
    revoked_certs.push(RevokedCertParams {
        serial_number: SerialNumber::from_slice(&serial),
        revocation_time: now,
        reason_code: Some(reason.to_rcgen()),
        invalidity_date: None,
    });
    let number = previous.as_ref().map_or(1, |p| p.number + 1);
    let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&key_path, e.to_string()))?;
    let ca_text = String::from_utf8_lossy(&ca_pem);
    let issuer =
        Issuer::from_ca_cert_pem(&ca_text, key).map_err(|e| invalid(&ca_path, e.to_string()))?;
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(CRL_VALIDITY_DAYS),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let pem = params
        .signed_by(&issuer)
        .and_then(|crl| crl.pem())
        .map_err(|e| RevocationError::Refused(format!("signing the CRL failed: {e}")))?;
    // Check what was signed before anyone relies on it.
    let crl = Crl::parse(&crl_path, pem.as_bytes(), &ca_pem)?;
    let coordinator_copy = consortium.coordinator_dir().join(CRL_FILE);
    replace(&crl_path, pem.as_bytes())?;
    let mut written = vec![crl_path];
    if consortium.coordinator_dir().is_dir() {
        replace(&coordinator_copy, pem.as_bytes())?;
        written.push(coordinator_copy);
    }
    Ok(Revocation {
        party: party.to_string(),
        role: entry.role,
        serial: hex::encode(&serial),
        reason,
        crl_number: crl.number,
        revoked: crl.revoked.len(),
        written,
    })
}

/// A CRL file that the operator may replace while the coordinator runs: the CRL in force and the
/// file's state (modification time, length) when it was last read.
#[derive(Debug)]
pub struct WatchedCrl {
    path: PathBuf,
    ca_pem: Vec<u8>,
    stamp: Option<(std::time::SystemTime, u64)>,
    crl: Option<Crl>,
}

impl WatchedCrl {
    /// Watches `path`, a CRL of the CA whose certificate is at `ca_path`, and reads it now if it
    /// exists. An invalid CRL is an error: better not to start than to start without it.
    pub fn open(path: &Path, ca_path: &Path) -> Result<WatchedCrl> {
        let mut w = WatchedCrl {
            path: path.to_path_buf(),
            ca_pem: read(ca_path)?,
            stamp: None,
            crl: None,
        };
        w.refresh()?;
        Ok(w)
    }

    /// The CRL in force, if any.
    pub fn crl(&self) -> Option<&Crl> {
        self.crl.as_ref()
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again if it changed since it was last read, and returns the new CRL once
    /// it is in force. A new CRL takes effect only if it verifies and its number is not lower
    /// than the one in force; otherwise the error says why and the old one stays (the same file
    /// is not read again until it changes). A file that disappears leaves the CRL in force.
    pub fn refresh(&mut self) -> Result<Option<&Crl>> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(RevocationError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let stamp = (meta.modified().unwrap_or(std::time::UNIX_EPOCH), meta.len());
        if self.stamp == Some(stamp) {
            return Ok(None);
        }
        self.stamp = Some(stamp);
        let crl = Crl::parse(&self.path, &read(&self.path)?, &self.ca_pem)?;
        if let Some(current) = &self.crl {
            if crl.number < current.number {
                return Err(invalid(
                    &self.path,
                    format!(
                        "CRL number {} is lower than the {} in force (an older CRL would \
                         un-revoke certificates); keeping CRL {}",
                        crl.number, current.number, current.number
                    ),
                ));
            }
        }
        self.crl = Some(crl);
        Ok(self.crl.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{init, InitOptions};

    fn consortium(dir: &Path) {
        let options = InitOptions {
            modulus_bits: 512,
            researchers: vec!["alice".into()],
            ..InitOptions::default()
        };
        init(dir, &["h1".into(), "h2".into()], 2, &options).unwrap();
    }

    fn serial_of_party(dir: &Path, folder: &str, name: &str) -> Vec<u8> {
        let path = dir.join(folder).join(cert_file_name(name));
        let pem = std::fs::read(&path).unwrap();
        serial_of(&pem_der(&path, &pem, "CERTIFICATE").unwrap()).unwrap()
    }

    #[test]
    fn revocations_accumulate_in_crls_the_coordinator_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        consortium(&dir);
        let ca = dir.join("ca").join(CA_CERT_FILE);
        let copy = dir.join("coordinator").join(CRL_FILE);
        let mut watched = WatchedCrl::open(&copy, &ca).unwrap();
        assert!(
            watched.crl().is_none(),
            "no CRL before the first revocation"
        );

        let now = OffsetDateTime::now_utc();
        let first = revoke(&dir, "h2", None, Reason::KeyCompromise, now).unwrap();
        assert_eq!((first.crl_number, first.revoked), (1, 1));
        assert_eq!(
            first.written,
            vec![dir.join("ca").join(CRL_FILE), copy.clone()]
        );
        let crl = watched
            .refresh()
            .unwrap()
            .expect("the new CRL is in force")
            .clone();
        let h2 = serial_of_party(&dir, "hospitals/h2", "h2");
        assert_eq!(crl.revoked(&h2).unwrap().reason, Reason::KeyCompromise);
        assert!(crl
            .revoked(&serial_of_party(&dir, "hospitals/h1", "h1"))
            .is_none());
        assert!(
            watched.refresh().unwrap().is_none(),
            "unchanged file, nothing new"
        );

        // A second revocation keeps the first.
        let second = revoke(&dir, "alice", None, Reason::AffiliationChanged, now).unwrap();
        assert_eq!((second.crl_number, second.revoked), (2, 2));
        let crl = watched.refresh().unwrap().unwrap();
        assert!(crl.revoked(&h2).is_some());
        assert!(crl
            .revoked(&serial_of_party(&dir, "researchers/alice", "alice"))
            .is_some());

        // Revoking twice, the coordinator, or a stranger is refused, and writes nothing.
        for (party, why) in [
            ("h2", "already revoked"),
            ("coordinator", "provision a new consortium"),
            ("mallory", "not a party"),
        ] {
            let e = revoke(&dir, party, None, Reason::Unspecified, now).unwrap_err();
            assert!(e.to_string().contains(why), "{party}: {e}");
        }
        assert_eq!(Crl::load(&copy, &ca).unwrap().number, 2);
    }

    #[test]
    fn forged_foreign_or_older_crls_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (ours, theirs) = (tmp.path().join("ours"), tmp.path().join("theirs"));
        consortium(&ours);
        consortium(&theirs);
        let now = OffsetDateTime::now_utc();
        revoke(&ours, "h1", None, Reason::Unspecified, now).unwrap();
        let old = std::fs::read(ours.join("ca").join(CRL_FILE)).unwrap();
        revoke(&ours, "h2", None, Reason::Unspecified, now).unwrap();
        revoke(&theirs, "h1", None, Reason::Unspecified, now).unwrap();
        let ca = ours.join("ca").join(CA_CERT_FILE);
        let copy = ours.join("coordinator").join(CRL_FILE);

        // Another consortium's CRL: its CA has the same name, not the same key.
        let foreign = theirs.join("ca").join(CRL_FILE);
        let e = Crl::load(&foreign, &ca).unwrap_err().to_string();
        assert!(
            e.contains("does not verify with the consortium CA's key"),
            "{e}"
        );

        // A flipped bit in the signed part: the signature fails (or the DER does).
        let der = pem_der(&copy, &std::fs::read(&copy).unwrap(), "X509 CRL").unwrap();
        let mut bad = der.clone();
        let at = der.len() / 2;
        bad[at] ^= 1;
        let ca_pem = std::fs::read(&ca).unwrap();
        assert!(Crl::from_der(&copy, &der, &ca_pem).is_ok());
        assert!(Crl::from_der(&copy, &bad, &ca_pem).is_err());

        // Rolling the coordinator's copy back to CRL 1 is refused; CRL 2 stays in force.
        let mut watched = WatchedCrl::open(&copy, &ca).unwrap();
        assert_eq!(watched.crl().unwrap().number, 2);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&copy, &old).unwrap();
        let e = watched.refresh().unwrap_err().to_string();
        assert!(e.contains("lower than the 2 in force"), "{e}");
        assert_eq!(watched.crl().unwrap().number, 2);
        // Garbage in place of the CRL is reported once, and CRL 2 stays.
        std::fs::write(&copy, b"not a CRL").unwrap();
        assert!(watched.refresh().is_err());
        assert!(watched.refresh().unwrap().is_none());
        assert_eq!(watched.crl().unwrap().number, 2);
        // A coordinator does not start on a CRL it cannot verify.
        assert!(WatchedCrl::open(&copy, &ca).is_err());
    }

    #[test]
    fn revoking_needs_the_ca_key_and_the_right_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        consortium(&dir);
        let now = OffsetDateTime::now_utc();
        // Another party's certificate given for h1.
        let other = dir.join("hospitals/h2").join(cert_file_name("h2"));
        let e = revoke(&dir, "h1", Some(&other), Reason::Unspecified, now).unwrap_err();
        assert!(e.to_string().contains("is not the certificate"), "{e}");
        // The folder was handed over: the certificate must be given.
        std::fs::remove_dir_all(dir.join("hospitals/h1")).unwrap();
        let e = revoke(&dir, "h1", None, Reason::Unspecified, now).unwrap_err();
        assert!(e.to_string().contains("--cert FILE"), "{e}");
        // The CA key moved offline.
        std::fs::remove_file(dir.join("ca").join(CA_KEY_FILE)).unwrap();
        let e = revoke(&dir, "h2", None, Reason::Unspecified, now).unwrap_err();
        assert!(e.to_string().contains("where the CA key is kept"), "{e}");
        assert!(!dir.join("ca").join(CRL_FILE).exists());
    }

    #[test]
    fn reasons_have_command_line_names() {
        for (reason, name) in Reason::ALL {
            assert_eq!(name.parse::<Reason>().unwrap(), reason);
            assert_eq!(reason.to_string(), name);
            assert_eq!(Reason::from_code(reason.to_rcgen() as u8), reason);
        }
        assert!("compromised".parse::<Reason>().is_err());
    }
}
