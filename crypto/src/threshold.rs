//! Partial decryption with one batched proof per vector, verification, and combination.
//!
//! Share holder `i` computes `c_ij = c_j^(2 Delta s_i) mod N^2` for every ciphertext `c_j` of a
//! vector. To prove all of them at once it derives coefficients `rho_j` (128 bits each) by
//! Fiat-Shamir from the whole transcript, folds the vector into `C = prod c_j^rho_j` and
//! `C_i = prod c_ij^rho_j` (so `C_i = C^(2 Delta s_i)` if every `c_ij` is right), and gives one
//! Chaum-Pedersen proof that `log_{C^4}(C_i^2) = log_v(v_i)`, where `v_i` is its *published*
//! verification key. A wrong `c_ij` survives the folding only with probability about 2^-128.
//! Squaring (`C^4`, `C_i^2`) moves everything into the squares subgroup, where the proof is sound.
//!
//! Any `t` valid shares combine: with Lagrange coefficients `mu_i = Delta * prod_{k != i} k/(k-i)`
//! (integers thanks to `Delta = n!`), `prod c_ij^(2 mu_i) = 1 + 4 Delta^2 M N mod N^2`, so
//! `M = L(.) * (4 Delta^2)^-1 mod N`.
//!
//! Every proof is bound to a caller-chosen `context` (job, round, aggregate digest), so a share
//! for one round cannot be replayed in another.

use crate::bigint::{byte_len, mod_pow_signed, random_bits, BigInt};
use crate::djn::Ciphertext;
use crate::encoding::{Reader, Writer, MAGIC_DECRYPTION_SHARE};
use crate::error::{CryptoError, Result};
use crate::keys::{KeyShare, PublicKey};
use curv::arithmetic::traits::{BitManipulation, Converter, Modulo};
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Bits of each batching coefficient.
const RHO_BITS: usize = 128;
/// Bits of the Fiat-Shamir challenge.
const CHALLENGE_BITS: usize = 256;
/// Extra bits of the prover's nonce beyond the secret exponent's size (statistical hiding).
const HIDING_BITS: usize = 128;

/// Proof that a decryption share was computed with the holder's key share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareProof {
    /// The challenge (256 bits).
    pub(crate) e: BigInt,
    /// The response `r + e * Delta * s_i` (a non-negative integer).
    pub(crate) z: BigInt,
}

/// Party `party`'s partial decryption of a ciphertext vector, with its proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecryptionShare {
    pub(crate) party: usize,
    pub(crate) values: Vec<BigInt>,
    pub(crate) proof: ShareProof,
}

impl DecryptionShare {
    /// 1-based party index.
    pub fn party(&self) -> usize {
        self.party
    }

    /// Number of ciphertexts covered.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True for a share of an empty vector.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Canonical encoding (see [`crate::encoding`]).
    pub fn to_bytes(&self, pk: &PublicKey) -> Vec<u8> {
        let len = pk.ciphertext_len();
        let mut w = Writer::new(MAGIC_DECRYPTION_SHARE);
        w.u16(self.party);
        w.u32(self.values.len());
        for v in &self.values {
            w.fixed(v, len);
        }
        w.fixed(&self.proof.e, CHALLENGE_BITS / 8);
        w.var(&self.proof.z);
        w.finish()
    }

    /// Decodes a share from an untrusted source: exact layout, `expected` values, every value a
    /// unit modulo N^2. The proof is checked by [`verify_share`], not here.
    pub fn from_bytes(pk: &PublicKey, bytes: &[u8], expected: usize) -> Result<DecryptionShare> {
        let mut r = Reader::new("decryption share", MAGIC_DECRYPTION_SHARE, bytes)?;
        let party = r.u16()?;
        if party == 0 || party > pk.parties {
            return Err(r.err(format!("party {party} is not in 1..={}", pk.parties)));
        }
        let count = r.u32()?;
        if count != expected {
            return Err(CryptoError::WrongLength {
                what: format!("decryption share of party {party}"),
                expected,
                found: count,
            });
        }
        let len = pk.ciphertext_len();
        let values = (0..count)
            .map(|_| r.fixed(len))
            .collect::<Result<Vec<_>>>()?;
        let e = r.fixed(CHALLENGE_BITS / 8)?;
        let z = r.var(z_bound_bytes(pk))?;
        r.end()?;
        for (j, v) in values.iter().enumerate() {
            pk.check_unit(v)
                .map_err(|why| CryptoError::BadDecryptionShare {
                    index: party,
                    reason: format!("value {j} {why}"),
                })?;
        }
        Ok(DecryptionShare {
            party,
            values,
            proof: ShareProof { e, z },
        })
    }
}

