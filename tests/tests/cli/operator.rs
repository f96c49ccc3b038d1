//! What an operator deploying fedchain runs into: the coordinator's TLS name, a full disk, ...

use std::time::{Duration, Instant};

use fedchain_tests::disk::Tmpfs;
use fedchain_tests::{
    as_party, failed_stderr, fedchain, fedchain_bin, launch, logs, ok_stdout, replay_ledger, s,
    spawn, spawn_coordinator, write_coordinator_config, Layout, Procs, HOSPITALS,
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
    // A client started before the coordinator listens waits for it (a script that starts a
    // coordinator and then submits a job used to race it and fail with "connection refused").
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    write_coordinator_config(dir, &layout.coordinator_config(&listen, 60));
    let alice = layout.alice();
    let by_ip = format!("https://127.0.0.1:{port}");
    let early = std::process::Command::new(fedchain_bin())
        .args(as_party(&["job", "status", "1"], &by_ip, s(&alice)))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (coordinator, addr) = spawn_coordinator(dir, &layout.log("coordinator"), &[]);
    let mut procs = Procs(vec![coordinator]);
    assert_eq!(addr, listen);
    let early = early.wait_with_output().unwrap();
    let err = failed_stderr(&early, 1);
    assert!(
        err.contains("waiting for the coordinator") && err.contains("no job 1"),
        "{err}"
    );

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

    // Auditing the live ledger folder says how to do it instead (sled lets one process in).
    let out = fedchain(&[
        "audit",
        "verify",
        "--ledger",
        s(&layout.ledger()),
        "--trust",
        s(&layout.audra().join("trust.txt")),
    ]);
    let err = failed_stderr(&out, 1);
    assert!(
        err.contains("a running coordinator holds this ledger folder")
            && err.contains("fedchain audit replay --coordinator"),
        "{err}"
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

/// The disk under the coordinator's ledger fills up mid-job. The coordinator stops at once,
/// naming the ledger folder and the cause (it used to stay up, refuse every write, log the error
/// ten times a second and never recover), `job watch` says what happened, and once space is back
/// a restart resumes the job from the ledger: it finishes, nothing the hospitals cosigned is
/// missing, no hospital is penalised, and the ledger replays.
#[test]
fn a_full_disk_stops_the_coordinator_and_a_restart_finishes_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layout = Layout::new(dir);
    let Some(disk) = Tmpfs::mount_or_skip(&layout.ledger(), 64, "full disk") else {
        return;
    };
    layout.provision();
    let mut cl = launch(dir, &HOSPITALS, 120);
    let addr = cl.url.trim_start_matches("https://").to_string();
    std::fs::write(
        dir.join("job.toml"),
        "dataset = \"breast-cancer\"\nmodel = \"mlp\"\nrounds = 4\nseed = 6\n",
    )
    .unwrap();
    let alice = layout.alice();
    ok_stdout(&fedchain(&as_party(
        &["job", "submit", s(&dir.join("job.toml"))],
        &cl.url,
        s(&alice),
    )));
    let watch_err = dir.join("watch.err");
    let mut watcher = Procs(vec![std::process::Command::new(fedchain_bin())
        .args(as_party(
            &["job", "watch", "1", "--json"],
            &cl.url,
            s(&alice),
        ))
        .env_remove("LD_LIBRARY_PATH")
        .stdout(std::fs::File::create(dir.join("watch.out")).unwrap())
        .stderr(std::fs::File::create(&watch_err).unwrap())
        .spawn()
        .unwrap()]);
    wait_until(&cl, 120, |st| st["round"].as_u64() >= Some(1));
    // The watcher must hold its stream when the coordinator stops, or it cannot hear why (a
    // watcher that starts after the stop finds nothing listening): its first round line shows it
    // does. That was a flake under load, when the watcher process started late.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(dir.join("watch.out"))
        .unwrap_or_default()
        .contains("\"round\"")
    {
        assert!(
            Instant::now() < deadline,
            "job watch never showed a round\n{}",
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let filled = disk.fill("filler");
    assert!(filled > 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(status) = cl.procs.0[0].try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator did not stop on a full disk\n{}",
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!exit.success());
    let said = std::fs::read_to_string(layout.log("coordinator")).unwrap();
    let ledger = layout.ledger();
    assert!(said.contains("STORAGE ERROR"), "{said}");
    assert!(said.contains(s(&ledger)), "names the folder: {said}");
    assert!(
        said.contains("No space left on device"),
        "names the cause: {said}"
    );
    assert!(
        said.matches("STORAGE ERROR").count() == 1,
        "says it once, not ten times a second: {said}"
    );

    // Space comes back; the operator (or a supervisor) restarts it on its address.
    std::fs::remove_file(layout.ledger().join("filler")).unwrap();
    write_coordinator_config(dir, &layout.coordinator_config(&addr, 120));
    let (coordinator, bound) = spawn_coordinator(dir, &layout.log("coordinator-2"), &[]);
    assert_eq!(bound, addr);
    cl.procs.0[0] = coordinator;
    let end = wait_until(&cl, 180, |st| {
        st["state"] == "finished" || st["state"] == "failed"
    });
    assert_eq!(end["state"], "finished", "{end}\n{}", logs(dir));
    let deadline = Instant::now() + Duration::from_secs(30);
    let watched = loop {
        if let Some(code) = watcher.0[0].try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "job watch did not end with the job"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let watch_said = std::fs::read_to_string(&watch_err).unwrap();
    assert!(watched.success(), "{watch_said}");
    assert!(
        watch_said.contains("writing the ledger") && watch_said.contains("No space left"),
        "job watch says what happened: {watch_said}"
    );
    let restarted = std::fs::read_to_string(layout.log("coordinator-2")).unwrap();
    assert!(!restarted.contains("INCIDENT"), "{restarted}");
    cl.procs.0.drain(..).for_each(|mut c| {
        let _ = c.kill();
        let _ = c.wait();
    });
    let store = fedchain_ledger::store::Store::open(&layout.ledger(), "fedchain-log").unwrap();
    for i in 0..store.len() {
        if let fedchain_ledger::record::Body::CreditsMoved {
            movement: fedchain_ledger::credits::Movement::Penalty { hospital, .. },
        } = store.record(i).unwrap().0.body
        {
            panic!("{hospital} was penalised for the coordinator's full disk");
        }
    }
    drop(store);
    let report = fedchain_tests::json(&replay_ledger(dir, Some(&layout.witness("h1"))));
    assert_eq!(report["ok"], true, "{report}");
}

/// Waits until `done(job status)` holds, failing with the logs after `secs`.
fn wait_until(
    cl: &fedchain_tests::Cluster,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let alice = Layout::new(&cl.dir).alice();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let out = fedchain(&as_party(
            &["job", "status", "1", "--json"],
            &cl.url,
            s(&alice),
        ));
        if out.status.success() {
            let st = fedchain_tests::json(&out);
            if done(&st) {
                return st;
            }
        }
        assert!(Instant::now() < deadline, "timed out\n{}", logs(&cl.dir));
        std::thread::sleep(Duration::from_millis(200));
    }
}
