//! Mutual TLS: the coordinator's server configuration, a party's client configuration, and who is
//! calling an RPC.
//!
//! Every connection to the coordinator is mutual TLS (rustls with the ring provider, through
//! tonic). The server requires a client certificate issued by the consortium CA (`ca.pem`, the only
//! root trusted on either side); a certificate from any other CA, or none, fails the handshake.
//! Identity and authority come from the verified certificate alone:
//!
//! - a certificate names its party and role as SAN URIs, `urn:fedchain:party:<name>` and
//!   `urn:fedchain:role:<coordinator|hospital|researcher|auditor>`, exactly one of each
//!   ([`peer_from_der`] refuses anything else);
//! - each RPC calls [`caller`] with the roles it allows, which answers `PERMISSION_DENIED`, naming
//!   the role and the RPC, when the role is not allowed. A client without a certificate never
//!   reaches an RPC: [`server_tls`] requires one, so the handshake fails first.
//!
//! tonic does not hand an RPC its own path, so [`caller`] names the RPC from an [`RpcName`]
//! extension that [`rpc_name_layer`] records on every request (install it once with
//! `Server::builder().layer(rpc_name_layer())`); without it, messages say "this RPC".

use std::fmt;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// The roles [`caller`] admits (the one list of roles, [`crate::party::Role`]).
pub use crate::party::Role;
use crate::party::{
    cert_file_name, key_file_name, name_problem, CA_CERT_FILE, COORDINATOR_NAME, PARTY_URI_PREFIX,
    ROLE_URI_PREFIX,
};

/// Server name [`client_tls`] expects in the coordinator's certificate; [`client_tls_for`] expects
/// the host of the URL it dials instead, as a standard gRPC client does.
pub const DEFAULT_SERVER_NAME: &str = "localhost";

/// Errors of this module. Messages name the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A certificate is malformed or does not name exactly one role and one party.
    #[error("invalid certificate{}: {reason}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    InvalidCertificate {
        /// The file it came from, if it came from a file.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// A party folder holds a certificate for another party or role than the one asked for.
    #[error("{path} is the certificate of {found}, expected {expected}")]
    WrongParty {
        /// The certificate file.
        path: PathBuf,
        /// What was asked for.
        expected: String,
        /// What the certificate says.
        found: String,
    },
    /// A coordinator URL without a usable host.
    #[error("{url:?} is not a coordinator URL (https://HOST:PORT): {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A party's certificate was not issued by the CA certificate beside it.
    #[error("{cert} was not issued by the CA in {ca} (folders from different consortiums?)")]
    NotIssuedByCa {
        /// The party's certificate.
        cert: PathBuf,
        /// The CA certificate.
        ca: PathBuf,
    },
}

/// Result of this module.
pub type Result<T, E = TlsError> = std::result::Result<T, E>;

/// The party behind a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The party's name (`urn:fedchain:party:<name>`).
    pub name: String,
    /// Its role (`urn:fedchain:role:<role>`).
    pub role: Role,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.role, self.name)
    }
}

fn invalid(reason: impl Into<String>) -> TlsError {
    TlsError::InvalidCertificate {
        path: None,
        reason: reason.into(),
    }
}

fn parse_der(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| invalid(format!("not a DER X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid(format!(
            "{} bytes follow the certificate",
            rest.len()
        )));
    }
    Ok(cert)
}