/// Bits of the nonce r: covers `e * Delta * s_i` with `s_i < N m < N^2`, plus hiding bits.
fn nonce_bits(pk: &PublicKey) -> usize {
    2 * pk.modulus_bits() + pk.delta.bit_length() + CHALLENGE_BITS + HIDING_BITS
}

/// Largest encoding of z, in bytes.
fn z_bound_bytes(pk: &PublicKey) -> usize {
    (nonce_bits(pk) + 8).div_ceil(8)
}

/// Length-prefixed hashing, so no two different transcripts hash the same bytes.
struct Transcript(Sha256);

impl Transcript {
    fn new(label: &str) -> Transcript {
        let mut t = Transcript(Sha256::new());
        t.bytes(label.as_bytes());
        t
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    fn int(&mut self, x: &BigInt, len: usize) {
        let b = crate::bigint::to_fixed_bytes(x, len).unwrap_or_else(|| x.to_bytes());
        self.bytes(&b);
    }
    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Fiat-Shamir batching coefficients for party `party` over ciphertexts and its values.
fn batch_coefficients(
    pk: &PublicKey,
    context: &[u8],
    party: usize,
    cts: &[Ciphertext],
    values: &[BigInt],
) -> Vec<u128> {
    let len = pk.ciphertext_len();
    let mut t = Transcript::new("fedchain/threshold/batch/v1");
    t.bytes(&pk.digest());
    t.bytes(context);
    t.bytes(&(party as u64).to_be_bytes());
    t.bytes(&(cts.len() as u64).to_be_bytes());
    for (c, v) in cts.iter().zip(values) {
        t.int(&c.0, len);
        t.int(v, len);
    }
    let seed = t.finish();
    (0..cts.len())
        .map(|j| {
            let mut h = Sha256::new();
            h.update(seed);
            h.update((j as u64).to_be_bytes());
            let d = h.finalize();
            let mut b = [0u8; 16];
            b.copy_from_slice(&d[..16]);
            u128::from_be_bytes(b)
        })
        .collect()
}

/// `prod bases[j]^exps[j] mod m` by Pippenger's bucket method: the exponents are cut into
/// `w`-bit windows, and per window each base is multiplied into the bucket of its digit, after
/// which two running products give `prod_d bucket_d^d` in `2^(w+1)` multiplications. That is
/// about `128/w` multiplications per base instead of one per set bit (64) with interleaved
/// square-and-multiply: the coordinator folds every share it verifies, so this is most of its
/// verification. The bases are split into one part per thread, each part's product computed in
/// parallel. A part of a few dozen bases (a small model's share) uses square-and-multiply,
/// cheaper there.
fn multi_exp(bases: &[&BigInt], exps: &[u128], m: &BigInt) -> BigInt {
    let per = bases
        .len()
        .div_ceil(rayon::current_num_threads().max(1))
        .max(64);
    let parts: Vec<BigInt> = bases
        .par_chunks(per)
        .zip(exps.par_chunks(per))
        .map(|(bs, es)| buckets(bs, es, m))
        .collect();
    parts
        .iter()
        .fold(BigInt::from(1), |a, p| BigInt::mod_mul(&a, p, m))
}

/// One part of [`multi_exp`], on one thread.
fn buckets(bases: &[&BigInt], exps: &[u128], m: &BigInt) -> BigInt {
    // Per window: one multiplication per base, 2^(w+1) to fold the buckets, w squarings.
    let cost = |w: usize| RHO_BITS.div_ceil(w) * (bases.len() + (2 << w) + w);
    let w = (1..=12).min_by_key(|&w| cost(w)).unwrap_or(4);
    // A few dozen bases (a small model's share) are cheaper one set bit at a time.
    if RHO_BITS + RHO_BITS / 2 * bases.len() < cost(w) {
        return straus(bases, exps, m);
    }
    buckets_of(bases, exps, m, w)
}

/// The bucket method with `w`-bit windows (the top one partial when `w` does not divide 128).
fn buckets_of(bases: &[&BigInt], exps: &[u128], m: &BigInt, w: usize) -> BigInt {
    let mask = (1u128 << w) - 1;
    let mut acc: Option<BigInt> = None;
    for window in (0..RHO_BITS.div_ceil(w)).rev() {
        if let Some(a) = acc.as_mut() {
            for _ in 0..w {
                *a = BigInt::mod_mul(a, a, m);
            }
        }
        let mut bucket: Vec<Option<BigInt>> = vec![None; 1 << w];
        for (b, e) in bases.iter().zip(exps) {
            let d = ((e >> (window * w)) & mask) as usize;
            if d != 0 {
                bucket[d] = Some(match bucket[d].take() {
                    None => (*b).clone(),
                    Some(x) => BigInt::mod_mul(&x, b, m),
                });
            }
        }
        // prod_d bucket_d^d = prod_d (prod_{d' >= d} bucket_d'): a running product of running
        // products, from the highest digit down.
        let (mut running, mut sum): (Option<BigInt>, Option<BigInt>) = (None, None);
        for b in bucket.into_iter().skip(1).rev() {
            running = match (running, b) {
                (r, None) => r,
                (None, Some(b)) => Some(b),
                (Some(r), Some(b)) => Some(BigInt::mod_mul(&r, &b, m)),
            };
            if let Some(r) = &running {
                sum = Some(match sum {
                    None => r.clone(),
                    Some(s) => BigInt::mod_mul(&s, r, m),
                });
            }
        }
        if let Some(s) = sum {
            acc = Some(match acc {
                None => s,
                Some(a) => BigInt::mod_mul(&a, &s, m),
            });
        }
    }
    acc.unwrap_or_else(|| BigInt::from(1)).modulus(m)
}

/// Interleaved square-and-multiply: 128 shared squarings plus one multiplication per set bit.
fn straus(bases: &[&BigInt], exps: &[u128], m: &BigInt) -> BigInt {
    let mut acc = BigInt::from(1);
    for bit in (0..RHO_BITS).rev() {
        acc = BigInt::mod_mul(&acc, &acc, m);
        for (b, e) in bases.iter().zip(exps) {
            if (e >> bit) & 1 == 1 {
                acc = BigInt::mod_mul(&acc, b, m);
            }
        }
    }
    acc
}

/// The folded pair `(u, u_i) = (C^4, C_i^2)` the proof speaks about.
fn folded(
    pk: &PublicKey,
    context: &[u8],
    party: usize,
    cts: &[Ciphertext],
    values: &[BigInt],
) -> (BigInt, BigInt) {
    let rho = batch_coefficients(pk, context, party, cts, values);
    let c_bases: Vec<&BigInt> = cts.iter().map(|c| &c.0).collect();
    let v_bases: Vec<&BigInt> = values.iter().collect();
    let (c, ci) = rayon::join(
        || multi_exp(&c_bases, &rho, &pk.nn),
        || multi_exp(&v_bases, &rho, &pk.nn),
    );
    let c2 = BigInt::mod_mul(&c, &c, &pk.nn);
    (
        BigInt::mod_mul(&c2, &c2, &pk.nn),
        BigInt::mod_mul(&ci, &ci, &pk.nn),
    )
}

#[allow(clippy::too_many_arguments)]
fn challenge(
    pk: &PublicKey,
    context: &[u8],
    party: usize,
    u: &BigInt,
    ui: &BigInt,
    a: &BigInt,
    b: &BigInt,
) -> BigInt {
    let len = pk.ciphertext_len();
    let mut t = Transcript::new("fedchain/threshold/proof/v1");
    t.bytes(&pk.digest());
    t.bytes(context);
    t.bytes(&(party as u64).to_be_bytes());
    t.int(&pk.n, byte_len(&pk.n));
    t.int(&pk.v, len);
    t.int(&pk.verification_keys[party - 1], len);
    for x in [u, ui, a, b] {
        t.int(x, len);
    }
    BigInt::from_bytes(&t.finish())
}

/// A verified decryption share of some of an aggregate's ciphertexts: `share.values[k]` decrypts
/// ciphertext `at[k]` (indices strictly increasing). Verify the share against exactly those
/// ciphertexts (with [`verify_share`]) before combining it.
#[derive(Clone, Copy, Debug)]
pub struct Piece<'a> {
    /// The share.
    pub share: &'a DecryptionShare,
    /// The aggregate's index of each of its values.
    pub at: &'a [usize],
}

/// [`verify_share`] of a piece: its share checked against exactly the ciphertexts of `all` it
/// names (the whole vector when it names all of them, in order).
pub fn verify_piece(
    pk: &PublicKey,
    all: &[Ciphertext],
    piece: Piece<'_>,
    context: &[u8],
) -> Result<()> {
    let whole = piece.at.len() == all.len() && piece.at.iter().enumerate().all(|(k, &j)| k == j);
    if whole {
        return verify_share(pk, all, piece.share, context);
    }
    let sub = piece
        .at
        .iter()
        .map(|&j| all.get(j).cloned())
        .collect::<Option<Vec<Ciphertext>>>()
        .ok_or_else(|| CryptoError::BadDecryptionShare {
            index: piece.share.party,
            reason: format!("names a ciphertext past the {}", all.len()),
        })?;
    verify_share(pk, &sub, piece.share, context)
}

/// Combines verified shares that each cover part of an aggregate of `count` ciphertexts (spread
/// decryption): each ciphertext from the `t` pieces with the lowest party indices among those that
/// cover it, with the Lagrange coefficients of that subset. The same plaintexts as
/// [`combine_verified`] over whole shares, whichever subsets cover which ciphertexts.
///
/// The same warning holds: only pass shares verified on the same ciphertexts and context.
pub fn combine_pieces(pk: &PublicKey, count: usize, pieces: &[Piece<'_>]) -> Result<Vec<BigInt>> {
    let bad = |party: usize, reason: String| CryptoError::BadDecryptionShare {
        index: party,
        reason,
    };
    // Who covers each ciphertext, as (party, value).
    let mut cover: Vec<Vec<(usize, &BigInt)>> = vec![Vec::new(); count];
    for p in pieces {
        let party = p.share.party;
        if p.at.len() != p.share.values.len() {
            return Err(bad(
                party,
                format!(
                    "covers {} ciphertexts, {} were named",
                    p.share.values.len(),
                    p.at.len()
                ),
            ));
        }
        if p.at.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(party, "ciphertext indices are not increasing".into()));
        }
        for (&j, v) in p.at.iter().zip(&p.share.values) {
            let slot = cover
                .get_mut(j)
                .ok_or_else(|| bad(party, format!("ciphertext {j} is past the {count}")))?;
            if slot.iter().any(|&(q, _)| q == party) {
                return Err(bad(party, format!("two shares of ciphertext {j}")));
            }
            slot.push((party, v));
        }
    }
    for (j, c) in cover.iter_mut().enumerate() {
        if c.len() < pk.threshold {
            return Err(CryptoError::NotCovered {
                ciphertext: j,
                needed: pk.threshold,
                valid: c.len(),
            });
        }
        c.sort_by_key(|&(party, _)| party);
        c.truncate(pk.threshold);
    }
    // Few distinct subsets (one per block of the spread): their coefficients once each.
    let mut exps: std::collections::HashMap<Vec<usize>, Vec<BigInt>> = Default::default();
    for c in &cover {
        let parties: Vec<usize> = c.iter().map(|&(p, _)| p).collect();
        exps.entry(parties).or_insert_with_key(|parties| {
            parties
                .iter()
                .map(|&i| BigInt::from(2) * lagrange(pk, parties, i))
                .collect()
        });
    }
    let inv = four_delta_sq_inverse(pk)?;
    cover
        .par_iter()
        .enumerate()
        .map(|(j, c)| {
            let parties: Vec<usize> = c.iter().map(|&(p, _)| p).collect();
            let e = &exps[&parties];
            let values: Vec<(usize, &BigInt)> = c.to_vec();
            combine_one(pk, j, &values, e, &inv)
        })
        .collect()
}

