//! Threshold Paillier keys: the dealer ceremony, public keys and key shares.
//!
//! Damgard-Jurik (s = 1) with Shoup-style verification keys, as in `shared/notes/crypto.md`:
//! safe primes `p = 2p' + 1`, `q = 2q' + 1`, `N = pq`, `m = p'q'`; the secret `d` satisfies
//! `d = 0 (mod m)` and `d = 1 (mod N)` and is shared with a random polynomial of degree `t - 1`
//! over the integers modulo `N m`. Share `i` is `s_i = f(i)`. `Delta = n!` makes Lagrange
//! coefficients integral. `v` is a random square modulo `N^2` and `v_i = v^(Delta s_i)` lets anyone
//! check a share holder's work. The public key also carries the DJN base `h_s = (-x^2)^N mod N^2`
//! for fast encryption. After the ceremony the dealer forgets `p`, `q`, `m`, `d` and the
//! polynomial: they live only in this function's stack.

use crate::bigint::{byte_len, random_below, BigInt};
use crate::encoding::{Reader, Writer, MAGIC_KEY_SHARE, MAGIC_PUBLIC_KEY};
use crate::error::{CryptoError, Result};
use crate::primes::safe_prime;
use curv::arithmetic::traits::{BitManipulation, Integer, Modulo};
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Default modulus size.
pub const DEFAULT_MODULUS_BITS: usize = 2048;
/// Smallest modulus [`deal`] accepts. Anything under 2048 bits is for tests only.
pub const MIN_MODULUS_BITS: usize = 256;
/// Most parties a key supports (`Delta = n!` and the u16 encodings bound it).
pub const MAX_PARTIES: usize = 1000;

/// The consortium's public key: encryption, plus what is needed to verify decryption shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub(crate) n: BigInt,
    pub(crate) nn: BigInt,
    pub(crate) h_s: BigInt,
    pub(crate) parties: usize,
    pub(crate) threshold: usize,
    pub(crate) delta: BigInt,
    pub(crate) v: BigInt,
    pub(crate) verification_keys: Vec<BigInt>,
}

/// One hospital's share of the decryption key. Secret: store it with owner-only permissions
/// ([`KeyShare::save`]).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyShare {
    pub(crate) index: usize,
    pub(crate) public_key_digest: [u8; 32],
    pub(crate) s: BigInt,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("KeyShare")
            .field("index", &self.index)
            .field("s", &"<secret>")
            .finish()
    }
}

fn factorial(n: usize) -> BigInt {
    (1..=n).fold(BigInt::from(1), |acc, k| acc * BigInt::from(k as u64))
}

/// Runs the dealer ceremony: fresh safe primes of `modulus_bits / 2` bits each, then the keys.
pub fn deal<R: RngCore + CryptoRng>(
    modulus_bits: usize,
    parties: usize,
    threshold: usize,
    rng: &mut R,
) -> Result<(PublicKey, Vec<KeyShare>)> {
    if modulus_bits < MIN_MODULUS_BITS || !modulus_bits.is_multiple_of(2) {
        return Err(CryptoError::InvalidParameter(format!(
            "the modulus must be an even number of bits, at least {MIN_MODULUS_BITS} \
             ({DEFAULT_MODULUS_BITS} or 3072 in production); got {modulus_bits}"
        )));
    }
    check_parties(parties, threshold)?;
    let half = modulus_bits / 2;
    let p = safe_prime(half, rng)?;
    let q = loop {
        let q = safe_prime(half, rng)?;
        if q != p {
            break q;
        }
    };
    deal_with_primes(&p, &q, parties, threshold, rng)
}

fn check_parties(parties: usize, threshold: usize) -> Result<()> {
    if parties == 0 || parties > MAX_PARTIES {
        return Err(CryptoError::InvalidParameter(format!(
            "the number of parties must be between 1 and {MAX_PARTIES}, got {parties}"
        )));
    }
    if threshold == 0 || threshold > parties {
        return Err(CryptoError::InvalidParameter(format!(
            "the threshold must be between 1 and the number of parties ({parties}), got {threshold}"
        )));
    }
    Ok(())
}

