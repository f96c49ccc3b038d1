//! What can go wrong auditing.

/// An audit that could not be carried out, or found what it was given untrustworthy.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A request to the coordinator failed.
    #[error("{rpc}: {code:?}: {message}")]
    Rpc {
        /// The RPC.
        rpc: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// What the coordinator served does not verify: a signature, a digest, a proof, an encoding.
    #[error("{0}")]
    Untrusted(String),
    /// The local ledger copy.
    #[error(transparent)]
    Ledger(#[from] fedchain_ledger::LedgerError),
    /// A model file.
    #[error(transparent)]
    Model(#[from] fedchain_model_core::ModelError),
}

pub(crate) fn untrusted(why: impl Into<String>) -> AuditError {
    AuditError::Untrusted(why.into())
}

pub(crate) fn rpc(name: &'static str) -> impl Fn(tonic::Status) -> AuditError {
    move |s| AuditError::Rpc {
        rpc: name,
        code: s.code(),
        message: s.message().to_string(),
    }
}
