//! A hostile hospital against the real coordinator: the test plays hospital h1 (it holds h1's
//! folder: certificate, identity key, key share) over mutual TLS, while h2 and h3 run real workers.
//! Every malformed, forged, replayed or misdirected request is refused with a precise gRPC status,
//! the refusals the issue asks for leave a ledger record, and the job still completes correctly.

use std::path::Path;
use std::time::Duration;

use fedchain_consortium::tls::client_tls;
use fedchain_crypto::djn::{encode_ciphertexts, EncryptionTable};
use fedchain_crypto::keys::PublicKey;
use fedchain_crypto::quantize::Rounding;
use fedchain_ledger::note::NoteSigner;
use fedchain_ledger::record::Body;
use fedchain_ledger::sha256;
use fedchain_ledger::store::Store;
use fedchain_proto::limits;
use fedchain_proto::v1 as pb;
use fedchain_protocol as job;
use pb::training_service_client::TrainingServiceClient;
use rand::SeedableRng;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use fedchain_tests::{as_party, logs, replay_ledger, s, start_with};
use fedchain_tests::{fedchain, json, ok_stdout};

fn header(
    job: u64,
    round: u64,
    bytes: &[u8],
    ciphertexts: u32,
    signature: [u8; 64],
) -> pb::Submission {
    pb::Submission {
        job,
        round,
        hospital: "h1".into(),
        ciphertexts,
        total_bytes: bytes.len() as u64,
        ciphertext_digest: Some(pb::Digest {
            sha256: sha256(bytes).to_vec(),
        }),
        signature: signature.to_vec(),
    }
}

fn stream(h: pb::Submission, bytes: &[u8]) -> Vec<pb::UpdateChunk> {
    use pb::update_chunk::Part;
    let mut v = vec![pb::UpdateChunk {
        part: Some(Part::Submission(h)),
    }];
    v.extend(bytes.chunks(limits::CHUNK_BYTES).map(|c| pb::UpdateChunk {
        part: Some(Part::Chunk(c.to_vec())),
    }));
    v
}

