//! Hospitals that fail during a job, with real processes: the job goes on with the remaining
//! quorum and the policy penalises the absent, a restarted hospital rejoins, and a job left with
//! fewer hospitals than it needs stops with its reason and gives the money back.

use std::time::{Duration, Instant};

use fedchain_ledger::credits::{Account, Movement};
use fedchain_ledger::record::Body;
use fedchain_ledger::store::Store;

use fedchain_coordinator::service::Config;
use fedchain_tests::{
    as_party, fedchain, json, logs, ok_stdout, replay_ledger, s, spawn, spawn_coordinator, start,
    start_enrolling, write_coordinator_config, Cluster, Layout, Procs,
};

fn status(cl: &Cluster) -> serde_json::Value {
    let alice = cl.dir.join("c/researchers/alice");
    json(&fedchain(&as_party(
        &["job", "status", "1", "--json"],
        &cl.url,
        s(&alice),
    )))
}

fn submit(cl: &Cluster, job: &str) {
    std::fs::write(cl.dir.join("job.toml"), job).unwrap();
    let alice = cl.dir.join("c/researchers/alice");
    ok_stdout(&fedchain(&as_party(
        &["job", "submit", s(&cl.dir.join("job.toml"))],
        &cl.url,
        s(&alice),
    )));
}

