//! Protocol buffers and gRPC services of fedchain, generated from `proto/fedchain/v1/*.proto` at
//! build time (prost messages, tonic 0.14 clients and servers through `tonic-prost`).
//!
//! This crate owns the wire protocol and nothing else: the `.proto` files, the generated code and
//! the [`limits`] every service applies. It has no logic and no conversions. Conversions to domain
//! types live with the domain types' users (the coordinator and the worker), so this crate depends
//! on nothing of fedchain, and a protocol change is reviewed here, in one place.
//!
//! Three services, all served by the coordinator:
//!
//! - `JobService` (`job.proto`), for researchers: submit a job, get and watch its status, download
//!   the final model with the ledger evidence behind it.
//! - `TrainingService` (`training.proto`), for hospital workers: enroll, receive tasks on a
//!   long-lived stream, submit encrypted updates and decryption shares, rebuild a round's
//!   aggregate, cosign checkpoints. Workers always dial the coordinator; the coordinator never
//!   dials a hospital, so hospitals need no inbound firewall rule.
//! - `LedgerService` (`ledger.proto`), for auditors: checkpoints, records, proofs, blobs.
//!
//! Crypto objects, ledger records and models travel as the canonical bytes their owning crates
//! define, never re-encoded, so the digests every party computes agree. No connection helpers are
//! generated (`XClient::connect` would dial without TLS): callers build a channel with their
//! mutual-TLS settings and wrap it, and apply the [`limits`] on both sides:
//!
//! ```
//! use fedchain_proto::limits;
//! use fedchain_proto::v1::training_service_server::{TrainingService, TrainingServiceServer};
//!
//! fn training_server<T: TrainingService>(service: T) -> TrainingServiceServer<T> {
//!     TrainingServiceServer::new(service)
//!         .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
//!         .max_encoding_message_size(limits::MAX_MESSAGE_BYTES)
//! }
//! ```
#![deny(missing_docs)]

/// Version 1 of the fedchain protocol (`package fedchain.v1`): messages, and for each service a
/// `*_client` and a `*_server` module. Documented by the comments of the `.proto` files.
pub mod v1 {
    #![allow(missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/fedchain.v1.rs"));
}

pub mod timing {
    //! Timing the coordinator and the workers agree on.

    /// Longest a worker waits between two attempts to reach the coordinator: 5 s. Its backoff
    /// starts at 200 ms, doubles up to this, and starts over after every successful connection.
    ///
    /// A coordinator that restarts gives every hospital this long (and a margin) to reconnect
    /// before it treats one as absent: a crash of the coordinator must not cost an honest
    /// hospital a penalty.
    pub const MAX_RECONNECT_BACKOFF_MS: u64 = 5_000;

    /// First wait of a worker's reconnection backoff: 200 ms.
    pub const MIN_RECONNECT_BACKOFF_MS: u64 = 200;
}

pub mod limits {
    //! Size limits of the protocol, chosen together: every service sets
    //! `max_decoding_message_size` and `max_encoding_message_size` to [`MAX_MESSAGE_BYTES`], every
    //! large object is streamed in slices of [`CHUNK_BYTES`], and a receiver refuses a stream whose
    //! header announces more than [`MAX_STREAM_BYTES`] or whose bytes run past what it announced.

    /// Largest encoded message any fedchain service sends or accepts: 4 MiB.
    ///
    /// Equal to the receive default of gRPC implementations (Go, C++, tonic), so that a peer in
    /// any language interoperates without configuration. The receiver refuses a larger message
    /// with `OUT_OF_RANGE` ("decoded message length too large", with both sizes). It is set on
    /// the send side too (tonic sends anything by default) so that an oversized message never
    /// crosses the network; a tonic client then sees `INTERNAL` "h2 protocol error" rather than
    /// `OUT_OF_RANGE` (grpc/grpc-rust#1334). Every unstreamed message is far smaller:
    /// a public key is `(n + 2)` values of twice the modulus size (about 77 KB for 100 hospitals
    /// at 3072 bits), a proof under 130 digests, a signed checkpoint a few KB. The margin over
    /// [`CHUNK_BYTES`] absorbs the header fields that share a message with a chunk.
    pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

