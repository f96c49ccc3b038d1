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

use fedchain_audit::{replay, verify_release};
use fedchain_consortium::{AuditorFolder, ResearcherFolder};
use fedchain_datasets::Builtin;
use fedchain_ledger::note;
use fedchain_ledger::store::Store;
use fedchain_ledger::verify::verify;
use fedchain_models::{Model, ModelKind, ModelSpec};
use fedchain_proto::v1 as pb;
use fedchain_tests::in_process::InProcess;
use fedchain_tests::{Layout, HOSPITALS};
use pb::job_service_client::JobServiceClient;
use pb::ledger_service_client::LedgerServiceClient;

/// The next event of a watch stream, within two minutes.
async fn next(events: &mut tonic::Streaming<pb::JobEvent>) -> Option<pb::job_event::Event> {
    tokio::time::timeout(std::time::Duration::from_secs(120), events.message())
        .await
        .expect("the job moves within two minutes")
        .expect("the watch stream")
        .expect("the job ends before the stream")
        .event
}

/// Job `id`'s model of `round` (the final model when `None`): the release and the file.
async fn download(
    jobs: &mut JobServiceClient<tonic::transport::Channel>,
    id: u64,
    round: Option<u64>,
) -> Result<(pb::ModelRelease, Vec<u8>), tonic::Status> {
    use pb::model_download::Part;
    let mut stream = jobs
        .download_model(pb::DownloadRequest { job: id, round })
        .await?
        .into_inner();
    let (mut release, mut file) = (None, Vec::new());
    while let Some(m) = stream.message().await? {
        match m.part {
            Some(Part::Release(r)) => release = Some(r),
            Some(Part::Chunk(c)) => file.extend_from_slice(&c.data),
            None => {}
        }
    }
    Ok((release.expect("a release header"), file))
}

fn spec(rounds: u32, seed: u64) -> pb::JobSpec {
    let data = Builtin::BreastCancer.load().unwrap();
    let model = ModelSpec::preset(ModelKind::Mlp, data.feature_names().len(), data.task()).unwrap();
    pb::JobSpec {
        torchscript_module: Vec::new(),
        privacy: None,
        spread_decryption: true,
        schema: Some(pb::DatasetSchema {
            features: data.feature_names().to_vec(),
            target: Builtin::BreastCancer.schema().target,
            task: Some(pb::dataset_schema::Task::Binary(
                pb::dataset_schema::Binary {},
            )),
            image: None,
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
            quant_bits: 0,
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

    // The researcher's list: the job, finished after its 2 rounds, with the figures watch gave.
    let listed = jobs
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].state, pb::JobState::Finished as i32);
    assert_eq!(
        (listed[0].finalized_round, listed[0].researcher.as_str()),
        (2, "alice")
    );
    assert_eq!(listed[0].metrics, finished.metrics);

    // Every finalized round's model downloads and verifies against its own RoundFinalized record
    // and a cosigned checkpoint; without a round, the final model is round 2's.
    let trust = ResearcherFolder::open(&layout.alice(), None).unwrap().trust;
    let id = submitted.job;
    let mut digests = Vec::new();
    for round in [Some(1), Some(2), None] {
        let (release, file) = download(&mut jobs, id, round)
            .await
            .expect("a finalized round");
        let want = round.unwrap_or(2);
        let v = verify_release(id, want, &release, &file, &trust).expect("the release verifies");
        assert!(v.model.preprocessing().is_some());
        digests.push((v.model_digest, v.record_index));
    }
    assert_ne!(
        digests[0], digests[1],
        "rounds 1 and 2 have their own models and records"
    );
    assert_eq!(
        digests[1], digests[2],
        "the final model is the last round's"
    );
    assert_eq!(
        hex::encode(digests[2].0),
        hex::encode(&finished.model.as_ref().unwrap().sha256)
    );
    // A release of round 1 does not pass for the final model.
    let (release, file) = download(&mut jobs, id, Some(1)).await.unwrap();
    assert!(verify_release(id, 2, &release, &file, &trust).is_err());
    let statistics = download(&mut jobs, id, Some(0)).await.unwrap_err();
    assert_eq!(
        statistics.code(),
        tonic::Code::InvalidArgument,
        "{statistics}"
    );
    let beyond = download(&mut jobs, id, Some(3)).await.unwrap_err();
    assert_eq!(beyond.code(), tonic::Code::FailedPrecondition, "{beyond}");
    assert!(
        beyond.message().contains("rounds finalized: 1..=2"),
        "{beyond}"
    );
    // A finished job cannot be cancelled.
    let late = jobs.cancel_job(pb::JobId { id }).await.unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late}");

    cluster.stop().await.expect("the coordinator stops cleanly");

    // The auditor's view of what happened: every record verifies and every round re-derives.
    let verified = verify(&layout.ledger(), Some(&audra.trust)).unwrap();
    assert!(verified.ok(), "{:?}", verified.findings);
    let store = Store::open(&layout.ledger(), audra.trust.log.name()).unwrap();
    let report = replay(&store, &audra.public_key, &audra.hospitals).unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);
    assert_eq!(report.rounds.len(), 3, "rounds 0, 1 and 2");
    assert_eq!(
        report.end_credits_checked, 4,
        "three deposits returned and the escrow's rest refunded"
    );
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

    // A restarted coordinator serves every round's model again, each still verifying.
    drop(store);
    let config = layout.coordinator_config("127.0.0.1:0", 120);
    let cluster = InProcess::start(&layout, config, &[]).await;
    let mut jobs = JobServiceClient::new(cluster.channel(&layout.alice()).await);
    for round in [Some(1), None] {
        let (release, file) = download(&mut jobs, id, round)
            .await
            .expect("a model after the restart");
        let v = verify_release(id, round.unwrap_or(2), &release, &file, &trust).unwrap();
        assert_eq!(
            (v.model_digest, v.record_index),
            digests[usize::from(round.is_none())]
        );
    }
    cluster.stop().await.unwrap();
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

