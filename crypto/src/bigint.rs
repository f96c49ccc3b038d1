//! Big-integer helpers over curv's GMP-backed `BigInt` (the number type of kzen-paillier).

pub use kzen_paillier::BigInt;

use curv::arithmetic::traits::{BitManipulation, Converter, Modulo};
use rand::{CryptoRng, RngCore};

/// Uniform in `[0, 2^bits)`.
pub(crate) fn random_bits<R: RngCore + CryptoRng>(bits: usize, rng: &mut R) -> BigInt {
    let mut bytes = vec![0u8; bits.div_ceil(8)];
    rng.fill_bytes(&mut bytes);
    let extra = bytes.len() * 8 - bits;
    if extra > 0 {
        bytes[0] &= 0xff >> extra;
    }
    BigInt::from_bytes(&bytes)
}

/// Uniform in `[0, upper)` by rejection sampling (`upper` > 0).
pub(crate) fn random_below<R: RngCore + CryptoRng>(upper: &BigInt, rng: &mut R) -> BigInt {
    let bits = upper.bit_length();
    loop {
        let x = random_bits(bits, rng);
        if &x < upper {
            return x;
        }
    }
}

/// Big-endian bytes of a non-negative `x`, left-padded to exactly `len` bytes; `None` if it does
/// not fit or is negative.
pub(crate) fn to_fixed_bytes(x: &BigInt, len: usize) -> Option<Vec<u8>> {
    if x < &BigInt::from(0) {
        return None;
    }
    let raw = if x == &BigInt::from(0) {
        Vec::new()
    } else {
        x.to_bytes()
    };
    if raw.len() > len {
        return None;
    }
    let mut out = vec![0u8; len - raw.len()];
    out.extend_from_slice(&raw);
    Some(out)
}

/// `base^exp mod m` for a possibly negative `exp` (curv's `mod_pow` rejects negative exponents:
/// invert the base first). `None` when `exp < 0` and `base` is not invertible.
pub(crate) fn mod_pow_signed(base: &BigInt, exp: &BigInt, m: &BigInt) -> Option<BigInt> {
    let zero = BigInt::from(0);
    if exp < &zero {
        let inv = BigInt::mod_inv(base, m)?;
        Some(BigInt::mod_pow(&inv, &(-exp), m))
    } else {
        Some(BigInt::mod_pow(base, exp, m))
    }
}

/// Number of bytes of the fixed-length encoding of values below `modulus`.
pub(crate) fn byte_len(modulus: &BigInt) -> usize {
    modulus.bit_length().div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fixed_bytes_pad_and_reject() {
        assert_eq!(to_fixed_bytes(&BigInt::from(0), 3), Some(vec![0, 0, 0]));
        assert_eq!(to_fixed_bytes(&BigInt::from(258), 3), Some(vec![0, 1, 2]));
        assert_eq!(to_fixed_bytes(&BigInt::from(1 << 24), 3), None);
        assert_eq!(to_fixed_bytes(&BigInt::from(-1), 3), None);
    }

    #[test]
    fn random_below_stays_below_and_varies() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let upper = BigInt::from(1000);
        let xs: Vec<_> = (0..200).map(|_| random_below(&upper, &mut rng)).collect();
        assert!(xs.iter().all(|x| x < &upper && x >= &BigInt::from(0)));
        assert!(xs.iter().any(|x| x > &BigInt::from(900)));
        assert!(xs.iter().any(|x| x < &BigInt::from(100)));
    }

    #[test]
    fn negative_exponents_invert() {
        let m = BigInt::from(101);
        let x = mod_pow_signed(&BigInt::from(3), &BigInt::from(-5), &m).unwrap();
        let back = BigInt::mod_mul(
            &x,
            &BigInt::mod_pow(&BigInt::from(3), &BigInt::from(5), &m),
            &m,
        );
        assert_eq!(back, BigInt::from(1));
        assert!(mod_pow_signed(&BigInt::from(0), &BigInt::from(-1), &m).is_none());
    }
}
