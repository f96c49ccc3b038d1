//! The researchers' service: submit a job, follow it, download its model.

use super::*;

#[tonic::async_trait]
impl JobService for Coordinator {
    async fn submit_job(&self, req: Request<pb::JobSpec>) -> SResult<Response<pb::JobStatus>> {
        let peer = self.shared.authorize(&req, &[Role::Researcher])?;
        self.submit(peer, req.get_ref()).map(Response::new)
    }

    async fn submit_job_stream(
        &self,
        req: Request<Streaming<pb::SpecChunk>>,
    ) -> SResult<Response<pb::JobStatus>> {
        let peer = self.shared.authorize(&req, &[Role::Researcher])?;
        match read_spec(req.into_inner()).await {
            Ok(spec) => self.submit(peer, &spec).map(Response::new),
            // On the ledger as a refused submission is: the researcher's act, with the reason.
            Err(status) => {
                let s = &self.shared;
                let mut st = s.lock();
                let request = format!("submit/job/researcher/{}", peer.name);
                Err(s.reject_as(&mut st, LRole::Researcher, &peer.name, request, status))
            }
        }
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> SResult<Response<pb::JobList>> {
        let peer = self
            .shared
            .authorize(&req, &[Role::Researcher, Role::Auditor])?;
        let st = self.shared.lock();
        let jobs = st
            .jobs
            .values()
            .filter(|j| peer.role == Role::Auditor || j.researcher == peer.name)
            .map(|j| self.shared.status(j))
            .collect();
        Ok(Response::new(pb::JobList { jobs }))
    }

    async fn cancel_job(&self, req: Request<pb::JobId>) -> SResult<Response<pb::JobStatus>> {
        let peer = self.shared.authorize(&req, &[Role::Researcher])?;
        let id = req.get_ref().id;
        let s = &self.shared;
        let mut st = s.lock();
        let State { store, jobs, .. } = &mut *st;
        let env = s.env(store);
        let job = jobs.get_mut(&id).ok_or_else(|| job_not_found(id))?;
        let writes = job
            .cancel(&peer.name, now_ms(), &env)
            .map_err(|e| job_status(&e))?;
        s.apply(&mut st, id, 0, writes)?;
        let status = s.status(&st.jobs[&id]);
        drop(st);
        s.bump();
        Ok(Response::new(status))
    }

    async fn get_job(&self, req: Request<pb::JobId>) -> SResult<Response<pb::JobStatus>> {
        self.shared
            .authorize(&req, &[Role::Researcher, Role::Auditor, Role::Hospital])?;
        let st = self.shared.lock();
        let id = req.get_ref().id;
        let job = st.jobs.get(&id).ok_or_else(|| job_not_found(id))?;
        Ok(Response::new(self.shared.status(job)))
    }

    type WatchJobStream = BoxStream<pb::JobEvent>;

    async fn watch_job(&self, req: Request<pb::JobId>) -> SResult<Response<Self::WatchJobStream>> {
        self.shared
            .authorize(&req, &[Role::Researcher, Role::Auditor, Role::Hospital])?;
        let id = req.get_ref().id;
        if !self.shared.lock().jobs.contains_key(&id) {
            return Err(job_not_found(id));
        }
        let leaf = leaf_cert(&req).unwrap_or_default();
        let shared = self.shared.clone();
        let mut version = shared.version.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut sent_metrics: BTreeSet<u64> = BTreeSet::new();
            let mut sent_declines: BTreeSet<u64> = BTreeSet::new();
            let mut last: Option<(u64, i32, usize)> = None;
            loop {
                if let Err(status) = shared.check_revoked(&leaf) {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let (events, done) = {
                    let st = shared.lock();
                    let Some(job) = st.jobs.get(&id) else { return };
                    watch_events(job, &mut sent_metrics, &mut sent_declines, &mut last)
                };
                for e in events {
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                // `closing` is read before waiting too: a stop that came between `authorize` and
                // `subscribe` bumped a version this receiver never sees change.
                if done
                    || shared.closing.load(Ordering::SeqCst)
                    || version.changed().await.is_err()
                    || shared.closing.load(Ordering::SeqCst)
                {
                    // A coordinator that stopped on its own says why before the stream ends.
                    if let Some(status) = shared.halt_status() {
                        let _ = tx.send(Err(status)).await;
                    }
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DownloadModelStream = BoxStream<pb::ModelDownload>;

    async fn download_model(
        &self,
        req: Request<pb::DownloadRequest>,
    ) -> SResult<Response<Self::DownloadModelStream>> {
        let peer = self
            .shared
            .authorize(&req, &[Role::Researcher, Role::Auditor])?;
        let id = req.get_ref().job;
        let asked = req.get_ref().round;
        let (release, file) = {
            let st = self.shared.lock();
            let job = st.jobs.get(&id).ok_or_else(|| job_not_found(id))?;
            if peer.role == Role::Researcher && peer.name != job.researcher {
                return Err(Status::permission_denied(format!(
                    "job {id} belongs to researcher {:?}, not {peer}",
                    job.researcher
                )));
            }
            let round =
                match asked {
                    Some(0) => return Err(Status::invalid_argument(
                        "round 0 is the statistics round: it produces the pooled feature moments, \
                         not a model; model rounds count from 1",
                    )),
                    Some(r) => r,
                    None if job.phase == JobPhase::Finished => job.last_round(),
                    None => {
                        return Err(Status::failed_precondition(format!(
                            "job {id} is {}: only a finished job has a final model; ask for a \
                         finalized round's model instead (rounds finalized: {}){}",
                            job_state(job).as_str_name(),
                            finalized_rounds(job),
                            if job.reason.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", job.reason)
                            }
                        )))
                    }
                };
            let released = job.released.get(&round).copied().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "round {round} of job {id} has not finalized (rounds finalized: {})",
                    finalized_rounds(job)
                ))
            })?;
            let index = released.record;
            // The latest checkpoint covering the record that a quorum of hospitals cosigned
            // already (the newest one may still be collecting cosignatures).
            let (size, note) = st
                .store
                .checkpoints()
                .map_err(internal)?
                .into_iter()
                .filter(|(size, note)| *size > index && self.shared.has_quorum(note))
                .max_by_key(|(size, _)| *size)
                .ok_or_else(|| {
                    Status::unavailable(format!(
                        "no checkpoint covering round {round}'s model is cosigned by a quorum of \
                         hospitals yet; retry in a few seconds"
                    ))
                })?;
            let (_, record) = st.store.record(index).map_err(internal)?;
            let proof = st.store.inclusion_proof(index, size).map_err(internal)?;
            // The latest model's file is the one the job keeps (its blob's bytes): shared, not
            // read again, which at 10M parameters is 40 MB and sled's copies of it.
            let file = if job.finalized.map(|(r, _)| r) == Some(round) {
                job.model_file.clone()
            } else {
                st.store
                    .blob_shared(&released.file)
                    .map_err(internal)?
                    .map(Bytes::from_owner)
                    .ok_or_else(|| internal(format!("round {round}'s model file is missing")))?
            };
            let release = pb::ModelRelease {
                job: id,
                round,
                model: pb_digest(&released.model),
                file: pb_digest(&released.file),
                file_bytes: file.len() as u64,
                record_index: index,
                record,
                checkpoint: Some(pb::Checkpoint { note }),
                inclusion: Some(pb_proof(&proof)),
            };
            (release, file)
        };
        use pb::model_download::Part;
        let header = tokio_stream::once(Ok(pb::ModelDownload {
            part: Some(Part::Release(release)),
        }));
        let file = chunk_stream(file, |data| pb::ModelDownload {
            part: Some(Part::Chunk(pb::Chunk { data })),
        });
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
            header, file,
        ))))
    }
}