/// Waits until `done(status)` holds, failing with the logs after `secs`.
fn wait_for(
    cl: &Cluster,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = status(cl);
        if done(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; last status {st}\n{}",
            logs(&cl.dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stop(cl: &mut Cluster) {
    std::thread::sleep(Duration::from_millis(500));
    for c in cl.procs.0.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn movements(dir: &std::path::Path) -> (Vec<Movement>, Store) {
    let store = Store::open(&dir.join("ledger"), "fedchain-log").unwrap();
    let moves = (0..store.len())
        .filter_map(|i| match store.record(i).unwrap().0.body {
            Body::CreditsMoved { movement } => Some(movement),
            _ => None,
        })
        .collect();
    (moves, store)
}

#[test]
fn a_hospital_that_dies_is_penalised_and_rejoins_later_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = start(tmp.path());
    submit(
        &cl,
        "dataset = \"breast-cancer\"\nmodel = \"mlp\"\nrounds = 6\nround_deadline_seconds = 4\n",
    );
    // Kill it as soon as rounds run: with every hospital up they are quick, and under load a
    // later kill could leave no rounds to rejoin.
    wait_for(&cl, 60, |st| st["state"] == "running");
    // h3 (index 3: never a first decryptor) dies without warning.
    let h3 = &mut cl.procs.0[3];
    h3.kill().unwrap();
    h3.wait().unwrap();
    let died_at = status(&cl)["round"].as_u64().unwrap();
    // Rounds go on without it, closing at their deadline with two of three.
    assert!(
        died_at <= 3,
        "h3 died too late (round {died_at}) to test its return"
    );
    wait_for(&cl, 60, |st| st["round"].as_u64() >= Some(died_at + 2));
    // It comes back (a fresh process: it recovers its enrollment from the coordinator).
    cl.procs.0[3] = spawn(
        &["worker", "--config", s(&cl.dir.join("h3.toml"))],
        &cl.dir.join("h3-again.log"),
    );
    let end = wait_for(&cl, 120, |st| {
        st["state"] != "running" && st["state"] != "enrolling"
    });
    assert_eq!(end["state"], "finished", "{end}\n{}", logs(&cl.dir));
    stop(&mut cl);

    let (moves, store) = movements(&cl.dir);
    let penalised: Vec<u64> = moves
        .iter()
        .filter_map(|m| match m {
            Movement::Penalty {
                hospital,
                round,
                reason,
                ..
            } if hospital == "h3" && reason.contains("missed_submission") => Some(*round),
            _ => None,
        })
        .collect();
    let rewarded: Vec<u64> = moves
        .iter()
        .filter_map(|m| match m {
            Movement::Reward {
                hospital, round, ..
            } if hospital == "h3" => Some(*round),
            _ => None,
        })
        .collect();
    assert!(!penalised.is_empty(), "h3 was never penalised: {moves:?}");
    let last_missed = *penalised.iter().max().unwrap();
    assert!(
        rewarded.iter().any(|r| *r > last_missed),
        "h3 never rejoined: penalised in {penalised:?}, rewarded in {rewarded:?}"
    );
    assert!(
        std::fs::read_to_string(cl.dir.join("h3-again.log"))
            .unwrap()
            .contains("rejoined"),
        "{}",
        logs(&cl.dir)
    );
    // The others were never penalised, and nothing was created or lost.
    assert!(moves
        .iter()
        .all(|m| !matches!(m, Movement::Penalty { hospital, .. } if hospital != "h3")));
    assert_eq!(store.credits().total_supply(), 40_000);
    drop(store);

    let report = json(&replay_ledger(&cl.dir, None));
    assert_eq!(report["ok"], true, "{report}");
}

#[test]
fn a_job_left_below_its_minimum_fails_and_refunds() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = start(tmp.path());
    submit(
        &cl,
        "dataset = \"breast-cancer\"\nmodel = \"mlp\"\nrounds = 8\nround_deadline_seconds = 3\n",
    );
    // As soon as rounds run, so that the job cannot finish first even on a loaded machine.
    wait_for(&cl, 60, |st| st["state"] == "running");
    for k in [2, 3] {
        let w = &mut cl.procs.0[k];
        w.kill().unwrap();
        w.wait().unwrap();
    }
    let end = wait_for(&cl, 60, |st| {
        st["state"] == "failed" || st["state"] == "finished"
    });
    assert_eq!(end["state"], "failed", "{end}");
    let reason = end["reason"].as_str().unwrap();
    // Depending on the phase the two died in: too few submissions, or too few shares.
    assert!(
        (reason.contains("submitted before the deadline") && reason.contains("at least 2"))
            || (reason.contains("valid decryption shares")
                && reason.contains("the 2 needed arrived before the share deadline")),
        "{reason}"
    );
    stop(&mut cl);

    let (moves, store) = movements(&cl.dir);
    let credits = store.credits();
    assert_eq!(credits.balance(&Account::Escrow(1)), 0, "escrow refunded");
    for h in ["h1", "h2", "h3"] {
        assert_eq!(
            credits.balance(&Account::Deposit {
                job: 1,
                hospital: h.into()
            }),
            0,
            "deposit of {h} returned"
        );
    }
    assert!(moves
        .iter()
        .any(|m| matches!(m, Movement::Refund { job: 1, .. })));
    let paid: u64 = moves
        .iter()
        .filter_map(|m| match m {
            Movement::Reward { amount, .. } => Some(*amount),
            _ => None,
        })
        .sum();
    assert_eq!(
        credits.balance(&Account::Researcher("alice".into())),
        10_000 - paid,
        "alice paid only for the rounds that completed"
    );
    let failed = (0..store.len()).any(|i| {
        matches!(store.record(i).unwrap().0.body, Body::JobFinished { job: 1, ref reason, .. } if reason.contains("deadline"))
    });
    assert!(failed, "JobFinished records the reason");
    drop(store);
    // Every round replays; the only finding is that the last checkpoint, written after two of the
    // three witnesses died, lacks its quorum of cosignatures: true, and worth an auditor's eye.
    let out = replay_ledger(&cl.dir, None);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["replay"]["discrepancies"],
        serde_json::json!([]),
        "{report}"
    );
    let findings = report["verify"]["findings"].as_array().unwrap();
    assert!(
        findings.iter().all(|f| f["problem"]
            .as_str()
            .unwrap()
            .contains("cosigned by 1 of 3 witnesses, 2 required")),
        "{report}"
    );
}

#[test]
fn a_revoked_hospital_is_refused_and_the_others_carry_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cl = start(tmp.path());
    let dir = cl.dir.clone();
    // The operator revokes h3's certificate (by the fingerprint consortium.json lists) and
    // restarts the coordinator on the same address.
    let description: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("c/consortium.json")).unwrap()).unwrap();
    let h3 = description["parties"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "h3")
        .unwrap()["cert_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    restart_with(&mut cl, |c| c.revoked = vec![h3], "coordinator-revoked.log");
    assert_h3_refused_and_the_job_runs_without_it(&mut cl, "has been revoked by this consortium");
}

