//! The whole path of a model update: f32 vector -> quantized -> packed -> encrypted, and back from
//! the decrypted aggregate to the averaged f32 vector.
//!
//! An [`UpdateCodec`] fixes everything the parties of a job must agree on: the quantizer (scale
//! and clipping bound), the total contributor weight, and hence the packing. It is derived from
//! the job's parameters, so every hospital and the decoder build the same one.

use crate::bigint::BigInt;
use crate::djn::{Ciphertext, EncryptionTable};
use crate::error::{CryptoError, Result};
use crate::keys::PublicKey;
use crate::pack::Packer;
use crate::quantize::{Quantizer, Rounding};
use rand::{CryptoRng, RngCore};

/// Quantizer plus packing for one job.
#[derive(Debug, Clone)]
pub struct UpdateCodec {
    quantizer: Quantizer,
    packer: Packer,
}

/// One contributor's encrypted update.
#[derive(Debug, Clone)]
pub struct EncryptedUpdate {
    /// The ciphertexts, `codec.ciphertexts_for(len)` of them.
    pub ciphertexts: Vec<Ciphertext>,
    /// Values that exceeded the clipping bound and were clipped.
    pub clipped: usize,
}

impl UpdateCodec {
    /// A codec for key `pk`, quantizer `quantizer`, and contributors whose weights sum to at most
    /// `total_weight`. Fails when the packing could overflow (see [`Packer::new`]).
    pub fn new(pk: &PublicKey, quantizer: Quantizer, total_weight: u64) -> Result<UpdateCodec> {
        let packer = Packer::new(pk.n(), quantizer.bound(), total_weight)?;
        Ok(UpdateCodec { quantizer, packer })
    }

    /// The quantizer.
    pub fn quantizer(&self) -> &Quantizer {
        &self.quantizer
    }

    /// The packer.
    pub fn packer(&self) -> &Packer {
        &self.packer
    }

    /// Ciphertexts needed for a vector of `len` values.
    pub fn ciphertexts_for(&self, len: usize) -> usize {
        self.packer.plaintexts_for(len)
    }

    /// Quantizes `update` weighted by `weight`, packs and encrypts it.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        table: &EncryptionTable,
        update: &[f32],
        weight: u64,
        rounding: Rounding,
        rng: &mut R,
    ) -> Result<EncryptedUpdate> {
        if weight > self.packer.total_weight() {
            return Err(CryptoError::InvalidParameter(format!(
                "weight {weight} exceeds the job's total weight {}",
                self.packer.total_weight()
            )));
        }
        let q = self.quantizer.quantize_weighted(update, weight, rounding)?;
        let plaintexts = self.packer.pack(&q.values)?;
        Ok(EncryptedUpdate {
            ciphertexts: table.encrypt_all(&plaintexts, rng)?,
            clipped: q.clipped,
        })
    }

    /// Decodes decrypted aggregate plaintexts into the integer sums of all contributions, checking
    /// every slot against the allowed range.
    pub fn decode_sums(&self, plaintexts: &[BigInt], len: usize) -> Result<Vec<i64>> {
        self.packer.unpack(plaintexts, len)
    }

    /// Decodes into the weighted average: sums divided by `total_weight_used` (the weights of
    /// the contributors actually aggregated) and by the quantizer's scale.
    pub fn decode_average(
        &self,
        plaintexts: &[BigInt],
        len: usize,
        total_weight_used: u64,
    ) -> Result<Vec<f32>> {
        if total_weight_used == 0 {
            return Err(CryptoError::InvalidParameter(
                "cannot average over a total weight of 0".into(),
            ));
        }
        let sums = self.decode_sums(plaintexts, len)?;
        Ok(self.quantizer.dequantize(&sums, total_weight_used as f64))
    }
}
