//! A real `fedchain worker` against a dishonest coordinator (a stand-in served by this test with
//! the coordinator's certificate): it offers a job, then asks the hospital to decrypt an
//! "aggregate" of a single contributor, which would reveal that hospital's update. The worker
//! must refuse, say so on the refusal RPC (which a real coordinator records on the ledger), and
//! never send a decryption share. And a subtler one: it asks for the decryption of a genuine
//! aggregate of all three hospitals, then of two of them in the same round; subtracting the two
//! would give the third hospital's update, so the worker decrypts the first and refuses the second.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedchain_consortium::tls::server_tls;
use fedchain_crypto::keys::PublicKey;
use fedchain_datasets::{Builtin, TaskKind};
use fedchain_ledger::sha256;
use fedchain_models::{ModelKind, ModelSpec};
use fedchain_proto::v1 as pb;
use fedchain_protocol::decryption_context;
use pb::training_service_server::{TrainingService, TrainingServiceServer};
use prost::Message;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use fedchain_tests::{fedchain, ok_stdout};
use fedchain_tests::{s, spawn, Procs};

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Default)]
struct Seen {
    enrolled: bool,
    refusals: Vec<String>,
    shares: usize,
}

struct Dishonest {
    spec: pb::JobSpec,
    pk: Vec<u8>,
    seen: Arc<Mutex<Seen>>,
    /// The decryption tasks to send after the offer.
    decrypts: Vec<pb::Task>,
    /// What each FetchRound call serves, in order.
    bundles: Mutex<std::collections::VecDeque<Vec<pb::RoundBundle>>>,
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl TrainingService for Dishonest {
    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        self.seen.lock().unwrap().enrolled = true;
        Ok(Response::new(pb::EnrollResponse {
            public_key: self.pk.clone(),
            spec: Some(self.spec.clone()),
            spec_digest: Some(pb::Digest {
                sha256: sha256(&self.spec.encode_to_vec()).to_vec(),
            }),
            party: 1,
            deposit: 0,
            record_index: 0,
        }))
    }

    type TasksStream = Out<pb::Task>;
    async fn tasks(
        &self,
        _: Request<pb::TaskRequest>,
    ) -> Result<Response<Self::TasksStream>, Status> {
        let offer = pb::Task {
            kind: Some(pb::task::Kind::Offer(pb::JobOffer {
                job: 1,
                spec: Some(self.spec.clone()),
                spec_digest: Some(pb::Digest {
                    sha256: sha256(&self.spec.encode_to_vec()).to_vec(),
                }),
                deposit: 0,
                researcher: "alice".into(),
            })),
        };
        let mut tasks = vec![Ok(offer)];
        tasks.extend(self.decrypts.iter().cloned().map(Ok));
        // Keep the stream open after the tasks, as a coordinator does.
        let s = tokio_stream::iter(tasks).chain(tokio_stream::pending());
        Ok(Response::new(Box::pin(s)))
    }

    type FetchModelStream = Out<pb::Chunk>;
    async fn fetch_model(
        &self,
        _: Request<pb::ModelRequest>,
    ) -> Result<Response<Self::FetchModelStream>, Status> {
        unimplemented()
    }
    async fn submit_update(
        &self,
        _: Request<Streaming<pb::UpdateChunk>>,
    ) -> Result<Response<pb::SubmitAck>, Status> {
        unimplemented()
    }
    type FetchRoundStream = Out<pb::RoundBundle>;
    async fn fetch_round(
        &self,
        _: Request<pb::RoundRef>,
    ) -> Result<Response<Self::FetchRoundStream>, Status> {
        match self.bundles.lock().unwrap().pop_front() {
            Some(bundle) => Ok(Response::new(Box::pin(tokio_stream::iter(
                bundle.into_iter().map(Ok),
            )))),
            None => unimplemented(),
        }
    }
    async fn submit_decryption_share(
        &self,
        _: Request<Streaming<pb::ShareChunk>>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.seen.lock().unwrap().shares += 1;
        Ok(Response::new(pb::Ack { record_index: None }))
    }
    async fn submit_cosignature(
        &self,
        _: Request<pb::Cosignature>,
    ) -> Result<Response<pb::Ack>, Status> {
        unimplemented()
    }
    async fn submit_evaluation(
        &self,
        _: Request<pb::Evaluation>,
    ) -> Result<Response<pb::Ack>, Status> {
        unimplemented()
    }
    async fn decline_job(&self, _: Request<pb::Decline>) -> Result<Response<pb::Ack>, Status> {
        Err(Status::unimplemented("this coordinator takes no declines"))
    }

