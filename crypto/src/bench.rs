//! One-shot measurements of every cost the crypto issue sets a target for, on this machine.
//!
//! Used by `fedchain bench crypto`. Per-core figures run inside a one-thread rayon pool, so they
//! do not depend on the number of cores; the key ceremony and table build are reported as wall
//! time with all cores. Criterion benches (`cargo bench -p fedchain-crypto`) cover the same
//! operations statistically.

use crate::aggregate::add_into;
use crate::djn::EncryptionTable;
use crate::error::Result;
use crate::keys::deal;
use crate::quantize::{Quantizer, Rounding};
use crate::threshold::{combine_verified, partial_decrypt, verify_share};
use crate::update::UpdateCodec;
use crate::BigInt;
use curv::arithmetic::traits::Modulo;
use kzen_paillier::{Encrypt, EncryptionKey, Paillier, RawPlaintext};
use rand::{CryptoRng, RngCore};
use serde::Serialize;
use std::time::Instant;

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// Modulus bits.
    pub modulus_bits: usize,
    /// Gradient values encrypted end to end.
    pub values: usize,
    /// Parties (key shares); the threshold is a majority.
    pub parties: usize,
    /// Ciphertexts partially decrypted, verified and combined (decryption costs ~30 ms each).
    pub decrypt_ciphertexts: usize,
    /// Values encrypted one by one with kzen-paillier for the naive reference (~9 ms each).
    pub naive_samples: usize,
    /// Quantizer fractional bits and clipping bound.
    pub frac_bits: u32,
    /// Clipping bound of update values.
    pub clip: f32,
    /// Sum of contributor weights the packing must hold.
    pub total_weight: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            modulus_bits: 2048,
            values: 100_000,
            parties: 3,
            decrypt_ciphertexts: 64,
            naive_samples: 20,
            frac_bits: 12,
            clip: 4.0,
            total_weight: 64,
        }
    }
}

/// Measured figures. Times per value or per ciphertext, in microseconds, on one core unless named
/// `_wall`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The configuration measured.
    pub config: BenchConfig,
    /// Threshold t.
    pub threshold: usize,
    /// Rayon threads available for the wall-clock figures.
    pub threads: usize,
    /// Dealer ceremony: safe primes, shares, verification keys (all cores).
    pub key_ceremony_ms_wall: f64,
    /// Building the DJN fixed-base table (all cores).
    pub table_build_ms_wall: f64,
    /// DJN table size.
    pub table_mib: f64,
    /// Slot width and slots per ciphertext of the packing.
    pub slot_bits: u32,
    /// Values packed into each plaintext.
    pub slots_per_ciphertext: usize,
    /// Ciphertexts for `values`.
    pub ciphertexts: usize,
    /// kzen-paillier encryption with the public key, one value per ciphertext.
    pub naive_encrypt_us_per_value: f64,
    /// Quantize + pack + DJN-encrypt, end to end.
    pub packed_encrypt_us_per_value: f64,
    /// naive / packed.
    pub encrypt_speedup: f64,
    /// Homomorphic addition (ciphertext multiplication mod N^2).
    pub add_us_per_ciphertext: f64,
    /// Partial decryption of a vector plus its one batched proof, per ciphertext.
    pub partial_decrypt_us_per_ciphertext: f64,
    /// The floor under it: one bare GMP exponentiation (`mpz_powm`) of the same sizes (a
    /// ciphertext to the share's exponent `2 * delta * s`, modulo N^2), measured in the same run.
    pub bare_powm_us_per_ciphertext: f64,
    /// partial decryption / bare exponentiation: how far the share computation is above the
    /// arithmetic it cannot avoid (its batched proof adds two exponentiations per vector).
    pub floor_ratio: f64,
    /// Verifying one party's batched proof, per ciphertext.
    pub verify_us_per_ciphertext: f64,
    /// Combining t verified shares, per ciphertext.
    pub combine_us_per_ciphertext: f64,
    /// Bytes on the wire per value, one ciphertext per value.
    pub naive_bytes_per_value: f64,
    /// Bytes on the wire per value, packed.
    pub packed_bytes_per_value: f64,
    /// Wall-clock speed-up of the same work on all `threads` cores over one core: quantize,
    /// pack and encrypt the update.
    pub encrypt_threads_speedup: f64,
    /// The same for one party's partial decryption with its proof.
    pub partial_decrypt_threads_speedup: f64,
    /// The same for verifying one party's share.
    pub verify_threads_speedup: f64,
}

fn one_core<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool")
        .install(f)
}

fn us(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6
}

