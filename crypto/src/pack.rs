//! Packing many signed fixed-point values into each Paillier plaintext, with overflow safety.
//!
//! A 2048-bit Paillier plaintext holds far more than one quantized value, and encryption is the
//! expensive step, so a [`Packer`] places `k` values side by side in slots of `w` bits:
//!
//! ```text
//! P = q_0 + q_1 2^w + q_2 2^(2w) + ... + q_(k-1) 2^((k-1)w)     (a signed integer)
//! ```
//!
//! and the plaintext is `P mod N`. Paillier is additively homomorphic, so multiplying the
//! ciphertexts of several parties encrypts `sum_i P_i mod N`, whose slots are the elementwise sums
//! of the parties' vectors: one homomorphic addition adds `k` values at once.
//!
//! Why signed digits with headroom (rather than, say, kzen-paillier's own unsigned 64-bit packing):
//! - **A slot never overflows.** The packer is told the bound `B` of one (unit-weight) value and
//!   the total weight `W` of all contributors, so every slot of the *final sum* lies in
//!   `[-W B, W B]`. The slot width is `w = bits(W B) + 1`, so `W B < 2^(w-1)`: every sum is a
//!   valid signed `w`-bit digit, and decoding recovers it exactly. Negative values are not offset
//!   or biased: they borrow from the slot above, and the decoder gives the borrow back (see
//!   [`Packer::unpack`]).
//! - **The packed value never wraps modulo N.** `k = floor((bits(N) - 2) / w)` keeps
//!   `|P| < N / 2` (proof in [`Packer::new`]), so the decrypted `M` is mapped back to the unique
//!   signed representative `S` in `(-N/2, N/2)`, which is `P` itself.
//! - **Garbage is detected.** After decoding, every slot must lie in `[-W B, W B]` and nothing
//!   may be left above the last slot; anything else (a contributor that exceeded its bound, a
//!   wrong key, a corrupted plaintext) is an error, never a silently wrong model.
//!
//! Speed: `pack` and `unpack` run on every model update. Neither does big-number arithmetic per
//! value: `pack` writes each value's magnitude into one of two `u64` limb buffers (positive and
//! negative values separately; the slots do not overlap, so this is a plain bit-OR with no
//! carries), subtracts the two buffers once per plaintext with borrow propagation (giving `P` in
//! two's complement), adds the limbs of `N` if `P` is negative (giving `N - |P|`), and converts
//! the limbs to a `BigInt` once. `unpack` exports each plaintext's bytes once, forms `S` in two's
//! complement on limbs the same way, and extracts the signed digits with shifts and masks.
//! Plaintexts are processed in parallel with rayon when there are many.

use crate::{BigInt, CryptoError, Result};
use curv::arithmetic::traits::{BitManipulation, Converter, Modulo, NumberTests};
use rayon::prelude::*;

/// Widest allowed slot: a slot value plus a carry always fits an `i64`/`u64` with room.
const MAX_SLOT_BITS: u32 = 62;

/// Below this many plaintexts the work is too small for rayon to pay off.
const PAR_MIN_PLAINTEXTS: usize = 8;

/// Packs vectors of bounded signed integers into Paillier plaintexts modulo `n` and unpacks their
/// homomorphic sums. See the [module documentation](self) for the encoding.
#[derive(Debug, Clone)]
pub struct Packer {
    /// Slot width `w` in bits (signed).
    slot_bits: u32,
    /// Slots per plaintext `k`.
    slots: usize,
    /// Bound `B` of one unit-weight value.
    value_bound: i64,
    /// Total weight `W` of all contributors.
    total_weight: u64,
    /// `W * B`: the largest magnitude of any slot of the sum.
    sum_bound: i64,
    /// The Paillier modulus `N`.
    n: BigInt,
    /// `(N - 1) / 2`: decrypted values above it are negative.
    half_n: BigInt,
    /// `N` as little-endian 64-bit limbs; its length is the limb width of every buffer.
    n_limbs: Vec<u64>,
}

