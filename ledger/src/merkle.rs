//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.
//!
//! The ledger's records are the leaves of a Certificate-Transparency-style Merkle log. This module
//! is the pure, storage-free part of that: given leaf hashes it computes tree heads and proofs, and
//! it verifies proofs with nothing but the hashes a client already holds.
//!
//! Design:
//! - Hashing follows RFC 6962 section 2.1 (unchanged in RFC 9162 section 2.1.1): a leaf is
//!   `SHA-256(0x00 || data)`, an interior node `SHA-256(0x01 || left || right)`, and a tree of `n > 1`
//!   leaves splits at `k`, the largest power of two strictly below `n`. The distinct prefixes mean a
//!   leaf can never be passed off as an interior node (second-preimage resistance).
//! - Functions that take a tree take the *leaf hashes* (`&[Hash]`), not the record bytes: the store
//!   keeps leaf hashes anyway, and this keeps the module independent of the record encoding.
//! - Proof generation is the recursive definition of the RFCs (PATH, PROOF/SUBPROOF) over
//!   subranges. Each level recomputes the hash of the sibling subtree, and the sibling subtrees
//!   halve in size going down, so one proof costs O(n) hashes and O(log n) memory — a few
//!   milliseconds for a 100k-leaf log, with no stored interior nodes to keep consistent.
//! - Verification is the RFC 9162 algorithms (sections 2.1.3.2 and 2.1.4.2) verbatim, which need
//!   only the proof, the sizes and the roots. They are total: any input, however malformed, yields
//!   `Ok(())` or [`LedgerError::Proof`] naming the check that failed; nothing panics, and only
//!   shifts and comparisons are done on the sizes, so no arithmetic can overflow.
//! - [`Frontier`] is the compact form of a tree used by a writer that appends one record at a
//!   time: the roots of the perfect subtrees that make up the current tree (one per set bit of the
//!   size). Appending is amortised O(1) and at most O(log n) hashes; the root is O(log n).

use crate::{sha256, Hash, LedgerError, Result};

/// Domain-separation prefix of leaf hashes (RFC 6962 section 2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of interior-node hashes (RFC 6962 section 2.1).
const NODE_PREFIX: u8 = 0x01;

/// RFC 6962 leaf hash: SHA-256(0x00 || data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// RFC 6962 interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the tree over the given LEAF HASHES (MTH; empty tree = SHA-256 of the empty string).
///
/// RFC 6962 section 2.1: `MTH({}) = SHA-256()`, `MTH({d0}) = leaf hash of d0` (the caller already
/// hashed it), and `MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n]))` for `n > 1`.
pub fn root(leaves: &[Hash]) -> Hash {
    if leaves.is_empty() {
        sha256(&[])
    } else {
        subtree_root(leaves)
    }
}

/// MTH of a non-empty range of leaf hashes.
fn subtree_root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => unreachable!("subtree_root is only called on non-empty ranges"),
        [leaf] => *leaf,
        _ => {
            let k = split_point(leaves.len());
            node_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly less than `n` (`n >= 2`): where RFC 6962 section 2.1 splits a
/// tree of `n` leaves.
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Checks `size <= leaves.len()` and returns the first `size` leaves.
fn prefix<'a>(leaves: &'a [Hash], size: u64, what: &str) -> Result<&'a [Hash]> {
    match usize::try_from(size) {
        Ok(n) if n <= leaves.len() => Ok(&leaves[..n]),
        _ => Err(LedgerError::Proof(format!(
            "{what}: tree size {size} exceeds the {} leaves available",
            leaves.len()
        ))),
    }
}

/// Inclusion proof (audit path) of leaf `index` in the tree of the first `size` leaves (RFC 6962
/// PATH / RFC 9162 2.1.3.1). Errors if index >= size or size > leaves.len().
///
/// The proof lists sibling subtree hashes from the leaf up to the root.
pub fn inclusion_proof(leaves: &[Hash], index: u64, size: u64) -> Result<Vec<Hash>> {
    if index >= size {
        return Err(LedgerError::Proof(format!(
            "inclusion proof: leaf index {index} is not below tree size {size}"
        )));
    }
    let tree = prefix(leaves, size, "inclusion proof")?;
    // index < size <= leaves.len(), so it fits in usize.
    let mut proof = Vec::new();
    path(index as usize, tree, &mut proof);
    Ok(proof)
}

