//! Tier configuration: `(count, neurons_per_cluster, bits)` per tier, the spec-string parser and
//! the backend choice (docs/studies/ramlm.md, 'Tiered architecture' and 'Memory backends').
use crate::error::{value_err, CoreError, Result};

/// Largest bits per neuron accepted anywhere.
pub const MAX_BITS: u32 = 60;
/// DENSE up to this many bits in `auto` (docs/studies/ramlm.md, 'Memory backends').
pub const SPARSE_THRESHOLD_BITS: u32 = 10;
/// SPARSE up to this many bits in `auto`; LSH above (the same table).
pub const LSH_THRESHOLD_BITS: u32 = 30;
/// Dense and sparse store unfolded addresses and accept at most this many bits.
pub const MAX_UNFOLDED_BITS: u32 = 30;
/// Largest total_input_bits accepted (bounds the permutation buffers; T = 16 x context in
/// practice).
pub const MAX_INPUT_BITS: usize = 1 << 24;
/// LSH folds addresses to at most this many bits.
pub const LSH_FOLD_BITS: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    Dense,
    Sparse,
    Lsh,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Dense => "dense",
            Backend::Sparse => "sparse",
            Backend::Lsh => "lsh",
        }
    }

    pub fn code(self) -> u8 {
        match self {
            Backend::Dense => 0,
            Backend::Sparse => 1,
            Backend::Lsh => 2,
        }
    }

    pub fn from_code(c: u8) -> Result<Backend> {
        match c {
            0 => Ok(Backend::Dense),
            1 => Ok(Backend::Sparse),
            2 => Ok(Backend::Lsh),
            _ => value_err(format!("unknown backend code {c}")),
        }
    }

    /// `auto` picks by the spec thresholds; other names must fit the bits.
    pub fn resolve(name: &str, bits: u32) -> Result<Backend> {
        let b = match name {
            "auto" => {
                if bits <= SPARSE_THRESHOLD_BITS {
                    Backend::Dense
                } else if bits <= LSH_THRESHOLD_BITS {
                    Backend::Sparse
                } else {
                    Backend::Lsh
                }
            }
            "dense" => Backend::Dense,
            "sparse" => Backend::Sparse,
            "lsh" => Backend::Lsh,
            other => {
                return value_err(format!(
                    "unknown backend {other:?}; expected 'auto', 'dense', 'sparse' or 'lsh'"
                ))
            }
        };
        if b != Backend::Lsh && bits > MAX_UNFOLDED_BITS {
            return value_err(format!(
                "backend '{}' supports at most {MAX_UNFOLDED_BITS} bits per neuron, got {bits}; use 'lsh' or 'auto'",
                b.name()
            ));
        }
        Ok(b)
    }
}

/// One tier: `count` clusters with `neurons` neurons of `bits` bits each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TierSpec {
    pub count: usize,
    pub neurons: usize,
    pub bits: u32,
}

impl TierSpec {
    pub fn validate(&self, index: usize) -> Result<()> {
        if self.bits == 0 || self.bits > MAX_BITS {
            return value_err(format!("tier {index}: bits must be in 1..={MAX_BITS}, got {}", self.bits));
        }
        if self.neurons == 0 || self.neurons > u16::MAX as usize {
            return value_err(format!(
                "tier {index}: neurons per cluster must be in 1..=65535, got {}",
                self.neurons
            ));
        }
        if self.count.checked_mul(self.neurons).and_then(|n| n.checked_mul(self.bits as usize)).is_none() {
            return value_err(format!("tier {index}: count * neurons * bits overflows"));
        }
        Ok(())
    }

    pub fn total_neurons(&self) -> usize {
        self.count * self.neurons
    }
}

/// Parses `"100,15,20;400,10,12;rest,5,8"`. `rest` (only as the last tier) takes the clusters
/// left over; the counts must cover `num_clusters` exactly.
pub fn parse_tier_spec(spec: &str, num_clusters: usize) -> Result<Vec<TierSpec>> {
    let parts: Vec<&str> = spec.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
    if parts.is_empty() {
        return value_err("empty tier spec");
    }
    let mut tiers = Vec::with_capacity(parts.len());
    let mut used = 0usize;
    for (i, part) in parts.iter().enumerate() {
        let fields: Vec<&str> = part.split(',').map(str::trim).collect();
        if fields.len() != 3 {
            return value_err(format!("tier {i} ({part:?}): expected 'count,neurons,bits'"));
        }
        let parse = |s: &str, what: &str| -> Result<usize> {
            s.parse::<usize>()
                .map_err(|_| CoreError::Value(format!("tier {i} ({part:?}): {what} {s:?} is not a non-negative integer")))
        };
        let count = if fields[0].eq_ignore_ascii_case("rest") {
            if i + 1 != parts.len() {
                return value_err(format!("tier {i}: 'rest' is only allowed in the last tier"));
            }
            num_clusters.checked_sub(used).ok_or_else(|| {
                CoreError::Value(format!("tier counts ({used}) exceed the number of clusters {num_clusters}"))
            })?
        } else {
            parse(fields[0], "count")?
        };
        let neurons = parse(fields[1], "neurons")?;
        let bits = parse(fields[2], "bits")?;
        let t = TierSpec { count, neurons, bits: bits.min(u32::MAX as usize) as u32 };
        t.validate(i)?;
        used = used.checked_add(count).ok_or_else(|| CoreError::Value("tier counts overflow".into()))?;
        tiers.push(t);
    }
    if used != num_clusters {
        return value_err(format!(
            "tier counts sum to {used} but there are {num_clusters} clusters (use 'rest' for the remainder)"
        ));
    }
    Ok(tiers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rest() {
        let t = parse_tier_spec("100,15,20;400,10,12;rest,5,8", 50257).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[2], TierSpec { count: 49757, neurons: 5, bits: 8 });
        let neurons: usize = t.iter().map(|t| t.total_neurons()).sum();
        assert_eq!(neurons, 254_285); // docs/studies/ramlm.md, 'Tiered architecture'
        let conns: usize = t.iter().map(|t| t.total_neurons() * t.bits as usize).sum();
        assert_eq!(conns, 2_068_280);
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(parse_tier_spec("100,15,20;rest,5,8;3,3,3", 1000).is_err());
        assert!(parse_tier_spec("2000,1,8;rest,1,8", 1000).is_err());
        assert!(parse_tier_spec("10,1,8", 11).is_err());
        assert!(parse_tier_spec("11,1,0", 11).is_err());
        assert!(parse_tier_spec("11,1,61", 11).is_err());
        assert!(parse_tier_spec("11,0,8", 11).is_err());
        assert!(parse_tier_spec("11,x,8", 11).is_err());
        assert!(parse_tier_spec("", 11).is_err());
    }

    #[test]
    fn backend_resolution() {
        assert_eq!(Backend::resolve("auto", 10).unwrap(), Backend::Dense);
        assert_eq!(Backend::resolve("auto", 11).unwrap(), Backend::Sparse);
        assert_eq!(Backend::resolve("auto", 30).unwrap(), Backend::Sparse);
        assert_eq!(Backend::resolve("auto", 31).unwrap(), Backend::Lsh);
        assert!(Backend::resolve("dense", 31).is_err());
        assert!(Backend::resolve("sparse", 40).is_err());
        assert!(Backend::resolve("bogus", 8).is_err());
    }
}
