//! Real mutual TLS on loopback: tonic's health service behind `caller()`, allowing hospitals only.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedchain_consortium::tls::{caller, client_tls, rpc_name_layer, server_tls, Peer, Role};
use fedchain_consortium::Consortium;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, Server};
use tonic::{Code, Request, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::util::consortium;

/// Starts the coordinator's TLS server on 127.0.0.1 (a free port) with the health service behind
/// an interceptor that admits hospitals only; returns its address and the peers it admitted.
async fn start(c: &Consortium) -> (SocketAddr, Arc<Mutex<Vec<Peer>>>) {
    let admitted = Arc::new(Mutex::new(Vec::new()));
    let seen = admitted.clone();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let guarded = InterceptedService::new(health, move |req: Request<()>| {
        let peer = caller(&req, &[Role::Hospital])?;
        seen.lock().unwrap().push(peer);
        Ok::<_, Status>(req)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::builder()
        .tls_config(server_tls(&c.coordinator_dir()).unwrap())
        .unwrap()
        .layer(rpc_name_layer())
        .add_service(guarded)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (addr, admitted)
}

#[derive(Debug)]
enum Outcome {
    /// The connection could not be made (TCP, TLS or HTTP/2).
    Connect(tonic::transport::Error),
    /// The RPC answered with a status.
    Rpc(Status),
    /// The RPC succeeded.
    Serving(i32),
}

/// Connects to 127.0.0.1 (the certificate is checked for the name in `tls`, "localhost") and
/// asks for the health of the whole server.
async fn check(addr: SocketAddr, tls: ClientTlsConfig) -> Outcome {
    let endpoint = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10));
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(e) => return Outcome::Connect(e),
    };
    match HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
    {
        Ok(response) => Outcome::Serving(response.into_inner().status),
        Err(status) => Outcome::Rpc(status),
    }
}

/// A failed handshake surfaces as a connection error, or (TLS 1.3: the client finishes its half
/// before the server checks its certificate and closes the connection) as a transport failure of
/// the first RPC. Either way no status came from the service itself.
fn assert_handshake_failed(outcome: Outcome, who: &str) {
    match outcome {
        // Shown with --nocapture: which side refused, and why.
        Outcome::Connect(e) => eprintln!("{who}: refused at connection: {e:?}"),
        Outcome::Rpc(status)
            if std::error::Error::source(&status)
                .is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some()) =>
        {
            assert_ne!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
            assert_ne!(status.code(), Code::Ok, "{who}: {status:?}");
        }
        other => panic!("{who}: expected a failed TLS handshake, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_over_mutual_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let c = consortium(&tmp.path().join("c"), &["st-marys", "general"], 2);
    let other = consortium(&tmp.path().join("other"), &["st-marys"], 1);
    let (addr, admitted) = start(&c).await;

    // A hospital of the consortium is served, and identified by its certificate.
    let hospital = client_tls(&c.hospital_dir("st-marys"), "st-marys").unwrap();
    match check(addr, hospital).await {
        Outcome::Serving(status) => assert_eq!(status, ServingStatus::Serving as i32),
        other => panic!("hospital refused: {other:?}"),
    }
    assert_eq!(
        *admitted.lock().unwrap(),
        [Peer {
            name: "st-marys".into(),
            role: Role::Hospital
        }]
    );

    // A researcher of the consortium gets through TLS and is refused by role, naming role and RPC.
    let researcher = client_tls(&c.researcher_dir("researcher"), "researcher").unwrap();
    match check(addr, researcher).await {
        Outcome::Rpc(status) => {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            let msg = status.message();
            assert!(msg.contains("researcher"), "{msg}");
            assert!(msg.contains("grpc.health.v1.Health/Check"), "{msg}");
        }
        other => panic!("researcher not refused by role: {other:?}"),
    }
    // So is an auditor.
    let auditor = client_tls(&c.auditor_dir("auditor"), "auditor").unwrap();
    match check(addr, auditor).await {
        Outcome::Rpc(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
        other => panic!("auditor not refused by role: {other:?}"),
    }

    let ca = || Certificate::from_pem(std::fs::read(c.ca_dir().join("ca.pem")).unwrap());
    // A "hospital" whose certificate comes from another consortium's CA, even one that trusts our
    // server, fails the handshake: the server trusts only its own CA.
    let foreign_dir = other.hospital_dir("st-marys");
    let foreign = ClientTlsConfig::new()
        .ca_certificate(ca())
        .identity(Identity::from_pem(
            std::fs::read(foreign_dir.join("st-marys.pem")).unwrap(),
            std::fs::read(foreign_dir.join("st-marys.key")).unwrap(),
        ))
        .domain_name("localhost");
    assert_handshake_failed(check(addr, foreign).await, "foreign hospital");
    // With its own consortium's settings it does not even trust our server.
    let foreign = client_tls(&foreign_dir, "st-marys").unwrap();
    assert_handshake_failed(check(addr, foreign).await, "foreign consortium");

    // A client without a certificate fails the handshake: client authentication is required.
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(ca())
        .domain_name("localhost");
    assert_handshake_failed(check(addr, anonymous).await, "no client certificate");

    // None of the refused callers reached the service.
    assert_eq!(admitted.lock().unwrap().len(), 1);

    // The other hospital is served too (the server survived the failed handshakes).
    let general = client_tls(&c.hospital_dir("general"), "general").unwrap();
    assert!(matches!(check(addr, general).await, Outcome::Serving(_)));
}

#[test]
fn tls_configs_refuse_the_wrong_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let c = consortium(&tmp.path().join("c"), &["st-marys"], 1);
    let other = consortium(&tmp.path().join("other"), &["st-marys"], 1);

    // A hospital's folder is not the coordinator's.
    let err = server_tls(&c.hospital_dir("st-marys"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("coordinator.pem"), "{err}");
    // The coordinator's certificate is for serving only.
    let err = client_tls(&c.coordinator_dir(), "coordinator")
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a client"), "{err}");
    // Asking for another party's identity in a folder.
    let err = client_tls(&c.hospital_dir("st-marys"), "general")
        .unwrap_err()
        .to_string();
    assert!(err.contains("general.pem"), "{err}");
    // A certificate from another consortium beside our CA.
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    std::fs::copy(c.ca_dir().join("ca.pem"), mixed.join("ca.pem")).unwrap();
    for f in ["st-marys.pem", "st-marys.key"] {
        std::fs::copy(other.hospital_dir("st-marys").join(f), mixed.join(f)).unwrap();
    }
    let err = client_tls(&mixed, "st-marys").unwrap_err().to_string();
    assert!(err.contains("was not issued by the CA"), "{err}");
}