    async fn refuse_decryption(
        &self,
        req: Request<pb::Refusal>,
    ) -> Result<Response<pb::Ack>, Status> {
        self.seen
            .lock()
            .unwrap()
            .refusals
            .push(req.into_inner().reason);
        Ok(Response::new(pb::Ack {
            record_index: Some(1),
        }))
    }
}

use tokio_stream::StreamExt as _;

fn spec() -> pb::JobSpec {
    let data = Builtin::BreastCancer.load().unwrap();
    let model = ModelSpec::preset(ModelKind::Mlp, data.n_features(), TaskKind::Binary).unwrap();
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
        rounds: 1,
        local_epochs: 1,
        learning_rate: 0.002,
        batch_size: 32,
        min_participants: 2,
        round_deadline_seconds: 60,
        credit_budget: 100,
        quantization: Some(pb::Quantization {
            frac_bits: 16,
            clip: 1.0,
            quant_bits: 0,
        }),
        seed: 1,
    }
}

/// A consortium (512-bit key: the size does not matter here) and h1's worker, against a stand-in
/// coordinator that sends `decrypts` after the offer and serves `bundles`; returns what it saw
/// once `done` holds.
fn run_against(
    c: &std::path::Path,
    dir: &std::path::Path,
    decrypts: Vec<pb::Task>,
    bundles: Vec<Vec<pb::RoundBundle>>,
    done: impl Fn(&Seen) -> bool,
) -> Arc<Mutex<Seen>> {
    let pk = PublicKey::load(&c.join("hospitals/h1/public.key")).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Dishonest {
        spec: spec(),
        pk: pk.to_bytes(),
        seen: seen.clone(),
        decrypts,
        bundles: Mutex::new(bundles.into()),
    };
    let tls = server_tls(&c.join("coordinator")).unwrap();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(TrainingServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let layout = fedchain_tests::Layout::new(dir);
    layout.write_toml(
        "h1.toml",
        &layout.worker_config("h1", &format!("https://{addr}")),
    );
    let _worker = Procs(vec![spawn(
        &["worker", "--config", s(&dir.join("h1.toml"))],
        &dir.join("h1.log"),
    )]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&seen.lock().unwrap()) {
        assert!(
            Instant::now() < deadline,
            "the worker did not get there; its log:\n{}",
            std::fs::read_to_string(dir.join("h1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(rt);
    seen
}

fn provision(dir: &std::path::Path) -> std::path::PathBuf {
    let c = dir.join("c");
    ok_stdout(&fedchain(&[
        "consortium",
        "init",
        "--dir",
        s(&c),
        "--hospitals",
        "h1,h2,h3",
        "--threshold",
        "2",
        "--bits",
        "512",
    ]));
    ok_stdout(&fedchain(&[
        "data",
        "split",
        "--dataset",
        "breast-cancer",
        "--hospitals",
        "3",
        "--out",
        s(&dir.join("data")),
    ]));
    c
}

fn decrypt_task(aggregate: [u8; 32], contributors: &[&str]) -> pb::Task {
    pb::Task {
        kind: Some(pb::task::Kind::Decrypt(pb::DecryptTask {
            job: 1,
            round: 1,
            aggregate: Some(pb::Digest {
                sha256: aggregate.to_vec(),
            }),
            contributors: contributors.iter().map(|h| h.to_string()).collect(),
            context: decryption_context(1, 1, &aggregate),
            ciphertexts: Vec::new(),
        })),
    }
}

#[test]
fn a_hospital_refuses_to_decrypt_a_single_contribution() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = provision(dir);
    let seen = run_against(
        &c,
        dir,
        vec![decrypt_task([42; 32], &["h1"])],
        Vec::new(),
        |seen| !seen.refusals.is_empty(),
    );
    let seen = seen.lock().unwrap();
    assert!(seen.enrolled);
    assert_eq!(
        seen.shares, 0,
        "no share may leave for a single contribution"
    );
    assert!(
        seen.refusals[0].contains("1 distinct contributors") && seen.refusals[0].contains("2"),
        "{:?}",
        seen.refusals
    );
    let log = std::fs::read_to_string(dir.join("h1.log")).unwrap();
    assert!(log.contains("REFUSED to decrypt"), "{log}");
}

/// Genuine, signed submissions of the three hospitals for round 1, and the bundle a coordinator
/// serves for the aggregate of `which` of them, with that aggregate's digest.
fn bundle(
    c: &std::path::Path,
    submissions: &[(String, Vec<u8>, [u8; 64], u32)],
    which: &[&str],
) -> (Vec<pb::RoundBundle>, [u8; 32]) {
    use fedchain_crypto::aggregate::aggregate;
    use fedchain_crypto::djn::{decode_ciphertexts, encode_ciphertexts};
    use pb::round_bundle::Part;
    let pk = PublicKey::load(&c.join("hospitals/h1/public.key")).unwrap();
    let mut out = Vec::new();
    let mut vectors = Vec::new();
    let mut n = 0;
    for (h, bytes, signature, count) in submissions.iter().filter(|s| which.contains(&s.0.as_str()))
    {
        out.push(pb::RoundBundle {
            part: Some(Part::Submission(pb::Submission {
                job: 1,
                round: 1,
                hospital: h.clone(),
                ciphertexts: *count,
                total_bytes: bytes.len() as u64,
                ciphertext_digest: Some(pb::Digest {
                    sha256: sha256(bytes).to_vec(),
                }),
                signature: signature.to_vec(),
            })),
        });
        out.push(pb::RoundBundle {
            part: Some(Part::Chunk(bytes.clone())),
        });
        vectors.push(decode_ciphertexts(&pk, bytes, None).unwrap());
        n = *count;
    }
    let agg = aggregate(&pk, &vectors).unwrap();
    let digest = sha256(&encode_ciphertexts(&pk, &agg));
    out.push(pb::RoundBundle {
        part: Some(Part::Aggregate(pb::Aggregate {
            job: 1,
            round: 1,
            contributors: which.iter().map(|h| h.to_string()).collect(),
            digest: Some(pb::Digest {
                sha256: digest.to_vec(),
            }),
            ciphertexts: n,
            record_index: 0,
        })),
    });
    (out, digest)
}

#[test]
fn a_hospital_decrypts_one_aggregate_per_round_so_two_cannot_be_subtracted() {
    use fedchain_crypto::djn::{encode_ciphertexts, EncryptionTable};
    use fedchain_crypto::quantize::Rounding;
    use fedchain_ledger::note::NoteSigner;
    use fedchain_ledger::record::Body;
    use rand::SeedableRng;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let c = provision(dir);
    let pk = PublicKey::load(&c.join("hospitals/h1/public.key")).unwrap();
    let valid = fedchain_protocol::validate(&spec()).unwrap();
    let codec = fedchain_protocol::RoundPlan::new(
        &valid,
        1,
        fedchain_protocol::Enrollment {
            rows: 300,
            hospitals: 3,
        },
    )
    .codec(&pk)
    .unwrap();
    let table = EncryptionTable::new(&pk);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    let len = fedchain_models::num_parameters(&valid.model);
    let submissions: Vec<(String, Vec<u8>, [u8; 64], u32)> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| {
            let update = vec![0.01f32; len];
            let enc = codec
                .encrypt(&table, &update, 100, Rounding::Nearest, &mut rng)
                .unwrap();
            let bytes = encode_ciphertexts(&pk, &enc.ciphertexts);
            let id = NoteSigner::from_skey(
                std::fs::read_to_string(c.join(format!("hospitals/{h}/identity.skey")))
                    .unwrap()
                    .trim(),
            )
            .unwrap();
            let signature = id.sign_message(&Body::submission_message(1, 1, h, &sha256(&bytes)));
            (
                h.to_string(),
                bytes,
                signature,
                enc.ciphertexts.len() as u32,
            )
        })
        .collect();
    let (all, all_digest) = bundle(&c, &submissions, &["h1", "h2", "h3"]);
    let (two, two_digest) = bundle(&c, &submissions, &["h1", "h2"]);
    let seen = run_against(
        &c,
        dir,
        vec![
            decrypt_task(all_digest, &["h1", "h2", "h3"]),
            decrypt_task(two_digest, &["h1", "h2"]),
        ],
        vec![all, two],
        |seen| seen.shares + seen.refusals.len() >= 2,
    );
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.shares, 1,
        "the first aggregate is decrypted: {:?}",
        seen.refusals
    );
    assert_eq!(seen.refusals.len(), 1);
    assert!(
        seen.refusals[0].contains("another aggregate"),
        "{:?}",
        seen.refusals
    );
    // The worker remembers across a restart: its state folder holds what it answered.
    let kept = std::fs::read_to_string(dir.join("state-h1/commitments.txt")).unwrap();
    assert!(kept.contains(&hex::encode(all_digest)), "{kept}");
}
