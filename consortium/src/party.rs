//! Who is who: roles, party names, the SAN URIs that carry them in certificates, and the names of
//! the files and folders every party folder holds. Everything else in this crate builds on these
//! rules, so each is written here once.

pub use fedchain_ledger::record::Role;

/// Prefix of the SAN URI that names a certificate's role.
pub const ROLE_URI_PREFIX: &str = "urn:fedchain:role:";
/// Prefix of the SAN URI that names a certificate's party.
pub const PARTY_URI_PREFIX: &str = "urn:fedchain:party:";

/// The SAN URI naming `role`: `urn:fedchain:role:<role>`.
pub fn role_uri(role: Role) -> String {
    format!("{ROLE_URI_PREFIX}{}", role.as_str())
}

/// The SAN URI naming the party `name`: `urn:fedchain:party:<name>`.
pub fn party_uri(name: &str) -> String {
    format!("{PARTY_URI_PREFIX}{name}")
}

/// Name (and certificate name) of the coordinator party.
pub const COORDINATOR_NAME: &str = "coordinator";
/// Folder of the certificate authority.
pub const CA_DIR: &str = "ca";
/// Folder of the coordinator.
pub const COORDINATOR_DIR: &str = "coordinator";
/// Folder holding one folder per hospital.
pub const HOSPITALS_DIR: &str = "hospitals";
/// Folder holding one folder per researcher.
pub const RESEARCHERS_DIR: &str = "researchers";
/// Folder holding one folder per auditor.
pub const AUDITORS_DIR: &str = "auditors";
/// The CA certificate, in every party folder and in `ca/`.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key, in `ca/` only.
pub const CA_KEY_FILE: &str = "ca.key";
/// The log's signed-note signer key (coordinator only).
pub const LOG_SKEY_FILE: &str = "log.skey";
/// The log's signed-note verifier key.
pub const LOG_VKEY_FILE: &str = "log.vkey";
/// A hospital's signed-note signer key.
pub const IDENTITY_SKEY_FILE: &str = "identity.skey";
/// A hospital's signed-note verifier key.
pub const IDENTITY_VKEY_FILE: &str = "identity.vkey";
/// A hospital's threshold key share.
pub const SHARE_FILE: &str = "share.key";
/// The auditors' trust file (parsed by `fedchain_ledger::verify::Trust::parse`).
pub const TRUST_FILE: &str = "trust.txt";
/// The public description of the consortium.
pub const DESCRIPTION_FILE: &str = "consortium.json";
/// Longest party name.
pub const MAX_NAME_LEN: usize = 63;

/// File name of a party's certificate: `<name>.pem`.
pub fn cert_file_name(name: &str) -> String {
    format!("{name}.pem")
}

/// File name of a party's TLS private key: `<name>.key`.
pub fn key_file_name(name: &str) -> String {
    format!("{name}.key")
}

/// Why `name` is not a valid party name, if it is not (see [`validate_name`]).
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "is {} characters long, at most {MAX_NAME_LEN} allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!(
            "contains {c:?}; only lowercase letters a-z, digits and '-' are allowed"
        ));
    }
    if name.starts_with('-') {
        return Some("starts with '-'".into());
    }
    None
}

/// A party name that is not allowed (see [`validate_name`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid party name {name:?}: {reason}")]
pub struct NameError {
    /// The name.
    pub name: String,
    /// Why it is not allowed.
    pub reason: String,
}

/// Checks a party name: 1 to [`MAX_NAME_LEN`] characters of `a-z`, `0-9` and `-`, not starting
/// with `-`. Names become folder names, certificate URIs and signed-note key names.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    match name_problem(name) {
        Some(reason) => Err(NameError {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
