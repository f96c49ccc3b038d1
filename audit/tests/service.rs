//! The auditor's client code against a ledger service in process (a real HTTP/2 server and channel
//! over a tokio duplex pipe, no ports, as `proto/tests/grpc.rs` does), serving a real sled ledger
//! with real signatures: `mirror` copies what verifies and refuses what a dishonest coordinator
//! could serve, and `verify_release` accepts the model the hospitals committed to and nothing else.

mod support;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signer, SigningKey};
use fedchain_audit::{mirror, verify_preprocessing, verify_release, AuditError};
use fedchain_datasets::{Standardizer, TaskKind};
use fedchain_ledger::credits::{Account, Movement};
use fedchain_ledger::note::{self, NoteSigner};
use fedchain_ledger::record::{Body, Role};
use fedchain_ledger::store::Store;
use fedchain_ledger::verify::{verify, Trust};
use fedchain_ledger::Hash;
use fedchain_model_core::{init_params, ModelDigest, ModelFile, ModelSpec, Preprocessing};
use fedchain_proto::v1 as pb;
use hyper_util::rt::TokioIo;
use pb::ledger_service_client::LedgerServiceClient;
use pb::ledger_service_server::{LedgerService, LedgerServiceServer};
use prost::Message;
use support::entry;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Request, Response, Status};

const ORIGIN: &str = "fedchain.audit-test";
const HOSPITALS: [&str; 3] = ["h1", "h2", "h3"];

fn log_key() -> NoteSigner {
    NoteSigner::new(ORIGIN, [5; 32]).unwrap()
}

/// A hospital's identity key: it signs submissions and cosigns checkpoints.
fn hospital_key(i: usize) -> NoteSigner {
    NoteSigner::new(HOSPITALS[i], [60 + i as u8; 32]).unwrap()
}

fn trust(quorum: usize) -> Trust {
    Trust {
        log: log_key().verifier(),
        witnesses: (0..3).map(|i| hospital_key(i).verifier()).collect(),
        quorum,
        anchors: Vec::new(),
    }
}

/// The job's columns: four features and a binary target.
const FEATURES: [&str; 4] = ["age", "bmi", "bp", "glucose"];
/// Round 0's result: the features' pooled means, then their mean squares.
const STATISTICS: [f32; 8] = [50.0, 25.0, 80.0, 5.5, 2600.0, 634.0, 6500.0, 31.0];

