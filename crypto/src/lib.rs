//! Encryption of model updates for fedchain (threshold Paillier, packing, quantization).
//!
//! **Status: empty.** The crypto issue fills this crate: fixed-point quantization of f32 updates,
//! signed-digit packing of many values per plaintext, DJN-accelerated Paillier encryption on
//! `kzen-paillier`, t-of-n threshold keys with batched proofs of correct partial decryption, and
//! canonical byte encodings that the ledger hashes. Nothing here yet claims to do any of that.
//!
//! Architecture invariant: this crate knows nothing of models, datasets, the ledger, the network or
//! libtorch. It sees vectors of numbers and bytes.
#![deny(missing_docs)]
