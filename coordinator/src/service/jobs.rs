//! The job state machine over the ledger: rebuilding every job after a restart, the deadline
//! driver, moving a job from phase to phase, and the tasks each hospital is given.

use super::*;

impl Shared {
    /// Rebuilds the jobs from the ledger after a restart: every recorded submission, closing and
    /// share is fed again to the job's [`Round`] (a pure state machine, so it decides the same),
    /// which resumes each job exactly where its last record left it. Rounds in progress get fresh
    /// deadlines. The hospitals' evaluations come back from their `ModelEvaluated` records, so
    /// no hospital is asked twice to evaluate a model.
    pub(super) fn restore(&self, st: &mut State, now: u64) -> Result<(), ServiceError> {
        let broken = |i: u64, what: String| {
            ServiceError::Folder(format!("cannot resume from the ledger: record {i}: {what}"))
        };
        for i in 0..st.store.len() {
            let (record, _) = st.store.record(i)?;
            let t = record.time_ms;
            match record.body {
                Body::JobSubmitted {
                    job,
                    spec,
                    researcher,
                    ..
                } => {
                    st.next_job = st.next_job.max(job + 1);
                    let bytes = st
                        .store
                        .blob(&spec)?
                        .ok_or_else(|| broken(i, "the job spec blob is missing".into()))?;
                    let spec = pb::JobSpec::decode(bytes.as_slice())
                        .map_err(|e| broken(i, format!("job spec: {e}")))?;
                    let valid = protocol::validate(&spec).map_err(|e| broken(i, e.to_string()))?;
                    st.jobs.insert(
                        job,
                        new_job(
                            job,
                            valid,
                            researcher,
                            i,
                            t + self.config.enroll_seconds * 1000,
                        ),
                    );
                }
                Body::HospitalEnrolled {
                    job,
                    hospital,
                    identity_key,
                    samples,
                    deposit,
                } => {
                    let share_index = self
                        .hospitals
                        .get(&hospital)
                        .map(|h| h.share_index)
                        .ok_or_else(|| broken(i, format!("unknown hospital {hospital:?}")))?;
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    j.enrolled.push(Enrolled {
                        name: hospital.clone(),
                        identity_key,
                        samples,
                        share_index,
                    });
                    j.answers
                        .insert(hospital, EnrollAnswer { record: i, deposit });
                }
                Body::UpdateSubmitted {
                    job,
                    round,
                    hospital,
                    ciphertexts,
                    signature,
                } => {
                    let bytes = st
                        .store
                        .blob(&ciphertexts)?
                        .ok_or_else(|| broken(i, "a submission blob is missing".into()))?;
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    if matches!(j.phase, JobPhase::Enrolling { .. }) && round == 0 {
                        j.phase = JobPhase::Running;
                        j.total_weight =
                            protocol::total_weight(j.enrolled.iter().map(|e| e.samples));
                        self.open_round(st, job, 0, t)
                            .map_err(|s| broken(i, s.message().to_string()))?;
                    }
                    let j = st.jobs.get_mut(&job).expect("present");
                    let Some(r) = j.round.as_mut().filter(|_| j.round_no == round) else {
                        return Err(broken(
                            i,
                            format!("a submission for round {round}, not open"),
                        ));
                    };
                    r.set_deadline(u64::MAX);
                    if r.submit(t, &hospital, &bytes, signature).1.is_ok() {
                        let count = r.submission(&hospital).map_or(0, |c| c.len());
                        j.subs.insert(
                            hospital,
                            SubInfo {
                                digest: ciphertexts,
                                signature,
                                ciphertexts: count as u32,
                                bytes: bytes.len() as u64,
                            },
                        );
                    }
                }
                Body::RoundClosed { job, round, .. } => {
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    let Some(r) = j.round.as_mut().filter(|_| j.round_no == round) else {
                        return Err(broken(i, format!("round {round} is not open")));
                    };
                    r.set_deadline(t);
                    let closed = r.try_close(t);
                    if closed.is_empty() {
                        return Err(broken(i, format!("round {round} does not close again")));
                    }
                    j.closed_record = Some(i);
                    j.closed_ms = t;
                    j.share_deadline_ms =
                        Some(t + u64::from(j.valid.spec.round_deadline_seconds) * 1000);
                }
                Body::DecryptionShare {
                    job,
                    round,
                    hospital,
                    share,
                    ..
                } => {
                    let bytes = st
                        .store
                        .blob(&share)?
                        .ok_or_else(|| broken(i, "a share blob is missing".into()))?;
                    let credits = st.store.credits().clone();
                    let party = self
                        .hospitals
                        .get(&hospital)
                        .map(|h| h.share_index)
                        .unwrap_or(0);
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    let Some(r) = j.round.as_mut().filter(|_| j.round_no == round) else {
                        return Err(broken(i, format!("round {round} is not open")));
                    };
                    let _ = r.submit_share(t, &hospital, party, &bytes, None, &credits);
                }
                Body::RoundFinalized { job, round, .. } => {
                    let j = st
                        .jobs
                        .get(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    let finalized = j.round_no == round
                        && j.round
                            .as_ref()
                            .is_some_and(|r| *r.phase() == Phase::Finalized);
                    if !finalized {
                        return Err(broken(i, format!("round {round} does not finalize again")));
                    }
                    if let Some(j) = st.jobs.get_mut(&job) {
                        j.finalized_record = Some(i);
                    }
                    self.round_finalized(st, job, t, true)
                        .map_err(|s| broken(i, s.message().to_string()))?;
                }
                Body::JobFinished {
                    job,
                    status,
                    reason,
                } => {
                    if let Some(j) = st.jobs.get_mut(&job) {
                        j.phase = match status {
                            LedgerJobStatus::Finished => JobPhase::Finished,
                            LedgerJobStatus::Failed => JobPhase::Failed,
                        };
                        if status == LedgerJobStatus::Failed {
                            j.reason = reason;
                        }
                        j.finished_record = Some(i);
                    }
                }
                Body::ModelEvaluated {
                    job,
                    round,
                    hospital,
                    rows,
                    metrics,
                    ..
                } => {
                    let j = st
                        .jobs
                        .get_mut(&job)
                        .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
                    j.evaluations
                        .entry(round)
                        .or_default()
                        .insert(hospital, (rows, metrics));
                }
                Body::CreditsMoved { .. } | Body::RequestRejected { .. } => {}
            }
        }
        // Fresh deadlines for whatever is in progress, counted from when the workers can be back
        // (their longest reconnection backoff, with a margin): a hospital must not miss a
        // deadline, and be penalised, for the coordinator's crash.
        let back = now + RESUME_GRACE_MS;
        for j in st.jobs.values_mut() {
            let deadline = back + u64::from(j.valid.spec.round_deadline_seconds) * 1000;
            match &mut j.phase {
                JobPhase::Enrolling { deadline_ms } => {
                    *deadline_ms = back + self.config.enroll_seconds * 1000
                }
                JobPhase::Evaluating { deadline_ms } => {
                    *deadline_ms = back + self.config.evaluation_seconds * 1000
                }
                JobPhase::Running => {
                    if let Some(r) = j.round.as_mut() {
                        match r.phase() {
                            Phase::Collecting => r.set_deadline(deadline),
                            Phase::Decrypting => {
                                j.share_deadline_ms = Some(deadline);
                                // The first decryptors get their usual head start from then.
                                j.closed_ms = back;
                            }
                            _ => {}
                        }
                    }
                }
                JobPhase::Finished | JobPhase::Failed => {}
            }
        }
        Ok(())
    }

    /// The deadline driver: picks up a new CRL (waking the streams, which end for a revoked
    /// party) and advances every job.
    pub(super) fn drive(&self) {
        if self.halted().is_some() {
            return; // stopping after an incident: no deadline moves a job any more
        }
        let revoked = self.refresh_crl();
        let mut st = self.lock();
        let now = now_ms();
        for u in st.refusals.due(now) {
            let e = entry(
                now,
                &u.party,
                LRole::Hospital,
                Outcome::MinorFailure,
                Body::RequestRejected {
                    request: format!("refusals/hospital/{}", u.party),
                    reason: u.reason(),
                },
            );
            if let Err(e) = self.append_unmetered(&mut st, vec![e]) {
                eprintln!(
                    "fedchain coordinator: cannot record {} unrecorded refusals of {}: {}",
                    u.count,
                    u.party,
                    e.message()
                );
            }
        }
        let ids: Vec<u64> = st.jobs.keys().copied().collect();
        let mut changed = false;
        for id in ids {
            match self.step(&mut st, id, now_ms()) {
                Ok(c) => changed |= c,
                Err(e) => eprintln!("fedchain coordinator: job {id}: {}", e.message()),
            }
        }
        drop(st);
        if changed || revoked {
            self.bump();
        }
    }

    /// Moves job `id` forward as far as it can go now; returns whether anything changed.
    pub(super) fn step(&self, st: &mut State, id: u64, now: u64) -> SResult<bool> {
        let mut changed = false;
        loop {
            let Some(job) = st.jobs.get_mut(&id) else {
                return Ok(changed);
            };
            match job.phase.clone() {
                JobPhase::Enrolling { deadline_ms } => {
                    let t = self.pk.threshold();
                    let needed = (job.valid.spec.min_participants as usize).max(t);
                    let all = job.enrolled.len() == self.hospitals.len();
                    if all || (now >= deadline_ms && job.enrolled.len() >= needed) {
                        job.phase = JobPhase::Running;
                        job.total_weight =
                            protocol::total_weight(job.enrolled.iter().map(|e| e.samples));
                        self.open_round(st, id, 0, now)?;
                        changed = true;
                        continue;
                    }
                    if now >= deadline_ms {
                        let reason = format!(
                            "only {} hospitals enrolled before the enrollment deadline; the job \
                             needs at least {needed} (min_participants {}, decryption threshold {t})",
                            job.enrolled.len(),
                            job.valid.spec.min_participants
                        );
                        self.fail(st, id, reason, now)?;
                        return Ok(true);
                    }
                    return Ok(changed);
                }
                JobPhase::Running => {
                    let Some(round) = job.round.as_mut() else {
                        return Ok(changed);
                    };
                    match round.phase().clone() {
                        Phase::Collecting => {
                            let entries = round.try_close(now);
                            if !entries.is_empty() {
                                job.share_deadline_ms = Some(
                                    now + u64::from(job.valid.spec.round_deadline_seconds) * 1000,
                                );
                                job.closed_ms = now;
                                job.backups_asked = false;
                                if let Some(bytes) = round.aggregate_bytes() {
                                    st.store.put_blob(&bytes).map_err(internal)?;
                                }
                                let r = job.round_no;
                                self.fail_here("aggregate-stored", id, r);
                                let idx = self.append(st, entries)?;
                                self.fail_here("round-closed", id, r);
                                if let Some(job) = st.jobs.get_mut(&id) {
                                    job.closed_record = idx.first().copied();
                                }
                                changed = true;
                                continue;
                            }
                            if let Phase::Failed(why) = round.phase().clone() {
                                self.fail(st, id, why, now)?;
                                return Ok(true);
                            }
                            return Ok(changed);
                        }
                        Phase::Decrypting => {
                            if !job.backups_asked && now >= job.closed_ms + BACKUP_DECRYPT_MS {
                                job.backups_asked = true;
                                changed = true;
                            }
                            if job.share_deadline_ms.is_some_and(|d| now >= d) {
                                let reason = format!(
                                    "round {}: only {} valid decryption shares of the {} needed \
                                     arrived before the share deadline",
                                    job.round_no,
                                    round.valid_shares().len(),
                                    self.pk.threshold()
                                );
                                self.fail(st, id, reason, now)?;
                                return Ok(true);
                            }
                            return Ok(changed);
                        }
                        Phase::Finalized => {
                            self.round_finalized(st, id, now, false)?;
                            changed = true;
                            continue;
                        }
                        Phase::Failed(why) => {
                            let reason = format!("round {}: {why}", job.round_no);
                            self.fail(st, id, reason, now)?;
                            return Ok(true);
                        }
                    }
                }
                JobPhase::Evaluating { deadline_ms } => {
                    let last = u64::from(job.valid.spec.rounds);
                    if job.evaluated_by_all(last) || now >= deadline_ms {
                        self.finish(st, id, now)?;
                        return Ok(true);
                    }
                    return Ok(changed);
                }
                JobPhase::Finished | JobPhase::Failed => return Ok(changed),
            }
        }
    }

    fn open_round(&self, st: &mut State, id: u64, r: u64, now: u64) -> SResult<()> {
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        let plan = RoundPlan::new(&job.valid, r, job.total_weight);
        let quantization = plan.quantization;
        let opened = plan
            .codec(&self.pk)
            .map_err(|e| e.to_string())
            .and_then(|codec| {
                let cfg = RoundConfig {
                    job: id,
                    round: r,
                    min_participants: job.valid.spec.min_participants as usize,
                    deadline_ms: now + u64::from(job.valid.spec.round_deadline_seconds) * 1000,
                    len: plan.len,
                };
                let base = plan.base(&job.global);
                Round::new(cfg, self.pk.clone(), codec, job.enrolled.clone(), base)
                    .map_err(|e| e.to_string())
            });
        match opened {
            Ok(round) => {
                job.round_no = r;
                job.round = Some(round);
                job.quantization = quantization;
                job.subs.clear();
                job.closed_record = None;
                job.share_deadline_ms = None;
                Ok(())
            }
            Err(why) => self.fail(st, id, format!("round {r} cannot open: {why}"), now),
        }
    }

    fn round_finalized(&self, st: &mut State, id: u64, now: u64, replaying: bool) -> SResult<()> {
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        let round = job.round.as_ref().ok_or_else(|| internal("no round"))?;
        let new = round
            .new_global()
            .ok_or_else(|| internal("a finalized round without a model"))?
            .to_vec();
        let r = job.round_no;
        if r == 0 {
            job.stats = new;
            job.global = protocol::starting_model(&job.valid);
        } else {
            job.global = new;
        }
        let file = ModelFile::new(job.valid.model.clone(), job.global.clone())
            .and_then(|f| f.to_bytes())
            .map_err(internal)?;
        job.model_digest = ModelDigest::of(&job.global).0;
        job.model_file = file;
        st.store.put_blob(&job.model_file).map_err(internal)?;
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        if r > 0 {
            job.finalized = job.finalized_record.map(|i| (r, i));
        }
        let rounds = u64::from(job.valid.spec.rounds);
        if !replaying {
            self.checkpoint(st)?;
        }
        if r < rounds {
            self.open_round(st, id, r + 1, now)
        } else {
            let job = st
                .jobs
                .get_mut(&id)
                .ok_or_else(|| internal("job vanished"))?;
            job.phase = JobPhase::Evaluating {
                deadline_ms: now + self.config.evaluation_seconds * 1000,
            };
            Ok(())
        }
    }

    fn finish(&self, st: &mut State, id: u64, now: u64) -> SResult<()> {
        let job = st.jobs.get(&id).ok_or_else(|| internal("job vanished"))?;
        let last = u64::from(job.valid.spec.rounds);
        let summary = match job.evaluations.get(&last) {
            Some(reports) => protocol::final_summary(reports.values()),
            None => protocol::final_summary(std::iter::empty()),
        };
        let hospitals: Vec<String> = job.enrolled.iter().map(|e| e.name.clone()).collect();
        let mut entries = vec![coord(
            now,
            Body::JobFinished {
                job: id,
                status: LedgerJobStatus::Finished,
                reason: summary,
            },
        )];
        entries.extend(release_funds(
            &st.store,
            id,
            &job.researcher,
            &hospitals,
            now,
        ));
        let idx = self.append(st, entries)?;
        self.checkpoint(st)?;
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        job.finished_record = idx.first().copied();
        job.phase = JobPhase::Finished;
        Ok(())
    }

    fn fail(&self, st: &mut State, id: u64, reason: String, now: u64) -> SResult<()> {
        let job = st.jobs.get(&id).ok_or_else(|| internal("job vanished"))?;
        let hospitals: Vec<String> = job.enrolled.iter().map(|e| e.name.clone()).collect();
        let mut entries = vec![coord(
            now,
            Body::JobFinished {
                job: id,
                status: LedgerJobStatus::Failed,
                reason: reason.clone(),
            },
        )];
        entries.extend(release_funds(
            &st.store,
            id,
            &job.researcher,
            &hospitals,
            now,
        ));
        let idx = self.append(st, entries)?;
        self.checkpoint(st)?;
        let job = st
            .jobs
            .get_mut(&id)
            .ok_or_else(|| internal("job vanished"))?;
        job.finished_record = idx.first().copied();
        job.reason = reason;
        job.phase = JobPhase::Failed;
        Ok(())
    }

    pub(super) fn status(&self, job: &Job) -> pb::JobStatus {
        let mut hospitals: Vec<String> = job.enrolled.iter().map(|e| e.name.clone()).collect();
        hospitals.sort();
        pb::JobStatus {
            job: job.id,
            state: job.state() as i32,
            spec: pb_digest(&job.valid.digest),
            submitted_record: job.submitted_record,
            hospitals,
            round: job.round_no,
            rounds: job.valid.spec.rounds,
            progress: job.progress(),
            reason: job.reason.clone(),
        }
    }

    /// The tasks hospital `h` has pending, each with a key that names it uniquely.
    pub(super) fn tasks_for(&self, st: &State, h: &str) -> Vec<(String, pb::Task)> {
        use pb::task::Kind;
        let mut out = Vec::new();
        if let Some((size, note)) = &st.checkpoint {
            let last = st.cosigned.get(h).copied().unwrap_or(0);
            if *size > last {
                let proof = if last == 0 {
                    Ok(Vec::new())
                } else {
                    st.store.consistency_proof(last, *size)
                };
                if let Ok(proof) = proof {
                    out.push((
                        format!("cosign/{size}"),
                        pb::Task {
                            kind: Some(Kind::Cosign(pb::CosignTask {
                                checkpoint: Some(pb::Checkpoint { note: note.clone() }),
                                consistency: Some(pb_proof(&proof)),
                                old_size: last,
                            })),
                        },
                    ));
                }
            }
        }
        for job in st.jobs.values() {
            if let JobPhase::Enrolling { .. } = job.phase {
                if !job.is_enrolled(h) && self.hospitals.contains_key(h) {
                    out.push((
                        format!("offer/{}", job.id),
                        pb::Task {
                            kind: Some(Kind::Offer(pb::JobOffer {
                                job: job.id,
                                spec: Some(job.valid.spec.clone()),
                                spec_digest: pb_digest(&job.valid.digest),
                                deposit: self.config.deposit,
                            })),
                        },
                    ));
                }
                continue;
            }
            if job.terminal() || !job.is_enrolled(h) {
                continue;
            }
            if let Some((r, _)) = job.finalized {
                let done = job.evaluations.get(&r).is_some_and(|e| e.contains_key(h));
                if !done {
                    out.push((
                        format!("evaluate/{}/{r}", job.id),
                        pb::Task {
                            kind: Some(Kind::Evaluate(pb::EvaluateTask {
                                job: job.id,
                                round: r,
                                model: pb_digest(&job.model_digest),
                                inline: job.model_file.clone(),
                                statistics: job.stats.clone(),
                            })),
                        },
                    ));
                }
            }
            let Some(round) = job.round.as_ref() else {
                continue;
            };
            match round.phase() {
                Phase::Collecting if !job.subs.contains_key(h) => {
                    let stats_round = job.round_no == 0;
                    out.push((
                        format!("train/{}/{}", job.id, job.round_no),
                        pb::Task {
                            kind: Some(Kind::Train(pb::TrainTask {
                                job: job.id,
                                round: job.round_no,
                                model: if stats_round {
                                    None
                                } else {
                                    pb_digest(&job.model_digest)
                                },
                                model_file: if stats_round {
                                    None
                                } else {
                                    Some(pb::train_task::ModelFile::Inline(job.model_file.clone()))
                                },
                                deadline_unix_ms: round.config().deadline_ms,
                                kind: if stats_round {
                                    pb::RoundKind::Statistics
                                } else {
                                    pb::RoundKind::Model
                                } as i32,
                                quantization: Some(job.quantization),
                                total_weight: job.total_weight,
                                statistics: job.stats.clone(),
                            })),
                        },
                    ));
                }
                Phase::Decrypting => {
                    let answered = round.valid_shares().iter().any(|v| v == h)
                        || round.invalid_shares().iter().any(|v| v == h);
                    // The t enrolled hospitals with the lowest key-share indices decrypt first.
                    let asked = job.backups_asked || round.primaries().iter().any(|p| p == h);
                    if let (false, true, Some(digest), Some(context)) =
                        (answered, asked, round.aggregate_digest(), round.context())
                    {
                        out.push((
                            format!("decrypt/{}/{}", job.id, job.round_no),
                            pb::Task {
                                kind: Some(Kind::Decrypt(pb::DecryptTask {
                                    job: job.id,
                                    round: job.round_no,
                                    aggregate: pb_digest(&digest),
                                    contributors: round.submitted(),
                                    context,
                                })),
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

/// A job as submitted: enrolling until `enroll_deadline_ms`.
pub(super) fn new_job(
    id: u64,
    valid: ValidJob,
    researcher: String,
    submitted_record: u64,
    enroll_deadline_ms: u64,
) -> Job {
    Job {
        id,
        global: Vec::with_capacity(num_parameters(&valid.model)),
        valid,
        researcher,
        submitted_record,
        phase: JobPhase::Enrolling {
            deadline_ms: enroll_deadline_ms,
        },
        reason: String::new(),
        enrolled: Vec::new(),
        answers: BTreeMap::new(),
        total_weight: 0,
        round_no: 0,
        round: None,
        quantization: protocol::statistics_quantization(0),
        subs: BTreeMap::new(),
        closed_record: None,
        share_deadline_ms: None,
        closed_ms: 0,
        backups_asked: false,
        stats: Vec::new(),
        model_file: Vec::new(),
        model_digest: [0; 32],
        finalized: None,
        finalized_record: None,
        evaluations: BTreeMap::new(),
        finished_record: None,
    }
}

/// Deposits back to the hospitals and the rest of the escrow back to the researcher.
fn release_funds(
    store: &Store,
    job: u64,
    researcher: &str,
    hospitals: &[String],
    now: u64,
) -> Vec<Entry> {
    let credits = store.credits();
    let mut out = Vec::new();
    for h in hospitals {
        let deposit = Account::Deposit {
            job,
            hospital: h.clone(),
        };
        if credits.balance(&deposit) > 0 {
            out.push(coord(
                now,
                Body::CreditsMoved {
                    movement: Movement::ReturnDeposit {
                        job,
                        hospital: h.clone(),
                    },
                },
            ));
        }
    }
    if credits.balance(&Account::Escrow(job)) > 0 {
        out.push(coord(
            now,
            Body::CreditsMoved {
                movement: Movement::Refund {
                    job,
                    researcher: researcher.to_owned(),
                },
            },
        ));
    }
    out
}
