//! Encryption of model updates for fedchain: quantization, packing, fast threshold Paillier.
//!
//! A hospital's update is a vector of f32 values. It is quantized to fixed-point integers
//! ([`quantize`]), many integers are packed into each Paillier plaintext with a signed-digit
//! encoding whose slots are wide enough that the sum of every contributor's vector can never
//! overflow a slot or wrap modulo N ([`pack`]), and each plaintext is encrypted with DJN
//! randomizers from a fixed-base table built once per key ([`djn`]). Ciphertexts are ordinary
//! Paillier ciphertexts: the coordinator multiplies them ([`aggregate`]) without any key.
//!
//! Nobody holds the decryption key. A dealer ceremony ([`keys`]) splits it t-of-n among hospitals
//! (Damgard-Jurik/Shoup threshold Paillier on safe primes); each share holder decrypts a vector
//! partially and proves it did so correctly with one batched proof per vector ([`threshold`]), and
//! any t valid shares recover the plaintexts, while invalid shares are detected and named.
//!
//! [`update::UpdateCodec`] strings these together for one job, and [`mod@bench`] measures them.
//!
//! Every value that crosses a trust boundary has a canonical, versioned, fixed-length big-endian
//! encoding ([`encoding`]) so the ledger can hash it, and is validated on the way in.
//!
//! Design choices:
//! - Number type: `kzen-paillier`'s `BigInt` (curv on GMP); all randomness comes from a caller's
//!   `RngCore + CryptoRng`, so tests are reproducible and production uses the OS generator.
//! - Public inputs are untrusted: every function taking ciphertexts, shares or proofs from the
//!   network checks lengths, ranges and group membership and returns a typed error, never panics.
//!
//! Architecture invariant: this crate knows nothing of models, datasets, the ledger, the network
//! or libtorch. It sees vectors of numbers and bytes.
#![deny(missing_docs)]

pub mod aggregate;
pub mod bench;
mod bigint;
pub mod djn;
pub mod encoding;
mod error;
pub mod keys;
pub mod noise;
pub mod pack;
pub mod primes;
pub mod quantize;
pub mod threshold;
pub mod update;

pub use bigint::BigInt;
pub use error::{CryptoError, Result};
