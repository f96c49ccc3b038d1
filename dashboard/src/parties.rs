//! The state of a party's certificate, as far as the public files beside a party folder tell:
//! its certificate (to learn its serial number) and the CA's revocation list.

use std::path::{Path, PathBuf};

use fedchain_consortium::revocation::{serial_of, Crl, CRL_FILE};
use fedchain_consortium::{PartyEntry, CA_CERT_FILE, CA_DIR, COORDINATOR_DIR};
use sha2::{Digest, Sha256};

/// The consortium folders above `party_dir` where a party's files may be: a party folder sits
/// at `DIR/hospitals/NAME`, `DIR/auditors/NAME` or `DIR/coordinator`.
fn roots(party_dir: &Path) -> Vec<PathBuf> {
    party_dir
        .ancestors()
        .skip(1)
        .take(2)
        .map(Path::to_path_buf)
        .collect()
}

/// The CRL in force: the party folder's own copy, else the consortium's (`ca/` or
/// `coordinator/`), checked against the CA certificate of the party folder.
fn crl(party_dir: &Path) -> Result<Option<Crl>, String> {
    let ca = party_dir.join(CA_CERT_FILE);
    let mut candidates = vec![party_dir.join(CRL_FILE)];
    for root in roots(party_dir) {
        candidates.push(root.join(CA_DIR).join(CRL_FILE));
        candidates.push(root.join(COORDINATOR_DIR).join(CRL_FILE));
    }
    match candidates.into_iter().find(|p| p.is_file()) {
        None => Ok(None),
        Some(path) => Crl::load(&path, &ca).map(Some).map_err(|e| e.to_string()),
    }
}

/// The DER certificate of `entry`, found in the consortium folder around `party_dir` and
/// matching the fingerprint `consortium.json` lists.
fn certificate(party_dir: &Path, entry: &PartyEntry) -> Option<Vec<u8>> {
    roots(party_dir)
        .into_iter()
        .map(|root| root.join(&entry.dir).join(format!("{}.pem", entry.name)))
        .filter_map(|path| std::fs::read(path).ok())
        .filter_map(|pem| {
            x509_parser::pem::parse_x509_pem(&pem)
                .ok()
                .map(|(_, p)| p.contents)
        })
        .find(|der| hex::encode(Sha256::digest(der)) == entry.cert_sha256)
}

/// `in force`, `revoked on DATE (REASON)`, or why it cannot be told from the files here.
pub fn certificate_state(party_dir: &Path, entry: &PartyEntry) -> String {
    let crl = match crl(party_dir) {
        Ok(c) => c,
        Err(e) => return format!("unknown: the revocation list does not verify ({e})"),
    };
    let Some(der) = certificate(party_dir, entry) else {
        return match crl {
            Some(c) if c.entries().next().is_some() => format!(
                "unknown: its certificate is not beside this party folder, and CRL {} lists {} \
                 revoked certificates",
                c.number,
                c.entries().count()
            ),
            _ => "in force (no certificate revoked)".to_owned(),
        };
    };
    let serial = serial_of(&der).unwrap_or_default();
    match crl.as_ref().and_then(|c| c.revoked(&serial)) {
        Some(r) => format!("revoked on {} ({})", r.revoked_at, r.reason.as_str()),
        None => "in force".to_owned(),
    }
}
