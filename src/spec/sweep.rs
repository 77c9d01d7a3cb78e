//! `OneOrMany<T>`: a sweepable spec field. `l1 = 0.05` and `l1 = [0.03, 0.05]` both
//! deserialize; a scalar is a one-element sweep. Written by hand (not `#[serde(untagged)]`)
//! so a wrong type still gets a precise message ("expected a number or a list of numbers").

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

#[derive(Debug, Clone, PartialEq)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<T> OneOrMany<T> {
    pub fn values(&self) -> &[T] {
        &self.0
    }
}

impl<T: Serialize> Serialize for OneOrMany<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de> + PartialEq + fmt::Debug> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        macro_rules! scalar {
            ($m:ident, $t:ty) => {
                fn $m<E: de::Error>(self, v: $t) -> Result<Self::Value, E> {
                    let one = T::deserialize(de::IntoDeserializer::<E>::into_deserializer(v))?;
                    Ok(OneOrMany(vec![one]))
                }
            };
        }
        impl<'de, T: Deserialize<'de> + PartialEq + fmt::Debug> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a value or a non-empty list of values")
            }
            scalar!(visit_i64, i64);
            scalar!(visit_u64, u64);
            scalar!(visit_f64, f64);
            scalar!(visit_bool, bool);
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let one = T::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(OneOrMany(vec![one]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                if out.is_empty() {
                    return Err(de::Error::invalid_length(0, &"a non-empty list"));
                }
                // A repeated sweep value is a typo (`[0.1, 0.1]` for `[0.1, 0.01]`); the
                // grid would silently drop the copy and train one SAE fewer than listed.
                for (i, v) in out.iter().enumerate() {
                    if out[..i].contains(v) {
                        return Err(de::Error::custom(format!(
                            "value {v:?} appears twice (item {}); expected a list of distinct values",
                            i + 1
                        )));
                    }
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}