/// The dealer ceremony from given safe primes: for known-answer tests with small fixed primes,
/// and for [`deal`]. `p` and `q` must be distinct safe primes.
pub fn deal_with_primes<R: RngCore + CryptoRng>(
    p: &BigInt,
    q: &BigInt,
    parties: usize,
    threshold: usize,
    rng: &mut R,
) -> Result<(PublicKey, Vec<KeyShare>)> {
    check_parties(parties, threshold)?;
    let one = BigInt::from(1);
    let two = BigInt::from(2);
    if p == q || !crate::primes::is_safe_prime(p) || !crate::primes::is_safe_prime(q) {
        return Err(CryptoError::InvalidParameter(
            "p and q must be distinct safe primes".into(),
        ));
    }
    let n = p * q;
    let nn = &n * &n;
    let m = ((p - &one) / &two) * ((q - &one) / &two);
    let nm = &n * &m;
    // d = 0 mod m, d = 1 mod N.
    let m_inv = BigInt::mod_inv(&m, &n).ok_or_else(|| {
        CryptoError::InvalidParameter("m is not invertible modulo N (primes too small)".into())
    })?;
    let d = &m * &m_inv;

    // f(X) = d + a_1 X + ... + a_{t-1} X^{t-1} over Z_{Nm}.
    let coeffs: Vec<BigInt> = std::iter::once(d)
        .chain((1..threshold).map(|_| random_below(&nm, rng)))
        .collect();
    let shares_s: Vec<BigInt> = (1..=parties)
        .map(|i| {
            let x = BigInt::from(i as u64);
            // Horner's rule.
            coeffs
                .iter()
                .rev()
                .fold(BigInt::from(0), |acc, a| (acc * &x + a).modulus(&nm))
        })
        .collect();

    let delta = factorial(parties);
    let v = loop {
        let r = random_below(&nn, rng);
        if r > one && r.gcd(&n) == one {
            break BigInt::mod_mul(&r, &r, &nn);
        }
    };
    let verification_keys: Vec<BigInt> = shares_s
        .par_iter()
        .map(|s| BigInt::mod_pow(&v, &(&delta * s), &nn))
        .collect();

    // DJN: h = -x^2 mod N for a random unit x, h_s = h^N mod N^2.
    let x = loop {
        let x = random_below(&n, rng);
        if x > one && x.gcd(&n) == one {
            break x;
        }
    };
    let h = &n - BigInt::mod_mul(&x, &x, &n);
    let h_s = BigInt::mod_pow(&h, &n, &nn);

    let pk = PublicKey {
        n,
        nn,
        h_s,
        parties,
        threshold,
        delta,
        v,
        verification_keys,
    };
    let digest = pk.digest();
    let shares = shares_s
        .into_iter()
        .enumerate()
        .map(|(i, s)| KeyShare {
            index: i + 1,
            public_key_digest: digest,
            s,
        })
        .collect();
    Ok((pk, shares))
}

impl PublicKey {
    /// The modulus N.
    pub fn n(&self) -> &BigInt {
        &self.n
    }

    /// N^2, the ciphertext modulus.
    pub fn n_squared(&self) -> &BigInt {
        &self.nn
    }

    /// Bits of N.
    pub fn modulus_bits(&self) -> usize {
        self.n.bit_length()
    }

    /// Number of share holders n.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// Shares needed to decrypt, t.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Bytes of one encoded ciphertext (fixed length below N^2).
    pub fn ciphertext_len(&self) -> usize {
        byte_len(&self.nn)
    }

    /// SHA-256 of the canonical encoding: the key's identity on the ledger and in share files.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.to_bytes()).into()
    }

    /// Checks an element that should be a unit modulo N^2: `0 < x < N^2` and `gcd(x, N) = 1`.
    pub(crate) fn check_unit(&self, x: &BigInt) -> std::result::Result<(), String> {
        if x <= &BigInt::from(0) || x >= &self.nn {
            return Err("not in the range 0 < c < N^2".into());
        }
        if x.gcd(&self.n) != BigInt::from(1) {
            return Err("shares a factor with N".into());
        }
        Ok(())
    }

    /// Canonical encoding (see [`crate::encoding`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let nlen = byte_len(&self.n);
        let clen = self.ciphertext_len();
        let mut w = Writer::new(MAGIC_PUBLIC_KEY);
        w.u16(nlen);
        w.fixed(&self.n, nlen);
        w.u16(self.parties);
        w.u16(self.threshold);
        w.fixed(&self.h_s, clen);
        w.fixed(&self.v, clen);
        for vk in &self.verification_keys {
            w.fixed(vk, clen);
        }
        w.finish()
    }

    /// Decodes and validates a public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey> {
        let mut r = Reader::new("public key", MAGIC_PUBLIC_KEY, bytes)?;
        let nlen = r.u16()?;
        if nlen * 8 < MIN_MODULUS_BITS {
            return Err(r.err(format!("modulus of {nlen} bytes is too small")));
        }
        let n = r.fixed(nlen)?;
        if byte_len(&n) != nlen || !n.test_bit(0) {
            return Err(r.err("modulus is not an odd number of the stated length".into()));
        }
        let parties = r.u16()?;
        let threshold = r.u16()?;
        check_parties(parties, threshold).map_err(|e| r.err(e.to_string()))?;
        let nn = &n * &n;
        let clen = byte_len(&nn);
        let h_s = r.fixed(clen)?;
        let v = r.fixed(clen)?;
        let verification_keys = (0..parties)
            .map(|_| r.fixed(clen))
            .collect::<Result<Vec<_>>>()?;
        r.end()?;
        let pk = PublicKey {
            n,
            nn,
            h_s,
            parties,
            threshold,
            delta: factorial(parties),
            v,
            verification_keys,
        };
        for (name, x) in [("h_s", &pk.h_s), ("v", &pk.v)].into_iter().chain(
            pk.verification_keys
                .iter()
                .map(|vk| ("verification key", vk)),
        ) {
            pk.check_unit(x).map_err(|why| CryptoError::Decode {
                what: "public key",
                reason: format!("{name} {why}"),
            })?;
        }
        Ok(pk)
    }
}