/// `(4 Delta^2)^-1 mod N`.
fn four_delta_sq_inverse(pk: &PublicKey) -> Result<BigInt> {
    let four_delta_sq = BigInt::from(4) * &pk.delta * &pk.delta;
    BigInt::mod_inv(&four_delta_sq.modulus(&pk.n), &pk.n)
        .ok_or_else(|| CryptoError::InvalidParameter("4 Delta^2 is not invertible modulo N".into()))
}

/// Ciphertext `j`'s plaintext from `t` parties' values and their exponents `2 mu_i`.
fn combine_one(
    pk: &PublicKey,
    j: usize,
    values: &[(usize, &BigInt)],
    exps: &[BigInt],
    inv: &BigInt,
) -> Result<BigInt> {
    let mut c = BigInt::from(1);
    for (&(party, v), e) in values.iter().zip(exps) {
        let f = mod_pow_signed(v, e, &pk.nn).ok_or_else(|| CryptoError::BadDecryptionShare {
            index: party,
            reason: format!("value {j} is not invertible"),
        })?;
        c = BigInt::mod_mul(&c, &f, &pk.nn);
    }
    let c_minus_1 = c - BigInt::from(1);
    if c_minus_1.modulus(&pk.n) != BigInt::from(0) {
        return Err(CryptoError::InvalidParameter(format!(
            "combined value {j} is not of the form 1 + kN: shares and ciphertexts do not match"
        )));
    }
    Ok(BigInt::mod_mul(&(c_minus_1 / &pk.n), inv, &pk.n))
}