    /// Length of each slice of a streamed byte string (ciphertext vectors, decryption shares,
    /// model files, blobs): 1 MiB, the last slice shorter.
    ///
    /// Large enough that per-message costs (framing, one allocation, one poll) are negligible
    /// next to the bytes, small enough that a receiver holds little beyond what it has
    /// reassembled and that HTTP/2 flow control paces a slow receiver, and a quarter of
    /// [`MAX_MESSAGE_BYTES`] so a slice with its envelope always fits. Slices need not align with
    /// ciphertexts: receivers reassemble the whole encoding before decoding it.
    pub const CHUNK_BYTES: usize = 1024 * 1024;

    /// Largest safetensors model file sent inline in a `TrainTask`: 1 MiB (one chunk).
    ///
    /// Small models (the bundled logistic regressions and MLPs) arrive with their task in one
    /// message; larger ones are fetched with `FetchModel` as a stream, which keeps every `Task`
    /// under [`MAX_MESSAGE_BYTES`] whatever the model.
    pub const MAX_INLINE_MODEL_BYTES: usize = CHUNK_BYTES;

    /// Largest TorchScript module a job spec may carry (`JobSpec.torchscript_module`): 64 MiB, a
    /// module of about 16 million parameters (float32), more than the largest model
    /// [`MAX_MODEL_FILE_BYTES`] admits, so the model is the bound, not its code.
    pub const MAX_TORCHSCRIPT_MODULE_BYTES: usize = 64 * CHUNK_BYTES;

    /// Largest encoded job spec (`SubmitJobStream`'s `total_bytes`): the largest module and 1 MiB
    /// for the rest of the spec.
    pub const MAX_SPEC_BYTES: u64 = (MAX_TORCHSCRIPT_MODULE_BYTES + CHUNK_BYTES) as u64;

    /// Largest encoded job spec sent inside a message (`SubmitJob`, `JobOffer`,
    /// `EnrollResponse`): 2 MiB. A larger one (a large TorchScript module) is submitted with
    /// `SubmitJobStream` and read by hospitals from the ledger as a blob, by its digest.
    pub const MAX_INLINE_SPEC_BYTES: usize = 2 * CHUNK_BYTES;

    /// Largest safetensors model file of a job (its parameters at 4 bytes each and a header):
    /// 64 MiB, about 16 million parameters. Files over [`MAX_INLINE_MODEL_BYTES`] are fetched
    /// with `FetchModel`, and downloads are streamed, so only the encrypted update's size
    /// ([`MAX_CIPHERTEXTS_PER_SUBMISSION`]) bounds a model more tightly.
    pub const MAX_MODEL_FILE_BYTES: usize = 64 * CHUNK_BYTES;

    /// Most ciphertexts in one submission (and so in an aggregate or a decryption share): 2^18.
    ///
    /// A 2048-bit key packs about 50 quantized values per ciphertext at typical settings, so this
    /// admits models of about 13 million parameters, far above the bundled architectures, while
    /// bounding what one hospital can make the coordinator store and multiply per round: 128 MiB
    /// of ciphertexts at 2048 bits, 192 MiB at 3072 bits.
    pub const MAX_CIPHERTEXTS_PER_SUBMISSION: u32 = 1 << 18;

    /// Most bytes in one streamed object (the `total_bytes` a header announces, a model file, a
    /// blob): 256 MiB.
    ///
    /// Holds the largest ciphertext vector [`MAX_CIPHERTEXTS_PER_SUBMISSION`] allows at 3072-bit
    /// keys (192 MiB plus a few header bytes) with room to spare, and bounds the memory a single
    /// stream can make its receiver commit before the digest is checked.
    pub const MAX_STREAM_BYTES: u64 = 256 * 1024 * 1024;