fn job_spec() -> pb::JobSpec {
    let model = ModelSpec::LogisticRegression {
        inputs: 4,
        outputs: 1,
    };
    pb::JobSpec {
        torchscript_module: Vec::new(),
        privacy: None,
        spread_decryption: true,
        schema: Some(pb::DatasetSchema {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            target: "sick".into(),
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
        learning_rate: 1e-2,
        batch_size: 32,
        min_participants: 2,
        round_deadline_seconds: 60,
        credit_budget: 100,
        seed: 1,
        quantization: Some(pb::Quantization {
            frac_bits: 16,
            clip: 1.0,
            quant_bits: 0,
        }),
    }
}

/// The job's preprocessing with the scaling `statistics` define.
fn preprocessing(statistics: &[f32]) -> Preprocessing {
    let names: Vec<String> = FEATURES.iter().map(|f| f.to_string()).collect();
    Preprocessing {
        target: "sick".into(),
        task: TaskKind::Binary,
        scaling: Standardizer::from_moments(&names, false, statistics).unwrap(),
        statistics: Some(statistics.to_vec()),
    }
}

/// What the test ledger holds beyond its records.
struct Built {
    /// The released model file.
    model_file: Vec<u8>,
    /// Index of its `RoundFinalized` record.
    finalized: u64,
}

/// A ledger with a job, three signed submissions with their blobs, a finalized round that
/// released a real model, and a checkpoint cosigned by h1 and h2.
fn build(store: &mut Store) -> Built {
    let spec_blob = store.put_blob(&job_spec().encode_to_vec()).unwrap();
    let mut entries = vec![
        entry(
            "coordinator",
            Role::Coordinator,
            Body::CreditsMoved {
                movement: Movement::Mint {
                    to: Account::Researcher("ada".into()),
                    amount: 100,
                },
            },
        ),
        entry(
            "ada",
            Role::Researcher,
            Body::JobSubmitted {
                job: 1,
                spec: spec_blob,
                researcher: "ada".into(),
                budget: 100,
            },
        ),
    ];
    for (i, h) in HOSPITALS.iter().enumerate() {
        entries.push(entry(
            h,
            Role::Hospital,
            Body::HospitalEnrolled {
                job: 1,
                hospital: h.to_string(),
                identity_key: hospital_key(i).verifier().public_key(),
                samples: 100,
                deposit: 0,
            },
        ));
    }
    // Round 0: the pooled moments of the features, from which every hospital scaled its rows.
    entries.push(entry(
        "coordinator",
        Role::Coordinator,
        Body::RoundFinalized {
            job: 1,
            round: 0,
            model_before: [0; 32],
            model_after: ModelDigest::of(&STATISTICS).0,
            metrics: Vec::new(),
        },
    ));
    for (i, h) in HOSPITALS.iter().enumerate() {
        // 200 KB: larger than sled keeps inline, as real ciphertext vectors are.
        let bytes: Vec<u8> = (0..200_000u32).map(|b| (b % 251) as u8 ^ i as u8).collect();
        let digest = store.put_blob(&bytes).unwrap();
        let key = SigningKey::from_bytes(&[60 + i as u8; 32]);
        let signature = key.sign(&Body::submission_message(1, 1, h, &digest));
        entries.push(entry(
            h,
            Role::Hospital,
            Body::UpdateSubmitted {
                job: 1,
                round: 1,
                hospital: h.to_string(),
                ciphertexts: digest,
                signature: signature.to_bytes(),
            },
        ));
    }
    let spec = ModelSpec::LogisticRegression {
        inputs: 4,
        outputs: 1,
    };
    let params = init_params(&spec, 3);
    let model_file = ModelFile::new(spec, params.clone())
        .unwrap()
        .with_preprocessing(preprocessing(&STATISTICS))
        .unwrap()
        .to_bytes()
        .unwrap();
    entries.push(entry(
        "coordinator",
        Role::Coordinator,
        Body::RoundFinalized {
            job: 1,
            round: 1,
            model_before: [0; 32],
            model_after: ModelDigest::of(&params).0,
            metrics: Vec::new(),
        },
    ));
    let records = store.append_all(entries).unwrap();
    let finalized = records.last().unwrap().event;
    let signed = store.checkpoint(&log_key()).unwrap();
    let cosigned = note::add_signatures(&signed, &[&hospital_key(0), &hospital_key(1)]).unwrap();
    let mut known = vec![log_key().verifier()];
    known.extend((0..3).map(|i| hospital_key(i).verifier()));
    store.add_cosignatures(&cosigned, &known).unwrap();
    Built {
        model_file,
        finalized,
    }
}

/// What a dishonest coordinator does to what it serves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lie {
    None,
    /// Serves the checkpoint with only the log's signature.
    NoQuorum,
    /// Flips a byte of record 1 (its JSON stays valid: a digit of a number).
    AlteredRecord,
    /// Serves other bytes for a submission's blob.
    SwappedBlob,
    /// Serves record 2 before record 1.
    Reordered,
}

struct FakeLedger {
    store: Arc<Mutex<Store>>,
    lie: Lie,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl LedgerService for FakeLedger {
    async fn get_checkpoint(
        &self,
        _: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let store = self.store.lock().unwrap();
        let (_, note_text) = store.checkpoints().unwrap().pop().unwrap();
        let note_text = if self.lie == Lie::NoQuorum {
            let mut n = note::parse(&note_text).unwrap();
            n.signatures.truncate(1);
            n.encode()
        } else {
            note_text
        };
        Ok(Response::new(pb::Checkpoint { note: note_text }))
    }

    type GetRecordsStream = Stream_<pb::RecordEntry>;
    async fn get_records(
        &self,
        req: Request<pb::RecordRange>,
    ) -> Result<Response<Self::GetRecordsStream>, Status> {
        let r = req.into_inner();
        let store = self.store.lock().unwrap();
        // A few records per call, as the real service bounds each call: the client asks again.
        let end = r.end.min(r.start + 3);
        let mut out: Vec<pb::RecordEntry> = (r.start..end)
            .map(|index| pb::RecordEntry {
                index,
                record: store.record(index).unwrap().1,
            })
            .collect();
        match self.lie {
            Lie::AlteredRecord if out.len() > 1 => {
                let bytes = &mut out[1].record;
                let at = bytes.iter().rposition(|b| b.is_ascii_digit()).unwrap();
                bytes[at] = if bytes[at] == b'9' {
                    b'8'
                } else {
                    bytes[at] + 1
                };
            }
            Lie::Reordered if out.len() > 2 => out.swap(1, 2),
            _ => {}
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(
            out.into_iter().map(Ok),
        ))))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> Result<Response<pb::Proof>, Status> {
        let r = req.into_inner();
        let store = self.store.lock().unwrap();
        let hashes = store
            .inclusion_proof(r.index, r.size)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        Ok(Response::new(pb::Proof {
            hashes: hashes
                .iter()
                .map(|h| pb::Digest { sha256: h.to_vec() })
                .collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        _: Request<pb::ConsistencyProofRequest>,
    ) -> Result<Response<pb::Proof>, Status> {
        Err(Status::unimplemented("not used by the auditor's mirror"))
    }

    async fn list_checkpoints(
        &self,
        req: Request<pb::ListCheckpointsRequest>,
    ) -> Result<Response<pb::CheckpointList>, Status> {
        // One checkpoint per page, so that the client's paging is exercised.
        let after = req.into_inner().after;
        let store = self.store.lock().unwrap();
        let all: Vec<(u64, String)> = store
            .checkpoints()
            .unwrap()
            .into_iter()
            .filter(|(size, _)| *size > after)
            .map(|(size, text)| {
                if self.lie == Lie::NoQuorum {
                    let mut n = note::parse(&text).unwrap();
                    n.signatures.truncate(1);
                    (size, n.encode())
                } else {
                    (size, text)
                }
            })
            .collect();
        Ok(Response::new(pb::CheckpointList {
            checkpoints: all
                .first()
                .map(|(_, note)| pb::Checkpoint { note: note.clone() })
                .into_iter()
                .collect(),
            next_after: (all.len() > 1).then(|| all[0].0),
        }))
    }

    type GetBlobStream = Stream_<pb::Chunk>;
    async fn get_blob(
        &self,
        req: Request<pb::Digest>,
    ) -> Result<Response<Self::GetBlobStream>, Status> {
        let digest: Hash = req.into_inner().sha256.try_into().unwrap();
        let store = self.store.lock().unwrap();
        let mut bytes = store
            .blob(&digest)
            .unwrap()
            .ok_or_else(|| Status::not_found("no such blob"))?;
        if self.lie == Lie::SwappedBlob && bytes.len() > 1000 {
            bytes[500] ^= 1;
        }
        let chunks: Vec<Result<pb::Chunk, Status>> = bytes
            .chunks(64 * 1024)
            .map(|c| Ok(pb::Chunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// Serves `service` on one end of an in-memory pipe; returns a channel on the other.
async fn in_process(service: FakeLedger) -> Channel {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        Server::builder()
            .add_service(LedgerServiceServer::new(service))
            .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_io)))
            .await
    });
    let mut client_io = Some(client_io);
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the in-process pipe is already taken"))
            }
        }))
        .await
        .expect("connect over the in-process pipe")
}