/// Partially decrypts `cts` with `share` and proves it. `context` binds the proof to its use
/// (job, round, aggregate digest); verifiers must pass the same bytes.
pub fn partial_decrypt<R: RngCore + CryptoRng>(
    pk: &PublicKey,
    share: &KeyShare,
    cts: &[Ciphertext],
    context: &[u8],
    rng: &mut R,
) -> Result<DecryptionShare> {
    share.verify(pk)?;
    let exp = BigInt::from(2) * &pk.delta * &share.s;
    let values: Vec<BigInt> = cts
        .par_iter()
        .map(|c| BigInt::mod_pow(&c.0, &exp, &pk.nn))
        .collect();
    let party = share.index;
    let (u, ui) = folded(pk, context, party, cts, &values);
    let r = random_bits(nonce_bits(pk), rng);
    // The two commitments are independent full-size exponentiations: run them side by side.
    let (a, b) = rayon::join(
        || BigInt::mod_pow(&u, &r, &pk.nn),
        || BigInt::mod_pow(&pk.v, &r, &pk.nn),
    );
    let e = challenge(pk, context, party, &u, &ui, &a, &b);
    let z = r + &e * &pk.delta * &share.s;
    Ok(DecryptionShare {
        party,
        values,
        proof: ShareProof { e, z },
    })
}