impl Packer {
    /// A packer for plaintexts modulo `n` (the Paillier modulus, odd) whose sums add up
    /// contributions of total weight `total_weight` (`W >= 1`), each unit-weight value bounded by
    /// `value_bound` (`B >= 1`, [`crate::quantize::Quantizer::bound`]).
    ///
    /// Errors: [`CryptoError::InvalidParameter`] if `n` is not an odd integer above 1 or `B` or
    /// `W` is 0; [`CryptoError::Overflow`] if `W * B` does not fit in an i64, if a slot would need
    /// more than 62 bits, or if `n` is too small to hold even one slot.
    pub fn new(n: &BigInt, value_bound: i64, total_weight: u64) -> Result<Packer> {
        if n <= &BigInt::from(1) || !n.test_bit(0) {
            return Err(CryptoError::InvalidParameter(
                "packing modulus must be an odd integer greater than 1".into(),
            ));
        }
        if value_bound < 1 {
            return Err(CryptoError::InvalidParameter(format!(
                "packing value bound must be at least 1, got {value_bound}"
            )));
        }
        if total_weight < 1 {
            return Err(CryptoError::InvalidParameter(
                "packing total weight must be at least 1".into(),
            ));
        }
        let sum_bound = i64::try_from(total_weight)
            .ok()
            .and_then(|w| w.checked_mul(value_bound))
            .ok_or_else(|| {
                CryptoError::Overflow(format!(
                    "a slot of the sum can reach total weight {total_weight} x value bound \
                     {value_bound}, which does not fit in 64 bits: use fewer quantization bits \
                     or a smaller total weight"
                ))
            })?;
        // Smallest w with W*B < 2^(w-1): the sum is a signed w-bit digit. sum_bound >= 1.
        let slot_bits = (u64::BITS - (sum_bound as u64).leading_zeros()) + 1;
        if slot_bits > MAX_SLOT_BITS {
            return Err(CryptoError::Overflow(format!(
                "slots would need {slot_bits} bits to hold sums up to {sum_bound} (total weight \
                 {total_weight} x value bound {value_bound}), more than {MAX_SLOT_BITS}: use \
                 fewer quantization bits or a smaller total weight"
            )));
        }
        // Why k = floor((bits(N) - 2) / w) keeps |P| < N/2, so P never wraps modulo N:
        // every slot satisfies |q_j| <= W*B <= 2^(w-1) - 1, hence
        //   |P| <= (2^(w-1) - 1) * sum_{j<k} 2^(wj) = (2^(w-1) - 1) (2^(wk) - 1) / (2^w - 1)
        //        < (2^(wk) - 1) / 2 < 2^(wk-1)          [as (2^(w-1) - 1) / (2^w - 1) < 1/2]
        //        <= 2^(bits(N) - 3)                      [as wk <= bits(N) - 2]
        //        <  N / 2                                [as N >= 2^(bits(N) - 1)].
        // The same holds for the sum of all contributions, whose slots are within +-W*B too. N is
        // odd, so the integers in (-N/2, N/2) are exactly one residue system: the decoder's
        // S = M if M <= (N-1)/2 else M - N gives back P itself. (floor((bits(N) - 1) / w) would
        // also do; the extra bit is a safety margin, as in the design notes.)
        let n_bits = n.bit_length();
        let slots = n_bits.saturating_sub(2) / slot_bits as usize;
        if slots == 0 {
            return Err(CryptoError::Overflow(format!(
                "a {n_bits}-bit modulus cannot hold one {slot_bits}-bit slot (it needs at least \
                 {} bits): use a larger key, fewer quantization bits or a smaller total weight",
                slot_bits + 2
            )));
        }
        let n_bytes = n.to_bytes();
        let mut n_limbs = vec![0u64; n_bytes.len().div_ceil(8)];
        limbs_from_be_bytes(&n_bytes, &mut n_limbs);
        Ok(Packer {
            slot_bits,
            slots,
            value_bound,
            total_weight,
            sum_bound,
            n: n.clone(),
            half_n: n >> 1,
            n_limbs,
        })
    }

    /// Slot width `w` in bits: `bits(W * B) + 1`.
    pub fn slot_bits(&self) -> u32 {
        self.slot_bits
    }