#[test]
fn a_hospital_revoked_by_the_ca_is_refused_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // A short enrollment window, so that the job does not wait long for the revoked hospital.
    let mut cl = start_enrolling(tmp.path(), &["h1", "h2", "h3"], 3);
    let dir = cl.dir.clone();
    let log = dir.join("coordinator.log");
    // h3 follows its task stream when the CA revokes it.
    let h3_log = dir.join("h3.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&h3_log)
        .unwrap_or_default()
        .contains("connected to")
    {
        assert!(
            Instant::now() < deadline,
            "h3 did not reconnect\n{}",
            logs(&dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The CA revokes h3 while every process runs; the coordinator picks the CRL up by itself.
    let revoked = json(&fedchain(&[
        "consortium",
        "revoke",
        "--dir",
        s(&dir.join("c")),
        "--party",
        "h3",
        "--reason",
        "key-compromise",
        "--json",
    ]));
    assert_eq!(revoked["crl_number"], 1, "{revoked}");
    assert_eq!(revoked["reason"], "key-compromise", "{revoked}");
    wait_for_log(&cl, &log, "CRL 1 of the consortium CA in force", 30);
    assert_h3_refused_and_the_job_runs_without_it(&mut cl, "revoked by the consortium CA");
    // The stream h3 had open when it was revoked was ended with the reason.
    let h3 = std::fs::read_to_string(&h3_log).unwrap();
    assert!(
        h3.lines()
            .any(|l| l.contains("task stream") && l.contains("revoked by the consortium CA")),
        "{h3}"
    );
}

/// Restarts the coordinator on its address with a 3 s enrollment window and its configuration
/// changed by `change`, logging to `log` in the test folder.
fn restart_with(cl: &mut Cluster, change: impl FnOnce(&mut Config), log: &str) {
    let coordinator = &mut cl.procs.0[0];
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    let addr = cl.url.trim_start_matches("https://");
    let mut config = Layout::new(&cl.dir).coordinator_config(addr, 3);
    change(&mut config);
    write_coordinator_config(&cl.dir, &config);
    cl.procs.0[0] = spawn_coordinator(&cl.dir, &cl.dir.join(log), &[]).0;
}

/// h3's requests are refused (the message containing `why`), a job runs with h1 and h2, and
/// h3's worker says why it is out.
fn assert_h3_refused_and_the_job_runs_without_it(cl: &mut Cluster, why: &str) {
    let dir = cl.dir.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(cl.url.clone())
            .unwrap()
            .tls_config(
                fedchain_consortium::tls::client_tls(&dir.join("c/hospitals/h3"), "h3").unwrap(),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        let e = fedchain_proto::v1::training_service_client::TrainingServiceClient::new(ch)
            .tasks(fedchain_proto::v1::TaskRequest {
                hospital: "h3".into(),
                witnessed: None,
                share_micros_per_ciphertext: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains(why), "{e:?}");
    });

    submit(
        cl,
        "dataset = \"breast-cancer\"\nmodel = \"mlp\"\nrounds = 1\n",
    );
    let end = wait_for(cl, 90, |st| {
        st["state"] == "finished" || st["state"] == "failed"
    });
    assert_eq!(end["state"], "finished", "{end}\n{}", logs(&dir));
    assert_eq!(end["hospitals"], serde_json::json!(["h1", "h2"]));
    stop(cl);
    let log = std::fs::read_to_string(dir.join("h3.log")).unwrap();
    assert!(log.contains(why), "h3's worker says why:\n{log}");
}

/// Waits for `needle` in the file `log`, failing with the cluster's logs after `secs`.
fn wait_for_log(cl: &Cluster, log: &std::path::Path, needle: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "the coordinator never reached {needle:?}\n--- {} ---\n{}\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default(),
            logs(&cl.dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill -9` of the coordinator in every phase of a round, aimed exactly with failpoints (see
/// `coordinator/src/failpoint.rs`): while a hospital's enrollment is recorded, a submission is
/// recorded, a closing round's aggregate is stored, the round is closed, a decryption share is
/// recorded, and the round's result and credits are recorded. Each time the coordinator is
/// restarted on the same address and rebuilds the job from its ledger; the job finishes, every
/// round is committed exactly once, no credit is paid twice, and the ledger replays.
#[test]
fn a_coordinator_killed_in_every_phase_of_a_round_resumes_the_job() {
    const KILLS: [(&str, &str); 6] = [
        ("enrolled", "round 0"),
        ("submission-recorded@1", "round 1"),
        ("aggregate-stored@1", "round 1"),
        ("round-closed@1", "round 1"),
        ("share-recorded@2", "round 2"),
        ("round-finalized@2", "round 2"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cl = start(dir);
    let addr = cl.url.trim_start_matches("https://").to_string();
    write_coordinator_config(dir, &Layout::new(dir).coordinator_config(&addr, 120));
    // Restarts the coordinator on the same address, as an operator would, with `failpoint` armed.
    let restart = |cl: &mut Cluster, k: usize, failpoint: Option<&str>| {
        let coordinator = &mut cl.procs.0[0];
        coordinator.kill().unwrap();
        coordinator.wait().unwrap();
        let log = dir.join(format!("coordinator-{k}.log"));
        let env: Vec<(&str, &str)> = failpoint
            .map(|f| ("FEDCHAIN_FAILPOINT", f))
            .into_iter()
            .collect();
        let (coordinator, bound) = spawn_coordinator(dir, &log, &env);
        assert_eq!(bound, addr, "the coordinator restarts on its address");
        cl.procs.0[0] = coordinator;
        log
    };
    // The researcher watches the job throughout: `job watch` must ride out every restart.
    let mut watcher = Procs(Vec::new());
    let alice = dir.join("c/researchers/alice");
    for (k, (point, round)) in KILLS.iter().enumerate() {
        let log = restart(&mut cl, k, Some(point));
        if k == 0 {
            submit(
                &cl,
                "dataset = \"breast-cancer\"\nmodel = \"mlp\"\nrounds = 4\nseed = 2\n",
            );
            watcher.0.push(
                std::process::Command::new(fedchain_tests::fedchain_bin())
                    .args(as_party(
                        &["job", "watch", "1", "--json"],
                        &cl.url,
                        s(&alice),
                    ))
                    .env_remove("LD_LIBRARY_PATH")
                    .stdout(std::fs::File::create(dir.join("watch.out")).unwrap())
                    .stderr(std::fs::File::create(dir.join("watch.err")).unwrap())
                    .spawn()
                    .unwrap(),
            );
        }
        let name = point.split('@').next().unwrap();
        wait_for_log(
            &cl,
            &log,
            &format!("failpoint {name} reached (job 1, {round})"),
            120,
        );
        eprintln!("kill -9 #{k} at {point}");
    }
    restart(&mut cl, KILLS.len(), None);
    wait_for(&cl, 180, |st| {
        assert_ne!(st["state"], "failed", "{st}");
        st["state"] == "finished"
    });
    // The watch ends by itself with the job, having shown each round once.
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
    let out = std::fs::read_to_string(dir.join("watch.out")).unwrap();
    assert!(
        watched.success(),
        "job watch failed across the restarts: {out}\n{}",
        std::fs::read_to_string(dir.join("watch.err")).unwrap()
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["finished"], true, "{out}");
    let rounds: Vec<u64> = lines[..lines.len() - 1]
        .iter()
        .map(|l| l["round"].as_u64().unwrap())
        .collect();
    assert!(
        rounds.windows(2).all(|w| w[0] < w[1]),
        "a round shown twice: {out}"
    );
    stop(&mut cl);
    let (moves, _) = movements(dir);
    let rewards = moves
        .iter()
        .filter(|m| matches!(m, Movement::Reward { .. }))
        .count();
    let penalties: Vec<_> = moves
        .iter()
        .filter(|m| matches!(m, Movement::Penalty { .. }))
        .collect();
    assert_eq!(
        (rewards, penalties.len()),
        (3 * 5, 0),
        "one reward per hospital per round 0..=4, no penalty: {penalties:?}\n{}",
        logs(dir)
    );
    let report = json(&replay_ledger(dir, Some(&dir.join("state-h1/witness.txt"))));
    assert_eq!(report["ok"], true, "{report}");
    let rounds = report["replay"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 5, "rounds 0..=4, each exactly once");
    for r in rounds {
        assert_eq!(r["signatures_verified"], 3, "{r}");
        assert_eq!(r["model_matches"], true, "{r}");
        // Evaluations are on the ledger, so a restarted coordinator asks for none twice (a
        // second evaluation of a model would be a replay finding) and loses none.
        let evaluations = if r["round"] == 0 { 0 } else { 3 };
        assert_eq!(r["evaluations_verified"], evaluations, "{r}");
    }
}

/// Storage faults that lose what the coordinator acknowledged (an OS crash before `fsync`, a
/// ledger restored from an older copy), played by restarting it on a copy of its ledger taken
/// earlier. The workers keep running throughout, remembering what they were told.
///
/// 1. Work acknowledged and then lost: the coordinator asks for it again, and the workers redo it
///    (they used to skip a task they had completed, so a hospital was penalised for a submission
///    the coordinator had acknowledged, or the round failed).
/// 2. A checkpoint the hospitals cosigned and the ledger lost: the coordinator must not sign a
///    different history. When a hospital shows its witness state, it answers DATA_LOSS, writes
///    its incident report, stops, and refuses to start again while the report is there.
#[test]
fn a_coordinator_that_lost_acknowledged_work_asks_again_and_stops_on_a_lost_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cl = start(dir);
    let addr = cl.url.trim_start_matches("https://").to_string();
    write_coordinator_config(dir, &Layout::new(dir).coordinator_config(&addr, 120));
    let restart = |cl: &mut Cluster, name: &str, failpoint: Option<&str>| {
        let coordinator = &mut cl.procs.0[0];
        coordinator.kill().unwrap();
        coordinator.wait().unwrap();
        let log = dir.join(name);
        let env: Vec<(&str, &str)> = failpoint
            .map(|f| ("FEDCHAIN_FAILPOINT", f))
            .into_iter()
            .collect();
        let (coordinator, bound) = spawn_coordinator(dir, &log, &env);
        assert_eq!(bound, addr, "the coordinator restarts on its address");
        cl.procs.0[0] = coordinator;
        log
    };
    let kill_coordinator = |cl: &mut Cluster| {
        cl.procs.0[0].kill().unwrap();
        cl.procs.0[0].wait().unwrap();
    };
    let copy_ledger = |from: &str, to: &str| {
        let _ = std::fs::remove_dir_all(dir.join(to));
        let ok = std::process::Command::new("cp")
            .args(["-a", s(&dir.join(from)), s(&dir.join(to))])
            .status()
            .unwrap()
            .success();
        assert!(ok, "cp {from} {to}");
    };

    // The older ledger: stopped at round 1's first submission (recorded, not yet answered).
    let log = restart(&mut cl, "coordinator-1.log", Some("submission-recorded@1"));
    submit(
        &cl,
        "dataset = \"breast-cancer\"\nmodel = \"mlp\"\nrounds = 2\nseed = 4\n\
         round_deadline_seconds = 20\n",
    );
    wait_for_log(
        &cl,
        &log,
        "failpoint submission-recorded reached (job 1, round 1)",
        120,
    );
    kill_coordinator(&mut cl);
    copy_ledger("ledger", "ledger-older");

    // The others' submissions are recorded and acknowledged; the round closes, and the
    // coordinator stops there.
    let log = restart(&mut cl, "coordinator-2.log", Some("round-closed@1"));
    wait_for_log(
        &cl,
        &log,
        "failpoint round-closed reached (job 1, round 1)",
        120,
    );
    kill_coordinator(&mut cl);

    // Restarted on the older ledger, it asks again for what it lost, and gets it.
    copy_ledger("ledger-older", "ledger");
    restart(&mut cl, "coordinator-3.log", None);
    let end = wait_for(&cl, 180, |st| {
        st["state"] == "finished" || st["state"] == "failed"
    });
    assert_eq!(end["state"], "finished", "{end}\n{}", logs(dir));
    // Every hospital cosigns the job's last checkpoint before the coordinator goes down again.
    let witnessed = |h: &str| {
        std::fs::read_to_string(dir.join(format!("state-{h}/witness.txt")))
            .ok()
            .and_then(|t| fedchain_ledger::note::checkpoint_in(&t).ok())
            .map_or(0, |cp| cp.size)
    };
    let older_len = Store::open(&dir.join("ledger-older"), "fedchain-log")
        .unwrap()
        .len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ["h1", "h2", "h3"].iter().any(|h| witnessed(h) <= older_len) {
        assert!(
            Instant::now() < deadline,
            "the hospitals never cosigned\n{}",
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    kill_coordinator(&mut cl);
    let (moves, store) = movements(dir);
    let penalties: Vec<_> = moves
        .iter()
        .filter(|m| matches!(m, Movement::Penalty { .. }))
        .collect();
    assert!(
        penalties.is_empty(),
        "a hospital was penalised for work it had done: {penalties:?}\n{}",
        logs(dir)
    );
    let round1 = (0..store.len())
        .find_map(|i| match store.record(i).unwrap().0.body {
            Body::RoundClosed {
                round: 1,
                participants,
                ..
            } => Some(participants),
            _ => None,
        })
        .unwrap();
    assert_eq!(round1.len(), 3, "round 1 closed with {round1:?}");
    drop(store);

    // Now the hospitals hold checkpoints beyond the older ledger: restarting on it is a fork.
    copy_ledger("ledger-older", "ledger");
    let log = restart(&mut cl, "coordinator-4.log", None);
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(code) = cl.procs.0[0].try_wait().unwrap() {
            break code;
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator went on from a ledger that lost cosigned checkpoints\n{}\n{}",
            std::fs::read_to_string(&log).unwrap(),
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(!exit.success(), "{said}");
    assert!(said.contains("INCIDENT: ledger fork"), "{said}");
    let report = std::fs::read_to_string(dir.join("ledger/INCIDENT.txt")).unwrap();
    assert!(report.contains("records it covered are lost"), "{report}");
    // Nothing was appended to the forked ledger, and a restart refuses.
    let after = Store::open(&dir.join("ledger"), "fedchain-log")
        .unwrap()
        .len();
    assert_eq!(
        after, older_len,
        "the coordinator appended to a ledger it knew was forked"
    );
    let refused =
        fedchain_tests::fedchain(&["coordinator", "--config", s(&dir.join("coordinator.toml"))]);
    let err = fedchain_tests::failed_stderr(&refused, 1);
    assert!(err.contains("INCIDENT.txt"), "{err}");
    // The hospitals were told why.
    let told = ["h1", "h2", "h3"].iter().any(|h| {
        std::fs::read_to_string(dir.join(format!("{h}.log")))
            .unwrap_or_default()
            .contains("INCIDENT")
    });
    assert!(told, "{}", logs(dir));
    stop(&mut cl);
}
