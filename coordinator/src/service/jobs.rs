//! The jobs over the ledger: the service side of [`crate::job`]. Rebuilding every job after a
//! restart, the deadline driver, writing what a job's steps return (the one place that stores,
//! appends and checkpoints for a job), the one mapping of [`JobError`] to gRPC statuses, and the
//! wire form of a job's status and tasks.

use super::*;

/// The gRPC status of a job's refusal: the one place [`JobError`]s meet the wire.
pub(super) fn job_status(e: &JobError) -> Status {
    let msg = e.to_string();
    match e {
        JobError::NotEnrolling { .. }
        | JobError::CannotDeposit { .. }
        | JobError::CannotFund { .. }
        | JobError::WrongRound(_)
        | JobError::AlreadyDecrypted { .. }
        | JobError::Ended { .. }
        | JobError::NoModelToEvaluate { .. }
        | JobError::OtherModel { .. } => Status::failed_precondition(msg),
        JobError::OtherIdentity { .. } => Status::already_exists(msg),
        JobError::NotEnrolled { .. } | JobError::NotTheResearcher { .. } => {
            Status::permission_denied(msg)
        }
        JobError::BadEvaluationSignature(_) => Status::unauthenticated(msg),
        JobError::DeclaredSamples(_) | JobError::OtherAggregate | JobError::BadDecline(_) => {
            Status::invalid_argument(msg)
        }
        JobError::EnrolledCannotDecline { .. } => Status::failed_precondition(msg),
        JobError::Round(e) => round_status(e),
        JobError::Broken(_) => internal(msg),
    }
}

impl Shared {
    /// What the jobs need from around them: the key, the consortium's size, the policy's times
    /// and the credit balances of `store`.
    pub(super) fn env<'a>(&'a self, store: &'a Store) -> JobEnv<'a> {
        JobEnv {
            pk: &self.pk,
            hospitals: self.hospitals.len(),
            evaluation_ms: self.config.evaluation_seconds * 1000,
            credits: store.credits(),
        }
    }

    /// Writes what job `id` returned, in order: its blobs, its entries (appended and fsynced,
    /// then noted by the job), a checkpoint if asked; with the crash tests' failpoints between.
    /// Returns the entries' record indices.
    pub(super) fn apply(
        &self,
        st: &mut State,
        id: u64,
        round: u64,
        writes: Writes,
    ) -> SResult<Vec<u64>> {
        self.refuse_if_halted()?;
        for blob in &writes.blobs {
            st.store
                .put_blob(blob)
                .map_err(|e| self.storage_failed(e))?;
        }
        if let Some(point) = writes.after_blobs {
            self.fail_here(point, id, round);
        }
        let bodies: Vec<Body> = writes.entries.iter().map(|e| e.body.clone()).collect();
        let idx = self.append(st, writes.entries)?;
        if let Some(job) = st.jobs.get_mut(&id) {
            for (i, body) in idx.iter().zip(&bodies) {
                job.recorded(*i, body);
            }
        }
        if let Some(point) = writes.after_entries {
            self.fail_here(point, id, round);
        }
        if writes.checkpoint {
            self.checkpoint(st)?;
        }
        Ok(idx)
    }