fn peer_from_cert(cert: &X509Certificate<'_>) -> Result<Peer> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| invalid(format!("unreadable subject alternative names: {e}")))?
        .ok_or_else(|| invalid("no subject alternative names (a fedchain certificate names its role and party there)"))?;
    let mut roles = Vec::new();
    let mut parties = Vec::new();
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX) {
                roles.push(role);
            } else if let Some(party) = uri.strip_prefix(PARTY_URI_PREFIX) {
                parties.push(party);
            }
        }
    }
    let (role, name) = match (roles.as_slice(), parties.as_slice()) {
        ([role], [party]) => (*role, *party),
        _ => {
            return Err(invalid(format!(
                "needs exactly one {ROLE_URI_PREFIX}<role> and one {PARTY_URI_PREFIX}<name> URI, \
                 found {} and {}",
                roles.len(),
                parties.len()
            )))
        }
    };
    let role = role.parse::<Role>().map_err(invalid)?;
    if let Some(problem) = name_problem(name) {
        return Err(invalid(format!("party name {name:?} {problem}")));
    }
    Ok(Peer {
        name: name.to_string(),
        role,
    })
}

/// The party a DER certificate names. Requires exactly one role URI and one party URI among the
/// subject alternative names, a known role and a valid party name.
///
/// This reads names only: it does not check who issued the certificate. Use it on certificates
/// the TLS handshake has verified (as [`caller`] does), or after checking the chain yourself.
pub fn peer_from_der(cert_der: &[u8]) -> Result<Peer> {
    peer_from_cert(&parse_der(cert_der)?)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The DER contents of the first certificate in a PEM file.
fn pem_to_der(path: &Path, pem: &[u8]) -> Result<Vec<u8>> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| TlsError::InvalidCertificate {
            path: Some(path.to_path_buf()),
            reason: format!("not a PEM certificate: {e}"),
        })?;
    Ok(pem.contents)
}

/// Reads a party's CA and certificate PEM files, checks that the certificate names `expected`
/// (by name and, if given, role) and was signed by the CA. Returns both PEM texts.
fn load_party(
    dir: &Path,
    name: &str,
    role: Option<Role>,
) -> Result<(Vec<u8>, Vec<u8>, Peer, PathBuf)> {
    let ca_path = dir.join(CA_CERT_FILE);
    let cert_path = dir.join(cert_file_name(name));
    let ca_pem = read(&ca_path)?;
    let cert_pem = read(&cert_path)?;
    let ca_der = pem_to_der(&ca_path, &ca_pem)?;
    let cert_der = pem_to_der(&cert_path, &cert_pem)?;
    let with_path = |path: &Path| {
        let path = path.to_path_buf();
        move |e: TlsError| match e {
            TlsError::InvalidCertificate { reason, .. } => TlsError::InvalidCertificate {
                path: Some(path),
                reason,
            },
            other => other,
        }
    };
    let ca = parse_der(&ca_der).map_err(with_path(&ca_path))?;
    let cert = parse_der(&cert_der).map_err(with_path(&cert_path))?;
    let peer = peer_from_cert(&cert).map_err(with_path(&cert_path))?;
    if peer.name != name || role.is_some_and(|r| r != peer.role) {
        return Err(TlsError::WrongParty {
            path: cert_path,
            expected: match role {
                Some(role) => format!("{role} '{name}'"),
                None => format!("'{name}'"),
            },
            found: peer.to_string(),
        });
    }
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Err(TlsError::NotIssuedByCa {
            cert: cert_path,
            ca: ca_path,
        });
    }
    Ok((ca_pem, cert_pem, peer, cert_path))
}

/// Checks the certificate in a party folder: it is `name`'s with `role`, and was issued by the CA
/// certificate beside it. Returns the party it names.
pub fn verify_party_certificate(dir: &Path, name: &str, role: Role) -> Result<Peer> {
    Ok(load_party(dir, name, Some(role))?.2)
}

/// The coordinator's server TLS configuration from its folder (`ca.pem`, `coordinator.pem`,
/// `coordinator.key`): its identity, and client authentication **required**, against the
/// consortium CA only.
///
/// Checks that the certificate is the coordinator's and was issued by `ca.pem`; the key itself is
/// parsed when tonic builds the server (`Server::builder().tls_config(..)`).
pub fn server_tls(dir: &Path) -> Result<ServerTlsConfig> {
    let (ca_pem, cert_pem, _, _) = load_party(dir, COORDINATOR_NAME, Some(Role::Coordinator))?;
    let key_pem = read(&dir.join(key_file_name(COORDINATOR_NAME)))?;
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_pem, key_pem))
        .client_ca_root(Certificate::from_pem(ca_pem))
        .client_auth_optional(false))
}