/// Verifies a decryption share of `cts` against the party's published verification key.
pub fn verify_share(
    pk: &PublicKey,
    cts: &[Ciphertext],
    share: &DecryptionShare,
    context: &[u8],
) -> Result<()> {
    let party = share.party;
    let bad = |reason: &str| CryptoError::BadDecryptionShare {
        index: party,
        reason: reason.to_string(),
    };
    if party == 0 || party > pk.parties {
        return Err(bad("unknown party index"));
    }
    if share.values.len() != cts.len() {
        return Err(bad(&format!(
            "covers {} ciphertexts, the vector has {}",
            share.values.len(),
            cts.len()
        )));
    }
    if let Some((j, why)) = share
        .values
        .iter()
        .enumerate()
        .find_map(|(j, v)| pk.check_unit(v).err().map(|w| (j, w)))
    {
        return Err(bad(&format!("value {j} {why}")));
    }
    let e = &share.proof.e;
    let z = &share.proof.z;
    if e.bit_length() > CHALLENGE_BITS
        || z < &BigInt::from(0)
        || z.bit_length() > nonce_bits(pk) + 1
    {
        return Err(bad("proof values out of range"));
    }
    let (u, ui) = folded(pk, context, party, cts, &share.values);
    let vi = &pk.verification_keys[party - 1];
    let neg_e = -e.clone();
    let inv = |x: &BigInt| mod_pow_signed(x, &neg_e, &pk.nn);
    let (Some(ui_e), Some(vi_e)) = (inv(&ui), inv(vi)) else {
        return Err(bad("share values are not invertible"));
    };
    let (uz, vz) = rayon::join(
        || BigInt::mod_pow(&u, z, &pk.nn),
        || BigInt::mod_pow(&pk.v, z, &pk.nn),
    );
    let a = BigInt::mod_mul(&uz, &ui_e, &pk.nn);
    let b = BigInt::mod_mul(&vz, &vi_e, &pk.nn);
    if &challenge(pk, context, party, &u, &ui, &a, &b) != e {
        return Err(bad("proof of correct decryption does not verify"));
    }
    Ok(())
}