    /// Rebuilds the jobs from the ledger after a restart: each job's records are fed back to it
    /// (a pure machine, so it decides the same), which resumes it exactly where its last record
    /// left it. Rounds in progress get fresh deadlines. The hospitals' evaluations come back from
    /// their `ModelEvaluated` records, so no hospital is asked twice to evaluate a model.
    pub(super) fn restore(&self, st: &mut State, now: u64) -> Result<(), ServiceError> {
        let broken = |i: u64, what: String| {
            ServiceError::Folder(format!("cannot resume from the ledger: record {i}: {what}"))
        };
        // Jobs whose spec this coordinator's checks now refuse (they became stricter since the
        // job was recorded): left as the ledger has them rather than stopping every other job.
        let mut refused = BTreeSet::new();
        for i in 0..st.store.len() {
            let (record, _) = st.store.record(i)?;
            let t = record.time_ms;
            if let Body::JobSubmitted {
                job,
                spec,
                researcher,
                ..
            } = &record.body
            {
                st.next_job = st.next_job.max(job + 1);
                let bytes = st
                    .store
                    .blob(spec)?
                    .ok_or_else(|| broken(i, "the job spec blob is missing".into()))?;
                let spec = pb::JobSpec::decode(bytes.as_slice())
                    .map_err(|e| broken(i, format!("job spec: {e}")))?;
                let valid = match protocol::validate(&spec) {
                    Ok(valid) => valid,
                    Err(e) => {
                        eprintln!(
                            "fedchain coordinator: job {job} (record {i}) is not resumed: its spec \
                             no longer passes this coordinator's checks ({e}); its records stay \
                             on the ledger and nothing more is accepted for it"
                        );
                        refused.insert(*job);
                        continue;
                    }
                };
                let deadline = t + self.config.enroll_seconds * 1000;
                let j = Job::new(*job, valid, researcher.clone(), i, deadline);
                st.jobs.insert(*job, j);
                continue;
            }
            let Some(job) = record.body.job().filter(|j| !refused.contains(j)) else {
                continue;
            };
            let blob = match &record.body {
                Body::UpdateSubmitted { ciphertexts, .. } => st.store.blob(ciphertexts)?,
                Body::DecryptionShare { share, .. } => st.store.blob(share)?,
                _ => None,
            };
            let share_index = match &record.body {
                Body::HospitalEnrolled { hospital, .. }
                | Body::DecryptionShare { hospital, .. } => self
                    .hospitals
                    .get(hospital)
                    .map(|h| h.share_index)
                    .ok_or_else(|| broken(i, format!("unknown hospital {hospital:?}")))?,
                _ => 0,
            };
            let State { store, jobs, .. } = &mut *st;
            let env = self.env(store);
            let j = jobs
                .get_mut(&job)
                .ok_or_else(|| broken(i, format!("unknown job {job}")))?;
            j.restore(i, t, &record.body, blob.as_deref(), share_index, &env)
                .map_err(|e| broken(i, e.to_string()))?;
            // The model file restore rebuilt is what `DownloadModel` serves for that round (its
            // bytes need not be the first run's: the header's order may differ); keep it.
            if matches!(record.body, Body::RoundFinalized { round, .. } if round > 0) {
                store.put_blob(&j.model_file)?;
            }
        }
        // What restore decided but the ledger does not hold yet (a round that cannot open again
        // fails its job): written now, so the job's credits are released and its end recorded.
        let ids: Vec<u64> = st.jobs.keys().copied().collect();
        for id in ids {
            let State { store, jobs, .. } = &mut *st;
            let env = self.env(store);
            let end = jobs.get(&id).and_then(|j| j.unrecorded_end(now, &env));
            if let Some(writes) = end {
                self.apply(st, id, 0, writes)
                    .map_err(|s| ServiceError::Folder(format!("job {id}: {}", s.message())))?;
            }
        }
        // Fresh deadlines for whatever is in progress, counted from when the workers can be back
        // (their longest reconnection backoff, with a margin).
        let back = now + RESUME_GRACE_MS;
        for j in st.jobs.values_mut() {
            j.resume(
                back,
                self.config.enroll_seconds * 1000,
                self.config.evaluation_seconds * 1000,
            );
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
            let (role, name) = u.party.split_once(' ').unwrap_or(("hospital", &u.party));
            let lrole = if role == "researcher" {
                LRole::Researcher
            } else {
                LRole::Hospital
            };
            let e = entry(
                now,
                name,
                lrole,
                Outcome::MinorFailure,
                Body::RequestRejected {
                    request: format!("refusals/{role}/{name}"),
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

    /// Moves job `id` forward as far as it can go now, writing each step; returns whether
    /// anything changed.
    pub(super) fn step(&self, st: &mut State, id: u64, now: u64) -> SResult<bool> {
        let mut changed = false;
        loop {
            let State { store, jobs, .. } = &mut *st;
            let env = self.env(store);
            let Some(job) = jobs.get_mut(&id) else {
                return Ok(changed);
            };
            let round = job.round_no;
            match job.step(now, &env).map_err(|e| job_status(&e))? {
                None => return Ok(changed),
                Some(writes) => {
                    self.apply(st, id, round, writes)?;
                    changed = true;
                }
            }
        }
    }

    pub(super) fn status(&self, job: &Job) -> pb::JobStatus {
        let mut hospitals: Vec<String> = job.enrolled.iter().map(|e| e.name.clone()).collect();
        hospitals.sort();
        let finalized_round = job.finalized.map_or(0, |(r, _)| r);
        pb::JobStatus {
            job: job.id,
            state: job_state(job) as i32,
            spec: pb_digest(&job.valid.digest),
            submitted_record: job.submitted_record,
            hospitals,
            round: job.round_no,
            rounds: job.valid.spec.rounds,
            progress: progress(job),
            reason: job.reason.clone(),
            finalized_round,
            metrics: if finalized_round > 0
                && (job.evaluated_by_all(finalized_round) || job.terminal())
            {
                wire_metrics(job, finalized_round)
            } else {
                Vec::new()
            },
            researcher: job.researcher.clone(),
            declined: declined(job),
            wasted_shares: job.wasted_shares,
            privacy: job
                .privacy_spent
                .values()
                .map(|s| pb::HospitalPrivacy {
                    hospital: s.hospital.clone(),
                    rounds: s.rounds,
                    epsilon: s.epsilon,
                    noise_multiplier: s.noise_multiplier,
                })
                .collect(),
            privacy_budget: job.valid.spec.privacy.as_ref().map_or(0.0, |p| p.epsilon),
            share_costs: job
                .enrolled
                .iter()
                .map(|e| e.name.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter_map(|h| {
                    let micros = job.share_costs.per_ciphertext_us(h)?;
                    Some(pb::ShareCost {
                        hospital: h.to_owned(),
                        micros_per_ciphertext: micros,
                    })
                })
                .collect(),
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
        let member = self.hospitals.contains_key(h);
        for job in st.jobs.values() {
            for task in job.tasks_for(h, member) {
                out.push((task.key(), self.wire_task(job, task)));
            }
        }
        out
    }

    /// A job's task as the hospitals' service sends it.
    fn wire_task(&self, job: &Job, task: Task) -> pb::Task {
        use pb::task::Kind;
        let kind = match task {
            Task::Offer { job: id } => Kind::Offer(pb::JobOffer {
                job: id,
                spec: wire_spec(job),
                spec_digest: pb_digest(&job.valid.digest),
                deposit: self.config.deposit,
                researcher: job.researcher.clone(),
            }),
            Task::Train {
                job: id,
                plan,
                model,
                deadline_ms,
            } => Kind::Train(pb::TrainTask {
                job: id,
                round: plan.round,
                model: model.as_ref().and_then(pb_digest),
                model_file: model.map(|digest| {
                    if self.config.inlines_model(job.model_file.len()) {
                        pb::train_task::ModelFile::Inline(job.model_file.to_vec())
                    } else {
                        pb::train_task::ModelFile::Fetch(pb::ModelRequest {
                            job: id,
                            model: pb_digest(&digest),
                        })
                    }
                }),
                deadline_unix_ms: deadline_ms,
                kind: match plan.kind {
                    RoundKind::Statistics => pb::RoundKind::Statistics,
                    RoundKind::Model => pb::RoundKind::Model,
                } as i32,
                quantization: Some(plan.quantization),
                total_weight: plan.total_weight,
                statistics: job.stats.clone(),
                contributors: plan.contributors,
            }),
            Task::Decrypt {
                job: id,
                round,
                aggregate,
                contributors,
                context,
                ciphertexts,
            } => Kind::Decrypt(pb::DecryptTask {
                job: id,
                round,
                aggregate: pb_digest(&aggregate),
                contributors,
                context,
                ciphertexts: ciphertexts
                    .into_iter()
                    .map(|[start, end]| pb::CiphertextRange { start, end })
                    .collect(),
            }),
            Task::Evaluate {
                job: id,
                round,
                model,
            } => {
                let inline = self.config.inlines_model(job.model_file.len());
                Kind::Evaluate(pb::EvaluateTask {
                    job: id,
                    round,
                    model: pb_digest(&model),
                    inline: if inline {
                        job.model_file.to_vec()
                    } else {
                        Vec::new()
                    },
                    statistics: job.stats.clone(),
                    fetch: (!inline).then(|| pb::ModelRequest {
                        job: id,
                        model: pb_digest(&model),
                    }),
                })
            }
        };
        pb::Task { kind: Some(kind) }
    }
}

/// A job's spec as offers and enrollment answers carry it: absent when it is too large for a
/// message (a large TorchScript module); the hospital then reads it from the ledger by digest.
pub(super) fn wire_spec(job: &Job) -> Option<pb::JobSpec> {
    job.spec_inline.then(|| job.valid.spec.clone())
}

/// A job's state on the wire.
pub(super) fn job_state(job: &Job) -> pb::JobState {
    match job.phase {
        JobPhase::Enrolling { .. } => pb::JobState::Enrolling,
        JobPhase::Running | JobPhase::Evaluating { .. } => pb::JobState::Running,
        JobPhase::Finished => pb::JobState::Finished,
        JobPhase::Failed => pb::JobState::Failed,
        JobPhase::Cancelled => pb::JobState::Cancelled,
    }
}

/// The pooled figures of round `r`'s model on the wire.
pub(super) fn wire_metrics(job: &Job, r: u64) -> Vec<pb::Metric> {
    job.metrics(r)
        .into_iter()
        .map(|(name, value)| pb::Metric { name, value })
        .collect()
}

/// Where the current round stands, on the wire.
pub(super) fn progress(job: &Job) -> Option<pb::RoundProgress> {
    let round = job.round.as_ref()?;
    let phase = match round.phase() {
        Phase::Collecting => pb::RoundPhase::Training,
        Phase::Decrypting => pb::RoundPhase::Decrypting,
        Phase::Finalized => pb::RoundPhase::Finalized,
        Phase::Failed(_) => pb::RoundPhase::Unspecified,
    };
    let finalized = phase == pb::RoundPhase::Finalized;
    Some(pb::RoundProgress {
        round: job.round_no,
        phase: phase as i32,
        participants: round.submitted(),
        metrics: if finalized {
            wire_metrics(job, job.round_no)
        } else {
            Vec::new()
        },
        model: if finalized && job.round_no > 0 {
            pb_digest(&job.model_digest)
        } else {
            None
        },
    })
}

/// The hospitals that declined `job` and did not enroll since, and why, sorted by hospital.
pub(super) fn declined(job: &Job) -> Vec<pb::Declined> {
    // A hospital that declined and then enrolled takes part: its decline no longer stands.
    job.declined
        .iter()
        .filter(|(h, _)| !job.answers.contains_key(*h))
        .map(|(h, d)| pb::Declined {
            hospital: h.clone(),
            reason: d.reason.clone(),
            record_index: d.record,
        })
        .collect()
}
