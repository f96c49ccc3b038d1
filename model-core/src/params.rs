//! The flat parameter vector: layout, seeded initialization and digest, all without libtorch.
//!
//! Every party must agree bit for bit on what a model is, so a model's parameters travel as one
//! `Vec<f32>`: the tensors in **byte-wise sorted order of their names** (for example `conv1.bias`,
//! `conv1.weight`, `conv2.bias`, ..., `output.weight`), each tensor row-major (C order). The digest
//! is SHA-256 over the little-endian bytes of that vector. libtorch's `VarStore` keeps variables in
//! a `HashMap`, so the order is fixed here, from the spec alone, and the libtorch side is checked
//! against it.

use crate::error::{ModelError, Result};
use crate::spec::ModelSpec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// One named tensor in the flat vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// Variable name, e.g. `layer0.weight`.
    pub name: String,
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Index of its first value in the flat vector.
    pub offset: usize,
    /// Fan-in used for its initialization bound.
    pub fan_in: usize,
}

impl ParamInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a zero-sized tensor (never produced by a valid spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tensors of a spec, sorted by name, with their offsets in the flat vector.
pub fn layout(spec: &ModelSpec) -> Vec<ParamInfo> {
    // (name, shape, fan_in) before sorting.
    let mut tensors: Vec<(String, Vec<usize>, usize)> = Vec::new();
    let dense = |tensors: &mut Vec<_>, prefix: &str, inp: usize, out: usize| {
        tensors.push((format!("{prefix}.weight"), vec![out, inp], inp));
        tensors.push((format!("{prefix}.bias"), vec![out], inp));
    };
    match spec {
        ModelSpec::LogisticRegression { inputs, outputs } => {
            dense(&mut tensors, "linear", *inputs, *outputs)
        }
        ModelSpec::Mlp {
            inputs,
            hidden,
            outputs,
            ..
        } => {
            let mut prev = *inputs;
            for (i, &h) in hidden.iter().enumerate() {
                dense(&mut tensors, &format!("layer{i}"), prev, h);
                prev = h;
            }
            dense(&mut tensors, "output", prev, *outputs);
        }
        ModelSpec::Cnn {
            height,
            width,
            channels,
            hidden,
            outputs,
            in_channels,
            pool,
            ..
        } => {
            let [c1, c2] = *channels;
            let c0 = *in_channels;
            tensors.push(("conv1.weight".into(), vec![c1, c0, 3, 3], c0 * 9));
            tensors.push(("conv1.bias".into(), vec![c1], c0 * 9));
            tensors.push(("conv2.weight".into(), vec![c2, c1, 3, 3], c1 * 9));
            tensors.push(("conv2.bias".into(), vec![c2], c1 * 9));
            let [ph, pw] = crate::spec::cnn_grid(*height, *width, *pool);
            dense(&mut tensors, "fc", c2 * ph * pw, *hidden);
            dense(&mut tensors, "output", *hidden, *outputs);
        }
        ModelSpec::Torchscript { parameters, .. } => {
            // PyTorch's defaults as far as shapes tell them: a weight of 2 or more dimensions has
            // the fan-in of its rows; a bias shares its layer's weight's; other tensors (a
            // normalisation's scale and shift) get fan-in 0, which `init_params` reads as
            // constant (1 for a weight, 0 otherwise).
            let fan_in = |shape: &[usize]| shape.iter().skip(1).product::<usize>();
            for p in parameters {
                let fan = if p.shape.len() >= 2 {
                    fan_in(&p.shape)
                } else {
                    let layer = p.name.rsplit_once('.').map_or("", |(layer, _)| layer);
                    let weight = if layer.is_empty() {
                        "weight".to_string()
                    } else {
                        format!("{layer}.weight")
                    };
                    match parameters.iter().find(|w| w.name == weight) {
                        Some(w) if p.name.ends_with("bias") && w.shape.len() >= 2 => {
                            fan_in(&w.shape)
                        }
                        _ => 0,
                    }
                };
                tensors.push((p.name.clone(), p.shape.clone(), fan));
            }
        }
    }
    tensors.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut offset = 0;
    tensors
        .into_iter()
        .map(|(name, shape, fan_in)| {
            let info = ParamInfo {
                name,
                shape,
                offset,
                fan_in,
            };
            offset += info.len();
            info
        })
        .collect()
}

/// Total number of parameters of a spec.
pub fn num_parameters(spec: &ModelSpec) -> usize {
    layout(spec).iter().map(ParamInfo::len).sum()
}

/// Seeded initial parameters: every value uniform in `[-1/sqrt(fan_in), 1/sqrt(fan_in))`, which is
/// PyTorch's default for linear and convolution layers (Kaiming-uniform with `a = sqrt(5)`); a
/// tensor of fan-in 0 (a TorchScript module's normalisation scale or shift) is 1 for a weight and 0
/// otherwise.
///
/// Drawn with ChaCha8 from `seed` in layout order, so the initial model is the same on every
/// machine and device, and does not touch libtorch's global random state.
pub fn init_params(spec: &ModelSpec, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut flat = Vec::with_capacity(num_parameters(spec));
    for info in layout(spec) {
        if info.fan_in == 0 {
            let value = if info.name.ends_with("weight") {
                1.0
            } else {
                0.0
            };
            flat.extend(std::iter::repeat_n(value, info.len()));
            continue;
        }
        let bound = 1.0 / (info.fan_in as f64).sqrt();
        flat.extend((0..info.len()).map(|_| rng.random_range(-bound..bound) as f32));
    }
    flat
}

/// Checks that `flat` has the spec's length and only finite values.
pub fn check_params(spec: &ModelSpec, flat: &[f32]) -> Result<()> {
    let expected = num_parameters(spec);
    if flat.len() != expected {
        return Err(ModelError::WrongLength {
            expected,
            found: flat.len(),
        });
    }
    if let Some(index) = flat.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NotFinite {
            index,
            value: flat[index],
        });
    }
    Ok(())
}

