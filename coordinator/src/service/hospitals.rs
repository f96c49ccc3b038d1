//! The hospitals' service: enrollment, the task stream, submissions, decryption shares,
//! cosignatures and evaluations.

use super::*;
use fedchain_ledger::store::Blob;

#[tonic::async_trait]
impl TrainingService for Coordinator {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> SResult<Response<pb::EnrollResponse>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let r = req.into_inner();
        let hospital = &s.hospitals[&h];
        let identity: [u8; 32] = match r.identity_key.as_slice().try_into() {
            Ok(key) if key == hospital.identity => key,
            _ => [0; 32],
        };
        let now = now_ms();
        let mut st = s.lock();
        let deposit = s.config.deposit;
        let State { store, jobs, .. } = &mut *st;
        let job = jobs
            .get_mut(&r.job_id)
            .ok_or_else(|| job_not_found(r.job_id))?;
        // A rejoining worker gets its recorded enrollment whatever it declares now.
        let enrolled = job.is_enrolled(&h);
        if !enrolled && identity != hospital.identity {
            if !matches!(job.phase, JobPhase::Enrolling { .. }) {
                let e = JobError::NotEnrolling {
                    job: r.job_id,
                    state: job.state_name(),
                };
                return Err(job_status(&e));
            }
            let status = Status::permission_denied(format!(
                "the identity key is not the one the consortium provisioned for hospital {h:?} \
                 (hospitals/{h}/identity.vkey)"
            ));
            return Err(s.reject(
                &mut st,
                &h,
                format!("enroll/job/{}/hospital/{h}", r.job_id),
                status,
            ));
        }
        let enrollment = Enrollment {
            hospital: &h,
            identity,
            share_index: hospital.share_index,
            declared: r.declared_samples,
            deposit,
        };
        let writes = job
            .enroll(enrollment, now, store.credits())
            .map_err(|e| job_status(&e))?;
        if let Some(writes) = writes {
            s.apply(&mut st, r.job_id, 0, writes)?;
            s.step(&mut st, r.job_id, now)?;
        }
        let job = st
            .jobs
            .get_mut(&r.job_id)
            .ok_or_else(|| job_not_found(r.job_id))?;
        // Once enrolled (its record applied): what judges when it is late to decrypt.
        job.report_share_cost(&h, r.share_micros_per_ciphertext);
        let a = job
            .answers
            .get(&h)
            .ok_or_else(|| internal("an enrollment without its record"))?;
        let response = pb::EnrollResponse {
            public_key: s.pk.to_bytes(),
            spec: wire_spec(job),
            spec_digest: pb_digest(&job.valid.digest),
            party: hospital.share_index as u32,
            deposit: a.deposit,
            record_index: a.record,
        };
        drop(st);
        s.bump();
        Ok(Response::new(response))
    }

    type TasksStream = BoxStream<pb::Task>;

    async fn tasks(&self, req: Request<pb::TaskRequest>) -> SResult<Response<Self::TasksStream>> {
        let h = self.shared.hospital_caller(&req, &req.get_ref().hospital)?;
        if let Some(witnessed) = &req.get_ref().witnessed {
            self.shared.check_witnessed(&h, &witnessed.note)?;
        }
        self.shared.refuse_if_halted()?;
        // Costs live in memory: after a restart this is where they come back from.
        let micros = req.get_ref().share_micros_per_ciphertext;
        if micros > 0 {
            let mut st = self.shared.lock();
            for job in st.jobs.values_mut().filter(|j| j.is_enrolled(&h)) {
                job.report_share_cost(&h, micros);
            }
        }
        let leaf = leaf_cert(&req).unwrap_or_default();
        let shared = self.shared.clone();
        let mut version = shared.version.subscribe();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut sent: HashSet<String> = HashSet::new();
            loop {
                // A certificate revoked while the stream is open gets no more tasks.
                if let Err(status) = shared.check_revoked(&leaf) {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let tasks = {
                    let st = shared.lock();
                    shared.tasks_for(&st, &h)
                };
                for (key, task) in tasks {
                    if sent.insert(key) && tx.send(Ok(task)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    changed = version.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
                if shared.closing.load(Ordering::SeqCst) {
                    if let Some(status) = shared.halt_status() {
                        let _ = tx.send(Err(status)).await;
                    }
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchModelStream = BoxStream<pb::Chunk>;

    async fn fetch_model(
        &self,
        req: Request<pb::ModelRequest>,
    ) -> SResult<Response<Self::FetchModelStream>> {
        let peer = self.shared.authorize(&req, &[Role::Hospital])?;
        let r = req.into_inner();
        let want = digest_of(&r.model)?;
        let st = self.shared.lock();
        let job = st.jobs.get(&r.job).ok_or_else(|| job_not_found(r.job))?;
        if !job.is_enrolled(&peer.name) {
            return Err(Status::permission_denied(format!(
                "{peer} is not enrolled in job {}",
                r.job
            )));
        }
        if want != job.model_digest {
            return Err(Status::not_found(
                "that model is not the job's current global model",
            ));
        }
        let file = job.model_file.clone();
        Ok(Response::new(Box::pin(chunk_stream(file, |data| {
            pb::Chunk { data }
        }))))
    }

    async fn submit_update(
        &self,
        req: Request<Streaming<pb::UpdateChunk>>,
    ) -> SResult<Response<pb::SubmitAck>> {
        use pb::update_chunk::Part;
        let peer = self.shared.authorize(&req, &[Role::Hospital])?;
        let s = &self.shared;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::UpdateChunk {
                part: Some(Part::Submission(s)),
            }) => s,
            _ => {
                return Err(s.refuse(
                    &peer.name,
                    format!("submit_update/hospital/{}", peer.name),
                    Status::invalid_argument("SubmitUpdate must start with a Submission header"),
                ))
            }
        };
        let request = format!(
            "submit_update/job/{}/round/{}/hospital/{}",
            header.job, header.round, peer.name
        );
        if header.hospital != peer.name || !s.hospitals.contains_key(&peer.name) {
            let status = Status::permission_denied(format!(
                "{peer} may not submit for hospital {:?}",
                header.hospital
            ));
            return Err(s.refuse(&peer.name, request, status));
        }
        let h = peer.name;
        let signature: [u8; 64] = match header.signature.as_slice().try_into() {
            Ok(sig) => sig,
            Err(_) => {
                let status =
                    Status::invalid_argument("the submission signature must be 64 bytes (Ed25519)");
                return Err(s.refuse(&h, request, status));
            }
        };
        let announced =
            digest_of(&header.ciphertext_digest).map_err(|e| s.refuse(&h, request.clone(), e))?;
        {
            // Refuse early, before reading megabytes, what cannot be accepted anyway.
            let mut st = s.lock();
            let open = st
                .jobs
                .get(&header.job)
                .map(|j| j.collecting(header.round).map(|_| ()));
            let refused = match open {
                None => Some(Status::failed_precondition(format!(
                    "job {} is not collecting submissions for round {}",
                    header.job, header.round
                ))),
                Some(Err(e)) => Some(job_status(&e)),
                Some(Ok(())) => None,
            };
            if let Some(status) = refused {
                return Err(s.reject(&mut st, &h, request, status));
            }
        }
        let bytes = read_body(
            &mut stream,
            header.total_bytes,
            |m: pb::UpdateChunk| match m.part {
                Some(Part::Chunk(c)) => Some(c),
                _ => None,
            },
        )
        .await
        .map_err(|e| s.refuse(&h, request.clone(), e))?;
        let digest = sha256(&bytes);
        if digest != announced {
            let status = Status::invalid_argument(
                "the ciphertext bytes do not match the digest the header announced",
            );
            return Err(s.refuse(&h, request, status));
        }
        let now = now_ms();
        let mut st = s.lock();
        let Some(job) = st.jobs.get_mut(&header.job) else {
            return Err(job_not_found(header.job));
        };
        let submission = Submission {
            hospital: &h,
            round: header.round,
            bytes: &bytes,
            digest,
            signature,
            ciphertexts: header.ciphertexts,
        };
        let (writes, result) = job.submit(now, submission);
        if let Err(e @ JobError::WrongRound(_)) = &result {
            return Err(s.reject(&mut st, &h, request, job_status(e)));
        }
        let idx = s.apply(&mut st, header.job, header.round, writes)?;
        result.map_err(|e| job_status(&e))?;
        s.step(&mut st, header.job, now)?;
        drop(st);
        s.bump();
        Ok(Response::new(pb::SubmitAck {
            received_bytes: bytes.len() as u64,
            ciphertexts: pb_digest(&digest),
            record_index: idx.first().copied().unwrap_or(0),
        }))
    }

    type FetchRoundStream = BoxStream<pb::RoundBundle>;

    async fn fetch_round(
        &self,
        req: Request<pb::RoundRef>,
    ) -> SResult<Response<Self::FetchRoundStream>> {
        use pb::round_bundle::Part;
        let peer = self.shared.authorize(&req, &[Role::Hospital])?;
        let r = req.into_inner();
        let st = self.shared.lock();
        let job = st.jobs.get(&r.job).ok_or_else(|| job_not_found(r.job))?;
        if !job.is_enrolled(&peer.name) {
            return Err(Status::permission_denied(format!(
                "{peer} is not enrolled in job {}",
                r.job
            )));
        }
        let round = job
            .round
            .as_ref()
            .filter(|_| job.round_no == r.round)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "round {} of job {} is not the current round",
                    r.round, r.job
                ))
            })?;
        let (Some(digest), Some(record_index)) = (round.aggregate_digest(), job.closed_record)
        else {
            return Err(Status::failed_precondition(format!(
                "round {} of job {} has not closed yet",
                r.round, r.job
            )));
        };
        let subs: Vec<(String, crate::job::SubInfo)> = job
            .subs
            .iter()
            .map(|(h, i)| (h.clone(), i.clone()))
            .collect();
        let aggregate = pb::RoundBundle {
            part: Some(Part::Aggregate(pb::Aggregate {
                job: r.job,
                round: r.round,
                contributors: round.submitted(),
                digest: pb_digest(&digest),
                ciphertexts: subs.last().map_or(0, |(_, i)| i.ciphertexts),
                record_index,
            })),
        };
        drop(st);
        let bundle = Bundle {
            shared: self.shared.clone(),
            job: r.job,
            round: r.round,
            subs: subs.into_iter(),
            current: None,
            aggregate: Some(aggregate),
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(bundle))))
    }

    async fn submit_decryption_share(
        &self,
        req: Request<Streaming<pb::ShareChunk>>,
    ) -> SResult<Response<pb::Ack>> {
        use pb::share_chunk::Part;
        let peer = self.shared.authorize(&req, &[Role::Hospital])?;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::ShareChunk {
                part: Some(Part::Share(s)),
            }) => s,
            _ => {
                return Err(Status::invalid_argument(
                    "SubmitDecryptionShare must start with a DecryptionShare header",
                ))
            }
        };
        let s = &self.shared;
        let request = format!(
            "submit_share/job/{}/round/{}/hospital/{}",
            header.job, header.round, peer.name
        );
        if header.hospital != peer.name || !s.hospitals.contains_key(&peer.name) {
            let status = Status::permission_denied(format!(
                "{peer} may not submit a share for hospital {:?}",
                header.hospital
            ));
            return Err(s.refuse(&peer.name, request, status));
        }
        let h = peer.name;
        let announced =
            digest_of(&header.share_digest).map_err(|e| s.refuse(&h, request.clone(), e))?;
        let bytes = read_body(
            &mut stream,
            header.total_bytes,
            |m: pb::ShareChunk| match m.part {
                Some(Part::Chunk(c)) => Some(c),
                _ => None,
            },
        )
        .await
        .map_err(|e| s.refuse(&h, request.clone(), e))?;
        if sha256(&bytes) != announced {
            let status = Status::invalid_argument(
                "the share bytes do not match the digest the header announced",
            );
            return Err(s.refuse(&h, request, status));
        }
        // Verify the share's proof (tens of ms of modular exponentiation) off the state lock and
        // off the async runtime: shares that arrive together are checked side by side, and no
        // other call waits for them. The round re-checks everything cheap under the lock and uses
        // this verdict only for these same bytes against the same aggregate.
        let ranges: Vec<[u64; 2]> = header
            .ciphertexts
            .iter()
            .map(|r| [r.start, r.end])
            .collect();
        let check = {
            let mut st = s.lock();
            let check = st
                .jobs
                .get(&header.job)
                .filter(|job| job.round_no == header.round)
                .and_then(|job| job.round.as_ref())
                .and_then(|round| round.share_check(&h, &ranges));
            check.filter(|_| st.checking_share.insert(h.clone()))
        };
        let (checked, bytes) = match check {
            Some(check) => {
                let joined = tokio::task::spawn_blocking(move || {
                    let checked = check.check(&bytes);
                    (checked, bytes)
                })
                .await;
                match joined {
                    Ok((checked, bytes)) => (Some(checked), bytes),
                    Err(e) => {
                        s.lock().checking_share.remove(&h);
                        return Err(internal(e));
                    }
                }
            }
            None => (None, bytes),
        };
        let now = now_ms();
        let mut st = s.lock();
        if checked.is_some() {
            st.checking_share.remove(&h);
        }
        let aggregate = digest_of(&header.aggregate).ok();
        let State { store, jobs, .. } = &mut *st;
        let Some(job) = jobs.get_mut(&header.job) else {
            return Err(job_not_found(header.job));
        };
        let share = ShareSubmission {
            hospital: &h,
            round: header.round,
            aggregate,
            share_index: header.party as usize,
            ranges: &ranges,
            bytes: &bytes,
            checked,
        };
        let (writes, result) = job.submit_share(now, share, store.credits());
        match &result {
            Err(e @ (JobError::WrongRound(_) | JobError::OtherAggregate)) => {
                return Err(s.reject(&mut st, &h, request, job_status(e)));
            }
            Err(e @ JobError::AlreadyDecrypted { .. }) => return Err(job_status(e)),
            _ => {}
        }
        let idx = s.apply(&mut st, header.job, header.round, writes)?;
        result.map_err(|e| job_status(&e))?;
        s.step(&mut st, header.job, now)?;
        drop(st);
        s.bump();
        Ok(Response::new(pb::Ack {
            record_index: idx.first().copied(),
        }))
    }

    async fn submit_cosignature(
        &self,
        req: Request<pb::Cosignature>,
    ) -> SResult<Response<pb::Ack>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let incoming = note::parse(&req.get_ref().note)
            .map_err(|e| Status::invalid_argument(format!("not a signed note: {e}")))?;
        let cp = Checkpoint::from_text(&incoming.text)
            .map_err(|e| Status::invalid_argument(format!("not a checkpoint: {e}")))?;
        let mut st = s.lock();
        let stored = st
            .store
            .checkpoints()
            .map_err(internal)?
            .into_iter()
            .find(|(size, _)| *size == cp.size)
            .map(|(_, n)| n)
            .ok_or_else(|| Status::not_found(format!("no checkpoint of size {}", cp.size)))?;
        let mut merged = note::parse(&stored).map_err(internal)?;
        if merged.text != incoming.text {
            return Err(Status::invalid_argument(
                "the cosigned checkpoint is not the one the log signed at that size",
            ));
        }
        let mut added = false;
        for sig in incoming.signatures.into_iter().filter(|sig| sig.name == h) {
            if !merged.signatures.contains(&sig) {
                merged.signatures.push(sig);
                added = true;
            }
        }
        if !added && !merged.signatures.iter().any(|sig| sig.name == h) {
            return Err(Status::invalid_argument(format!(
                "the note carries no cosignature by {h:?}"
            )));
        }
        let text = merged.encode();
        s.refuse_if_halted()?;
        st.store
            .add_cosignatures(&text, &s.known)
            .map_err(|e| match e {
                LedgerError::Storage(_) | LedgerError::Io { .. } => s.storage_failed(e),
                e => Status::invalid_argument(format!("cosignature refused: {e}")),
            })?;
        if let Some((size, note)) = st.checkpoint.as_mut() {
            if *size == cp.size {
                *note = text;
            }
        }
        let last = st.cosigned.entry(h).or_insert(0);
        *last = (*last).max(cp.size);
        Ok(Response::new(pb::Ack { record_index: None }))
    }

    async fn submit_evaluation(&self, req: Request<pb::Evaluation>) -> SResult<Response<pb::Ack>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let e = req.into_inner();
        let metrics: Vec<(String, f64)> = e
            .metrics
            .iter()
            .map(|m| (m.name.clone(), m.value))
            .collect();
        protocol::validate_evaluation(e.rows, &metrics)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let model = digest_of(&e.model)?;
        let signature = <[u8; 64]>::try_from(e.signature.as_slice()).map_err(|_| {
            Status::invalid_argument(format!(
                "an evaluation's signature is 64 bytes (Ed25519), got {}",
                e.signature.len()
            ))
        })?;
        let now = now_ms();
        let mut st = s.lock();
        let job = st
            .jobs
            .get_mut(&e.job)
            .ok_or_else(|| job_not_found(e.job))?;
        let writes = match job.evaluate(now, &h, e.round, model, (e.rows, metrics), signature) {
            // A retry after a lost answer: the first report stands, and is on the ledger.
            Ok(None) => return Ok(Response::new(pb::Ack { record_index: None })),
            Ok(Some(writes)) => writes,
            Err(err @ JobError::BadEvaluationSignature(_)) => {
                let request = format!("evaluation/job/{}/round/{}/hospital/{h}", e.job, e.round);
                return Err(s.reject(&mut st, &h, request, job_status(&err)));
            }
            Err(err) => return Err(job_status(&err)),
        };
        let idx = s.apply(&mut st, e.job, e.round, writes)?;
        s.step(&mut st, e.job, now)?;
        drop(st);
        s.bump();
        Ok(Response::new(pb::Ack {
            record_index: idx.first().copied(),
        }))
    }

    async fn decline_job(&self, req: Request<pb::Decline>) -> SResult<Response<pb::Ack>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let r = req.into_inner();
        let spec: Hash = r
            .spec
            .as_ref()
            .and_then(|d| d.sha256.as_slice().try_into().ok())
            .ok_or_else(|| Status::invalid_argument("the decline names no spec digest"))?;
        let signature: [u8; 64] = r.signature.as_slice().try_into().map_err(|_| {
            Status::invalid_argument("the decline's signature is not 64 bytes (Ed25519)")
        })?;
        let now = now_ms();
        let mut st = s.lock();
        let job = st.jobs.get(&r.job).ok_or_else(|| job_not_found(r.job))?;
        let decline = Decline {
            hospital: &h,
            identity: s.hospitals[&h].identity,
            spec,
            reason: &r.reason,
            signature,
        };
        let writes = job.decline(decline, now).map_err(|e| job_status(&e))?;
        if let Some(writes) = writes {
            s.apply(&mut st, r.job, 0, writes)?;
            // Every hospital may have answered now: the job starts (or fails) without waiting.
            s.step(&mut st, r.job, now)?;
        }
        let record_index = st
            .jobs
            .get(&r.job)
            .and_then(|j| j.declined.get(&h))
            .map(|d| d.record);
        drop(st);
        s.bump();
        Ok(Response::new(pb::Ack { record_index }))
    }

    async fn refuse_decryption(&self, req: Request<pb::Refusal>) -> SResult<Response<pb::Ack>> {
        let s = &self.shared;
        let h = s.hospital_caller(&req, &req.get_ref().hospital)?;
        let r = req.into_inner();
        let mut st = s.lock();
        if !st.jobs.get(&r.job).is_some_and(|j| j.is_enrolled(&h)) {
            return Err(Status::permission_denied(format!(
                "hospital {h:?} is not enrolled in job {}",
                r.job
            )));
        }
        let reason: String = r.reason.chars().take(1000).collect();
        let e = entry(
            now_ms(),
            &h,
            LRole::Hospital,
            Outcome::SeriousFailure,
            Body::RequestRejected {
                request: format!("decrypt/job/{}/round/{}/hospital/{h}", r.job, r.round),
                reason: format!("hospital {h} refused to decrypt: {reason}"),
            },
        );
        let idx = s.append(&mut st, vec![e])?;
        // Another hospital decrypts in its place, now rather than when it would have been late.
        if let Some(job) = st.jobs.get_mut(&r.job) {
            job.decryption_refused(&h, r.round);
        }
        s.step(&mut st, r.job, now_ms())?;
        drop(st);
        s.bump();
        Ok(Response::new(pb::Ack {
            record_index: idx.first().copied(),
        }))
    }
}

