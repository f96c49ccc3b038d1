//! Fast Paillier encryption with DJN randomizers and a fixed-base table.
//!
//! Plain Paillier computes `r^N mod N^2` per ciphertext (a 2048-bit exponent: ~9 ms). DJN
//! (Damgard-Jurik-Nielsen) instead uses `h_s^alpha` with a fixed public base `h_s = h^N` and a
//! short `alpha < 2^ceil(|N|/2)`; since `h_s^alpha = (h^alpha)^N` the result is an ordinary Paillier
//! ciphertext `(1 + mN) r^N` (decryption, addition and threshold decryption are unchanged). With a
//! fixed base, a table of `h_s^(j 2^(8i))` for every byte position `i` and byte value `j` turns the
//! exponentiation into one multiplication per byte of `alpha` and no squarings. The table is built
//! once per key (16 MiB and ~0.2 s for 2048-bit N) and shared by every encryption.

use crate::bigint::{random_bits, BigInt};
use crate::encoding::{Reader, Writer, MAGIC_CIPHERTEXTS};
use crate::error::{CryptoError, Result};
use crate::keys::PublicKey;
use curv::arithmetic::traits::Modulo;
use rand::{CryptoRng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use std::collections::HashSet;

/// A Paillier ciphertext: an integer modulo N^2. Built only by encryption, aggregation, or
/// decoding with validation, so every value is in range and a unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ciphertext(pub(crate) BigInt);

impl Ciphertext {
    /// The integer.
    pub fn as_bigint(&self) -> &BigInt {
        &self.0
    }

    /// Validates an integer received from outside as a ciphertext under `pk`:
    /// `0 < c < N^2` and `gcd(c, N) = 1`. `index` names it in the error.
    pub fn from_bigint(pk: &PublicKey, c: BigInt, index: usize) -> Result<Ciphertext> {
        pk.check_unit(&c)
            .map_err(|reason| CryptoError::InvalidCiphertext { index, reason })?;
        Ok(Ciphertext(c))
    }
}

/// Bits of the DJN exponent alpha for a modulus of `n_bits`: `ceil(n_bits / 2)`.
fn alpha_bits(n_bits: usize) -> usize {
    n_bits.div_ceil(2)
}

const WINDOW_BITS: usize = 8;

/// The fixed-base table for one public key. Build once ([`EncryptionTable::new`]), share across
/// threads.
pub struct EncryptionTable {
    n: BigInt,
    nn: BigInt,
    alpha_bits: usize,
    /// `rows[i][j] = h_s^(j * 2^(8 i)) mod N^2`.
    rows: Vec<Vec<BigInt>>,
}

impl EncryptionTable {
    /// Builds the table (parallel over byte positions).
    pub fn new(pk: &PublicKey) -> EncryptionTable {
        let alpha_bits = alpha_bits(pk.modulus_bits());
        let windows = alpha_bits.div_ceil(WINDOW_BITS);
        let nn = pk.nn.clone();
        // Bases h_s^(2^(8i)) by repeated squaring, then each row in parallel.
        let mut bases = Vec::with_capacity(windows);
        let mut b = pk.h_s.clone();
        for _ in 0..windows {
            bases.push(b.clone());
            for _ in 0..WINDOW_BITS {
                b = BigInt::mod_mul(&b, &b, &nn);
            }
        }
        let rows = bases
            .par_iter()
            .map(|base| {
                let mut row = Vec::with_capacity(1 << WINDOW_BITS);
                let mut acc = BigInt::from(1);
                for _ in 0..(1 << WINDOW_BITS) {
                    row.push(acc.clone());
                    acc = BigInt::mod_mul(&acc, base, &nn);
                }
                row
            })
            .collect();
        EncryptionTable {
            n: pk.n.clone(),
            nn,
            alpha_bits,
            rows,
        }
    }

    /// Memory held by the table, in bytes (approximate).
    pub fn size_bytes(&self) -> usize {
        self.rows.len() * (1 << WINDOW_BITS) * crate::bigint::byte_len(&self.nn)
    }

    /// `h_s^alpha mod N^2` for a fresh random alpha.
    fn randomizer<R: RngCore + CryptoRng>(&self, rng: &mut R) -> BigInt {
        let mut alpha = vec![0u8; self.rows.len()];
        rng.fill_bytes(&mut alpha);
        let extra = self.rows.len() * WINDOW_BITS - self.alpha_bits;
        if let Some(top) = alpha.last_mut() {
            *top &= 0xff >> extra;
        }
        // alpha's byte i (least significant first) selects rows[i][byte].
        let mut acc: Option<BigInt> = None;
        for (row, &byte) in self.rows.iter().zip(&alpha) {
            if byte == 0 {
                continue;
            }
            let f = &row[byte as usize];
            acc = Some(match acc {
                None => f.clone(),
                Some(a) => BigInt::mod_mul(&a, f, &self.nn),
            });
        }
        acc.unwrap_or_else(|| BigInt::from(1))
    }

    /// Encrypts one plaintext `0 <= m < N`.
    pub fn encrypt<R: RngCore + CryptoRng>(&self, m: &BigInt, rng: &mut R) -> Result<Ciphertext> {
        if m < &BigInt::from(0) || m >= &self.n {
            return Err(CryptoError::InvalidParameter(
                "plaintext must be in [0, N)".into(),
            ));
        }
        // (1 + N)^m = 1 + mN mod N^2, and 1 + mN < N^2 for m < N: no reduction needed.
        let gm = m * &self.n + BigInt::from(1);
        Ok(Ciphertext(BigInt::mod_mul(
            &gm,
            &self.randomizer(rng),
            &self.nn,
        )))
    }

    /// Encrypts many plaintexts in parallel. Each ciphertext gets its own ChaCha20 stream seeded
    /// from `rng`, so the output does not depend on how rayon schedules the work.
    pub fn encrypt_all<R: RngCore + CryptoRng>(
        &self,
        plaintexts: &[BigInt],
        rng: &mut R,
    ) -> Result<Vec<Ciphertext>> {
        let seeds: Vec<[u8; 32]> = plaintexts
            .iter()
            .map(|_| {
                let mut s = [0u8; 32];
                rng.fill_bytes(&mut s);
                s
            })
            .collect();
        plaintexts
            .par_iter()
            .zip(seeds)
            .map(|(m, seed)| self.encrypt(m, &mut ChaCha20Rng::from_seed(seed)))
            .collect()
    }
}

/// Plain Paillier encryption (`r^N` with a random unit r): the slow reference DJN is measured
/// against, and a cross-check that DJN ciphertexts are ordinary ones.
pub fn encrypt_plain<R: RngCore + CryptoRng>(
    pk: &PublicKey,
    m: &BigInt,
    rng: &mut R,
) -> Result<Ciphertext> {
    if m < &BigInt::from(0) || m >= &pk.n {
        return Err(CryptoError::InvalidParameter(
            "plaintext must be in [0, N)".into(),
        ));
    }
    let r = loop {
        let r = random_bits(pk.modulus_bits(), rng);
        if pk.check_unit(&r).is_ok() && r < pk.n {
            break r;
        }
    };
    let gm = m * &pk.n + BigInt::from(1);
    Ok(Ciphertext(BigInt::mod_mul(
        &gm,
        &BigInt::mod_pow(&r, &pk.n, &pk.nn),
        &pk.nn,
    )))
}

/// Canonical encoding of a ciphertext vector (see [`crate::encoding`]).
pub fn encode_ciphertexts(pk: &PublicKey, cts: &[Ciphertext]) -> Vec<u8> {
    let len = pk.ciphertext_len();
    let mut w = Writer::new(MAGIC_CIPHERTEXTS);
    w.u32(cts.len());
    for c in cts {
        w.fixed(&c.0, len);
    }
    w.finish()
}

/// Decodes a ciphertext vector from an untrusted source: exact length for `expected` ciphertexts
/// (when given), every ciphertext validated, no duplicates (honest DJN encryptions never repeat;
/// a repeat is a replayed value).
pub fn decode_ciphertexts(
    pk: &PublicKey,
    bytes: &[u8],
    expected: Option<usize>,
) -> Result<Vec<Ciphertext>> {
    let mut r = Reader::new("ciphertext vector", MAGIC_CIPHERTEXTS, bytes)?;
    let count = r.u32()?;
    if let Some(e) = expected {
        if count != e {
            return Err(CryptoError::WrongLength {
                what: "ciphertext vector".into(),
                expected: e,
                found: count,
            });
        }
    }
    let len = pk.ciphertext_len();
    let body = r.take(
        count
            .checked_mul(len)
            .ok_or_else(|| r.err("count overflows".into()))?,
    )?;
    r.end()?;
    // Duplicates are found on the canonical bytes, before any arithmetic.
    let mut seen = HashSet::with_capacity(count);
    for (i, chunk) in body.chunks(len).enumerate() {
        if !seen.insert(chunk) {
            return Err(CryptoError::InvalidCiphertext {
                index: i,
                reason: "duplicate of an earlier ciphertext in the vector".into(),
            });
        }
    }
    body.par_chunks(len)
        .enumerate()
        .map(|(i, chunk)| {
            Ciphertext::from_bigint(
                pk,
                curv::arithmetic::traits::Converter::from_bytes(chunk),
                i,
            )
        })
        .collect()
}