/// A party's client TLS configuration from its folder (`ca.pem`, `<name>.pem`, `<name>.key`):
/// the consortium CA as the only trusted root and the party's certificate as client identity. The
/// coordinator's certificate must be valid for [`DEFAULT_SERVER_NAME`]; call
/// [`ClientTlsConfig::domain_name`] on the result to expect another of its names.
///
/// Checks that the certificate is `name`'s, is not the coordinator's (which is for serving only)
/// and was issued by `ca.pem`.
pub fn client_tls(party_dir: &Path, name: &str) -> Result<ClientTlsConfig> {
    let (ca_pem, cert_pem, peer, cert_path) = load_party(party_dir, name, None)?;
    if peer.role == Role::Coordinator {
        return Err(TlsError::WrongParty {
            path: cert_path,
            expected: "a client (hospital, researcher or auditor)".into(),
            found: peer.to_string(),
        });
    }
    let key_pem = read(&party_dir.join(key_file_name(name)))?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(DEFAULT_SERVER_NAME))
}

/// The host of a coordinator URL (`https://HOST:PORT`), the name its certificate must be valid
/// for: a DNS name, or an IP address (IPv6 without its brackets).
pub fn server_name(url: &str) -> Result<String> {
    let uri: http::Uri = url.parse().map_err(|e| TlsError::InvalidUrl {
        url: url.to_string(),
        reason: format!("{e}"),
    })?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| TlsError::InvalidUrl {
            url: url.to_string(),
            reason: "it names no host".into(),
        })?;
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string())
}

/// [`client_tls`] for dialing the coordinator at `url`: its certificate is checked against the
/// URL's host, which must be one of the `coordinator_hosts` the consortium was created with.
pub fn client_tls_for(party_dir: &Path, name: &str, url: &str) -> Result<ClientTlsConfig> {
    Ok(client_tls(party_dir, name)?.domain_name(server_name(url)?))
}

/// The gRPC method a request is for (`package.Service/Method`), recorded by [`rpc_name_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcName(pub String);

/// Records the request's path as an [`RpcName`] extension. See [`rpc_name_layer`].
pub fn record_rpc_name<B>(mut req: http::Request<B>) -> http::Request<B> {
    let name = req.uri().path().trim_start_matches('/').to_string();
    req.extensions_mut().insert(RpcName(name));
    req
}

/// Function type of [`record_rpc_name`] for tonic's server body.
pub type RecordRpcName = fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>;

/// A layer for `tonic::transport::Server::builder().layer(..)` that records each request's RPC
/// name, so that [`caller`]'s refusals can say which RPC was refused.
pub fn rpc_name_layer() -> tower::util::MapRequestLayer<RecordRpcName> {
    tower::util::MapRequestLayer::new(record_rpc_name::<tonic::body::Body> as RecordRpcName)
}

fn rpc_of<T>(req: &Request<T>) -> String {
    if let Some(RpcName(name)) = req.extensions().get::<RpcName>() {
        return name.clone();
    }
    if let Some(method) = req.extensions().get::<tonic::GrpcMethod<'static>>() {
        return format!("{}/{}", method.service(), method.method());
    }
    "this RPC".to_string()
}

