//! Shared helpers.

use fedchain_consortium::{init, Consortium, InitOptions};
use std::path::Path;

/// Options for tests. The Paillier key size is irrelevant to provisioning and TLS, and 2048-bit
/// safe primes take seconds each; 512 bits keep every `init` fast while running the same code.
pub fn small() -> InitOptions {
    InitOptions {
        modulus_bits: 512,
        ..InitOptions::default()
    }
}

pub fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A consortium of `hospitals` with threshold `t` in `dir`, default researchers and auditors.
pub fn consortium(dir: &Path, hospitals: &[&str], t: usize) -> Consortium {
    init(dir, &names(hospitals), t, &small()).expect("init")
}
