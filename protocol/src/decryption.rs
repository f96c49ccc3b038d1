//! Threshold decryption of a round's aggregate: what a decryption share's proof is bound to, and
//! which hospitals are asked first.
//!
//! Two rules, fixed per job by its spec's `spread_decryption`:
//! - **first t** (jobs from before spread decryption): the `t` hospitals with the lowest key-share
//!   indices each decrypt every ciphertext ([`first_decryptors`]).
//! - **spread**: each ciphertext needs `t` shares, not every hospital's. The round's decryptors
//!   ([`spread_decryptors`]: its participants, topped up to `t`) split the aggregate into as many
//!   [`blocks`] as there are decryptors, and block `b` goes to the `t` decryptors at positions
//!   `b, b+1, ..., b+t-1` (cyclically): each computes shares for `t/m` of the ciphertexts
//!   ([`spread`]). A share then covers a set of [`Ranges`] of ciphertext indices, and each
//!   ciphertext is combined from the `t` shares that cover it.

use std::collections::BTreeSet;

use fedchain_ledger::Hash;

/// Half-open ranges `[start, end)` of ciphertext indices, sorted, non-empty, neither overlapping
/// nor touching (one canonical form per set). The empty list means the whole aggregate: the
/// share of the first-t rule.
pub type Ranges = Vec<[u64; 2]>;

/// Why a share's ranges cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangesError {
    /// A range is empty, reversed, out of order, overlapping or touching the one before.
    #[error("ciphertext ranges must be sorted, non-empty and apart; [{0}, {1}) is not")]
    NotCanonical(u64, u64),
    /// A range ends past the aggregate.
    #[error("ciphertext range [{start}, {end}) ends past the aggregate's {count} ciphertexts")]
    PastTheEnd {
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
        /// Ciphertexts in the aggregate.
        count: u64,
    },
}

/// Checks `ranges` against an aggregate of `count` ciphertexts.
pub fn check_ranges(ranges: &[[u64; 2]], count: u64) -> Result<(), RangesError> {
    let mut after = None;
    for &[start, end] in ranges {
        if start >= end || after.is_some_and(|a| start <= a) {
            return Err(RangesError::NotCanonical(start, end));
        }
        if end > count {
            return Err(RangesError::PastTheEnd { start, end, count });
        }
        after = Some(end);
    }
    Ok(())
}

/// The ciphertext indices `ranges` covers in an aggregate of `count` (all of them for the empty
/// list), ascending. Call [`check_ranges`] first.
pub fn indices(ranges: &[[u64; 2]], count: usize) -> Vec<usize> {
    if ranges.is_empty() {
        return (0..count).collect();
    }
    ranges
        .iter()
        .flat_map(|&[s, e]| s as usize..(e as usize).min(count))
        .collect()
}

/// [`indices`] as a set of `u64`, the form [`ranges_of`] takes back and the coordinator's
/// coverage sets use.
pub fn index_set(ranges: &[[u64; 2]], count: usize) -> BTreeSet<u64> {
    indices(ranges, count)
        .into_iter()
        .map(|j| j as u64)
        .collect()
}

/// How many ciphertexts `ranges` covers in an aggregate of `count`.
pub fn covered(ranges: &[[u64; 2]], count: usize) -> usize {
    if ranges.is_empty() {
        return count;
    }
    ranges.iter().map(|&[s, e]| (e - s) as usize).sum()
}

/// The canonical ranges of a set of indices.
pub fn ranges_of(indices: &BTreeSet<u64>) -> Ranges {
    let mut out: Ranges = Vec::new();
    for &i in indices {
        match out.last_mut() {
            Some(last) if last[1] == i => last[1] = i + 1,
            _ => out.push([i, i + 1]),
        }
    }
    out
}

/// Whether two canonical range lists share an index (the empty list is everything).
pub fn overlap(a: &[[u64; 2]], b: &[[u64; 2]]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    // One walk over both sorted lists: a share may name thousands of ranges.
    let (mut i, mut j) = (0, 0);
    while let (Some(&[s, e]), Some(&[t, f])) = (a.get(i), b.get(j)) {
        if s < f && t < e {
            return true;
        }
        if e <= f {
            i += 1;
        } else {
            j += 1;
        }
    }
    false
}

