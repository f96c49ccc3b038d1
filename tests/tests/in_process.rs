//! The in-process tier (see `fedchain_tests::in_process`): a 3-hospital, 2-of-3 encrypted job from
//! submission to `JobFinished`, with the coordinator's real services and each hospital's real
//! worker in one process over in-memory pipes (mutual TLS, real keys, sled in a temporary
//! folder, libtorch training), then the auditor's replay of its ledger.
//!
//! It is also where the parties are shown to agree on the protocol's rules by calling them: the
//! coordinator opens each round and derives round 1's starting model with `fedchain-protocol`,
//! every worker checks each task against its own `RoundPlan` (and refuses to train on a mismatch,
//! which would stall the job), and replay re-derives every round and model with the same
//! functions. The job's seed sits at the end of `u64` so that the training seed wraps.

use std::time::Instant;

use fedchain_audit::replay;
use fedchain_consortium::AuditorFolder;
use fedchain_datasets::Builtin;
use fedchain_ledger::note;
use fedchain_ledger::store::Store;
use fedchain_ledger::verify::verify;
use fedchain_models::{ModelKind, ModelSpec};
use fedchain_proto::v1 as pb;
use fedchain_tests::in_process::InProcess;
use fedchain_tests::{Layout, HOSPITALS};
use pb::job_service_client::JobServiceClient;
use pb::ledger_service_client::LedgerServiceClient;

fn spec(rounds: u32, seed: u64) -> pb::JobSpec {
    let data = Builtin::BreastCancer.load().unwrap();
    let model = ModelSpec::preset(ModelKind::Mlp, data.feature_names().len(), data.task()).unwrap();
    pb::JobSpec {
        schema: Some(pb::DatasetSchema {
            features: data.feature_names().to_vec(),
            target: Builtin::BreastCancer.schema().target,
            task: Some(pb::dataset_schema::Task::Binary(
                pb::dataset_schema::Binary {},
            )),
        }),
        model: Some(pb::ModelSpec {
            canonical_json: model.canonical_json(),
        }),
        rounds,
        local_epochs: 2,
        learning_rate: 2e-3,
        batch_size: 32,
        min_participants: 2,
        round_deadline_seconds: 60,
        credit_budget: 2000,
        seed,
        quantization: Some(pb::Quantization {
            frac_bits: 16,
            clip: 1.0,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_three_hospital_encrypted_job_runs_to_the_end_in_process() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    layout.provision();
    let provisioned = started.elapsed();
    let config = layout.coordinator_config("127.0.0.1:0", 120);
    let cluster = InProcess::start(&layout, config, &HOSPITALS).await;

    let mut jobs = JobServiceClient::new(cluster.channel(&layout.alice()).await);
    let submitted = jobs
        .submit_job(spec(2, u64::MAX - 1))
        .await
        .expect("submit the job")
        .into_inner();
    let mut events = jobs
        .watch_job(pb::JobId { id: submitted.job })
        .await
        .expect("watch the job")
        .into_inner();
    let mut rounds_seen = Vec::new();
    let finished = loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(120), events.message())
            .await
            .expect("the job moves within two minutes")
            .expect("the watch stream")
            .expect("the job ends before the stream");
        match event.event {
            Some(pb::job_event::Event::Round(p)) if p.phase == pb::RoundPhase::Finalized as i32 => {
                rounds_seen.push(p.round)
            }
            Some(pb::job_event::Event::Finished(f)) => break f,
            Some(pb::job_event::Event::Failed(f)) => panic!("the job failed: {}", f.reason),
            _ => {}
        }
    };
    let job_seconds = started.elapsed() - provisioned;
    let accuracy = finished
        .metrics
        .iter()
        .find(|m| m.name == "accuracy")
        .expect("the hospitals' pooled accuracy")
        .value;
    assert!(accuracy > 0.8, "accuracy {accuracy}");
    assert!(
        rounds_seen.contains(&1) && rounds_seen.contains(&2),
        "{rounds_seen:?}"
    );
    // The job's last checkpoint is cosigned by a quorum of hospitals before the test stops them.
    let audra = AuditorFolder::open(&layout.audra()).unwrap();
    let mut ledger = LedgerServiceClient::new(cluster.channel(&layout.audra()).await);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let newest = ledger
            .get_checkpoint(pb::CheckpointRequest { size: None })
            .await
            .expect("the latest checkpoint")
            .into_inner()
            .note;
        let t = &audra.trust;
        if note::quorum(&newest, &t.log, &t.witnesses, t.quorum).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "never cosigned: {newest}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cluster.stop().await.expect("the coordinator stops cleanly");

    // The auditor's view of what happened: every record verifies and every round re-derives.
    let verified = verify(&layout.ledger(), Some(&audra.trust)).unwrap();
    assert!(verified.ok(), "{:?}", verified.findings);
    let store = Store::open(&layout.ledger(), audra.trust.log.name()).unwrap();
    let report = replay(&store, &audra.public_key, &audra.hospitals).unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);
    assert_eq!(report.rounds.len(), 3, "rounds 0, 1 and 2");
    for r in &report.rounds {
        assert_eq!(r.signatures_verified, 3, "{r:?}");
        assert!(r.model_matches && r.model_checked, "{r:?}");
    }
    eprintln!(
        "in-process job: consortium provisioned in {:.1} s, 3 rounds (0..=2) run in {:.1} s, \
         pooled accuracy {accuracy:.3}",
        provisioned.as_secs_f64(),
        job_seconds.as_secs_f64()
    );
}

/// A job that fails before any round opened says so on the watch stream: `Failed.round` is absent
/// (it used to read 0, which also means "the statistics round failed").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_fails_while_enrolling_names_no_round() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    layout.provision();
    let config = layout.coordinator_config("127.0.0.1:0", 1);
    let cluster = InProcess::start(&layout, config, &["h1"]).await;
    let mut jobs = JobServiceClient::new(cluster.channel(&layout.alice()).await);
    let id = jobs.submit_job(spec(1, 3)).await.unwrap().into_inner().job;
    let mut events = jobs.watch_job(pb::JobId { id }).await.unwrap().into_inner();
    let failed = loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(60), events.message())
            .await
            .expect("the job ends")
            .unwrap()
            .expect("a terminal event");
        match event.event {
            Some(pb::job_event::Event::Failed(f)) => break f,
            Some(pb::job_event::Event::Finished(_)) => panic!("one hospital cannot finish a job"),
            _ => {}
        }
    };
    assert!(failed.reason.contains("enrolled"), "{}", failed.reason);
    assert_eq!(failed.round, None);
    cluster.stop().await.unwrap();
}
