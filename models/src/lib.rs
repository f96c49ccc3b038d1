//! The model zoo of fedchain: logistic regression, MLP and a small CNN, on libtorch.
//!
//! A model is fixed by a [`ModelSpec`] (name plus hyperparameters), which a job carries so every
//! party builds the same network. Its parameters travel as one flat `Vec<f32>` in a documented
//! order (tensors sorted by name, see [`params`]) with a SHA-256 [`ModelDigest`] over the bytes, so
//! every party agrees bit for bit on what a model is. Models are saved as safetensors files that
//! carry their spec and digest ([`ModelFile`]).
//!
//! Design choice: everything that defines a model *as data* — spec, layout, seeded initialization,
//! digest, file format, metrics — is pure Rust and compiled without libtorch (feature `torch`
//! off). The coordinator uses only that half, so it never links libtorch, while hospitals and the
//! CLI add the `torch` half ([`Model`], [`train()`], [`pick_device`]) to train and predict.
//!
//! This crate knows nothing of encryption, the ledger or the network.
#![deny(missing_docs)]

mod error;
pub mod fedavg;
mod file;
pub mod metrics;
pub mod params;
mod spec;

pub use error::{ModelError, Result};
pub use file::ModelFile;
pub use metrics::Metrics;
pub use params::{init_params, layout, num_parameters, ModelDigest, ParamInfo};
pub use spec::{ModelKind, ModelSpec};

#[cfg(feature = "torch")]
mod device;
#[cfg(feature = "torch")]
mod model;
#[cfg(feature = "torch")]
mod train;

#[cfg(feature = "torch")]
pub use device::{describe_device, pick_device, DeviceChoice};
#[cfg(feature = "torch")]
pub use model::Model;
#[cfg(feature = "torch")]
pub use train::{evaluate, train, EpochReport, Optimizer, TrainConfig};
