//! What a model is as data, for every party: no libtorch.
//!
//! A model is fixed by a [`ModelSpec`] (name plus hyperparameters), which a job carries so every
//! party builds the same network. Its parameters travel as one flat `Vec<f32>` in a documented
//! order (tensors sorted by name, see [`params`]) with a SHA-256 [`ModelDigest`] over the bytes, so
//! every party agrees bit for bit on what a model is. Models are saved as safetensors files that
//! carry their spec and digest ([`ModelFile`]). [`fedavg`] is the plaintext reference of the
//! encrypted aggregation, and [`metrics`] scores predictions.
//!
//! Design choice: this is its own crate, not a feature of `fedchain-models`, so that the compiler
//! (not a feature flag that cargo unifies across a workspace) keeps libtorch out of the
//! coordinator and the auditor, which use only this half. `fedchain-models` re-exports all of it
//! and adds training on libtorch.
//!
//! This crate knows nothing of encryption, the ledger, the network or libtorch.
#![deny(missing_docs)]

mod error;
pub mod fedavg;
mod file;
pub mod metrics;
pub mod params;
pub mod pickle;
mod spec;
pub mod torchscript;

pub use error::{ModelError, Result};
pub use file::{ModelFile, Preprocessing};
pub use metrics::Metrics;
pub use params::{init_params, layout, num_parameters, ModelDigest, ParamInfo};
pub use spec::{cnn_grid, ModelKind, ModelSpec, TensorDecl, CNN_POOL_SIDE, MAX_PARAMETERS};
pub use torchscript::TorchScriptCode;