/// A researcher cancels a running job. It is recorded as `JobFinished` (cancelled) with the
/// researcher as its actor, the deposits returned and the escrow's rest refunded; the watch stream
/// says so; the rounds that finalized before still download and verify; and replay checks who
/// cancelled and every movement of the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_researcher_cancels_a_running_job_and_replay_checks_its_end() {
    use fedchain_ledger::credits::Account;
    use fedchain_ledger::record::{Body, JobStatus, Role};
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    layout.provision();
    let config = layout.coordinator_config("127.0.0.1:0", 120);
    let cluster = InProcess::start(&layout, config, &HOSPITALS).await;
    let mut jobs = JobServiceClient::new(cluster.channel(&layout.alice()).await);
    let mut audra = JobServiceClient::new(cluster.channel(&layout.audra()).await);
    let id = jobs.submit_job(spec(50, 5)).await.unwrap().into_inner().job;
    let refused = audra.cancel_job(pb::JobId { id }).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");

    let mut events = jobs.watch_job(pb::JobId { id }).await.unwrap().into_inner();
    loop {
        match next(&mut events).await {
            Some(pb::job_event::Event::Round(p))
                if p.phase == pb::RoundPhase::Finalized as i32 && p.round >= 1 =>
            {
                break
            }
            Some(pb::job_event::Event::Round(_)) | None => {}
            other => panic!("the job ended before round 1 finalized: {other:?}"),
        }
    }
    // With h3 gone, a round soon holds two submissions and waits for the third until its
    // deadline (a minute): the cancellation comes while it collects.
    cluster.stop_worker("h3");
    loop {
        match next(&mut events).await {
            Some(pb::job_event::Event::Round(p))
                if p.phase == pb::RoundPhase::Training as i32 && p.participants.len() == 2 =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let now = jobs.get_job(pb::JobId { id }).await.unwrap().into_inner();
                let stuck = now.progress.is_some_and(|q| {
                    q.round == p.round
                        && q.phase == pb::RoundPhase::Training as i32
                        && q.participants.len() == 2
                });
                if stuck {
                    break;
                }
            }
            Some(pb::job_event::Event::Round(_)) | None => {}
            other => panic!("the job ended before it was cancelled: {other:?}"),
        }
    }
    let status = jobs
        .cancel_job(pb::JobId { id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::JobState::Cancelled as i32, "{status:?}");
    assert_eq!(status.reason, "cancelled by researcher alice");
    let done = status.finalized_round;
    assert!((1..50).contains(&done), "{status:?}");
    let failed = loop {
        match next(&mut events).await {
            Some(pb::job_event::Event::Failed(f)) => break f,
            Some(pb::job_event::Event::Finished(_)) => panic!("a cancelled job finished"),
            _ => {}
        }
    };
    assert!(failed.cancelled, "{failed:?}");
    assert_eq!(failed.reason, status.reason);
    let again = jobs.cancel_job(pb::JobId { id }).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again}");
    let listed = audra
        .list_jobs(pb::ListJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, pb::JobState::Cancelled as i32);
    assert_eq!(listed[0].finalized_round, done);

    // No final model; the last finalized round's model, once the hospitals cosigned it.
    let none = download(&mut jobs, id, None).await.unwrap_err();
    assert_eq!(none.code(), tonic::Code::FailedPrecondition, "{none}");
    let trust = ResearcherFolder::open(&layout.alice(), None).unwrap().trust;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let (release, file) = loop {
        match download(&mut jobs, id, Some(done)).await {
            Ok(got) => break got,
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("round {done}'s model: {e}"),
        }
    };
    verify_release(id, done, &release, &file, &trust).expect("round's release verifies");
    // An auditor mirrors the live ledger, every blob included: a submission of the round the
    // cancellation cut short is no longer sealed, since no hospital can submit to it any more.
    let audra_folder = AuditorFolder::open(&layout.audra()).unwrap();
    let mut ledger = LedgerServiceClient::new(cluster.channel(&layout.audra()).await);
    let copy = tmp.path().join("mirrored");
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // The end's checkpoint may still be collecting its cosignatures: the mirror then stops
        // at an older one (or, with none cosigned, refuses), and is taken again.
        let ended = match fedchain_audit::mirror(&mut ledger, &audra_folder.trust, &copy).await {
            // The copy holds the job's end (sled's folder is not reopened until it does).
            Ok(m) => m.records > failed.record_index,
            Err(e) if e.to_string().contains("quorum") => false,
            Err(e) => panic!("the auditor cannot mirror the ledger: {e}"),
        };
        if ended {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint covering the job's end was cosigned within a minute"
        );
        let _ = std::fs::remove_dir_all(&copy);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await
    }
    let mirrored = Store::open(&copy, audra_folder.trust.log.name()).unwrap();
    let cut_short = (0..mirrored.len())
        .map(|i| mirrored.record(i).unwrap().0.body)
        .filter_map(|b| match b {
            fedchain_ledger::record::Body::UpdateSubmitted { round, .. } => Some((round, 1)),
            fedchain_ledger::record::Body::RoundClosed { round, .. } => Some((round, 100)),
            _ => None,
        })
        .fold(std::collections::BTreeMap::new(), |mut m, (r, n)| {
            *m.entry(r).or_insert(0) += n;
            m
        });
    assert_eq!(
        cut_short.last_key_value().map(|(_, n)| *n),
        Some(2),
        "the last round holds two submissions and never closed: {cut_short:?}"
    );
    let report = replay(&mirrored, &audra_folder.public_key, &audra_folder.hospitals).unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);
    drop(mirrored);
    cluster.stop().await.expect("the coordinator stops cleanly");

    let store = Store::open(&layout.ledger(), audra_folder.trust.log.name()).unwrap();
    let report = replay(&store, &audra_folder.public_key, &audra_folder.hospitals).unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);
    assert_eq!(report.cancelled, 1);
    assert_eq!(report.end_credits_checked, 4, "3 deposits and the refund");
    let end = (0..store.len())
        .map(|i| store.record(i).unwrap().0)
        .find(|r| matches!(r.body, Body::JobFinished { .. }))
        .expect("the job's end is recorded");
    assert!(
        matches!(
            end.body,
            Body::JobFinished {
                status: JobStatus::Cancelled,
                ..
            }
        ),
        "{end:?}"
    );
    assert_eq!(
        (end.actor.id.as_str(), end.actor.role),
        ("alice", Role::Researcher)
    );
    let credits = store.credits();
    assert_eq!(credits.balance(&Account::Escrow(id)), 0);
    for h in HOSPITALS {
        let deposit = Account::Deposit {
            job: id,
            hospital: h.into(),
        };
        assert_eq!(credits.balance(&deposit), 0, "{h}'s deposit returned");
    }
}

