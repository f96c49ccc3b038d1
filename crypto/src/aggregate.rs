//! Homomorphic addition: the coordinator's only operation on ciphertexts.
//!
//! Multiplying Paillier ciphertexts modulo N^2 adds their plaintexts modulo N. Packed slots are
//! wide enough for the sum of every contributor ([`crate::pack`]), so the product of all
//! contributors' vectors decrypts to the packed sum of their quantized updates.

use crate::djn::Ciphertext;
use crate::error::{CryptoError, Result};
use crate::keys::PublicKey;
use curv::arithmetic::traits::Modulo;
use rayon::prelude::*;

/// Multiplies `into` by `other` elementwise (adds one contributor's vector to a running sum).
pub fn add_into(pk: &PublicKey, into: &mut [Ciphertext], other: &[Ciphertext]) -> Result<()> {
    if into.len() != other.len() {
        return Err(CryptoError::WrongLength {
            what: "ciphertext vector to add".into(),
            expected: into.len(),
            found: other.len(),
        });
    }
    into.par_iter_mut().zip(other).for_each(|(a, b)| {
        a.0 = crate::BigInt::mod_mul(&a.0, &b.0, &pk.nn);
    });
    Ok(())
}

/// The elementwise product of several equally long ciphertext vectors (their homomorphic sum).
/// The vectors are borrowed (`Vec`s or slices), so a caller that keeps them copies none.
pub fn aggregate<V: AsRef<[Ciphertext]>>(pk: &PublicKey, vectors: &[V]) -> Result<Vec<Ciphertext>> {
    let Some((first, rest)) = vectors.split_first() else {
        return Err(CryptoError::InvalidParameter(
            "nothing to aggregate: no ciphertext vectors".into(),
        ));
    };
    let mut sum = first.as_ref().to_vec();
    for v in rest {
        add_into(pk, &mut sum, v.as_ref())?;
    }
    Ok(sum)
}
