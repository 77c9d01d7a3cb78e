//! Stage keys: blake3 over the stage name, its version constant, the canonical encoding of
//! its *typed, resolved* parameters and the keys of its inputs.
//!
//! Canonical encoding = the parameter struct serialised to JSON with sorted object keys
//! (serde_json's default map is a BTreeMap) and shortest round-trip floats, so `1e-3` and
//! `0.001` in a spec give the same key, and key order in the file does not matter.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Domain separation: bump the suffix if the key derivation itself ever changes.
const KEY_CONTEXT: &str = "saerun 2026-11 stage key v1";

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageKey([u8; 32]);

impl StageKey {
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 12 hex digits, for tables and logs.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }

    pub fn from_hex(s: &str) -> Option<StageKey> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(StageKey(out))
    }
}

impl fmt::Debug for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageKey({})", self.short())
    }
}

impl fmt::Display for StageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for StageKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for StageKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StageKey::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// The canonical parameters as a JSON value: what `canonical_params` writes out, and what
/// a cache manifest records (taken from here rather than by parsing the text back, because
/// serde_json's default float parser may land one ulp off the hashed value).
pub fn canonical_value<P: Serialize>(params: &P) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(params)
        .map_err(|e| Error::run(format!("cannot encode stage parameters: {e}")))?;
    positive_zeros(&mut value);
    Ok(value)
}

/// `-0.0` → `0.0`. The two are equal numbers (`l1 = -0.0` passes `l1 ≥ 0` and trains
/// exactly like `l1 = 0`), but serde_json writes the sign, which gave an equal spec a
/// different key (found by tests/spec_properties.rs).
fn positive_zeros(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() && n.as_f64() == Some(0.0) => {
            *n = serde_json::Number::from_f64(0.0).expect("0.0 is finite");
        }
        Value::Array(items) => items.iter_mut().for_each(positive_zeros),
        Value::Object(fields) => fields.values_mut().for_each(positive_zeros),
        _ => {}
    }
}

/// Canonical JSON of a parameter struct (sorted keys, shortest floats).
pub fn canonical_params<P: Serialize>(params: &P) -> Result<String> {
    Ok(canonical_value(params)?.to_string())
}

pub fn stage_key<P: Serialize>(
    stage: &str,
    version: u32,
    params: &P,
    inputs: &[StageKey],
) -> Result<StageKey> {
    stage_key_on(stage, version, params, inputs, None)
}

/// `stage_key` of a stage whose output depends on the compute device: `device` (the
/// backend, `None` for the CPU) is one more field, so CPU keys equal `stage_key`'s.
pub fn stage_key_on<P: Serialize>(
    stage: &str,
    version: u32,
    params: &P,
    inputs: &[StageKey],
    device: Option<&str>,
) -> Result<StageKey> {
    let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
    let mut field = |bytes: &[u8]| {
        // Length-prefix every field so that no two different field lists collide.
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(stage.as_bytes());
    field(&version.to_le_bytes());
    field(canonical_params(params)?.as_bytes());
    field(&(inputs.len() as u64).to_le_bytes());
    for input in inputs {
        field(&input.0);
    }
    // After the counted inputs, so no device field can be read as an input key.
    if let Some(device) = device {
        field(device.as_bytes());
    }
    Ok(StageKey(*h.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct P {
        lr: f64,
        size: usize,
    }

    #[test]
    fn negative_zero_keys_as_zero() {
        // Regression (tests/spec_properties.rs): `l1 = -0.0` keyed apart from `l1 = 0.0`.
        let key = |l1: f64| stage_key("train", 1, &[l1], &[]).unwrap();
        assert_eq!(key(-0.0), key(0.0));
        assert_eq!(canonical_params(&[-0.0, 1.5]).unwrap(), "[0.0,1.5]");
    }

    #[test]
    fn canonical_value_holds_floats_exactly() {
        // Regression (tests/spec_properties.rs): manifests recorded the canonical text parsed
        // back by serde_json, which reads this value as 3.1927020966678863e157.
        let x = 3.192702096667886e157_f64;
        assert_eq!(canonical_value(&x).unwrap().as_f64(), Some(x));
        assert_eq!(canonical_params(&x).unwrap().parse::<f64>().unwrap(), x);
    }

    #[test]
    fn hex_round_trip() {
        let k = stage_key("s", 1, &P { lr: 0.1, size: 2 }, &[]).unwrap();
        assert_eq!(StageKey::from_hex(&k.hex()), Some(k));
        assert_eq!(StageKey::from_hex("zz"), None);
    }

    #[test]
    fn every_component_changes_the_key() {
        let p = P {
            lr: 1e-3,
            size: 512,
        };
        let base = stage_key("train", 1, &p, &[]).unwrap();
        let input = stage_key("data", 1, &p, &[]).unwrap();
        assert_ne!(base, stage_key("eval", 1, &p, &[]).unwrap());
        assert_ne!(base, stage_key("train", 2, &p, &[]).unwrap());
        assert_ne!(
            base,
            stage_key(
                "train",
                1,
                &P {
                    lr: 2e-3,
                    size: 512
                },
                &[]
            )
            .unwrap()
        );
        assert_ne!(base, stage_key("train", 1, &p, &[input]).unwrap());
        assert_eq!(
            base,
            stage_key(
                "train",
                1,
                &P {
                    lr: 0.001,
                    size: 512
                },
                &[]
            )
            .unwrap()
        );
    }
}
