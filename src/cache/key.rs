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

/// Canonical JSON of a parameter struct (sorted keys, shortest floats).
pub fn canonical_params<P: Serialize>(params: &P) -> Result<String> {
    let value = serde_json::to_value(params)
        .map_err(|e| Error::run(format!("cannot encode stage parameters: {e}")))?;
    Ok(value.to_string())
}

pub fn stage_key<P: Serialize>(
    stage: &str,
    version: u32,
    params: &P,
    inputs: &[StageKey],
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
