//! What an operator deploying fedchain runs into: the coordinator's TLS name, ...

use std::time::{Duration, Instant};

use fedchain_tests::{
    as_party, failed_stderr, fedchain, ok_stdout, s, spawn, spawn_coordinator,
    write_coordinator_config, Layout, Procs,
};

/// A consortium whose coordinator certificate names `coordinator.example.org` and `127.0.0.1`,
/// not `localhost`: the CLI and the workers reach it at `https://127.0.0.1:PORT` and check its
/// certificate against that host, as a standard gRPC client does; a URL with a host the
/// certificate does not name is refused.
#[test]
fn clients_check_the_coordinators_certificate_against_the_urls_host() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layout = Layout::new(dir);
    ok_stdout(&fedchain(&[
        "consortium",
        "init",
        "--dir",
        s(&layout.consortium()),
        "--hospitals",
        "h1,h2,h3",
        "--threshold",
        "2",
        "--researchers",
        "alice",
        "--auditors",
        "audra",
        "--coordinator-hosts",
        "coordinator.example.org,127.0.0.1",
        "--bits",
        "512",
    ]));
    write_coordinator_config(dir, &layout.coordinator_config("127.0.0.1:0", 60));
    let (coordinator, addr) = spawn_coordinator(dir, &layout.log("coordinator"), &[]);
    let mut procs = Procs(vec![coordinator]);
    let port = addr.rsplit(':').next().unwrap();
    let alice = layout.alice();

    let by_ip = format!("https://127.0.0.1:{port}");
    let out = fedchain(&as_party(&["job", "status", "1"], &by_ip, s(&alice)));
    let err = failed_stderr(&out, 1);
    assert!(err.contains("no job 1"), "TLS must succeed by IP: {err}");

    let by_name = format!("https://localhost:{port}");
    let out = fedchain(&as_party(&["job", "status", "1"], &by_name, s(&alice)));
    let err = failed_stderr(&out, 1);
    assert!(
        !err.contains("no job 1"),
        "the certificate does not name localhost: {err}"
    );

    // A worker dialing the IP connects too.
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(layout.data("h1"), "a,b\n1,2\n").unwrap();
    let cfg = layout.write_toml("h1.toml", &layout.worker_config("h1", &by_ip));
    procs
        .0
        .push(spawn(&["worker", "--config", s(&cfg)], &layout.log("h1")));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(layout.log("h1")).unwrap_or_default();
        if log.contains(&format!("connected to {by_ip}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never connected:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