/// Verifies every share, then combines the first `t` valid ones into the plaintexts of `cts`
/// (each in `[0, N)`). Invalid shares are skipped and, if too few remain, named in the error.
pub fn combine(
    pk: &PublicKey,
    cts: &[Ciphertext],
    shares: &[DecryptionShare],
    context: &[u8],
) -> Result<Vec<BigInt>> {
    let verdicts: Vec<Result<()>> = shares
        .iter()
        .map(|s| verify_share(pk, cts, s, context))
        .collect();
    let mut valid: Vec<&DecryptionShare> = Vec::new();
    let mut rejected = Vec::new();
    for (s, v) in shares.iter().zip(verdicts) {
        if v.is_ok() && !valid.iter().any(|o| o.party == s.party) {
            valid.push(s);
        } else if v.is_err() {
            rejected.push(s.party);
        }
    }
    if valid.len() < pk.threshold {
        return Err(CryptoError::NotEnoughShares {
            needed: pk.threshold,
            valid: valid.len(),
            rejected,
        });
    }
    valid.truncate(pk.threshold);
    combine_verified(pk, cts.len(), &valid)
}

/// Lagrange coefficient `mu_i = Delta * prod_{k in S, k != i} k / (k - i)` (exact integer).
fn lagrange(pk: &PublicKey, parties: &[usize], i: usize) -> BigInt {
    let mut num = pk.delta.clone();
    let mut den = BigInt::from(1);
    for &k in parties.iter().filter(|&&k| k != i) {
        num *= BigInt::from(k as u64);
        den *= BigInt::from(k as u64) - BigInt::from(i as u64);
    }
    num / den
}

