//! The model zoo of fedchain on libtorch: logistic regression, MLP and a small CNN.
//!
//! Everything that defines a model *as data* — spec, layout, seeded initialization, digest, file
//! format, FedAvg, metrics — lives in `fedchain-model-core` and is re-exported here, so a hospital
//! and the CLI see one crate. This crate adds what needs libtorch: [`Model`] (a tch network built
//! from the spec and checked against its layout), [`train()`], [`evaluate`] and [`pick_device`],
//! and [`torchscript::inspect`] (a researcher's TorchScript module: its code and operators checked
//! before libtorch loads it, then its parameters).
//! The coordinator and the auditor depend on `fedchain-model-core` only, so they never link
//! libtorch.
//!
//! This crate knows nothing of encryption, the ledger or the network.
#![deny(missing_docs)]

pub use fedchain_model_core::{
    fedavg, init_params, layout, metrics, num_parameters, params, Metrics, ModelDigest, ModelError,
    ModelFile, ModelKind, ModelSpec, ParamInfo, Preprocessing, Result, TensorDecl,
};

mod device;
pub mod dp;
mod model;
pub mod torchscript;
mod train;

pub use device::{describe_device, pick_device, DeviceChoice};
pub use model::Model;
pub use train::{evaluate, train, EpochReport, Optimizer, TrainConfig};