/// Writes bytes to a new file (never overwriting), with `mode` on Unix, synced to disk.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let io = |source| CryptoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| CryptoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl PublicKey {
    /// Writes the key to a new file (world-readable: it is public). Refuses to overwrite.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_new(path, &self.to_bytes(), 0o644)
    }

    /// Reads and validates a public key file.
    pub fn load(path: &Path) -> Result<PublicKey> {
        PublicKey::from_bytes(&read(path)?)
    }
}

/// File name of the public key in a ceremony folder.
pub const PUBLIC_KEY_FILE: &str = "public.key";

/// File name of party `index`'s share in a ceremony folder.
pub fn share_file_name(index: usize) -> String {
    format!("share-{index}.key")
}

/// Writes a ceremony's output into `dir` (created if missing): [`PUBLIC_KEY_FILE`] and one
/// owner-only share file per party. Refuses to overwrite existing key files. Returns the paths
/// written, public key first.
pub fn write_ceremony(
    dir: &Path,
    pk: &PublicKey,
    shares: &[KeyShare],
) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| CryptoError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let paths: Vec<_> = std::iter::once(dir.join(PUBLIC_KEY_FILE))
        .chain(shares.iter().map(|s| dir.join(share_file_name(s.index))))
        .collect();
    // Check them all first, so a refusal never leaves half a ceremony behind.
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(CryptoError::Io {
            path: existing.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a key file is already there; choose an empty folder",
            ),
        });
    }
    pk.save(&paths[0])?;
    for (s, path) in shares.iter().zip(&paths[1..]) {
        s.save(path)?;
    }
    Ok(paths)
}

impl KeyShare {
    /// 1-based index of this share (the hospital's party number).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Digest of the public key this share belongs to.
    pub fn public_key_digest(&self) -> [u8; 32] {
        self.public_key_digest
    }

    /// Checks this share against the public key: right key, and `v^(Delta s_i) = v_i`.
    pub fn verify(&self, pk: &PublicKey) -> Result<()> {
        if self.public_key_digest != pk.digest() {
            return Err(CryptoError::InvalidParameter(format!(
                "key share {} belongs to another public key",
                self.index
            )));
        }
        if self.index == 0 || self.index > pk.parties {
            return Err(CryptoError::BadKeyShare { index: self.index });
        }
        let expected = &pk.verification_keys[self.index - 1];
        if &BigInt::mod_pow(&pk.v, &(&pk.delta * &self.s), &pk.nn) != expected {
            return Err(CryptoError::BadKeyShare { index: self.index });
        }
        Ok(())
    }

    /// Canonical encoding (see [`crate::encoding`]). Secret.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(MAGIC_KEY_SHARE);
        w.u16(self.index);
        w.bytes(&self.public_key_digest);
        w.var(&self.s);
        w.finish()
    }

    /// Decodes a key share (check it with [`KeyShare::verify`] before use).
    pub fn from_bytes(bytes: &[u8]) -> Result<KeyShare> {
        let mut r = Reader::new("key share", MAGIC_KEY_SHARE, bytes)?;
        let index = r.u16()?;
        let mut public_key_digest = [0u8; 32];
        public_key_digest.copy_from_slice(r.take(32)?);
        let s = r.var(2 * 1024)?;
        r.end()?;
        if index == 0 {
            return Err(CryptoError::Decode {
                what: "key share",
                reason: "index 0 (shares are numbered from 1)".into(),
            });
        }
        Ok(KeyShare {
            index,
            public_key_digest,
            s,
        })
    }

    /// Writes the share to a new file readable and writable by its owner only (mode 0600, set at
    /// creation so the secret is never briefly world-readable). Refuses to overwrite.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_new(path, &self.to_bytes(), 0o600)
    }

    /// Reads a share file (check it with [`KeyShare::verify`] before use).
    pub fn load(path: &Path) -> Result<KeyShare> {
        KeyShare::from_bytes(&read(path)?)
    }
}