/// Combines shares that the caller has already checked with [`verify_share`] on this same vector
/// and context (for example one by one as they arrived, recording each verdict).
///
/// Only ever pass verified shares: an unverified share can shift the result by an amount its
/// sender chooses (multiplying a value by `(1 + N)^x` keeps the `1 + kN` form that is checked
/// here), so a wrong but plausible plaintext would come out. [`combine`] verifies for you.
pub fn combine_verified(
    pk: &PublicKey,
    count: usize,
    shares: &[&DecryptionShare],
) -> Result<Vec<BigInt>> {
    if shares.len() < pk.threshold {
        return Err(CryptoError::NotEnoughShares {
            needed: pk.threshold,
            valid: shares.len(),
            rejected: Vec::new(),
        });
    }
    if let Some(s) = shares.iter().find(|s| s.values.len() != count) {
        return Err(CryptoError::BadDecryptionShare {
            index: s.party,
            reason: format!("covers {} ciphertexts, expected {count}", s.values.len()),
        });
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(s) = shares.iter().find(|s| !seen.insert(s.party)) {
        return Err(CryptoError::BadDecryptionShare {
            index: s.party,
            reason: "two shares from the same party".into(),
        });
    }
    let shares = &shares[..pk.threshold];
    let parties: Vec<usize> = shares.iter().map(|s| s.party).collect();
    let exps: Vec<BigInt> = parties
        .iter()
        .map(|&i| BigInt::from(2) * lagrange(pk, &parties, i))
        .collect();
    let inv = four_delta_sq_inverse(pk)?;
    (0..count)
        .into_par_iter()
        .map(|j| {
            let values: Vec<(usize, &BigInt)> =
                shares.iter().map(|s| (s.party, &s.values[j])).collect();
            combine_one(pk, j, &values, &exps, &inv)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One exponentiation per base: what both folding methods must equal.
    fn naive(bases: &[BigInt], exps: &[u128], m: &BigInt) -> BigInt {
        bases
            .iter()
            .zip(exps)
            .fold(BigInt::from(1), |acc, (b, &e)| {
                let p = BigInt::mod_pow(b, &BigInt::from_bytes(&e.to_be_bytes()), m);
                BigInt::mod_mul(&acc, &p, m)
            })
    }

    /// A 256-bit odd modulus, `n` bases below it and `n` exponents where, `sparse`, zero, one and
    /// the top bit alone occur besides full-width ones.
    fn inputs(seed: u64, n: usize, sparse: bool) -> (BigInt, Vec<BigInt>, Vec<u128>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let m = random_bits(256, &mut rng) * BigInt::from(2) + BigInt::from(1);
        let bases: Vec<BigInt> = (0..n).map(|_| random_bits(250, &mut rng)).collect();
        let exps: Vec<u128> = (0..n)
            .map(|j| match (sparse, j % 4) {
                (true, 0) => 0,
                (true, 1) => 1,
                (true, 2) => 1 << 127,
                _ => rng.random(),
            })
            .collect();
        (m, bases, exps)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Through `multi_exp`, whichever parts, methods and windows this machine's threads give.
        #[test]
        fn folding_equals_one_exponentiation_per_base(
            seed in any::<u64>(),
            n in prop_oneof![0usize..4, 60usize..70, 200usize..300],
            sparse in any::<bool>(),
        ) {
            let (m, bases, exps) = inputs(seed, n, sparse);
            let refs: Vec<&BigInt> = bases.iter().collect();
            prop_assert_eq!(multi_exp(&refs, &exps, &m), naive(&bases, &exps, &m));
        }

        /// Every window a large share may get (w = 10 to 12 leave the top window partial), on
        /// any machine.
        #[test]
        fn every_bucket_window_equals_one_exponentiation_per_base(
            seed in any::<u64>(),
            n in 0usize..40,
            w in 1usize..=12,
            sparse in any::<bool>(),
        ) {
            let (m, bases, exps) = inputs(seed, n, sparse);
            let refs: Vec<&BigInt> = bases.iter().collect();
            prop_assert_eq!(buckets_of(&refs, &exps, &m, w), naive(&bases, &exps, &m));
        }
    }

    /// A part as large as a 1M-parameter share's on two threads, through the window it chooses.
    #[test]
    fn a_large_part_folds_like_one_exponentiation_per_base() {
        let (m, bases, exps) = inputs(7, 3000, true);
        let refs: Vec<&BigInt> = bases.iter().collect();
        assert_eq!(buckets(&refs, &exps, &m), naive(&bases, &exps, &m));
    }
}