/// RFC 9162 section 2.1.3.1 `PATH(m, D[n])`, appending to `out` (0 <= m < n, n >= 1).
fn path(m: usize, tree: &[Hash], out: &mut Vec<Hash>) {
    let n = tree.len();
    if n <= 1 {
        // PATH(0, {d0}) = {}.
        return;
    }
    let k = split_point(n);
    if m < k {
        // PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])
        path(m, &tree[..k], out);
        out.push(subtree_root(&tree[k..]));
    } else {
        // PATH(m, D[n]) = PATH(m - k, D[k:n]) : MTH(D[0:k])
        path(m - k, &tree[k..], out);
        out.push(subtree_root(&tree[..k]));
    }
}

/// Verifies an inclusion proof with the RFC 9162 section 2.1.3.2 algorithm (no tree needed).
///
/// `leaf` is the leaf hash (see [`leaf_hash`]). Succeeds only if `proof` is exactly the audit path
/// of leaf `index` in a tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    let fail = |why: String| {
        Err(LedgerError::Proof(format!(
            "inclusion of leaf {index} in tree of size {size}: {why}"
        )))
    };
    // Step 1: the index must lie inside the tree (this also rejects size 0).
    if index >= size {
        return fail("leaf index is not below the tree size".into());
    }
    // Steps 2-3: fn walks the leaf's position up the tree, sn the last position at each level.
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    // Step 4.
    for (i, p) in proof.iter().enumerate() {
        // 4a: reaching the root (sn == 0) with hashes left over means the proof is too long.
        if snode == 0 {
            return fail(format!(
                "proof has {} hashes but the path to the root ends after {i}",
                proof.len()
            ));
        }
        // 4b: a right child (LSB(fn) set) or the last node of its level, which has been promoted
        // without a sibling, takes `p` on its left.
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                // Skip the levels where the node has no right sibling (it was promoted unchanged).
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        // 4c.
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5: the proof must reach the root exactly, and hash to the expected root.
    if snode != 0 {
        return fail(format!(
            "proof has {} hashes, too few to reach the root",
            proof.len()
        ));
    }
    if r != *root {
        return fail("computed root does not match the expected root".into());
    }
    Ok(())
}

/// Consistency proof between the tree of the first `old_size` leaves and the first `new_size` (RFC
/// 6962 PROOF/SUBPROOF, RFC 9162 2.1.4.1). 0 < old_size <= new_size <= leaves.len(); old_size ==
/// new_size gives an empty proof.
pub fn consistency_proof(leaves: &[Hash], old_size: u64, new_size: u64) -> Result<Vec<Hash>> {
    if old_size == 0 {
        return Err(LedgerError::Proof(
            "consistency proof: old tree size must be at least 1".into(),
        ));
    }
    if old_size > new_size {
        return Err(LedgerError::Proof(format!(
            "consistency proof: old tree size {old_size} exceeds new tree size {new_size}"
        )));
    }
    let tree = prefix(leaves, new_size, "consistency proof")?;
    // old_size <= new_size <= leaves.len(), so it fits in usize.
    let mut proof = Vec::new();
    subproof(old_size as usize, tree, true, &mut proof);
    Ok(proof)
}