async fn submit(
    client: &mut TrainingServiceClient<Channel>,
    msgs: Vec<pb::UpdateChunk>,
) -> Result<pb::SubmitAck, tonic::Status> {
    client
        .submit_update(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

fn sign(id: &NoteSigner, job: u64, round: u64, bytes: &[u8]) -> [u8; 64] {
    id.sign_message(&Body::submission_message(job, round, "h1", &sha256(bytes)))
}

#[test]
fn hostile_requests_are_refused_recorded_and_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cl = start_with(dir, &["h2", "h3"]);
    std::fs::write(
        dir.join("job.toml"),
        "dataset = \"breast-cancer\"\nmodel = \"mlp\"\nrounds = 2\nround_deadline_seconds = 6\n",
    )
    .unwrap();
    let alice = dir.join("c/researchers/alice");
    ok_stdout(&fedchain(&as_party(
        &["job", "submit", s(&dir.join("job.toml"))],
        &cl.url,
        s(&alice),
    )));
    let h1 = dir.join("c/hospitals/h1");
    let id = NoteSigner::from_skey(
        std::fs::read_to_string(h1.join("identity.skey"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let pk = PublicKey::load(&h1.join("public.key")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = || async {
        Endpoint::from_shared(cl.url.clone())
            .unwrap()
            .tls_config(client_tls(&h1, "h1").unwrap())
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let (bytes, n) = rt.block_on(async {
        let ch = Endpoint::from_shared(cl.url.clone())
            .unwrap()
            .tls_config(client_tls(&h1, "h1").unwrap())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = TrainingServiceClient::new(ch)
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);

        // Enrollment: another hospital's name, a key that is not h1's, then the real thing.
        let enroll = |hospital: &str, key: Vec<u8>| pb::EnrollRequest {
            job_id: 1,
            hospital: hospital.into(),
            identity_key: key,
            declared_samples: 100,
            share_micros_per_ciphertext: 0,
        };
        let e = c
            .enroll(enroll("h2", id.verifier().public_key().to_vec()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = c.enroll(enroll("h1", vec![7; 32])).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = c
            .enroll(pb::EnrollRequest {
                job_id: 99,
                ..enroll("h1", id.verifier().public_key().to_vec())
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        c.enroll(enroll("h1", id.verifier().public_key().to_vec()))
            .await
            .unwrap();

        // A witness state the log never signed cannot stop the coordinator: a "checkpoint" far
        // beyond the ledger, signed by h1 alone, and bytes that are no note at all.
        let forged = fedchain_ledger::note::Checkpoint {
            origin: "fedchain-log".into(),
            size: 1_000_000,
            root: [1; 32],
            extensions: vec![],
        }
        .sign(&[&id])
        .unwrap();
        for note in [forged, "not a note".to_string()] {
            let e = c
                .tasks(pb::TaskRequest {
                    hospital: "h1".into(),
                    witnessed: Some(pb::Checkpoint { note }),
                    share_micros_per_ciphertext: 0,
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(
                e.message().contains("not a checkpoint this log signed"),
                "{e:?}"
            );
        }

        // A request larger than the protocol's message limit: RESOURCE_EXHAUSTED, as for an
        // oversized stream (tonic's own answer would be OUT_OF_RANGE).
        let mut big = TrainingServiceClient::new(connect().await)
            .max_encoding_message_size(2 * limits::MAX_MESSAGE_BYTES);
        let e = big
            .enroll(enroll("h1", vec![7; limits::MAX_MESSAGE_BYTES + 1]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

        // The statistics round's task tells h1 what to send. h1 enrolled without a share cost;
        // the one its task stream reports is what the coordinator judges its shares by (and
        // how a restarted coordinator gets it back).
        let mut tasks = c
            .tasks(pb::TaskRequest {
                hospital: "h1".into(),
                witnessed: None,
                share_micros_per_ciphertext: 4321,
            })
            .await
            .unwrap()
            .into_inner();
        let st = json(&fedchain(&as_party(
            &["job", "status", "1", "--json"],
            &cl.url,
            s(&alice),
        )));
        assert_eq!(st["share_costs_us"]["h1"], 4321, "{st}");
        let train = loop {
            let t = tokio::time::timeout(Duration::from_secs(30), tasks.message())
                .await
                .expect("a task within 30 s")
                .unwrap()
                .unwrap();
            if let Some(pb::task::Kind::Train(t)) = t.kind {
                break t;
            }
        };
        assert_eq!(train.round, 0);
        let codec = job::codec(
            &pk,
            train.quantization.as_ref().unwrap(),
            fedchain_protocol::Enrollment {
                rows: train.total_weight,
                hospitals: train.contributors,
            },
        )
        .unwrap();
        let len = 60; // 30 features: means, then mean squares
        let table = EncryptionTable::new(&pk);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let good = codec
            .encrypt(&table, &vec![0.5; len], 100, Rounding::Nearest, &mut rng)
            .unwrap();
        let n = good.ciphertexts.len() as u32;
        let bytes = encode_ciphertexts(&pk, &good.ciphertexts);

        // No header first.
        let e = submit(
            &mut c,
            vec![pb::UpdateChunk {
                part: Some(pb::update_chunk::Part::Chunk(bytes.clone())),
            }],
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        // More than any stream may carry.
        let mut huge = header(1, 0, &bytes, n, sign(&id, 1, 0, &bytes));
        huge.total_bytes = limits::MAX_STREAM_BYTES + 1;
        let e = submit(&mut c, stream(huge, &bytes)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        // Bytes that are not what the header announced.
        let mut lying = header(1, 0, &bytes, n, sign(&id, 1, 0, &bytes));
        lying.ciphertext_digest = Some(pb::Digest {
            sha256: vec![0; 32],
        });
        let e = submit(&mut c, stream(lying, &bytes)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        // Another job, another round.
        let e = submit(
            &mut c,
            stream(header(2, 0, &bytes, n, sign(&id, 2, 0, &bytes)), &bytes),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let e = submit(
            &mut c,
            stream(header(1, 1, &bytes, n, sign(&id, 1, 1, &bytes)), &bytes),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        // A forged signature (signed for another round).
        let e = submit(
            &mut c,
            stream(header(1, 0, &bytes, n, sign(&id, 1, 7, &bytes)), &bytes),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("signature"), "{e:?}");
        // Wrong vector length: one ciphertext short.
        let short = encode_ciphertexts(&pk, &good.ciphertexts[1..]);
        let e = submit(
            &mut c,
            stream(header(1, 0, &short, n - 1, sign(&id, 1, 0, &short)), &short),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        // Invalid ciphertexts: the right length, every value zero (not a unit mod N^2).
        let mut zeros = bytes.clone();
        let body_start = zeros.len() - n as usize * pk.ciphertext_len();
        zeros[body_start..].fill(0);
        let e = submit(
            &mut c,
            stream(header(1, 0, &zeros, n, sign(&id, 1, 0, &zeros)), &zeros),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // The honest submission goes through, once; its replay is refused.
        submit(
            &mut c,
            stream(header(1, 0, &bytes, n, sign(&id, 1, 0, &bytes)), &bytes),
        )
        .await
        .unwrap();
        let e = submit(
            &mut c,
            stream(header(1, 0, &bytes, n, sign(&id, 1, 0, &bytes)), &bytes),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e.code(), Code::AlreadyExists | Code::FailedPrecondition),
            "{e:?}"
        );

        // The round closes once h2 and h3 submit; h1 (a first decryptor) sends a share that is
        // not a decryption of the aggregate: a well-formed encoding of someone else's values.
        let decrypt = loop {
            let t = tokio::time::timeout(Duration::from_secs(60), tasks.message())
                .await
                .expect("a decrypt task within 60 s")
                .unwrap()
                .unwrap();
            if let Some(pb::task::Kind::Decrypt(d)) = t.kind {
                break d;
            }
        };
        let share = fedchain_crypto::threshold::partial_decrypt(
            &pk,
            &fedchain_crypto::keys::KeyShare::load(&h1.join("share.key")).unwrap(),
            &good.ciphertexts,
            &decrypt.context,
            &mut rng,
        )
        .unwrap()
        .to_bytes(&pk);
        use pb::share_chunk::Part;
        let e = c
            .submit_decryption_share(tokio_stream::iter(vec![
                pb::ShareChunk {
                    part: Some(Part::Share(pb::DecryptionShare {
                        job: 1,
                        round: 0,
                        hospital: "h1".into(),
                        party: 1,
                        aggregate: decrypt.aggregate.clone(),
                        total_bytes: share.len() as u64,
                        share_digest: Some(pb::Digest {
                            sha256: sha256(&share).to_vec(),
                        }),
                        ciphertexts: decrypt.ciphertexts.clone(),
                    })),
                },
                pb::ShareChunk {
                    part: Some(Part::Chunk(share.clone())),
                },
            ]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // Round 1: h1 submits an honest update, then "dies" before its decryption share. As a
        // first decryptor it is waited for, then the backup h3 is asked and the round completes.
        let train = loop {
            let t = tokio::time::timeout(Duration::from_secs(60), tasks.message())
                .await
                .expect("round 1's task within 60 s")
                .unwrap()
                .unwrap();
            if let Some(pb::task::Kind::Train(t)) = t.kind {
                if t.round == 1 {
                    break t;
                }
            }
        };
        let Some(pb::train_task::ModelFile::Inline(model)) = train.model_file else {
            panic!("the demo's MLP travels inline");
        };
        let params = fedchain_models::ModelFile::from_bytes(&model, Path::new("global"))
            .unwrap()
            .params()
            .len();
        let codec = job::codec(
            &pk,
            train.quantization.as_ref().unwrap(),
            fedchain_protocol::Enrollment {
                rows: train.total_weight,
                hospitals: train.contributors,
            },
        )
        .unwrap();
        let update = codec
            .encrypt(&table, &vec![0.0; params], 100, Rounding::Nearest, &mut rng)
            .unwrap();
        let update = encode_ciphertexts(&pk, &update.ciphertexts);
        let k = (update.len() / pk.ciphertext_len()) as u32;
        submit(
            &mut c,
            stream(header(1, 1, &update, k, sign(&id, 1, 1, &update)), &update),
        )
        .await
        .unwrap();

        // Round 1's model is out for evaluation: reports with figures no evaluation gives, of
        // another model, or under a signature that is not h1's are refused; the forged one is
        // recorded.
        let evaluate = loop {
            let t = tokio::time::timeout(Duration::from_secs(60), tasks.message())
                .await
                .expect("round 1's evaluation task within 60 s")
                .unwrap()
                .unwrap();
            if let Some(pb::task::Kind::Evaluate(e)) = t.kind {
                if e.round == 1 {
                    break e;
                }
            }
        };
        let model: [u8; 32] = evaluate.model.as_ref().unwrap().sha256[..]
            .try_into()
            .unwrap();
        let report = |accuracy: f64, model: [u8; 32], signer: &NoteSigner| {
            let metrics = vec![("accuracy".to_string(), accuracy)];
            let message = Body::evaluation_message(1, 1, "h1", &model, 50, &metrics);
            pb::Evaluation {
                job: 1,
                round: 1,
                hospital: "h1".into(),
                rows: 50,
                metrics: vec![pb::Metric {
                    name: "accuracy".into(),
                    value: accuracy,
                }],
                model: Some(pb::Digest {
                    sha256: model.to_vec(),
                }),
                signature: signer.sign_message(&message).to_vec(),
            }
        };
        let e = c
            .submit_evaluation(report(1.5, model, &id))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let mut other = model;
        other[0] ^= 1;
        let e = c
            .submit_evaluation(report(0.9, other, &id))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let forger = NoteSigner::new("h1", [7; 32]).unwrap();
        let e = c
            .submit_evaluation(report(0.9, model, &forger))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        (bytes, n)
    });

    // The job still completes (h1 sits out round 2, which closes at its deadline with h2, h3).
    let out = fedchain(&as_party(
        &["job", "watch", "1", "--json"],
        &cl.url,
        s(&alice),
    ));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        logs(dir)
    );
    // h1 was a straggler in round 2: the round closed at its deadline without it, and its late
    // submission is refused (and recorded).
    rt.block_on(async {
        let mut c = TrainingServiceClient::new(connect().await);
        let late = header(1, 2, &bytes, n, sign(&id, 1, 2, &bytes));
        let e = submit(&mut c, stream(late, &bytes)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    });
    std::thread::sleep(Duration::from_millis(500));
    drop(cl);

    // Refusals are on the ledger; h1 is penalised for its invalid share; everything replays.
    check_ledger(dir);
}

fn check_ledger(dir: &Path) {
    let store = Store::open(&dir.join("ledger"), "fedchain-log").unwrap();
    let mut rejected = Vec::new();
    let mut invalid_share = false;
    let mut penalties = Vec::new();
    for i in 0..store.len() {
        match store.record(i).unwrap().0.body {
            Body::RequestRejected { request, reason } => {
                rejected.push(format!("{request}: {reason}"))
            }
            Body::DecryptionShare {
                hospital, verified, ..
            } if hospital == "h1" => invalid_share |= !verified,
            Body::CreditsMoved {
                movement:
                    fedchain_ledger::credits::Movement::Penalty {
                        hospital, reason, ..
                    },
            } if hospital == "h1" => penalties.push(reason),
            _ => {}
        }
    }
    let all = rejected.join("\n");
    for want in [
        "not collecting submissions for round 1",
        "not collecting submissions for round 2",
        "job 2 is not collecting",
        "signature",
        "ciphertexts",
        "must start with a Submission header",
        "at most 268435456 may be streamed",
        "do not match the digest the header announced",
        "may not act as hospital \"h2\"",
        "identity key is not the one the consortium provisioned",
        "the evaluation's signature does not verify with h1's identity key",
    ] {
        assert!(
            all.contains(want),
            "no rejection record with {want:?}:\n{all}"
        );
    }
    assert!(invalid_share, "the invalid share is recorded as such");
    // Round 0: an invalid share; round 1: no share although asked; round 2: no update, and so
    // not asked to decrypt (a spread decryption asks the round's participants) nor penalised
    // for a share.
    assert_eq!(
        penalties,
        vec!["invalid_share", "missed_share", "missed_submission"],
        "h1's penalties, round by round"
    );
    let records = store.len();
    drop(store);

    // The same trail as FHIR AuditEvents for a SIEM: one per record, refusals as minor failures
    // with their reason, each carrying its record's exact bytes and digest.
    let bundle = json(&fedchain(&[
        "audit",
        "export",
        "--format",
        "fhir-auditevent",
        "--ledger",
        s(&dir.join("ledger")),
    ]));
    assert_eq!(bundle["resourceType"], "Bundle");
    let events = bundle["entry"].as_array().unwrap();
    assert_eq!(events.len() as u64, records);
    let mut refusals = 0;
    for (i, e) in events.iter().enumerate() {
        let r = &e["resource"];
        assert_eq!(r["resourceType"], "AuditEvent");
        assert!(["C", "R", "U", "D", "E"].contains(&r["action"].as_str().unwrap()));
        assert_eq!(r["entity"][0]["what"]["identifier"]["value"], i.to_string());
        if r["type"]["code"] == "request_rejected" {
            refusals += 1;
            assert_eq!(r["outcome"], "4", "{r}");
            assert!(r["outcomeDesc"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }
    assert_eq!(refusals, rejected.len());
    let report = json(&replay_ledger(dir, None));
    assert_eq!(report["ok"], true, "{report}");
}

/// A hospital refused in a loop cannot flood the ledger: every request is answered with its
/// error, the first burst is recorded one by one, and the rest is recorded as one count.
#[test]
fn a_hospital_refused_in_a_loop_cannot_flood_the_ledger() {
    const SENT: usize = 50;
    let burst = fedchain_coordinator::refusals::BURST as usize;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cl = start_with(dir, &[]);
    let h1 = dir.join("c/hospitals/h1");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = std::time::Instant::now();
    rt.block_on(async {
        let ch = Endpoint::from_shared(cl.url.clone())
            .unwrap()
            .tls_config(client_tls(&h1, "h1").unwrap())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = TrainingServiceClient::new(ch);
        for i in 0..SENT {
            let e = c
                .enroll(pb::EnrollRequest {
                    job_id: 1,
                    hospital: "h2".into(),
                    identity_key: vec![0; 32],
                    declared_samples: 1,
                    share_micros_per_ciphertext: 0,
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "request {i}: {e:?}");
        }
    });
    // On a slow machine the bucket may have earned a refusal or two back meanwhile.
    let refilled =
        (started.elapsed().as_millis() as u64 / fedchain_coordinator::refusals::REFILL_MS) as usize;
    // The count is recorded once h1 has been quiet for a refill interval.
    std::thread::sleep(Duration::from_millis(
        fedchain_coordinator::refusals::REFILL_MS + 1_500,
    ));
    for p in &mut cl.procs.0 {
        let _ = p.kill();
        let _ = p.wait();
    }
    let store = Store::open(&dir.join("ledger"), "fedchain-log").unwrap();
    let mut one_by_one = 0;
    let mut summaries = Vec::new();
    for i in 0..store.len() {
        let (record, _) = store.record(i).unwrap();
        if let Body::RequestRejected { request, reason } = record.body {
            assert_eq!(record.actor.id, "h1", "{request}: {reason}");
            if request == "refusals/hospital/h1" {
                summaries.push(reason);
            } else {
                assert!(reason.contains("may not act as hospital"), "{reason}");
                one_by_one += 1;
            }
        }
    }
    assert!(
        (burst..=burst + refilled).contains(&one_by_one),
        "the first burst, one record each: {one_by_one}"
    );
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    let rest = SENT - one_by_one;
    assert!(
        summaries[0].starts_with(&format!("{rest} more refusals of hospital h1")),
        "{summaries:?}"
    );
}