    /// Values per plaintext `k = floor((bits(N) - 2) / w)`.
    pub fn slots_per_plaintext(&self) -> usize {
        self.slots
    }

    /// Bound `B` of one unit-weight value.
    pub fn value_bound(&self) -> i64 {
        self.value_bound
    }

    /// Total weight `W` of all contributors.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// `W * B`: the largest magnitude a slot may hold, in a packed vector or in the sum.
    pub fn sum_bound(&self) -> i64 {
        self.sum_bound
    }

    /// The modulus `N` plaintexts are reduced by.
    pub fn modulus(&self) -> &BigInt {
        &self.n
    }

    /// Number of plaintexts that hold `len` values: `ceil(len / k)`.
    pub fn plaintexts_for(&self, len: usize) -> usize {
        len.div_ceil(self.slots)
    }

    /// Packs `values` into `ceil(len / k)` plaintexts in `[0, N)`: value `j` of each group of `k`
    /// goes to slot `j` (least significant first); the last group may be partial.
    ///
    /// Errors with [`CryptoError::OutOfRange`] naming the first value with `|v| > W * B`.
    pub fn pack(&self, values: &[i64]) -> Result<Vec<BigInt>> {
        let bound = self.sum_bound.unsigned_abs();
        if let Some(index) = values.iter().position(|v| v.unsigned_abs() > bound) {
            return Err(CryptoError::OutOfRange {
                index,
                value: i128::from(values[index]),
                bound: i128::from(self.sum_bound),
            });
        }
        let k = self.slots;
        let out = if self.plaintexts_for(values.len()) >= PAR_MIN_PLAINTEXTS {
            values.par_chunks(k).map(|g| self.pack_group(g)).collect()
        } else {
            values.chunks(k).map(|g| self.pack_group(g)).collect()
        };
        Ok(out)
    }

    /// Packs one group of at most `k` values already checked to be within the bound.
    fn pack_group(&self, group: &[i64]) -> BigInt {
        let limbs = self.n_limbs.len();
        let w = self.slot_bits as usize;
        // P = pos - neg, where pos holds the positive values and neg the magnitudes of the
        // negative ones. Each magnitude is below 2^(w-1), so fields never overlap: bit-OR.
        let mut pos = vec![0u64; limbs];
        let mut neg = vec![0u64; limbs];
        for (j, &v) in group.iter().enumerate() {
            let target = if v < 0 { &mut neg } else { &mut pos };
            or_field(target, j * w, v.unsigned_abs());
        }
        // pos - neg modulo 2^(64 limbs): P in two's complement (|P| < N/2 fits with room).
        if sub_in_place(&mut pos, &neg) {
            // P < 0: 2^(64 limbs) + P + N wraps to N - |P|, which lies in (N/2, N).
            add_in_place(&mut pos, &self.n_limbs);
        }
        BigInt::from_bytes(&limbs_to_be_bytes(&pos))
    }

    /// Unpacks `len` values from `plaintexts` (typically a decrypted homomorphic sum).
    ///
    /// Each plaintext `M` is mapped to `S = M` if `M <= (N-1)/2`, else `S = M - N`, and split into
    /// signed digits: `d = S mod 2^w`, taken in `[-2^(w-1), 2^(w-1))`, then `S = (S - d) / 2^w`.
    ///
    /// Errors: [`CryptoError::WrongLength`] unless there are exactly `ceil(len / k)` plaintexts;
    /// [`CryptoError::InvalidParameter`] if a plaintext is outside `[0, N)` or has bits left above
    /// its slots; [`CryptoError::OutOfRange`] (with the value's index in the whole vector) if a
    /// slot exceeds `W * B` in magnitude. Errors name the first offending plaintext and slot.
    pub fn unpack(&self, plaintexts: &[BigInt], len: usize) -> Result<Vec<i64>> {
        let expected = self.plaintexts_for(len);
        if plaintexts.len() != expected {
            return Err(CryptoError::WrongLength {
                what: format!("plaintexts holding {len} packed values"),
                expected,
                found: plaintexts.len(),
            });
        }
        let k = self.slots;
        let mut out = vec![0i64; len];
        if expected >= PAR_MIN_PLAINTEXTS {
            // Decode everything, then report the first error in order, so the result does not
            // depend on scheduling.
            let results: Vec<Result<()>> = out
                .par_chunks_mut(k)
                .zip(plaintexts.par_iter())
                .enumerate()
                .map(|(p, (slots, m))| self.unpack_group(p, m, slots))
                .collect();
            results.into_iter().collect::<Result<()>>()?;
        } else {
            out.chunks_mut(k)
                .zip(plaintexts)
                .enumerate()
                .try_for_each(|(p, (slots, m))| self.unpack_group(p, m, slots))?;
        }
        Ok(out)
    }