/// Who is calling, if their role may call this RPC.
///
/// Reads the client certificate the TLS handshake verified against the consortium CA and returns
/// its [`Peer`]. Refuses with `PERMISSION_DENIED`, naming the caller's role and the RPC, when its
/// role is not in `allowed`. Under [`server_tls`] every request carries a certificate that names a
/// valid role and party (`consortium init` issues no other); on a server configured otherwise, a
/// request without one, or with one that names none, is refused with `UNAUTHENTICATED`.
pub fn caller<T>(req: &Request<T>, allowed: &[Role]) -> Result<Peer, Status> {
    let certs = req.peer_certs();
    let Some(leaf) = certs.as_ref().and_then(|certs| certs.first()) else {
        return Err(Status::unauthenticated(format!(
            "{} requires a client certificate issued by the consortium CA (mutual TLS)",
            rpc_of(req)
        )));
    };
    let peer = peer_from_der(leaf.as_ref()).map_err(|e| {
        Status::unauthenticated(format!("{}: unusable client certificate: {e}", rpc_of(req)))
    })?;
    if !allowed.contains(&peer.role) {
        let allowed: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        return Err(Status::permission_denied(format!(
            "{peer} may not call {}: role {} is not allowed (allowed: {})",
            rpc_of(req),
            peer.role,
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn cert_with_uris(uris: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI(u.to_string().try_into().unwrap()))
            .collect();
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_role_and_party() {
        let der = cert_with_uris(&["urn:fedchain:role:hospital", "urn:fedchain:party:st-marys"]);
        assert_eq!(
            peer_from_der(&der).unwrap(),
            Peer {
                name: "st-marys".into(),
                role: Role::Hospital
            }
        );
        // Other URIs are ignored.
        let der = cert_with_uris(&[
            "https://example.org/",
            "urn:fedchain:party:ana",
            "urn:fedchain:role:auditor",
        ]);
        assert_eq!(peer_from_der(&der).unwrap().role, Role::Auditor);
    }

    #[test]
    fn refuses_missing_duplicate_or_unknown_names() {
        for uris in [
            &[][..],
            &["urn:fedchain:party:a"][..],
            &["urn:fedchain:role:hospital"][..],
            &[
                "urn:fedchain:role:hospital",
                "urn:fedchain:role:researcher",
                "urn:fedchain:party:a",
            ][..],
            &[
                "urn:fedchain:role:hospital",
                "urn:fedchain:party:a",
                "urn:fedchain:party:b",
            ][..],
            &["urn:fedchain:role:admin", "urn:fedchain:party:a"][..],
            &["urn:fedchain:role:Hospital", "urn:fedchain:party:a"][..],
            &["urn:fedchain:role:hospital", "urn:fedchain:party:A_b"][..],
            &["urn:fedchain:role:hospital", "urn:fedchain:party:"][..],
        ] {
            let err = peer_from_der(&cert_with_uris(uris)).unwrap_err();
            assert!(
                matches!(err, TlsError::InvalidCertificate { .. }),
                "{uris:?}: {err}"
            );
        }
    }

    #[test]
    fn refuses_garbage_and_trailing_bytes() {
        assert!(peer_from_der(b"not a certificate").is_err());
        let mut der =
            cert_with_uris(&["urn:fedchain:role:hospital", "urn:fedchain:party:st-marys"]);
        der.push(0);
        let err = peer_from_der(&der).unwrap_err().to_string();
        assert!(err.contains("1 bytes follow"), "{err}");
    }

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                crate::party::role_uri(role),
                format!("urn:fedchain:role:{role}")
            );
        }
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn caller_without_certificate_is_unauthenticated() {
        let req = Request::new(());
        let status = caller(&req, &[Role::Hospital]).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("this RPC"), "{status:?}");
    }
}

#[cfg(test)]
mod server_name_tests {
    use super::server_name;

    #[test]
    fn the_server_name_is_the_urls_host() {
        assert_eq!(
            server_name("https://coordinator.example.org:7443").unwrap(),
            "coordinator.example.org"
        );
        assert_eq!(server_name("https://127.0.0.1:7443").unwrap(), "127.0.0.1");
        assert_eq!(server_name("https://[::1]:7443").unwrap(), "::1");
        assert!(server_name("not a url").is_err());
        assert!(server_name("/path/only").is_err());
    }
}