async fn mirror_with(
    lie: Lie,
    into: &std::path::Path,
) -> Result<fedchain_audit::Mirrored, AuditError> {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), ORIGIN).unwrap();
    build(&mut store);
    let channel = in_process(FakeLedger {
        store: Arc::new(Mutex::new(store)),
        lie,
    })
    .await;
    mirror(&mut LedgerServiceClient::new(channel), &trust(2), into).await
}

#[tokio::test]
async fn mirror_copies_a_ledger_that_verifies_offline() {
    let into = tempfile::tempdir().unwrap();
    let m = mirror_with(Lie::None, into.path()).await.unwrap();
    assert_eq!(m.records, 10);
    assert_eq!(m.blobs, 4, "the spec and three submissions");
    assert_eq!(m.cosigners, ["h1", "h2"]);
    let report = verify(into.path(), Some(&trust(2))).unwrap();
    assert!(report.ok(), "{:?}", report.findings);
    assert_eq!(report.checkpointed_size, 10);
}

#[tokio::test]
async fn mirror_refuses_what_a_dishonest_coordinator_serves() {
    for (lie, why) in [
        (Lie::NoQuorum, "quorum"),
        // Still a canonical record, so only the Merkle root gives it away.
        (Lie::AlteredRecord, "do not reproduce the checkpoint's tree"),
        (Lie::SwappedBlob, "does not match its digest"),
        (Lie::Reordered, "out of order"),
    ] {
        let into = tempfile::tempdir().unwrap();
        let e = mirror_with(lie, into.path()).await.unwrap_err();
        assert!(
            matches!(e, AuditError::Untrusted(_)) && e.to_string().contains(why),
            "{lie:?}: {e}"
        );
    }
}

