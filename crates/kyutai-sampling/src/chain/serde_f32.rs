//! How a [`ChainConfig`](crate::ChainConfig)'s `f32` fields read and write JSON.
//!
//! JSON numbers are read as `f64`; one whose `f32` form would change its meaning (past `f32`'s
//! range, which would silently become an infinity, or a nonzero value that rounds to 0) is an
//! error naming the value. Biases may be `-inf` (a ban), which JSON numbers cannot hold: it is
//! written as the string `"-inf"`, and `"-inf"` and `"-Infinity"` (Python's spelling) are read
//! back as `-inf`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `x` as an `f32`, or why it does not fit.
pub(super) fn fit(x: f64) -> Result<f32, String> {
    let y = x as f32;
    if !y.is_finite() || (y == 0.0 && x != 0.0) {
        Err(format!(
            "the number {x} does not fit an f32 (magnitude at most 3.4e38; a nonzero value must \
             not round to 0)"
        ))
    } else {
        Ok(y)
    }
}

/// A plain `f32` field.
pub(super) fn number<'de, D: Deserializer<'de>>(de: D) -> Result<f32, D::Error> {
    fit(f64::deserialize(de)?).map_err(D::Error::custom)
}

/// A bias: a number, or `-inf` as a string.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Bias {
    Number(f64),
    Text(String),
}

fn read_bias(bias: Bias) -> Result<f32, String> {
    match bias {
        Bias::Number(x) => fit(x),
        Bias::Text(t) if t == "-inf" || t == "-Infinity" => Ok(f32::NEG_INFINITY),
        Bias::Text(t) => Err(format!(
            "expected a number or \"-inf\" for a bias, got the string {t:?}"
        )),
    }
}

fn write_bias(x: f32) -> Bias {
    if x == f32::NEG_INFINITY {
        Bias::Text("-inf".to_string())
    } else {
        Bias::Number(f64::from(x))
    }
}

/// `logit_bias`: token ids to biases.
pub(super) mod token_biases {
    use std::collections::BTreeMap;

    use super::*;

    pub(in crate::chain) fn serialize<S: Serializer>(
        map: &BTreeMap<u32, f32>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        ser.collect_map(map.iter().map(|(&k, &v)| (k, write_bias(v))))
    }

    pub(in crate::chain) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<BTreeMap<u32, f32>, D::Error> {
        BTreeMap::<u32, Bias>::deserialize(de)?
            .into_iter()
            .map(|(k, v)| read_bias(v).map(|v| (k, v)).map_err(D::Error::custom))
            .collect()
    }
}

/// `sequence_bias`: `[ids, bias]` pairs.
pub(super) mod sequence_biases {
    use super::*;

    pub(in crate::chain) fn serialize<S: Serializer>(
        pairs: &[(Vec<u32>, f32)],
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        ser.collect_seq(pairs.iter().map(|(ids, b)| (ids, write_bias(*b))))
    }

    pub(in crate::chain) fn deserialize<'de, D: Deserializer<'de>>(
        de: D,
    ) -> Result<Vec<(Vec<u32>, f32)>, D::Error> {
        Vec::<(Vec<u32>, Bias)>::deserialize(de)?
            .into_iter()
            .map(|(ids, b)| read_bias(b).map(|b| (ids, b)).map_err(D::Error::custom))
            .collect()
    }
}
