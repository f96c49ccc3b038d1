//! What Damgård–Jurik (ciphertexts modulo N^(s+1), plaintexts modulo N^s) would cost a round, to
//! weigh its denser wire format against the Paillier (s = 1) fedchain uses.
//!
//! A threshold Damgård–Jurik share is `c^(2 Delta s_i) mod N^(s+1)` with `s_i` shared modulo
//! `N^s m`, so both the modulus and the exponent grow with s + 1. This measures that bare GMP
//! exponentiation on one core (what a share costs, within the 1.1x `bench crypto` shows for s = 1)
//! and the fixed-base multiplications of a DJN encryption, and prints what one ciphertext holds
//! at a slot width and what a parameter then costs on the wire and in share time.
//!
//! ```sh
//! cargo run --release -p fedchain-crypto --example damgard_jurik_cost -- [slot_bits] [max_s]
//! ```

use curv::arithmetic::traits::{Modulo, Samplable};
use fedchain_crypto::BigInt;
use std::time::Instant;

const MODULUS_BITS: usize = 2048;
/// A share's exponent `2 Delta s_i` is about `(s + 1) |N|` bits (`s_i < N^s m`); this draws it
/// 128 bits longer, so the times are a slight upper bound (about 3 % at s = 1, less above).
const EXTRA_BITS: usize = 128;

fn median_ms(mut f: impl FnMut(), runs: usize) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments: slot_bits max_s"))
        .collect();
    let slot_bits = args.first().copied().unwrap_or(10);
    let max_s = args.get(1).copied().unwrap_or(6);
    // Timing needs only numbers of the right sizes: an odd N of 2048 bits.
    let n = BigInt::sample_range(
        &(BigInt::from(1) << (MODULUS_BITS - 2)),
        &(BigInt::from(1) << (MODULUS_BITS - 1)),
    ) * BigInt::from(2)
        + BigInt::from(1);
    println!("slot width {slot_bits} bits, N of {MODULUS_BITS} bits, one core");
    println!("s | ciphertext bits | slots | wire bits/param | share ms/ct | share ms/1k params | x s=1 | encrypt ms/ct");
    let mut base = None;
    for s in 1..=max_s {
        let modulus = (1..=s).fold(n.clone(), |acc, _| &acc * &n);
        let ct_bits = (s + 1) * MODULUS_BITS;
        let slots = (s * MODULUS_BITS - 2) / slot_bits;
        let c = BigInt::sample_below(&modulus);
        let exp = BigInt::sample(ct_bits + EXTRA_BITS);
        let runs = if s <= 2 { 15 } else { 7 };
        let share = median_ms(
            || {
                let _ = BigInt::mod_pow(&c, &exp, &modulus);
            },
            runs,
        );
        // DJN with a byte-window table: one multiplication per byte of a |N|/2-bit alpha.
        let f = BigInt::sample_below(&modulus);
        let encrypt = median_ms(
            || {
                let mut acc = c.clone();
                for _ in 0..MODULUS_BITS / 16 {
                    acc = BigInt::mod_mul(&acc, &f, &modulus);
                }
            },
            runs,
        );
        let per_k = share * 1000.0 / slots as f64;
        let ratio = per_k / *base.get_or_insert(per_k);
        println!(
            "{s} | {ct_bits} | {slots} | {:.2} | {share:.1} | {per_k:.1} | {ratio:.2} | {encrypt:.2}",
            ct_bits as f64 / slots as f64
        );
    }
}
