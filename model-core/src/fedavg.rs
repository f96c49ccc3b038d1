//! Federated averaging (McMahan et al., 2017) over flat parameter vectors, without libtorch.
//!
//! In a round every participating hospital starts from the same global parameters `w`, trains
//! locally and reports its update `delta_i = w_i - w`, weighted by its number of training rows
//! `n_i`. The new global model is `w + sum(n_i delta_i) / sum(n_i)`. In fedchain the weighted sum
//! is computed under encryption and only its decryption is seen; these functions are the plaintext
//! reference that the encrypted path must match (within quantization error), and the last step
//! (`apply`) that both paths share. Pure functions, so the coordinator and auditors use them too.

use crate::error::{ModelError, Result};

/// The weighted average of updates: `sum(n_i delta_i) / sum(n_i)`, accumulated in f64.
pub fn weighted_average(updates: &[(u64, &[f32])]) -> Result<Vec<f32>> {
    let Some((_, first)) = updates.first() else {
        return Err(ModelError::InvalidArgument(
            "federated averaging needs at least one update".into(),
        ));
    };
    let len = first.len();
    let total: u64 = updates.iter().map(|(n, _)| n).sum();
    if total == 0 {
        return Err(ModelError::InvalidArgument(
            "the updates' weights sum to 0".into(),
        ));
    }
    let mut sum = vec![0f64; len];
    for (i, (n, delta)) in updates.iter().enumerate() {
        if delta.len() != len {
            return Err(ModelError::WrongLength {
                expected: len,
                found: delta.len(),
            });
        }
        if let Some(j) = delta.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::InvalidArgument(format!(
                "update {i} has a non-finite value at {j}"
            )));
        }
        for (s, d) in sum.iter_mut().zip(delta.iter()) {
            *s += *n as f64 * *d as f64;
        }
    }
    Ok(sum.into_iter().map(|s| (s / total as f64) as f32).collect())
}

/// The new global parameters: `global + average_delta`, in the delta's buffer (a model of
/// millions of parameters is not copied once more).
pub fn apply(global: &[f32], average_delta: Vec<f32>) -> Result<Vec<f32>> {
    if global.len() != average_delta.len() {
        return Err(ModelError::WrongLength {
            expected: global.len(),
            found: average_delta.len(),
        });
    }
    let mut out = average_delta;
    for (d, w) in out.iter_mut().zip(global) {
        *d += w;
    }
    if let Some(index) = out.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NotFinite {
            index,
            value: out[index],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_by_sample_count() {
        let a = [1.0f32, -2.0];
        let b = [3.0f32, 2.0];
        let avg = weighted_average(&[(1, &a), (3, &b)]).unwrap();
        assert_eq!(avg, vec![2.5, 1.0]);
        assert_eq!(apply(&[10.0, 10.0], avg).unwrap(), vec![12.5, 11.0]);
    }

    #[test]
    fn refuses_bad_inputs() {
        let a = [1.0f32];
        let b = [1.0f32, 2.0];
        assert!(weighted_average(&[]).is_err());
        assert!(weighted_average(&[(0, &a)]).is_err());
        assert!(weighted_average(&[(1, &a), (1, &b)]).is_err());
        assert!(weighted_average(&[(1, &[f32::NAN])]).is_err());
        assert!(apply(&[1.0], vec![1.0, 2.0]).is_err());
        assert!(apply(&[f32::MAX], vec![f32::MAX]).is_err());
    }
}