/// The hospitals that decrypt a round under the spread rule, in key-share order: the round's
/// participants (they were online to submit), then, if fewer than `threshold`, the other
/// enrolled hospitals with the lowest key-share indices until there are `threshold`.
/// `hospitals`: every enrolled `(name, share index)`; `participants`: the round's contributors.
pub fn spread_decryptors<'a>(
    hospitals: impl IntoIterator<Item = (&'a str, usize)>,
    participants: &[String],
    threshold: usize,
) -> Vec<String> {
    let mut by_index: Vec<(&str, usize)> = hospitals.into_iter().collect();
    by_index.sort_by_key(|&(_, index)| index);
    let (mut chosen, others): (Vec<_>, Vec<_>) = by_index
        .into_iter()
        .partition(|(name, _)| participants.iter().any(|p| p == name));
    let short = threshold.saturating_sub(chosen.len());
    chosen.extend(others.into_iter().take(short));
    chosen.sort_by_key(|&(_, index)| index);
    chosen
        .into_iter()
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The aggregate of `count` ciphertexts cut into `parts` contiguous blocks of near-equal size
/// (empty ones dropped, so fewer than `parts` when `count < parts`).
pub fn blocks(count: u64, parts: usize) -> Ranges {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|b| [b * count / parts, (b + 1) * count / parts])
        .filter(|[s, e]| s < e)
        .collect()
}

/// The spread rule: for each of `decryptors` (in key-share order, [`spread_decryptors`]), the
/// ranges of an aggregate of `count` ciphertexts it decrypts. Block `b` of `m` goes to the
/// decryptors at positions `b..b+t` modulo `m`, so every ciphertext is covered `t` times and each
/// decryptor covers about `t/m` of them. With `m <= t` every decryptor covers everything; a
/// decryptor left without a block (fewer ciphertexts than decryptors) is left out.
pub fn spread(count: u64, decryptors: &[String], threshold: usize) -> Vec<(String, Ranges)> {
    let m = decryptors.len();
    if m <= threshold {
        let all = if count == 0 {
            Vec::new()
        } else {
            vec![[0, count]]
        };
        return decryptors
            .iter()
            .map(|d| (d.clone(), all.clone()))
            .collect();
    }
    let blocks = blocks(count, m);
    let mut mine: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); m];
    for (b, &[s, e]) in blocks.iter().enumerate() {
        for k in 0..threshold {
            mine[(b + k) % m].extend(s..e);
        }
    }
    // A decryptor left without a block (fewer ciphertexts than decryptors) is not asked: an empty
    // list would mean the whole aggregate.
    decryptors
        .iter()
        .zip(mine)
        .filter(|(_, set)| !set.is_empty())
        .map(|(d, set)| (d.clone(), ranges_of(&set)))
        .collect()
}