    /// Most checkpoints in one `ListCheckpoints` answer: 1,000. A cosigned note is well under a
    /// kilobyte per signer, so a page stays far below [`MAX_MESSAGE_BYTES`] with a few dozen
    /// hospitals.
    pub const MAX_LISTED_CHECKPOINTS: usize = 1000;

    // The limits only work together: a chunk and its envelope must fit in a message, and the
    // largest submission at 3072-bit keys (768-byte ciphertexts) must fit in a stream.
    const _: () = assert!(CHUNK_BYTES * 2 <= MAX_MESSAGE_BYTES);
    const _: () = assert!(MAX_INLINE_MODEL_BYTES * 2 <= MAX_MESSAGE_BYTES);
    // A spec sent inline and an inline model share no message, but each fits one with room.
    const _: () = assert!(MAX_INLINE_SPEC_BYTES + CHUNK_BYTES < MAX_MESSAGE_BYTES);
    const _: () = assert!(MAX_SPEC_BYTES <= MAX_STREAM_BYTES);
    const _: () = assert!(MAX_MODEL_FILE_BYTES as u64 <= MAX_STREAM_BYTES);
    const _: () = assert!((MAX_CIPHERTEXTS_PER_SUBMISSION as u64) * 768 + 64 <= MAX_STREAM_BYTES);
}

#[cfg(test)]
mod tests {
    use super::limits::{CHUNK_BYTES, MAX_INLINE_MODEL_BYTES, MAX_MESSAGE_BYTES};
    use super::v1::{
        dataset_schema, job_event, model_download, round_bundle, task, train_task, update_chunk,
        Aggregate, Checkpoint, CosignTask, DatasetSchema, Digest, JobEvent, Metric, ModelDownload,
        ModelRelease, ModelRequest, Proof, Quantization, RoundBundle, RoundKind, Submission, Task,
        TrainTask, UpdateChunk,
    };
    use prost::Message;

    fn digest(byte: u8) -> Option<Digest> {
        Some(Digest {
            sha256: vec![byte; 32],
        })
    }

    fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
        let bytes = m.encode_to_vec();
        assert_eq!(&M::decode(bytes.as_slice()).unwrap(), m);
    }

    fn submission() -> Submission {
        Submission {
            job: 7,
            round: 3,
            hospital: "st-olav".into(),
            ciphertexts: 1234,
            total_bytes: 1234 * 512 + 9,
            ciphertext_digest: digest(1),
            signature: vec![9; 64],
        }
    }

    #[test]
    fn messages_roundtrip_through_wire_bytes() {
        let schema = DatasetSchema {
            features: vec!["age".into(), "bmi".into()],
            target: "progression".into(),
            task: Some(dataset_schema::Task::Regression(
                dataset_schema::Regression {},
            )),
            image: None,
        };
        roundtrip(&schema);
    }

    #[test]
    fn tasks_roundtrip_with_each_oneof_variant() {
        let inline = Task {
            kind: Some(task::Kind::Train(TrainTask {
                job: 7,
                round: 1,
                model: digest(2),
                model_file: Some(train_task::ModelFile::Inline(b"safetensors".to_vec())),
                deadline_unix_ms: 1_700_000_000_000,
                ..Default::default()
            })),
        };
        let fetch = Task {
            kind: Some(task::Kind::Train(TrainTask {
                job: 7,
                round: 2,
                model: digest(3),
                model_file: Some(train_task::ModelFile::Fetch(ModelRequest {
                    job: 7,
                    model: digest(3),
                })),
                deadline_unix_ms: 1_700_000_060_000,
                ..Default::default()
            })),
        };
        let cosign = Task {
            kind: Some(task::Kind::Cosign(CosignTask {
                checkpoint: Some(Checkpoint {
                    note: "fedchain.example/log\n12\nAAAA\n\n— log sig\n".into(),
                }),
                consistency: Some(Proof {
                    hashes: vec![digest(4).unwrap(), digest(5).unwrap()],
                }),
                old_size: 8,
            })),
        };
        for t in [&inline, &fetch, &cosign] {
            roundtrip(t);
        }
        // Distinct variants must stay distinct on the wire, not collapse to the same bytes.
        assert_ne!(inline.encode_to_vec(), fetch.encode_to_vec());
    }

    #[test]
    fn stream_parts_roundtrip_and_keep_their_variant() {
        let header = UpdateChunk {
            part: Some(update_chunk::Part::Submission(submission())),
        };
        let slice = UpdateChunk {
            part: Some(update_chunk::Part::Chunk(vec![0xAB; 1000])),
        };
        roundtrip(&header);
        roundtrip(&slice);
        let decoded = UpdateChunk::decode(slice.encode_to_vec().as_slice()).unwrap();
        assert!(matches!(decoded.part, Some(update_chunk::Part::Chunk(ref b)) if b.len() == 1000));

        let aggregate = RoundBundle {
            part: Some(round_bundle::Part::Aggregate(Aggregate {
                job: 7,
                round: 3,
                contributors: vec!["a".into(), "b".into(), "c".into()],
                digest: digest(6),
                ciphertexts: 1234,
                record_index: 42,
            })),
        };
        roundtrip(&aggregate);

        let release = ModelDownload {
            part: Some(model_download::Part::Release(ModelRelease {
                job: 7,
                round: 10,
                model: digest(7),
                file: digest(8),
                file_bytes: 4096,
                record_index: 99,
                record: br#"{"v":1}"#.to_vec(),
                checkpoint: Some(Checkpoint { note: "n".into() }),
                inclusion: Some(Proof {
                    hashes: vec![digest(9).unwrap()],
                }),
            })),
        };
        roundtrip(&release);

        let finished = JobEvent {
            job: 7,
            event: Some(job_event::Event::Finished(job_event::Finished {
                model: digest(7),
                metrics: vec![Metric {
                    name: "accuracy".into(),
                    value: 0.97,
                }],
                record_index: 100,
            })),
        };
        roundtrip(&finished);
    }

    #[test]
    fn a_message_without_its_oneof_decodes_as_none_for_the_receiver_to_refuse() {
        let empty = UpdateChunk::decode(&[][..]).unwrap();
        assert_eq!(empty.part, None);
    }

    #[test]
    fn a_full_chunk_or_inline_model_with_its_envelope_fits_in_one_message() {
        let slice = UpdateChunk {
            part: Some(update_chunk::Part::Chunk(vec![0; CHUNK_BYTES])),
        };
        assert!(slice.encoded_len() <= MAX_MESSAGE_BYTES);
        let task = Task {
            kind: Some(task::Kind::Train(TrainTask {
                job: u64::MAX,
                round: u64::MAX,
                model: digest(1),
                model_file: Some(train_task::ModelFile::Inline(vec![
                    0;
                    MAX_INLINE_MODEL_BYTES
                ])),
                deadline_unix_ms: u64::MAX,
                kind: RoundKind::Model as i32,
                quantization: Some(Quantization {
                    frac_bits: 40,
                    clip: f32::MAX,
                    quant_bits: u32::MAX,
                }),
                total_weight: u64::MAX,
                // The statistics of 4096 features ride along with the largest inline model.
                statistics: vec![f32::MAX; 2 * 4096 + 2],
                contributors: u64::MAX,
            })),
        };
        assert!(task.encoded_len() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let bytes = submission().encode_to_vec();
        assert!(Submission::decode(&bytes[..bytes.len() - 1]).is_err());
        let d = Digest {
            sha256: vec![7; 32],
        };
        let bytes = d.encode_to_vec();
        assert!(Digest::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
