//! Integration tests of the coordinator crate, one binary (one link) with a module per concern.

mod consortium;
mod mtls;
mod round;
mod util;