/// Writes a researcher's TorchScript modules for breast-cancer's 30 features with the project's
/// `.venv` PyTorch: an MLP (`mlp.pt`), and one that reads a file (`evil.pt`).
fn torchscript_modules(dir: &std::path::Path) {
    let script = r#"
import torch, torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(30, 16)
        self.out = nn.Linear(16, 1)
    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))
class Evil(Net):
    def forward(self, x):
        return self.out(torch.relu(self.hidden(x))) + torch.from_file("/etc/hostname", None, 1)
torch.jit.script(Net()).save("mlp.pt")
torch.jit.script(Evil()).save("evil.pt")
"#;
    let python = fedchain_tests::venv_python();
    // A file, not `-c`: torch.jit.script reads the classes' source.
    std::fs::write(dir.join("modules.py"), script).unwrap();
    let out = std::process::Command::new(&python)
        .arg("modules.py")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh creates it)", python.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A researcher's own TorchScript module trains in an encrypted 3-hospital job: the module travels
/// in the spec (so the ledger's spec digest covers the code), every hospital checks and loads it,
/// and the release verifies against the ledger with the module from the job's spec. A module that
/// calls a forbidden operator is refused at submission, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_researchers_torchscript_module_trains_in_an_encrypted_job() {
    let tmp = tempfile::tempdir().unwrap();
    torchscript_modules(tmp.path());
    let layout = Layout::new(tmp.path());
    layout.provision();
    let config = layout.coordinator_config("127.0.0.1:0", 120);
    let cluster = InProcess::start(&layout, config, &HOSPITALS).await;
    let mut jobs = JobServiceClient::new(cluster.channel(&layout.alice()).await);

    let with_module = |file: &str| {
        let path = tmp.path().join(file);
        let model = Model::from_module(&path, 30, 1, tch::Device::Cpu).unwrap();
        let mut s = spec(3, 11);
        s.model = Some(pb::ModelSpec {
            canonical_json: model.spec().canonical_json(),
        });
        s.torchscript_module = std::fs::read(&path).unwrap();
        s
    };
    // The forbidden module cannot even be declared locally; sent anyway, it is refused by name.
    let mut evil = with_module("mlp.pt");
    let evil_bytes = std::fs::read(tmp.path().join("evil.pt")).unwrap();
    let evil_code = fedchain_models::torchscript::TorchScriptCode::read(&evil_bytes).unwrap();
    let mut evil_model =
        ModelSpec::from_json(&evil.model.as_ref().unwrap().canonical_json).unwrap();
    if let ModelSpec::Torchscript { module, .. } = &mut evil_model {
        *module = evil_code.digest();
    }
    evil.model = Some(pb::ModelSpec {
        canonical_json: evil_model.canonical_json(),
    });
    evil.torchscript_module = evil_bytes;
    let refused = jobs.submit_job(evil).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("torch.from_file"), "{refused}");

    // Streamed (as `job submit` sends a spec too large for one message), after streams the
    // coordinator refuses: no header, more than a spec may be, bytes that are not the announced.
    let spec = with_module("mlp.pt");
    let module = spec.torchscript_module.clone();
    let bytes = prost::Message::encode_to_vec(&spec);
    let header = |total_bytes: u64, digest: [u8; 32]| pb::SpecChunk {
        part: Some(pb::spec_chunk::Part::Header(pb::SpecHeader {
            total_bytes,
            spec: Some(pb::Digest {
                sha256: digest.to_vec(),
            }),
        })),
    };
    let body = |bytes: &[u8]| -> Vec<pb::SpecChunk> {
        bytes
            .chunks(1000)
            .map(|c| pb::SpecChunk {
                part: Some(pb::spec_chunk::Part::Chunk(c.to_vec())),
            })
            .collect()
    };
    let digest = fedchain_ledger::sha256(&bytes);
    let refusals: [(Vec<pb::SpecChunk>, tonic::Code, &str); 4] = [
        (
            body(&bytes),
            tonic::Code::InvalidArgument,
            "must start with a SpecHeader",
        ),
        (
            vec![header(fedchain_proto::limits::MAX_SPEC_BYTES + 1, digest)],
            tonic::Code::ResourceExhausted,
            "a job spec may have up to",
        ),
        (
            [vec![header(bytes.len() as u64, [7; 32])], body(&bytes)].concat(),
            tonic::Code::InvalidArgument,
            "do not have the digest",
        ),
        (
            [vec![header(bytes.len() as u64 - 1, digest)], body(&bytes)].concat(),
            tonic::Code::ResourceExhausted,
            "runs past",
        ),
    ];
    for (stream, code, says) in refusals {
        let e = jobs
            .submit_job_stream(tokio_stream::iter(stream))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.message().contains(says), "{e}");
    }
    let streamed = [vec![header(bytes.len() as u64, digest)], body(&bytes)].concat();
    let status = jobs
        .submit_job_stream(tokio_stream::iter(streamed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.spec.unwrap().sha256,
        digest.to_vec(),
        "the ledger names the spec sent"
    );
    let id = status.job;
    let mut events = jobs.watch_job(pb::JobId { id }).await.unwrap().into_inner();
    let finished = loop {
        match next(&mut events).await {
            Some(pb::job_event::Event::Finished(f)) => break f,
            Some(pb::job_event::Event::Failed(f)) => panic!("the job failed: {}", f.reason),
            _ => {}
        }
    };
    let accuracy = finished
        .metrics
        .iter()
        .find(|m| m.name == "accuracy")
        .unwrap()
        .value;
    assert!(accuracy > 0.85, "accuracy {accuracy}");

    // The release verifies, and the module the researcher gets back is the job's, from the ledger.
    let trust = ResearcherFolder::open(&layout.alice(), None).unwrap().trust;
    let mut ledger = LedgerServiceClient::new(cluster.channel(&layout.alice()).await);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let (release, file) = loop {
        match download(&mut jobs, id, None).await {
            Ok(got) => break got,
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(e) => panic!("the final model: {e}"),
        }
    };
    let v = verify_release(id, 3, &release, &file, &trust).unwrap();
    let p = fedchain_audit::verify_preprocessing(&mut ledger, id, &v)
        .await
        .unwrap();
    assert_eq!(p.torchscript_module, module);
    let released = Model::for_job(v.model.spec(), &module, v.model.params(), tch::Device::Cpu)
        .expect("the released parameters run in the job's module");
    assert_eq!(released.digest().unwrap().0, v.model_digest);
    cluster.stop().await.expect("the coordinator stops cleanly");

    let audra = AuditorFolder::open(&layout.audra()).unwrap();
    let store = Store::open(&layout.ledger(), audra.trust.log.name()).unwrap();
    let report = replay(&store, &audra.public_key, &audra.hospitals).unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);
    assert_eq!(report.rounds.len(), 4, "rounds 0..=3");
    for r in &report.rounds {
        assert!(r.model_matches, "{r:?}");
    }
    // The refused submission is on the ledger, as the researcher's act, naming the operator.
    let refusal = (0..store.len())
        .map(|i| store.record(i).unwrap().0)
        .find(|r| {
            matches!(
                r.body,
                fedchain_ledger::record::Body::RequestRejected { .. }
            )
        })
        .expect("the refused module is recorded");
    assert_eq!(refusal.actor.id, "alice");
    assert_eq!(
        refusal.actor.role,
        fedchain_ledger::record::Role::Researcher
    );
    let fedchain_ledger::record::Body::RequestRejected { reason, .. } = &refusal.body else {
        unreachable!()
    };
    assert!(reason.contains("torch.from_file"), "{reason}");
    // So are the four refused streams.
    let rejected = (0..store.len())
        .filter(|i| {
            matches!(
                store.record(*i).unwrap().0.body,
                fedchain_ledger::record::Body::RequestRejected { .. }
            )
        })
        .count();
    assert_eq!(rejected, 5);
}

