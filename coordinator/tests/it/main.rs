//! Integration tests of the coordinator crate, one binary (one link) with a module per concern.

mod job;
mod round;
