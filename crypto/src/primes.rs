//! Fast generation of safe primes `p = 2q + 1` (q prime) of an exact bit length.
//!
//! Threshold Paillier needs safe primes: they make the squares subgroup of Z*_{N^2} cyclic of order
//! N·p'q', which the share proofs rely on, and DJN needs `p = 3 mod 4` and `gcd(p-1, q-1) = 2`,
//! which safe primes satisfy. kzen's own generator spends seconds in trial division; here a
//! window of candidates `q + 2k` is sieved at once: for each small prime the candidates with `q`
//! or `2q + 1` divisible by it are struck out by striding through the window, as in the sieve of
//! Eratosthenes. Survivors get a base-2 Fermat test on `p` (cheap, rejects almost all), then
//! Miller-Rabin on both `q` and `p`.

use crate::bigint::{random_bits, BigInt};
use crate::error::{CryptoError, Result};
use curv::arithmetic::traits::{BitManipulation, Modulo, Primes};
use rand::{CryptoRng, RngCore};
use std::sync::OnceLock;

/// Primes below this bound are used to sieve candidates.
const SIEVE_LIMIT: u32 = 1 << 16;
/// Candidates `q + 2k` sieved from one random start before drawing a new start.
const WINDOW: usize = 1 << 16;
/// Miller-Rabin rounds (GMP's `mpz_probab_prime_p` reps) for the final tests.
const MR_ROUNDS: u32 = 30;

fn small_primes() -> &'static [u32] {
    static PRIMES: OnceLock<Vec<u32>> = OnceLock::new();
    PRIMES.get_or_init(|| {
        let n = SIEVE_LIMIT as usize;
        let mut composite = vec![false; n];
        let mut primes = Vec::new();
        for i in 2..n {
            if !composite[i] {
                if i > 2 {
                    primes.push(i as u32);
                }
                let mut j = i * i;
                while j < n {
                    composite[j] = true;
                    j += i;
                }
            }
        }
        primes
    })
}

/// A random safe prime `p` with exactly `bits` bits whose two top bits are set (so the product of
/// two such primes has exactly `2 * bits` bits). `bits` must be at least 16.
pub fn safe_prime<R: RngCore + CryptoRng>(bits: usize, rng: &mut R) -> Result<BigInt> {
    if bits < 16 {
        return Err(CryptoError::InvalidParameter(format!(
            "safe primes need at least 16 bits, asked for {bits}"
        )));
    }
    let primes = small_primes();
    let two = BigInt::from(2);
    let one = BigInt::from(1);
    let mut composite = vec![false; WINDOW];
    loop {
        // q has bits - 1 bits, its top two bits set, and is odd; candidates are q + 2k.
        let mut q = random_bits(bits - 1, rng);
        q.set_bit(bits - 2, true);
        q.set_bit(bits - 3, true);
        q.set_bit(0, true);
        composite.iter_mut().for_each(|c| *c = false);
        for &sp in primes {
            if u64::from(sp) >= (1u64 << (bits - 2).min(63)) {
                break; // a small prime could be the candidate itself
            }
            let sp64 = u64::from(sp);
            let r = small_mod(&q, sp);
            // (sp + 1) / 2 is the inverse of 2 modulo sp.
            let inv2 = sp64.div_ceil(2);
            // q + 2k = 0 (mod sp): q itself has the factor sp.
            let k0 = (sp64 - r) % sp64 * inv2 % sp64;
            // q + 2k = (sp - 1)/2 (mod sp): then p = 2(q + 2k) + 1 = 0 (mod sp).
            let k1 = ((sp64 - 1) / 2 + sp64 - r) % sp64 * inv2 % sp64;
            for start in [k0, k1] {
                let mut k = start as usize;
                while k < WINDOW {
                    composite[k] = true;
                    k += sp as usize;
                }
            }
        }
        for (k, _) in composite.iter().enumerate().filter(|(_, &c)| !c) {
            let cand_q = &q + BigInt::from(2 * k as u64);
            let p = &cand_q * &two + &one;
            if p.bit_length() != bits {
                break; // walked past the bit length; draw a new start
            }
            // A base-2 Fermat test on p rejects almost every survivor at the cost of one
            // exponentiation; Miller-Rabin runs only on the rare candidates that pass.
            if BigInt::mod_pow(&two, &(&p - &one), &p) == one
                && cand_q.is_probable_prime(MR_ROUNDS)
                && p.is_probable_prime(MR_ROUNDS)
            {
                return Ok(p);
            }
        }
    }
}

/// `x mod m` for a small `m`.
fn small_mod(x: &BigInt, m: u32) -> u64 {
    let r = x.modulus(&BigInt::from(m));
    u64::try_from(&r).expect("a residue modulo a u32 fits a u64")
}

/// True when `p` is a safe prime (`p` and `(p - 1) / 2` both pass Miller-Rabin).
pub fn is_safe_prime(p: &BigInt) -> bool {
    let one = BigInt::from(1);
    if p <= &BigInt::from(5) || !p.test_bit(0) {
        return p == &BigInt::from(5) || p == &BigInt::from(7);
    }
    let q = (p - &one) / BigInt::from(2);
    q.is_probable_prime(MR_ROUNDS) && p.is_probable_prime(MR_ROUNDS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use curv::arithmetic::traits::Converter;
    use rand::SeedableRng;

    fn hex(x: &BigInt) -> String {
        x.to_hex()
    }

    #[test]
    fn generates_safe_primes_of_exact_size() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for bits in [16, 64, 128, 256] {
            let p = safe_prime(bits, &mut rng).unwrap();
            assert_eq!(p.bit_length(), bits, "{}", hex(&p));
            assert!(p.test_bit(bits - 1) && p.test_bit(bits - 2));
            assert!(is_safe_prime(&p), "{}", hex(&p));
            assert_eq!(p.modulus(&BigInt::from(4)), BigInt::from(3));
        }
    }

    #[test]
    fn recognises_safe_primes() {
        for p in [5u32, 7, 11, 23, 47, 59, 83, 107, 167, 179, 227, 263] {
            assert!(is_safe_prime(&BigInt::from(p)), "{p}");
        }
        for n in [9u32, 13, 17, 29, 31, 41, 43, 100] {
            assert!(!is_safe_prime(&BigInt::from(n)), "{n}");
        }
    }

    #[test]
    fn too_small_is_an_error() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        assert!(safe_prime(8, &mut rng).is_err());
    }
}