/// A module whose parameters are not the ones its spec declares passes the coordinator (which
/// never loads modules) but no hospital: each declines it when it loads it, signed and on the
/// ledger; the researcher sees who declined and why; the job fails at once (every hospital
/// answered), not at its enrollment deadline; verify and replay check every decline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hospitals_decline_a_module_whose_parameters_are_not_as_declared() {
    let tmp = tempfile::tempdir().unwrap();
    torchscript_modules(tmp.path());
    let layout = Layout::new(tmp.path());
    layout.provision();
    let config = layout.coordinator_config("127.0.0.1:0", 2);
    let cluster = InProcess::start(&layout, config, &HOSPITALS).await;
    let mut jobs = JobServiceClient::new(cluster.channel(&layout.alice()).await);
    let path = tmp.path().join("mlp.pt");
    let mut model = Model::from_module(&path, 30, 1, tch::Device::Cpu)
        .unwrap()
        .spec()
        .clone();
    if let ModelSpec::Torchscript { parameters, .. } = &mut model {
        let hidden = parameters
            .iter_mut()
            .find(|p| p.name == "hidden.weight")
            .unwrap();
        hidden.shape = vec![8, 30];
    }
    let mut s = spec(1, 5);
    s.model = Some(pb::ModelSpec {
        canonical_json: model.canonical_json(),
    });
    s.torchscript_module = std::fs::read(&path).unwrap();
    let id = jobs.submit_job(s).await.unwrap().into_inner().job;
    let mut events = jobs.watch_job(pb::JobId { id }).await.unwrap().into_inner();
    let mut declined = Vec::new();
    let failed = loop {
        match next(&mut events).await {
            Some(pb::job_event::Event::Failed(f)) => break f,
            Some(pb::job_event::Event::Finished(_)) => panic!("a mis-declared module trained"),
            Some(pb::job_event::Event::Declined(d)) => declined.push(d),
            _ => {}
        }
    };
    declined.sort_by(|a, b| a.hospital.cmp(&b.hospital));
    let names: Vec<&str> = declined.iter().map(|d| d.hospital.as_str()).collect();
    assert_eq!(names, HOSPITALS, "{declined:?}");
    for d in &declined {
        assert!(
            d.reason.contains("hidden.weight") && d.reason.contains("TorchScript module"),
            "{d:?}"
        );
    }
    assert!(
        failed.reason.contains("every other hospital declined") && failed.reason.contains("h2: "),
        "{}",
        failed.reason
    );
    let status = jobs.get_job(pb::JobId { id }).await.unwrap().into_inner();
    assert!(status.hospitals.is_empty(), "{status:?}");
    assert_eq!(status.declined, declined);
    cluster.stop().await.unwrap();

    let audra = AuditorFolder::open(&layout.audra()).unwrap();
    let verified = verify(&layout.ledger(), Some(&audra.trust)).unwrap();
    // The last checkpoint may still lack cosignatures when the cluster stops; every record
    // (each decline's signature with its hospital's trusted key) must verify.
    let records: Vec<_> = verified
        .findings
        .iter()
        .filter(|f| f.object != "checkpoint")
        .collect();
    assert!(records.is_empty(), "{records:?}");
    let store = Store::open(&layout.ledger(), audra.trust.log.name()).unwrap();
    let report = replay(&store, &audra.public_key, &audra.hospitals).unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);
    assert_eq!(report.declined, 3);
}

