//! Clinical datasets for fedchain: loading, splitting, scaling and partitioning across hospitals.
//!
//! A hospital points fedchain at its own CSV export plus a [`Schema`] (which columns are features,
//! which one is the target, and what kind of task it is). Everything a model sees flows through
//! [`Dataset`], a dense row-major `f32` table; there is no other path in, so the checks in the
//! loader (every cell numeric and finite, every row the same width, targets valid for the task) hold
//! for every dataset in the system.
//!
//! Design choices:
//! - Errors name the file, the 1-based line and the column, because the person reading them is a
//!   hospital IT admin looking at their own export, not a developer.
//! - Every random choice (splits, partitions) takes an explicit `u64` seed and uses ChaCha8, so a
//!   seed reproduces the same rows on every platform and every party.
//! - Standardization statistics are fitted on training rows only and kept as a value
//!   ([`Standardizer`]) so that the same transform can be applied to test rows or at another party.
//! - Three real datasets ship inside the crate ([`Builtin`]); their provenance is in
//!   `datasets/data/PROVENANCE.md`.
//!
//! Images come in the same way ([`load_images`]): a folder of PNG, JPEG or DICOM files and a
//! labels CSV, every file checked against the declared [`ImageShape`], loaded whole or not at all.
//! An image dataset is a [`Dataset`] whose rows are images (channel planes, CHW) and whose
//! features are its channels: standardization is per channel.
//!
//! This crate knows nothing of models, tensors, encryption or the network.
#![deny(missing_docs)]
// `DataError` carries owned context (source, column, cell text) so messages stand alone; that makes
// it large, but it is only built on the cold path of rejecting input, and boxing it would make
// callers' pattern matching clumsier for no measurable gain.
#![allow(clippy::result_large_err)]

mod builtin;
mod dataset;
mod error;
mod images;
mod loader;
mod partition;
mod split;
mod standardize;

pub use builtin::Builtin;
pub use dataset::{Dataset, ImageShape, Schema, TaskKind, MAX_IMAGE_SIDE};
pub use error::{DataError, Result};
pub use images::{
    decode_bytes, decode_file, decode_unguarded, dicom_bytes, image_folder, load_data,
    load_image_rows, load_images, load_images_named, png_bytes, write_dicom, write_images,
    write_png, ImageFormat, FILE_COLUMN, LABELS_FILE, MAX_DATASET_VALUES, MAX_IMAGE_FILE_BYTES,
};
pub use loader::{load_csv, load_rows, parse_csv, Rows};
pub use partition::{
    partition, write_split, write_split_as, write_split_images, HospitalSummary, Partition,
    PartitionSummary, Scheme,
};
pub use split::train_test_split;
pub use standardize::FeatureSums;
pub use standardize::{Standardizer, TargetScale};