/// The release the coordinator would send for the finalized round, built from the ledger.
fn release(store: &Store, built: &Built) -> pb::ModelRelease {
    let (size, note_text) = store.checkpoints().unwrap().pop().unwrap();
    let proof = store.inclusion_proof(built.finalized, size).unwrap();
    let file = ModelFile::from_bytes(&built.model_file, std::path::Path::new("m")).unwrap();
    pb::ModelRelease {
        job: 1,
        round: 1,
        model: Some(pb::Digest {
            sha256: file.digest().0.to_vec(),
        }),
        file: Some(pb::Digest {
            sha256: fedchain_ledger::sha256(&built.model_file).to_vec(),
        }),
        file_bytes: built.model_file.len() as u64,
        record_index: built.finalized,
        record: store.record(built.finalized).unwrap().1,
        checkpoint: Some(pb::Checkpoint { note: note_text }),
        inclusion: Some(pb::Proof {
            hashes: proof
                .iter()
                .map(|h| pb::Digest { sha256: h.to_vec() })
                .collect(),
        }),
    }
}

#[test]
fn a_release_verifies_only_as_the_hospitals_committed_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), ORIGIN).unwrap();
    let built = build(&mut store);
    let good = release(&store, &built);
    let v = verify_release(1, 1, &good, &built.model_file, &trust(2)).unwrap();
    assert_eq!(v.round, 1);
    assert_eq!(v.record_index, built.finalized);
    assert_eq!(v.cosigned_by, ["h1", "h2"]);

    let refused = |r: &pb::ModelRelease, file: &[u8], quorum: usize| {
        verify_release(1, 1, r, file, &trust(quorum))
            .expect_err("must be refused")
            .to_string()
    };
    // Another file than announced.
    let mut other = built.model_file.clone();
    *other.last_mut().unwrap() ^= 1;
    assert!(refused(&good, &other, 2).contains("does not match the digest"));
    // Another job's release.
    // An earlier round's model passed off as the one asked for.
    assert!(verify_release(1, 2, &good, &built.model_file, &trust(2))
        .unwrap_err()
        .to_string()
        .contains("not round 2's"));
    assert!(verify_release(2, 1, &good, &built.model_file, &trust(2))
        .unwrap_err()
        .to_string()
        .contains("does not finalize this model for job 2"));
    // A checkpoint short of the researcher's quorum.
    assert!(refused(&good, &built.model_file, 3).contains("quorum"));
    // A proof that does not put the record in the checkpoint.
    let mut bad_proof = good.clone();
    bad_proof.inclusion.as_mut().unwrap().hashes[0].sha256[0] ^= 1;
    assert!(refused(&bad_proof, &built.model_file, 2).contains("not in the checkpoint's tree"));
    // A record index that is not the record's.
    let mut moved = good.clone();
    moved.record_index -= 1;
    assert!(refused(&moved, &built.model_file, 2).contains("not in the checkpoint's tree"));
}

/// Verifies the release of `file` (announced as `good` announced its file) and then its
/// preprocessing against the ledger served with `lie`.
async fn preprocessing_of(
    store: &Arc<Mutex<Store>>,
    good: &pb::ModelRelease,
    file: &[u8],
    lie: Lie,
) -> Result<fedchain_audit::VerifiedPreprocessing, AuditError> {
    let mut r = good.clone();
    r.file = Some(pb::Digest {
        sha256: fedchain_ledger::sha256(file).to_vec(),
    });
    r.file_bytes = file.len() as u64;
    // The parameters are the ones the hospitals committed to: the release itself verifies.
    let v = verify_release(1, 1, &r, file, &trust(2)).unwrap();
    let channel = in_process(FakeLedger {
        store: store.clone(),
        lie,
    })
    .await;
    verify_preprocessing(&mut LedgerServiceClient::new(channel), 1, &v).await
}