/// Each hospital's `[policy]`: h2 trains logistic regressions only, h3 takes jobs of researcher
/// bob only, h1 asks for aggregates of at least 2 (which the job gives). h2 and h3 decline
/// alice's MLP job, each naming its rule, on the ledger; with one hospital left the job fails at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hospitals_decline_jobs_their_policy_refuses_naming_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    layout.provision();
    let config = layout.coordinator_config("127.0.0.1:0", 60);
    let cluster = InProcess::start_tweaked(&layout, config, &HOSPITALS, |h, cfg| match h {
        "h1" => cfg.policy.min_participants = 2,
        "h2" => cfg.policy.models = Some(vec!["logreg".into()]),
        _ => cfg.policy.researchers = Some(vec!["bob".into()]),
    })
    .await;
    let mut jobs = JobServiceClient::new(cluster.channel(&layout.alice()).await);
    let id = jobs.submit_job(spec(1, 7)).await.unwrap().into_inner().job;
    let mut events = jobs.watch_job(pb::JobId { id }).await.unwrap().into_inner();
    let failed = loop {
        match next(&mut events).await {
            Some(pb::job_event::Event::Failed(f)) => break f,
            Some(pb::job_event::Event::Finished(_)) => panic!("one hospital cannot finish a job"),
            _ => {}
        }
    };
    let status = jobs.get_job(pb::JobId { id }).await.unwrap().into_inner();
    assert_eq!(status.hospitals, ["h1"], "{status:?}");
    let reasons: Vec<(&str, &str)> = status
        .declined
        .iter()
        .map(|d| (d.hospital.as_str(), d.reason.as_str()))
        .collect();
    assert!(
        matches!(&reasons[..], [("h2", a), ("h3", b)]
            if a.contains("trains the models logreg only, not mlp")
                && b.contains("researchers bob only, not of \"alice\"")),
        "{reasons:?}"
    );
    assert!(
        failed.reason.contains("every other hospital declined"),
        "{}",
        failed.reason
    );
    cluster.stop().await.unwrap();
    let audra = AuditorFolder::open(&layout.audra()).unwrap();
    let store = Store::open(&layout.ledger(), audra.trust.log.name()).unwrap();
    let report = replay(&store, &audra.public_key, &audra.hospitals).unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);
    assert_eq!(report.declined, 2);
}

