//! End-to-end tests of the `fedchain` binary: real processes, real files, real libtorch training.
//! One test binary (as ripgrep does), one module per concern.

mod audit;
mod consortium;
mod dashboard;
mod data;
mod dishonest;
mod faults;
mod hostile;
mod images;
mod job;
mod keys;
mod link;
mod operator;
mod readme;
mod replay;
mod torchscript;
mod train;