    /// Decodes plaintext number `p` into `slots` (`k` of them, fewer for a last partial group).
    fn unpack_group(&self, p: usize, m: &BigInt, slots: &mut [i64]) -> Result<()> {
        if NumberTests::is_negative(m) || m >= &self.n {
            return Err(CryptoError::InvalidParameter(format!(
                "plaintext {p} is not in [0, N)"
            )));
        }
        let mut t = vec![0u64; self.n_limbs.len()];
        // M < N, so its bytes fit the limb buffer.
        limbs_from_be_bytes(&m.to_bytes(), &mut t);
        if m > &self.half_n {
            // S = M - N < 0, in two's complement modulo 2^(64 limbs); |S| < N/2 fits.
            sub_in_place(&mut t, &self.n_limbs);
        }
        let w = self.slot_bits as usize;
        let half = 1u64 << (w - 1);
        let first = p * self.slots;
        // Signed-digit extraction on the two's complement of S. With r_j the raw w-bit field j,
        // the brief's step S' = (S - d) / 2^w equals floor(S / 2^w) + carry, where carry is 1
        // exactly when d was negative; so digit j is r_j + carry, recentred. r_j + carry <= 2^w,
        // and 2^w recentres to 0 with a carry, as it should.
        let mut carry = 0u64;
        for (j, slot) in slots.iter_mut().enumerate() {
            let v = read_field(&t, j * w, w) + carry;
            let d = if v >= half {
                carry = 1;
                v as i64 - (1i64 << w)
            } else {
                carry = 0;
                v as i64
            };
            if d.unsigned_abs() > self.sum_bound.unsigned_abs() {
                return Err(CryptoError::OutOfRange {
                    index: first + j,
                    value: i128::from(d),
                    bound: i128::from(self.sum_bound),
                });
            }
            *slot = d;
        }
        // What is left, floor(S / 2^(w count)) + carry, must be 0: all bits from the end of the
        // last slot up are 0 (no carry) or all are 1 (S's remaining part is -1, cancelled by the
        // carry).
        let fill = if carry == 1 { u64::MAX } else { 0 };
        if !bits_from_are(&t, slots.len() * w, fill) {
            return Err(CryptoError::InvalidParameter(format!(
                "plaintext {p} has bits above its {} slots: it was not produced by this packing \
                 (wrong key, wrong length or a corrupted contribution)",
                slots.len()
            )));
        }
        Ok(())
    }

    /// `(a + b) mod N` elementwise, pairing elements up to the shorter length.
    ///
    /// Simulates the homomorphic sum of encrypted vectors on plaintexts, for tests; real
    /// aggregation multiplies ciphertexts ([`crate::aggregate`]).
    pub fn add_plaintexts(&self, a: &[BigInt], b: &[BigInt]) -> Vec<BigInt> {
        a.iter()
            .zip(b)
            .map(|(x, y)| BigInt::mod_add(x, y, &self.n))
            .collect()
    }
}

/// Fills `out` (little-endian u64 limbs, zeroed) from big-endian bytes; bytes beyond the limbs'
/// capacity are ignored (callers pass values known to fit).
fn limbs_from_be_bytes(bytes: &[u8], out: &mut [u64]) {
    for (limb, chunk) in out.iter_mut().zip(bytes.rchunks(8)) {
        *limb = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    }
}

/// Big-endian bytes of little-endian u64 limbs.
fn limbs_to_be_bytes(limbs: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(limbs.len() * 8);
    for limb in limbs.iter().rev() {
        bytes.extend_from_slice(&limb.to_be_bytes());
    }
    bytes
}