/// The watch events of `job` not sent yet, and whether the watch is over.
fn watch_events(
    job: &Job,
    sent_metrics: &mut BTreeSet<u64>,
    sent_declines: &mut BTreeSet<u64>,
    last: &mut Option<(u64, i32, usize)>,
) -> (Vec<pb::JobEvent>, bool) {
    use pb::job_event::Event;
    let mut out = Vec::new();
    let ev = |event| pb::JobEvent {
        job: job.id,
        event: Some(event),
    };
    for d in declined(job) {
        if sent_declines.insert(d.record_index) {
            out.push(ev(Event::Declined(d)));
        }
    }
    if let Some(p) = progress(job) {
        let key = (p.round, p.phase, p.participants.len());
        if *last != Some(key) {
            *last = Some(key);
            if p.phase != pb::RoundPhase::Finalized as i32 || p.round == 0 {
                out.push(ev(Event::Round(p)));
            }
        }
    }
    // A model round's line goes out once every hospital scored its model, or when the job ends.
    if let Some((r, _)) = job.finalized {
        for round in 1..=r {
            if sent_metrics.contains(&round) {
                continue;
            }
            let complete = job.evaluated_by_all(round) || job.terminal() || round < r;
            if complete {
                sent_metrics.insert(round);
                out.push(ev(Event::Round(pb::RoundProgress {
                    round,
                    phase: pb::RoundPhase::Finalized as i32,
                    participants: Vec::new(),
                    metrics: wire_metrics(job, round),
                    model: None,
                })));
            }
        }
    }
    let record_index = job.finished_record.unwrap_or(0);
    match job.phase {
        JobPhase::Finished => {
            out.push(ev(Event::Finished(pb::job_event::Finished {
                model: pb_digest(&job.model_digest),
                metrics: wire_metrics(job, job.last_round()),
                record_index,
            })));
            (out, true)
        }
        JobPhase::Failed | JobPhase::Cancelled => {
            out.push(ev(Event::Failed(pb::job_event::Failed {
                reason: job.reason.clone(),
                // No round opened: the job ended while enrolling.
                round: job.round.as_ref().map(|_| job.round_no),
                record_index,
                cancelled: job.phase == JobPhase::Cancelled,
            })));
            (out, true)
        }
        _ => (out, false),
    }
}