/// The preprocessing a file carries is not covered by the parameter digest, so a dishonest
/// coordinator could release the committed parameters with another scaling, other columns or
/// none of its statistics. `verify_preprocessing` accepts only the job's schema and the
/// statistics round 0 finalized, from records included in the release's checkpoint.
#[tokio::test]
async fn a_releases_preprocessing_verifies_only_as_the_ledger_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), ORIGIN).unwrap();
    let built = build(&mut store);
    let good = release(&store, &built);
    let store = Arc::new(Mutex::new(store));

    let ok = preprocessing_of(&store, &good, &built.model_file, Lie::None)
        .await
        .unwrap();
    assert_eq!((ok.job_record, ok.statistics_record), (1, 5));

    let model = ModelFile::from_bytes(&built.model_file, std::path::Path::new("m")).unwrap();
    let with = |p: Option<Preprocessing>| {
        let f = ModelFile::new(model.spec().clone(), model.params().to_vec()).unwrap();
        match p {
            Some(p) => f.with_preprocessing(p).unwrap().to_bytes().unwrap(),
            None => f.to_bytes().unwrap(),
        }
    };
    let mut shifted = STATISTICS;
    shifted[0] += 10.0;
    let mut reordered = preprocessing(&STATISTICS);
    reordered.scaling.feature_names.swap(0, 1);
    let mut bare = preprocessing(&STATISTICS);
    bare.statistics = None;
    for (file, lie, why) in [
        (
            with(Some(preprocessing(&shifted))),
            Lie::None,
            "does not come from the statistics the hospitals finalized in round 0",
        ),
        (with(Some(reordered)), Lie::None, "is not job 1's schema"),
        (
            with(Some(bare)),
            Lie::None,
            "does not carry the pooled statistics",
        ),
        (with(None), Lie::None, "carries no preprocessing"),
        // The JobSubmitted record served altered: its bytes are not the checkpoint's leaf.
        (
            built.model_file.clone(),
            Lie::AlteredRecord,
            "record 1 is not in the checkpoint's tree",
        ),
    ] {
        let e = preprocessing_of(&store, &good, &file, lie)
            .await
            .unwrap_err();
        assert!(
            matches!(e, AuditError::Untrusted(_)) && e.to_string().contains(why),
            "{why}: {e}"
        );
    }
}

#[tokio::test]
async fn checkpoints_are_listed_page_by_page_and_checked_against_the_trust_file() {
    use fedchain_audit::checkpoints;
    let tmp = tempfile::tempdir().unwrap();
    let mut store = Store::open(tmp.path(), ORIGIN).unwrap();
    build(&mut store);
    // A newer checkpoint that no hospital cosigned yet: the newest must carry the quorum.
    store
        .append(entry(
            "coordinator",
            Role::Coordinator,
            Body::RequestRejected {
                request: "x".into(),
                reason: "y".into(),
            },
        ))
        .unwrap();
    store.checkpoint(&log_key()).unwrap();
    let offline = checkpoints::of_store(&store, &trust(2)).unwrap();
    assert_eq!(offline.len(), 2);
    assert!(
        offline[0].ok && offline[0].problem.is_none(),
        "{:?}",
        offline[0]
    );
    assert_eq!(offline[0].cosigners, ["h1", "h2"]);
    assert!(
        !offline[1].ok,
        "the newest lacks its quorum: {:?}",
        offline[1]
    );
    let channel = in_process(FakeLedger {
        store: Arc::new(Mutex::new(store)),
        lie: Lie::None,
    })
    .await;
    let online = checkpoints::of_service(&mut LedgerServiceClient::new(channel), &trust(2))
        .await
        .unwrap();
    assert_eq!(online[0], offline[0]);
    // Live, the newest may still be collecting cosignatures: a note, since an older one has them.
    assert!(online[1].ok, "{:?}", online[1]);
    assert!(
        online[1]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("still collecting")),
        "{:?}",
        online[1]
    );
    // A note whose log signature does not verify is a failure whatever its place.
    let mut notes: Vec<String> = vec![];
    let forged = fedchain_ledger::note::Checkpoint {
        origin: ORIGIN.into(),
        size: 1,
        root: [0; 32],
        extensions: vec![],
    }
    .sign(&[&hospital_key(0)])
    .unwrap();
    notes.push(forged);
    let checked = checkpoints::check(&notes, &trust(2), true);
    assert!(!checked[0].ok && checked[0].problem.is_some());
}