/// Runs every measurement once. `progress` is called with a short label before each step.
pub fn run<R: RngCore + CryptoRng + Send>(
    config: &BenchConfig,
    rng: &mut R,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport> {
    let threshold = config.parties / 2 + 1;
    progress("key ceremony");
    let t = Instant::now();
    let (pk, shares) = deal(config.modulus_bits, config.parties, threshold, rng)?;
    let key_ceremony_ms_wall = us(t) / 1e3;

    progress("DJN table");
    let t = Instant::now();
    let table = EncryptionTable::new(&pk);
    let table_build_ms_wall = us(t) / 1e3;

    let codec = UpdateCodec::new(
        &pk,
        Quantizer::new(config.frac_bits, config.clip)?,
        config.total_weight,
    )?;
    let update: Vec<f32> = (0..config.values)
        .map(|i| ((i as f32) * 0.618).sin() * config.clip * 1.1)
        .collect();

    progress("naive encryption");
    let ek = EncryptionKey::from(kzen_paillier::MinimalEncryptionKey { n: pk.n().clone() });
    let naive_samples = config.naive_samples.max(1);
    let naive_encrypt_us_per_value = one_core(|| {
        let t = Instant::now();
        for i in 0..naive_samples {
            let m = BigInt::from(i as u64 + 1);
            let _ = Paillier::encrypt(&ek, RawPlaintext::from(m));
        }
        us(t) / naive_samples as f64
    });

    progress("packed encryption");
    let (encrypted, packed_us) = one_core(|| {
        let t = Instant::now();
        let e = codec.encrypt(&table, &update, config.total_weight, Rounding::Nearest, rng);
        (e, us(t))
    });
    let encrypted = encrypted?.ciphertexts;
    let packed_encrypt_us_per_value = packed_us / config.values as f64;
    progress("packed encryption, all cores");
    let t = Instant::now();
    codec.encrypt(&table, &update, config.total_weight, Rounding::Nearest, rng)?;
    let encrypt_threads_speedup = packed_us / us(t);

    progress("homomorphic addition");
    let add_us_per_ciphertext = one_core(|| {
        let mut sum = encrypted.clone();
        let t = Instant::now();
        add_into(&pk, &mut sum, &encrypted).map(|_| us(t) / encrypted.len() as f64)
    })?;

    let k = config.decrypt_ciphertexts.clamp(1, encrypted.len());
    let cts = &encrypted[..k];
    let ctx = b"fedchain bench";
    progress("partial decryption");
    let (dec, partial_us) = one_core(|| {
        let t = Instant::now();
        let d = partial_decrypt(&pk, &shares[0], cts, ctx, rng);
        (d, us(t))
    });
    let first = dec?;
    progress("partial decryption, all cores");
    let t = Instant::now();
    partial_decrypt(&pk, &shares[0], cts, ctx, rng)?;
    let partial_decrypt_threads_speedup = partial_us / us(t);
    // The same exponentiations with nothing around them: GMP's powm, same base, exponent and
    // modulus sizes, same core.
    progress("bare exponentiation");
    let exp = BigInt::from(2) * &pk.delta * &shares[0].s;
    let bare_us = one_core(|| {
        let t = Instant::now();
        for c in cts {
            std::hint::black_box(BigInt::mod_pow(&c.0, &exp, &pk.nn));
        }
        us(t)
    });
    let mut all = vec![first];
    for s in &shares[1..threshold] {
        all.push(partial_decrypt(&pk, s, cts, ctx, rng)?);
    }
    progress("verification");
    let verify_us = one_core(|| {
        let t = Instant::now();
        verify_share(&pk, cts, &all[0], ctx).map(|_| us(t))
    })?;
    progress("verification, all cores");
    let t = Instant::now();
    verify_share(&pk, cts, &all[0], ctx)?;
    let verify_threads_speedup = verify_us / us(t);
    progress("combination");
    let refs: Vec<_> = all.iter().collect();
    let combine_us = one_core(|| {
        let t = Instant::now();
        combine_verified(&pk, k, &refs).map(|_| us(t))
    })?;

    let ct_bytes = pk.ciphertext_len() as f64;
    Ok(BenchReport {
        config: config.clone(),
        threshold,
        threads: rayon::current_num_threads(),
        key_ceremony_ms_wall,
        table_build_ms_wall,
        table_mib: table.size_bytes() as f64 / (1 << 20) as f64,
        slot_bits: codec.packer().slot_bits(),
        slots_per_ciphertext: codec.packer().slots_per_plaintext(),
        ciphertexts: encrypted.len(),
        naive_encrypt_us_per_value,
        packed_encrypt_us_per_value,
        encrypt_speedup: naive_encrypt_us_per_value / packed_encrypt_us_per_value,
        add_us_per_ciphertext,
        partial_decrypt_us_per_ciphertext: partial_us / k as f64,
        bare_powm_us_per_ciphertext: bare_us / k as f64,
        floor_ratio: partial_us / bare_us,
        verify_us_per_ciphertext: verify_us / k as f64,
        combine_us_per_ciphertext: combine_us / k as f64,
        naive_bytes_per_value: ct_bytes,
        packed_bytes_per_value: ct_bytes * encrypted.len() as f64 / config.values as f64,
        encrypt_threads_speedup,
        partial_decrypt_threads_speedup,
        verify_threads_speedup,
    })
}