/// The `threshold` hospitals with the lowest key-share indices among `(name, share index)` pairs:
/// the ones asked to decrypt first, and penalised when they do not. The coordinator's round and the
/// auditor's replay both use this one rule.
pub fn first_decryptors<'a>(
    hospitals: impl IntoIterator<Item = (&'a str, usize)>,
    threshold: usize,
) -> Vec<String> {
    let mut by_index: Vec<(&str, usize)> = hospitals.into_iter().collect();
    by_index.sort_by_key(|&(_, index)| index);
    by_index
        .into_iter()
        .take(threshold)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The bytes a decryption share's proof is bound to: domain, job, round and aggregate digest,
/// each length-prefixed (u32, big-endian). Hospitals compute it from the `RoundClosed` record.
pub fn decryption_context(job: u64, round: u64, aggregate: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(96);
    for part in [
        b"fedchain/decryption/v1".as_slice(),
        &job.to_be_bytes(),
        &round.to_be_bytes(),
        aggregate,
    ] {
        m.extend_from_slice(&(part.len() as u32).to_be_bytes());
        m.extend_from_slice(part);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn spread_covers_every_ciphertext_t_times_and_shares_the_work() {
        for (count, m, t) in [
            (0, 3, 2),
            (1, 3, 2),
            (2, 3, 2),
            (10, 3, 2),
            (525, 3, 2),
            (188, 10, 3),
            (7, 2, 2),
            (9, 4, 1),
            (100, 5, 5),
        ] {
            let ds: Vec<String> = (0..m).map(|i| format!("h{i}")).collect();
            let plan = spread(count, &ds, t);
            assert!(plan.len() <= m);
            let mut times = vec![0usize; count as usize];
            for (_, r) in &plan {
                check_ranges(r, count).unwrap();
                for i in indices(r, count as usize) {
                    times[i] += 1;
                }
            }
            let want = t.min(m);
            assert!(
                times.iter().all(|&n| n == want),
                "{count} {m} {t}: {times:?}"
            );
            // Each decryptor's load is within one block of t/m of the aggregate.
            let most = plan
                .iter()
                .map(|(_, r)| covered(r, count as usize))
                .max()
                .unwrap_or(0);
            let fair = (count as usize * want).div_ceil(m);
            assert!(
                most <= fair + t * (count as usize).div_ceil(m).max(1),
                "{most} > {fair}"
            );
        }
        // 3 hospitals, t = 2: two thirds each; 10 and t = 3: three tenths.
        let plan = spread(300, &names(&["a", "b", "c"]), 2);
        assert!(plan.iter().all(|(_, r)| covered(r, 300) == 200), "{plan:?}");
        let ten: Vec<String> = (0..10).map(|i| format!("h{i}")).collect();
        assert!(spread(1000, &ten, 3)
            .iter()
            .all(|(_, r)| covered(r, 1000) == 300));
    }

    #[test]
    fn spread_decryptors_are_the_participants_topped_up_to_t() {
        let h = [("a", 1), ("b", 2), ("c", 3), ("d", 4)];
        assert_eq!(
            spread_decryptors(h, &names(&["d", "b", "c"]), 2),
            ["b", "c", "d"]
        );
        assert_eq!(spread_decryptors(h, &names(&["d"]), 3), ["a", "b", "d"]);
        assert_eq!(spread_decryptors(h, &[], 2), ["a", "b"]);
    }

    #[test]
    fn ranges_are_canonical_and_bounded() {
        assert!(check_ranges(&[], 5).is_ok());
        assert!(check_ranges(&[[0, 2], [3, 5]], 5).is_ok());
        for bad in [
            vec![[2, 2]],
            vec![[3, 2]],
            vec![[0, 2], [2, 4]],
            vec![[3, 4], [0, 1]],
            vec![[0, 2], [1, 4]],
        ] {
            assert!(
                matches!(check_ranges(&bad, 9), Err(RangesError::NotCanonical(..))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            check_ranges(&[[4, 6]], 5),
            Err(RangesError::PastTheEnd { .. })
        ));
        assert_eq!(indices(&[[1, 3], [5, 6]], 9), [1, 2, 5]);
        assert_eq!(indices(&[], 3), [0, 1, 2]);
        let set = index_set(&[[1, 3], [5, 6]], 9);
        assert_eq!(ranges_of(&set), vec![[1, 3], [5, 6]]);
        assert_eq!(
            ranges_of(&[1, 2, 5, 7, 8].into_iter().collect()),
            vec![[1, 3], [5, 6], [7, 9]]
        );
        assert!(overlap(&[[0, 3]], &[[2, 4]]) && !overlap(&[[0, 2]], &[[2, 4]]));
        assert!(overlap(&[], &[[2, 4]]));
        // The walk agrees with comparing every pair, over all small canonical lists.
        let lists: Vec<Ranges> = (1u32..256)
            .map(|mask| ranges_of(&(0..8u64).filter(|i| mask & (1 << i) != 0).collect()))
            .collect();
        for a in &lists {
            for b in &lists {
                let pairwise = a
                    .iter()
                    .any(|&[s, e]| b.iter().any(|&[t, f]| s < f && t < e));
                assert_eq!(overlap(a, b), pairwise, "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn first_decryptors_are_the_lowest_share_indices() {
        let h = [("c", 3), ("a", 2), ("b", 1)];
        assert_eq!(first_decryptors(h, 2), ["b", "a"]);
        assert_eq!(first_decryptors(h, 5), ["b", "a", "c"]);
    }

    #[test]
    fn the_context_binds_job_round_and_aggregate() {
        let base = decryption_context(1, 2, &[3; 32]);
        assert_ne!(base, decryption_context(2, 2, &[3; 32]));
        assert_ne!(base, decryption_context(1, 3, &[3; 32]));
        assert_ne!(base, decryption_context(1, 2, &[4; 32]));
        // Pinned: hospitals and auditors of other versions must compute the same bytes.
        assert_eq!(base.len(), 4 + 22 + 4 + 8 + 4 + 8 + 4 + 32);
        assert!(base.starts_with(b"\0\0\0\x16fedchain/decryption/v1"));
    }
}