/// ORs `v` into `limbs` at bit `offset`. Bits beyond the buffer are dropped; the slot layout
/// guarantees there are none.
fn or_field(limbs: &mut [u64], offset: usize, v: u64) {
    let (i, sh) = (offset / 64, offset % 64);
    if let Some(x) = limbs.get_mut(i) {
        *x |= v << sh;
    }
    if sh != 0 {
        if let Some(x) = limbs.get_mut(i + 1) {
            *x |= v >> (64 - sh);
        }
    }
}

/// The `w`-bit field (`w <= 62`) of `limbs` at bit `offset`, as an unsigned integer.
fn read_field(limbs: &[u64], offset: usize, w: usize) -> u64 {
    let (i, sh) = (offset / 64, offset % 64);
    let mut v = limbs.get(i).copied().unwrap_or(0) >> sh;
    if sh != 0 && sh + w > 64 {
        v |= limbs.get(i + 1).copied().unwrap_or(0) << (64 - sh);
    }
    v & ((1u64 << w) - 1)
}

/// Whether every bit of `limbs` from bit `offset` up equals the corresponding bit of `fill`
/// (all zeros or all ones).
fn bits_from_are(limbs: &[u64], offset: usize, fill: u64) -> bool {
    let (i, sh) = (offset / 64, offset % 64);
    match limbs.get(i) {
        None => true,
        Some(&x) => x >> sh == fill >> sh && limbs[i + 1..].iter().all(|&y| y == fill),
    }
}

/// `a -= b` modulo 2^(64 len) on equal-length limb slices; returns the final borrow
/// (true when `a < b` as unsigned numbers, i.e. the signed difference is negative).
fn sub_in_place(a: &mut [u64], b: &[u64]) -> bool {
    let mut borrow = false;
    for (x, &y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(y);
        let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
        *x = d2;
        borrow = b1 || b2;
    }
    borrow
}