/// SHA-256 of a flat parameter vector's little-endian bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelDigest(pub [u8; 32]);

impl ModelDigest {
    /// The digest of `flat`.
    pub fn of(flat: &[f32]) -> ModelDigest {
        let mut hasher = Sha256::new();
        // Hash in chunks to avoid a second full copy of large models.
        let mut buf = Vec::with_capacity(4 * 4096);
        for chunk in flat.chunks(4096) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            hasher.update(&buf);
        }
        ModelDigest(hasher.finalize().into())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<ModelDigest> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|e| ModelError::Format(format!("digest '{s}' is not 64 hex digits: {e}")))?;
        Ok(ModelDigest(out))
    }
}

impl fmt::Display for ModelDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ModelDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelDigest({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> ModelSpec {
        ModelSpec::Mlp {
            inputs: 30,
            hidden: vec![32, 16],
            outputs: 1,
            dropout: 0.0,
        }
    }

    fn torchscript(parameters: &[(&str, &[usize])]) -> ModelSpec {
        ModelSpec::Torchscript {
            module: "ab".repeat(32),
            inputs: 4,
            outputs: 2,
            parameters: parameters
                .iter()
                .map(|(name, shape)| crate::TensorDecl {
                    name: name.to_string(),
                    shape: shape.to_vec(),
                })
                .collect(),
            image: None,
        }
    }

    #[test]
    fn a_torchscript_layout_is_declared_and_initialised_as_pytorch_would() {
        let spec = torchscript(&[
            ("fc.bias", &[2]),
            ("fc.weight", &[2, 16]),
            ("norm.bias", &[4]),
            ("norm.weight", &[4]),
            ("scale", &[]),
        ]);
        spec.validate().unwrap();
        let l = layout(&spec);
        let fan: Vec<(&str, usize, usize)> = l
            .iter()
            .map(|p| (p.name.as_str(), p.offset, p.fan_in))
            .collect();
        assert_eq!(
            fan,
            [
                ("fc.bias", 0, 16),
                ("fc.weight", 2, 16),
                ("norm.bias", 34, 0),
                ("norm.weight", 38, 0),
                ("scale", 42, 0)
            ]
        );
        let init = init_params(&spec, 7);
        assert_eq!(init.len(), 43);
        assert!(init[..34].iter().all(|v| v.abs() < 0.25 && *v != 0.0));
        assert_eq!(&init[34..], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
        let json = spec.canonical_json();
        assert!(
            json.starts_with(r#"{"name":"torchscript","module":"abab"#),
            "{json}"
        );
        assert_eq!(ModelSpec::from_json(&json).unwrap(), spec);
    }

    #[test]
    fn a_torchscript_spec_must_name_its_code_and_list_its_parameters_once_in_order() {
        for (bad, why) in [
            (
                torchscript(&[("b", &[1]), ("a", &[1])]),
                "byte-wise name order",
            ),
            (
                torchscript(&[("a", &[1]), ("a", &[1])]),
                "byte-wise name order",
            ),
            (torchscript(&[("a", &[0, 3])]), "no empty dimension"),
            (torchscript(&[]), "nothing to train"),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        let mut spec = torchscript(&[("a", &[1])]);
        if let ModelSpec::Torchscript { module, .. } = &mut spec {
            *module = "AB".repeat(32);
        }
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("digest of its code"), "{e}");
    }

    #[test]
    fn layout_is_sorted_by_name_and_contiguous() {
        for spec in [
            mlp(),
            ModelSpec::LogisticRegression {
                inputs: 10,
                outputs: 3,
            },
            ModelSpec::Cnn {
                height: 8,
                width: 8,
                channels: [16, 32],
                hidden: 64,
                outputs: 10,
                dropout: 0.0,
                in_channels: 1,
                pool: None,
            },
        ] {
            let l = layout(&spec);
            let names: Vec<_> = l.iter().map(|p| p.name.clone()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            let mut offset = 0;
            for p in &l {
                assert_eq!(p.offset, offset);
                offset += p.len();
            }
            assert_eq!(offset, num_parameters(&spec));
        }
        let names: Vec<_> = layout(&mlp()).into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "layer0.bias",
                "layer0.weight",
                "layer1.bias",
                "layer1.weight",
                "output.bias",
                "output.weight"
            ]
        );
        // 30*32+32 + 32*16+16 + 16*1+1
        assert_eq!(num_parameters(&mlp()), 992 + 528 + 17);
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let spec = mlp();
        let a = init_params(&spec, 7);
        assert_eq!(a, init_params(&spec, 7));
        assert_ne!(a, init_params(&spec, 8));
        for p in layout(&spec) {
            let bound = 1.0 / (p.fan_in as f32).sqrt();
            let vals = &a[p.offset..p.offset + p.len()];
            assert!(vals.iter().all(|v| v.abs() <= bound), "{}", p.name);
            // Not degenerate: values actually spread over the interval.
            let max = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max > bound / 2.0, "{}", p.name);
        }
    }

    /// Pins the digest encoding (SHA-256 of little-endian f32 bytes in order): if this changes, every
    /// recorded model digest on every ledger changes meaning.
    #[test]
    fn digest_is_pinned() {
        let flat: Vec<f32> = (0..10).map(|i| i as f32 * 0.5 - 1.0).collect();
        assert_eq!(
            ModelDigest::of(&flat).to_hex(),
            "749a45ec89d1dee06102a82d58a7b0313a56e888a72a11abcd16087a1120d2af"
        );
    }

    #[test]
    fn digest_changes_with_any_bit_and_roundtrips_hex() {
        let flat = init_params(&mlp(), 1);
        let d = ModelDigest::of(&flat);
        let mut flipped = flat.clone();
        flipped[100] = f32::from_bits(flipped[100].to_bits() ^ 1);
        assert_ne!(d, ModelDigest::of(&flipped));
        assert_eq!(ModelDigest::from_hex(&d.to_hex()).unwrap(), d);
        assert!(ModelDigest::from_hex("abc").is_err());
    }

    #[test]
    fn check_params_rejects_wrong_length_and_nan() {
        let spec = mlp();
        let mut flat = init_params(&spec, 1);
        assert!(check_params(&spec, &flat).is_ok());
        assert!(matches!(
            check_params(&spec, &flat[1..]),
            Err(ModelError::WrongLength { .. })
        ));
        flat[5] = f32::NAN;
        assert!(matches!(
            check_params(&spec, &flat),
            Err(ModelError::NotFinite { index: 5, .. })
        ));
    }
}
