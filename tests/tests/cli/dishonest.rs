//! A real `fedchain worker` against a dishonest coordinator (a stand-in served by this test with
//! the coordinator's certificate): it offers a job, then asks the hospital to decrypt an
//! "aggregate" of a single contributor, which would reveal that hospital's update. The worker
//! must refuse, say so on the refusal RPC (which a real coordinator records on the ledger), and
//! never send a decryption share.

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
        let aggregate = [42u8; 32];
        let offer = pb::Task {
            kind: Some(pb::task::Kind::Offer(pb::JobOffer {
                job: 1,
                spec: Some(self.spec.clone()),
                spec_digest: Some(pb::Digest {
                    sha256: sha256(&self.spec.encode_to_vec()).to_vec(),
                }),
                deposit: 0,
            })),
        };
        let decrypt = pb::Task {
            kind: Some(pb::task::Kind::Decrypt(pb::DecryptTask {
                job: 1,
                round: 1,
                aggregate: Some(pb::Digest {
                    sha256: aggregate.to_vec(),
                }),
                contributors: vec!["h1".into()],
                context: decryption_context(1, 1, &aggregate),
            })),
        };
        // Keep the stream open after the two tasks, as a coordinator does.
        let s = tokio_stream::iter(vec![Ok(offer), Ok(decrypt)]).chain(tokio_stream::pending());
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
        unimplemented()
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
        }),
        seed: 1,
    }
}

#[test]
fn a_hospital_refuses_to_decrypt_a_single_contribution() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
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
    while seen.lock().unwrap().refusals.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no refusal; worker log:\n{}",
            std::fs::read_to_string(dir.join("h1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
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
