//! The auditors' service: checkpoints, records, proofs and blobs of the ledger.

use super::*;

#[tonic::async_trait]
impl LedgerService for Coordinator {
    async fn get_checkpoint(
        &self,
        req: Request<pb::CheckpointRequest>,
    ) -> SResult<Response<pb::Checkpoint>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let st = self.shared.lock();
        let all = st.store.checkpoints().map_err(internal)?;
        let found = match req.get_ref().size {
            Some(size) => all.into_iter().find(|(s, _)| *s == size),
            None => all.into_iter().max_by_key(|(s, _)| *s),
        };
        let (_, note) = found.ok_or_else(|| Status::not_found("no checkpoint of that size"))?;
        Ok(Response::new(pb::Checkpoint { note }))
    }

    type GetRecordsStream = BoxStream<pb::RecordEntry>;

    async fn get_records(
        &self,
        req: Request<pb::RecordRange>,
    ) -> SResult<Response<Self::GetRecordsStream>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let r = req.into_inner();
        let st = self.shared.lock();
        if r.end > st.store.len() || r.start > r.end {
            return Err(Status::out_of_range(format!(
                "records {}..{} are not in a log of {} records",
                r.start,
                r.end,
                st.store.len()
            )));
        }
        let end = r.end.min(r.start + 100_000);
        let mut msgs = Vec::new();
        for index in r.start..end {
            let (_, record) = st.store.record(index).map_err(internal)?;
            msgs.push(Ok(pb::RecordEntry { index, record }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(msgs))))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::InclusionProofRequest>,
    ) -> SResult<Response<pb::Proof>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let r = req.get_ref();
        let st = self.shared.lock();
        let proof = st
            .store
            .inclusion_proof(r.index, r.size)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        Ok(Response::new(pb_proof(&proof)))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::ConsistencyProofRequest>,
    ) -> SResult<Response<pb::Proof>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let r = req.get_ref();
        let st = self.shared.lock();
        let proof = st
            .store
            .consistency_proof(r.old_size, r.new_size)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        Ok(Response::new(pb_proof(&proof)))
    }

    async fn list_checkpoints(
        &self,
        req: Request<pb::ListCheckpointsRequest>,
    ) -> SResult<Response<pb::CheckpointList>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let after = req.get_ref().after;
        let st = self.shared.lock();
        let mut page: Vec<(u64, String)> = st
            .store
            .checkpoints()
            .map_err(internal)?
            .into_iter()
            .filter(|(size, _)| *size > after)
            .collect();
        let more = page.len() > limits::MAX_LISTED_CHECKPOINTS;
        page.truncate(limits::MAX_LISTED_CHECKPOINTS);
        let next_after = if more {
            page.last().map(|(size, _)| *size)
        } else {
            None
        };
        Ok(Response::new(pb::CheckpointList {
            checkpoints: page
                .into_iter()
                .map(|(_, note)| pb::Checkpoint { note })
                .collect(),
            next_after,
        }))
    }

    type GetBlobStream = BoxStream<pb::Chunk>;

    async fn get_blob(&self, req: Request<pb::Digest>) -> SResult<Response<Self::GetBlobStream>> {
        self.shared
            .authorize(&req, &[Role::Auditor, Role::Researcher, Role::Hospital])?;
        let digest = digest_of(&Some(req.get_ref().clone()))?;
        let st = self.shared.lock();
        // Submissions stay sealed until their round closes: no hospital may read another's
        // ciphertexts (and resubmit them as its own) while it could still submit. A job that
        // ended (cancelled mid-round, say) takes no more submissions: its round never closes, and
        // an auditor must be able to mirror what it recorded.
        let sealed = st.jobs.values().any(|j| {
            !j.terminal()
                && j.round
                    .as_ref()
                    .is_some_and(|r| *r.phase() == Phase::Collecting)
                && j.subs.values().any(|s| s.digest == digest)
        });
        if sealed {
            return Err(Status::failed_precondition(
                "that blob is a submission of a round still collecting; it is sealed until the \
                 round closes",
            ));
        }
        let bytes = st
            .store
            .blob_shared(&digest)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no blob {}", hex::encode(digest))))?;
        let chunks = chunk_stream(Bytes::from_owner(bytes), |data| pb::Chunk { data });
        Ok(Response::new(Box::pin(chunks)))
    }
}