/// The finalized model rounds of `job`, for messages: "none", "1" or "1..=3".
fn finalized_rounds(job: &Job) -> String {
    match (job.released.keys().next(), job.released.keys().next_back()) {
        (Some(first), Some(last)) if first == last => first.to_string(),
        (Some(first), Some(last)) => format!("{first}..={last}"),
        _ => "none".into(),
    }
}

impl Coordinator {
    /// Validates and records `spec` as `peer`'s job (both submission calls end here).
    fn submit(
        &self,
        peer: fedchain_consortium::tls::Peer,
        spec: &pb::JobSpec,
    ) -> SResult<pb::JobStatus> {
        let s = &self.shared;
        let valid = match protocol::validate(spec) {
            Ok(valid) => valid,
            // On the ledger, as the researcher's act: a refused module names the operator.
            Err(e) => {
                let status = Status::invalid_argument(e.to_string());
                let mut st = s.lock();
                let request = format!("submit/job/researcher/{}", peer.name);
                return Err(s.reject_as(&mut st, LRole::Researcher, &peer.name, request, status));
            }
        };
        let mut st = s.lock();
        let id = st.next_job;
        let now = now_ms();
        let writes = Job::submission(id, &valid, &peer.name, now, st.store.credits())
            .map_err(|e| job_status(&e))?;
        let idx = s.apply(&mut st, id, 0, writes)?;
        st.next_job += 1;
        let job = Job::new(
            id,
            valid,
            peer.name,
            idx[0],
            now + s.config.enroll_seconds * 1000,
        );
        let status = s.status(&job);
        st.jobs.insert(id, job);
        drop(st);
        s.bump();
        Ok(status)
    }
}

/// The job spec of a `SubmitJobStream` call: its header, at most `limits::MAX_SPEC_BYTES`, the
/// bytes it announced and no others, decoded.
async fn read_spec(mut stream: Streaming<pb::SpecChunk>) -> SResult<pb::JobSpec> {
    use pb::spec_chunk::Part;
    let header = match stream.message().await.map_err(too_large)? {
        Some(pb::SpecChunk {
            part: Some(Part::Header(h)),
        }) => h,
        _ => {
            return Err(Status::invalid_argument(
                "SubmitJobStream must start with a SpecHeader",
            ))
        }
    };
    let announced = digest_of(&header.spec)?;
    if header.total_bytes > limits::MAX_SPEC_BYTES {
        return Err(Status::resource_exhausted(format!(
            "the header announces a spec of {} bytes; a job spec may have up to {} bytes (its \
             TorchScript module up to {})",
            header.total_bytes,
            limits::MAX_SPEC_BYTES,
            limits::MAX_TORCHSCRIPT_MODULE_BYTES
        )));
    }
    let bytes = read_body(&mut stream, header.total_bytes, |c| match c.part {
        Some(Part::Chunk(b)) => Some(b),
        _ => None,
    })
    .await?;
    if sha256(&bytes) != announced {
        return Err(Status::invalid_argument(
            "the spec's bytes do not have the digest its header announced",
        ));
    }
    pb::JobSpec::decode(bytes.as_slice())
        .map_err(|e| Status::invalid_argument(format!("the streamed bytes are not a JobSpec: {e}")))
}