/// `a += b` modulo 2^(64 len) on equal-length limb slices.
fn add_in_place(a: &mut [u64], b: &[u64]) {
    let mut carry = false;
    for (x, &y) in a.iter_mut().zip(b) {
        let (s1, c1) = x.overflowing_add(y);
        let (s2, c2) = s1.overflowing_add(u64::from(carry));
        *x = s2;
        carry = c1 || c2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(s: &str) -> BigInt {
        BigInt::from_str_radix(s, 10).unwrap()
    }

    /// A 128-bit odd modulus (2^127 + 45).
    fn n128() -> BigInt {
        (BigInt::from(1) << 127) + BigInt::from(45)
    }

    #[test]
    fn parameters() {
        let n = n128();
        // B = 1000, W = 3: W*B = 3000 < 2^12, w = 13, k = floor(126 / 13) = 9.
        let p = Packer::new(&n, 1000, 3).unwrap();
        assert_eq!(p.slot_bits(), 13);
        assert_eq!(p.slots_per_plaintext(), 9);
        assert_eq!(
            (p.value_bound(), p.total_weight(), p.sum_bound()),
            (1000, 3, 3000)
        );
        assert_eq!(p.modulus(), &n);
        assert_eq!(p.plaintexts_for(0), 0);
        assert_eq!(p.plaintexts_for(1), 1);
        assert_eq!(p.plaintexts_for(9), 1);
        assert_eq!(p.plaintexts_for(10), 2);
        // W*B = 2^12 exactly needs one more bit.
        assert_eq!(Packer::new(&n, 1 << 12, 1).unwrap().slot_bits(), 14);
        assert_eq!(Packer::new(&n, (1 << 12) - 1, 1).unwrap().slot_bits(), 13);
    }

    #[test]
    fn invalid_parameters() {
        let n = n128();
        for bad_n in [
            BigInt::from(0),
            BigInt::from(1),
            BigInt::from(-7),
            &n + BigInt::from(1),
        ] {
            assert!(matches!(
                Packer::new(&bad_n, 10, 1),
                Err(CryptoError::InvalidParameter(_))
            ));
        }
        assert!(matches!(
            Packer::new(&n, 0, 1),
            Err(CryptoError::InvalidParameter(_))
        ));
        assert!(matches!(
            Packer::new(&n, -5, 1),
            Err(CryptoError::InvalidParameter(_))
        ));
        assert!(matches!(
            Packer::new(&n, 5, 0),
            Err(CryptoError::InvalidParameter(_))
        ));
    }

    #[test]
    fn overflowing_configurations_are_rejected() {
        let n = n128();
        // W * B overflows i64.
        for (b, w) in [(1i64 << 40, 1u64 << 30), (2, u64::MAX), (i64::MAX, 2)] {
            assert!(matches!(
                Packer::new(&n, b, w),
                Err(CryptoError::Overflow(_))
            ));
        }
        // W * B fits but needs a 63- or 64-bit slot.
        assert!(matches!(
            Packer::new(&n, 1 << 31, 1 << 30),
            Err(CryptoError::Overflow(_))
        ));
        assert!(matches!(
            Packer::new(&n, i64::MAX, 1),
            Err(CryptoError::Overflow(_))
        ));
        // 62 bits is the widest accepted: W*B < 2^61.
        assert_eq!(Packer::new(&n, (1 << 61) - 1, 1).unwrap().slot_bits(), 62);
        assert!(matches!(
            Packer::new(&n, 1 << 61, 1),
            Err(CryptoError::Overflow(_))
        ));
        // Modulus too small for one slot: w = 13 needs 15 bits.
        let small = BigInt::from((1u32 << 14) - 1); // 14 bits
        assert!(matches!(
            Packer::new(&small, 1000, 3),
            Err(CryptoError::Overflow(_))
        ));
        let ok = BigInt::from((1u32 << 14) + 1); // 15 bits
        assert_eq!(Packer::new(&ok, 1000, 3).unwrap().slots_per_plaintext(), 1);
        assert!(matches!(
            Packer::new(&BigInt::from(3), 1, 1),
            Err(CryptoError::Overflow(_))
        ));
    }

    #[test]
    fn layout_is_signed_digits_least_significant_first() {
        let n = n128();
        let p = Packer::new(&n, 1000, 3).unwrap();
        // P = 5 - 7 * 2^13 + 3000 * 2^26 (a positive total).
        let packed = p.pack(&[5, -7, 3000]).unwrap();
        let expect = BigInt::from(5) - BigInt::from(7u32 << 13) + (BigInt::from(3000) << 26);
        assert_eq!(packed, vec![expect]);
        // P = -1: N - 1.
        assert_eq!(p.pack(&[-1]).unwrap(), vec![&n - BigInt::from(1)]);
        // P = 1 - 2^13 < 0.
        assert_eq!(
            p.pack(&[1, -1]).unwrap(),
            vec![&n + BigInt::from(1) - BigInt::from(1u32 << 13)]
        );
        assert_eq!(p.pack(&[0, 0]).unwrap(), vec![BigInt::from(0)]);
        assert_eq!(p.pack(&[]).unwrap(), Vec::<BigInt>::new());
    }

    #[test]
    fn round_trip_with_carries_across_limbs() {
        let n = n128();
        let p = Packer::new(&n, 1000, 3).unwrap();
        let vals: Vec<i64> = (0..40)
            .map(|i| [3000, -3000, 0, -1, 1, 2999][i % 6])
            .collect();
        let packed = p.pack(&vals).unwrap();
        assert_eq!(packed.len(), 5);
        assert_eq!(p.unpack(&packed, vals.len()).unwrap(), vals);
        // Sum of two vectors whose slots add to the extremes.
        let a: Vec<i64> = vals.iter().map(|v| v / 2).collect();
        let b: Vec<i64> = vals.iter().zip(&a).map(|(v, x)| v - x).collect();
        let sum = p.add_plaintexts(&p.pack(&a).unwrap(), &p.pack(&b).unwrap());
        assert_eq!(p.unpack(&sum, vals.len()).unwrap(), vals);
    }

    #[test]
    fn pack_rejects_out_of_range() {
        let p = Packer::new(&n128(), 1000, 3).unwrap();
        match p.pack(&[0, 3000, -3001, 5000]) {
            Err(CryptoError::OutOfRange {
                index: 2,
                value: -3001,
                bound: 3000,
            }) => {}
            other => panic!("expected OutOfRange, got {other:?}"),
        }
        assert!(matches!(
            p.pack(&[i64::MIN]),
            Err(CryptoError::OutOfRange { index: 0, .. })
        ));
    }

    #[test]
    fn unpack_validates_count_range_and_leftovers() {
        let n = n128();
        let p = Packer::new(&n, 1000, 3).unwrap();
        let packed = p.pack(&[1, 2, 3]).unwrap();
        assert!(matches!(
            p.unpack(&packed, 10),
            Err(CryptoError::WrongLength {
                expected: 2,
                found: 1,
                ..
            })
        ));
        assert!(matches!(
            p.unpack(std::slice::from_ref(&n), 3),
            Err(CryptoError::InvalidParameter(_))
        ));
        assert!(matches!(
            p.unpack(&[BigInt::from(-1)], 3),
            Err(CryptoError::InvalidParameter(_))
        ));
        // A value in slot 3 when only 3 are expected: bits above the partial group.
        let four = p.pack(&[1, 2, 3, 4]).unwrap();
        assert!(matches!(
            p.unpack(&four, 3),
            Err(CryptoError::InvalidParameter(_))
        ));
        // Bits above the full group of 9 slots (9 * 13 = 117 bits; 2^120 < N/2).
        let high = BigInt::from(1) << 120;
        assert!(matches!(
            p.unpack(&[high], 9),
            Err(CryptoError::InvalidParameter(_))
        ));
        // A slot holding 4000 > 3000 (pattern valid, only the bound fails).
        let over = BigInt::from(4000) << 13;
        match p.unpack(&[over], 2) {
            Err(CryptoError::OutOfRange {
                index: 1,
                value: 4000,
                bound: 3000,
            }) => {}
            other => panic!("expected OutOfRange, got {other:?}"),
        }
        // The middle of the range: M = (N-1)/2 is positive, (N+1)/2 negative; both are garbage.
        let half = (&n - BigInt::from(1)) >> 1;
        assert!(p.unpack(std::slice::from_ref(&half), 9).is_err());
        assert!(p.unpack(&[half + BigInt::from(1)], 9).is_err());
    }

    #[test]
    fn tiny_modulus_with_one_slot() {
        // 15-bit modulus, w = 13, k = 1: every value is its own plaintext.
        let n = BigInt::from(20001);
        let p = Packer::new(&n, 1000, 3).unwrap();
        assert_eq!(p.slots_per_plaintext(), 1);
        let vals = [3000, -3000, 0, 17, -1];
        let packed = p.pack(&vals).unwrap();
        assert_eq!(packed[1], big("17001"));
        assert_eq!(p.unpack(&packed, vals.len()).unwrap(), vals);
    }

    #[test]
    fn limb_helpers() {
        let mut l = [0u64; 2];
        limbs_from_be_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9], &mut l);
        assert_eq!(l, [0x0203040506070809, 1]);
        assert_eq!(limbs_to_be_bytes(&l)[7..], [1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let mut f = [0u64; 2];
        or_field(&mut f, 60, 0b1_0111);
        assert_eq!(f, [0x7 << 60, 1]);
        assert_eq!(read_field(&f, 60, 5), 0b1_0111);
        assert_eq!(read_field(&f, 62, 3), 0b101);
        assert!(bits_from_are(&f, 65, 0));
        assert!(!bits_from_are(&f, 64, 0));
        assert!(bits_from_are(&[0, u64::MAX << 3], 67, u64::MAX));
        assert!(!bits_from_are(&[0, u64::MAX << 3], 66, u64::MAX));
        let mut a = [0u64, 1];
        assert!(!sub_in_place(&mut a, &[1, 0]));
        assert_eq!(a, [u64::MAX, 0]);
        assert!(sub_in_place(&mut a, &[0, 1]));
        assert_eq!(a, [u64::MAX, u64::MAX]);
        add_in_place(&mut a, &[1, 0]);
        assert_eq!(a, [0, 0]);
    }
}
