//! Threshold decryption of a round's aggregate: what a decryption share's proof is bound to, and
//! which hospitals are asked first.

use fedchain_ledger::Hash;

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