/// A round's bundle as `FetchRound` streams it: each submission's header, then its ciphertext
/// vector in chunks, then the aggregate. Blobs are read one at a time as the hospital reads, and
/// cut as they go: a 10M-parameter round's three 25 MB updates were all read and copied into
/// chunks up front for each hospital that asked, 150 MB per request held until it was sent.
struct Bundle {
    shared: Arc<Shared>,
    job: u64,
    round: u64,
    subs: std::vec::IntoIter<(String, crate::job::SubInfo)>,
    /// The blob being sent, and how much of it was.
    current: Option<(Blob, usize)>,
    aggregate: Option<pb::RoundBundle>,
}

impl Bundle {
    /// Ends the stream with `status` (nothing follows an error).
    fn fail(&mut self, status: Status) -> Option<SResult<pb::RoundBundle>> {
        self.subs = Vec::new().into_iter();
        self.current = None;
        self.aggregate = None;
        Some(Err(status))
    }
}

impl Iterator for Bundle {
    type Item = SResult<pb::RoundBundle>;

    fn next(&mut self) -> Option<Self::Item> {
        use pb::round_bundle::Part;
        if let Some((bytes, sent)) = &mut self.current {
            if *sent < bytes.len() {
                let end = (*sent + limits::CHUNK_BYTES).min(bytes.len());
                let chunk = bytes[*sent..end].to_vec();
                *sent = end;
                return Some(Ok(pb::RoundBundle {
                    part: Some(Part::Chunk(chunk)),
                }));
            }
            self.current = None;
        }
        let Some((h, info)) = self.subs.next() else {
            return self.aggregate.take().map(Ok);
        };
        // The round's blobs stay while it is current, and retention keeps recent rounds'.
        // The lock is released at the end of this statement, before any error is handled.
        let read = self.shared.lock().store.blob_shared(&info.digest);
        let bytes = match read {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return self.fail(internal("a submission's blob is missing")),
            Err(e) => return self.fail(internal(e)),
        };
        self.current = Some((bytes, 0));
        Some(Ok(pb::RoundBundle {
            part: Some(Part::Submission(pb::Submission {
                job: self.job,
                round: self.round,
                hospital: h,
                ciphertexts: info.ciphertexts,
                total_bytes: info.bytes,
                ciphertext_digest: pb_digest(&info.digest),
                signature: info.signature.to_vec(),
            })),
        }))
    }
}
