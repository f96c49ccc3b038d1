//! Integration tests of the consortium crate, one binary (one link) with a module per concern.

mod folder;
mod init;
mod mtls;
mod util;