/// Runs job `spec` to its end: the `Finished` or `Failed` event, and the job's status then.
async fn run_to_end(
    jobs: &mut JobServiceClient<tonic::transport::Channel>,
    spec: pb::JobSpec,
) -> (pb::job_event::Event, pb::JobStatus) {
    let id = jobs.submit_job(spec).await.unwrap().into_inner().job;
    let mut events = jobs.watch_job(pb::JobId { id }).await.unwrap().into_inner();
    let end = loop {
        match next(&mut events).await {
            Some(e @ pb::job_event::Event::Finished(_)) => break e,
            Some(e @ pb::job_event::Event::Failed(_)) => break e,
            _ => {}
        }
    };
    (
        end,
        jobs.get_job(pb::JobId { id }).await.unwrap().into_inner(),
    )
}

/// Each hospital's privacy policy: h1 has a lifetime budget that one job's spending fits and
/// two do not; h2 takes only jobs with differential privacy. A first private job runs on all
/// three (what each spent is on the ledger); h1 declines a second, naming its lifetime budget,
/// which runs on the other two; h1 and h2 decline a job without privacy, which fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hospital_whose_lifetime_budget_is_spent_declines_the_next_private_job() {
    let private = |seed: u64, epsilon: f64| pb::JobSpec {
        privacy: Some(pb::Privacy {
            epsilon,
            delta: 1e-5,
            max_grad_norm: 1.0,
            noise_multiplier: 1.0,
            distributed: false,
        }),
        ..spec(1, seed)
    };
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::new(tmp.path());
    layout.provision();
    // What one round spends of each hospital's training rows (a worker holds out a fifth of
    // each class).
    let valid = fedchain_protocol::validate(&private(1, 100.0)).unwrap();
    let privacy = fedchain_protocol::privacy::JobPrivacy::of(&valid.spec).unwrap();
    let spent = |h: &str| {
        let rows = fedchain_datasets::load_data(&layout.data(h), &valid.data_schema()).unwrap();
        let (train, _) = fedchain_datasets::train_test_split(&rows, 0.2, 1).unwrap();
        privacy.spent(&valid.spec, train.len() as u64, 1).unwrap()
    };
    let one = spent("h1");
    let most = HOSPITALS.iter().map(|h| spent(h)).fold(0.0, f64::max);
    let lifetime = 1.5 * one;
    let config = layout.coordinator_config("127.0.0.1:0", 60);
    let cluster = InProcess::start_tweaked(&layout, config, &HOSPITALS, |h, cfg| match h {
        "h1" => {
            cfg.policy.lifetime_epsilon = Some(lifetime);
            cfg.policy.lifetime_delta = Some(1e-3);
        }
        "h2" => cfg.policy.require_privacy = true,
        _ => {}
    })
    .await;
    let mut jobs = JobServiceClient::new(cluster.channel(&layout.alice()).await);
    // Each job's budget is above what its one round spends for every hospital.
    let budget = 1.2 * most;

    let (end, status) = run_to_end(&mut jobs, private(1, budget)).await;
    assert!(matches!(end, pb::job_event::Event::Finished(_)), "{end:?}");
    assert_eq!(status.hospitals, ["h1", "h2", "h3"], "{status:?}");
    // What each spent, as the researcher sees it: one round, within the budget.
    assert_eq!(status.privacy_budget, budget);
    let spent: Vec<(&str, u64)> = status
        .privacy
        .iter()
        .map(|p| (p.hospital.as_str(), p.rounds))
        .collect();
    assert_eq!(spent, [("h1", 1), ("h2", 1), ("h3", 1)], "{status:?}");
    assert!(status
        .privacy
        .iter()
        .all(|p| p.epsilon > 0.0 && p.epsilon <= budget && p.noise_multiplier == 1.0));
    assert_eq!(status.privacy[0].epsilon, one);

    let (end, status) = run_to_end(&mut jobs, private(2, budget)).await;
    assert!(matches!(end, pb::job_event::Event::Finished(_)), "{end:?}");
    assert_eq!(status.hospitals, ["h2", "h3"], "{status:?}");
    let [d] = &status.declined[..] else {
        panic!("{status:?}")
    };
    assert_eq!(d.hospital, "h1");
    // Job 1 counts at what h1 spent, by the ledger, once a checkpoint h1 cosigned covers its
    // end; at its whole budget before.
    assert!(
        d.reason.contains(&format!("spent epsilon {one:.4}"))
            || d.reason.contains(&format!("spent epsilon {budget:.4}")),
        "{}",
        d.reason
    );
    assert!(
        d.reason.contains("earlier job(s) spent epsilon")
            && d.reason
                .contains(&format!("lifetime budget of epsilon {lifetime}")),
        "{}",
        d.reason
    );

    let (end, status) = run_to_end(&mut jobs, spec(1, 3)).await;
    assert!(matches!(end, pb::job_event::Event::Failed(_)), "{end:?}");
    let why: Vec<&str> = status
        .declined
        .iter()
        .map(|d| d.hospital.as_str())
        .collect();
    assert_eq!(why, ["h1", "h2"], "{status:?}");
    assert!(status
        .declined
        .iter()
        .all(|d| d.reason.contains("only jobs with a [privacy] budget")));

    cluster.stop().await.unwrap();
    let audra = AuditorFolder::open(&layout.audra()).unwrap();
    let store = Store::open(&layout.ledger(), audra.trust.log.name()).unwrap();
    let report = replay(&store, &audra.public_key, &audra.hospitals).unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);
    // Three hospitals in job 1, two in job 2: one round each.
    assert_eq!(report.privacy_checked, 5);
}