/// RFC 9162 section 2.1.4.1 `SUBPROOF(m, D[n], b)`, appending to `out` (0 < m <= n). `b` records
/// whether the subtree `D[0:m]` is a subtree of the old tree that the verifier already knows the
/// hash of (true only along the leftmost edge), in which case its hash is left out of the proof.
fn subproof(m: usize, tree: &[Hash], b: bool, out: &mut Vec<Hash>) {
    let n = tree.len();
    if m == n {
        // SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])}.
        if !b {
            out.push(subtree_root(tree));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        // The old tree lies inside the left subtree: SUBPROOF(m, D[0:k], b) : MTH(D[k:n]).
        subproof(m, &tree[..k], b, out);
        out.push(subtree_root(&tree[k..]));
    } else {
        // The left subtree is complete in both trees: SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k]).
        subproof(m - k, &tree[k..], false, out);
        out.push(subtree_root(&tree[..k]));
    }
}

/// Verifies a consistency proof with the RFC 9162 section 2.1.4.2 algorithm.
///
/// Succeeds only if `proof` shows that the tree of `old_size` leaves with root `old_root` is a
/// prefix of the tree of `new_size` leaves with root `new_root`. Equal sizes need an empty proof and
/// equal roots. An `old_size` of 0 is rejected, as [`consistency_proof`] does: RFC 9162 defines no
/// proof from the empty tree, and a verifier has no use for one.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    let fail = |why: String| {
        Err(LedgerError::Proof(format!(
            "consistency from size {old_size} to size {new_size}: {why}"
        )))
    };
    if old_size == 0 {
        return fail("the old tree size must be at least 1".into());
    }
    if old_size > new_size {
        return fail("the old tree is larger than the new tree".into());
    }
    if old_size == new_size {
        // RFC 9162 2.1.4.1 gives no proof for equal sizes: the trees are consistent iff they are equal.
        if !proof.is_empty() {
            return fail(format!(
                "proof for equal sizes must be empty, got {} hashes",
                proof.len()
            ));
        }
        if old_root != new_root {
            return fail("equal sizes but the roots differ".into());
        }
        return Ok(());
    }
    // Step 1.
    let Some((first, rest)) = proof.split_first() else {
        return fail("proof is empty".into());
    };
    // Step 2: if the old tree is a perfect subtree of the new one, the prover left its root out of
    // the proof (SUBPROOF with b = true); the verifier starts from the old root it already has.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    // Step 3.
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    // Step 4: skip the levels where the old tree's last node is a right child; the proof starts at
    // the root of the largest perfect subtree holding the old tree's last leaf.
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5: fr rebuilds the old root, sr the new root.
    let (mut fr, mut sr) = (*seed, *seed);
    // Step 6.
    for (i, c) in rest.iter().enumerate() {
        // 6a: reaching the new root with hashes left over means the proof is too long.
        if snode == 0 {
            return fail(format!(
                "proof has {} hashes but the path to the new root ends after {}",
                proof.len(),
                proof.len() - rest.len() + i
            ));
        }
        // 6b: c is a left sibling (or the node is the last of its level): it is in both trees.
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            // Otherwise c is a right sibling that only the new tree has.
            sr = node_hash(&sr, c);
        }
        // 6c.
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7.
    if snode != 0 {
        return fail(format!(
            "proof has {} hashes, too few to reach the new root",
            proof.len()
        ));
    }
    if fr != *old_root {
        return fail("proof does not reproduce the old root".into());
    }
    if sr != *new_root {
        return fail("proof does not reproduce the new root".into());
    }
    Ok(())
}

/// Compact Merkle tree state: the roots of the perfect subtrees ("frontier") of the current size;
/// lets a writer append leaf hashes and get the new root without the whole tree.
///
/// A tree of `n` leaves is, left to right, one perfect subtree per set bit of `n`, largest first
/// (this is what splitting at the largest power of two below `n`, RFC 6962 section 2.1, produces).
/// The frontier keeps exactly those subtree roots, so it holds at most 64 hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    /// Number of leaves appended so far.
    size: u64,
    /// `(height, root)` of each perfect subtree, heights strictly decreasing; a subtree of height
    /// `h` covers `2^h` leaves and the heights are the set bits of `size`.
    stack: Vec<(u32, Hash)>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf; `leaf` is already a leaf hash (see [`leaf_hash`]).
    ///
    /// Like binary increment: the new leaf is a subtree of height 0, and while the last subtree has
    /// the same height the two merge into one of the next height.
    ///
    /// # Panics
    /// If the tree already holds `u64::MAX` leaves (unreachable in practice).
    pub fn push(&mut self, leaf: Hash) {
        self.size = self
            .size
            .checked_add(1)
            .expect("Merkle tree size overflows u64");
        let mut node = (0u32, leaf);
        while let Some(&(height, left)) = self.stack.last() {
            if height != node.0 {
                break;
            }
            self.stack.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
    }

    /// Root of the current tree; equals [`root`] over all leaves pushed so far.
    ///
    /// The smaller subtrees on the right hang off the larger ones on the left, so the root folds the
    /// subtree roots from right to left.
    pub fn root(&self) -> Hash {
        let mut subtrees = self.stack.iter().rev();
        let Some(&(_, last)) = subtrees.next() else {
            return sha256(&[]);
        };
        subtrees.fold(last, |acc, (_, left)| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_point_is_largest_power_of_two_below() {
        for n in 2usize..=1025 {
            let k = split_point(n);
            assert!(
                k.is_power_of_two() && k < n && 2 * k >= n,
                "n = {n}, k = {k}"
            );
        }
        assert_eq!(split_point(usize::MAX), 1 << (usize::BITS - 1));
    }

    #[test]
    fn frontier_heights_are_the_bits_of_the_size() {
        let mut f = Frontier::new();
        for i in 0u64..300 {
            f.push(leaf_hash(&i.to_le_bytes()));
            let bits: u64 = f.stack.iter().map(|(h, _)| 1u64 << h).sum();
            assert_eq!(bits, f.size());
            assert!(f.stack.windows(2).all(|w| w[0].0 > w[1].0));
            assert_eq!(f.stack.len() as u32, f.size().count_ones());
        }
    }
}
