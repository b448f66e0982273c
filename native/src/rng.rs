//! SplitMix64 and the "guaranteed coverage" connectivity initialisation (docs/studies/ramlm.md,
//! 'Connectivity initialisation'). The numpy reference reproduces both exactly, so the same seed
//! gives the same connectivity in each.
use crate::error::{value_err, Result};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and easy to reproduce in Python.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n) by the multiply-high method (no rejection; bias < n / 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fisher-Yates: for i = n-1 down to 1, swap i with below(i+1).
    pub fn permutation(&mut self, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            p.swap(i, j);
        }
        p
    }
}

/// Connectivity `[neurons, bits]` (row-major) with every input bit used at least once when
/// `neurons * bits >= total_input_bits`, and no repeated bit within a row unless the row already
/// holds every input bit.
pub fn init_connectivity(neurons: usize, bits: usize, total_input_bits: usize, seed: u64) -> Result<Vec<u32>> {
    if total_input_bits == 0 || total_input_bits > crate::tiers::MAX_INPUT_BITS {
        return value_err(format!(
            "total_input_bits must be in 1..={}, got {total_input_bits}",
            crate::tiers::MAX_INPUT_BITS
        ));
    }
    if bits == 0 || bits > 60 {
        return value_err(format!("bits must be in 1..=60, got {bits}"));
    }
    let t = total_input_bits;
    let slots = neurons
        .checked_mul(bits)
        .ok_or_else(|| crate::error::CoreError::Value("neurons * bits overflows".into()))?;
    if bits == t {
        let row: Vec<u32> = (0..t as u32).collect();
        let mut v = crate::error::try_vec(slots, 0u32, "the connectivity")?;
        v.iter_mut().zip(row.iter().cycle()).for_each(|(d, &s)| *d = s);
        return Ok(v);
    }
    let mut rng = SplitMix64::new(seed);
    let mut conn = crate::error::try_vec(slots, 0u32, "the connectivity")?;
    let first = rng.permutation(t);
    let head = slots.min(t);
    conn[..head].copy_from_slice(&first[..head]);
    if slots <= t {
        return Ok(conn);
    }
    // Slots from `head` on come from fresh permutations, row-major.
    let mut in_row = vec![false; t];
    let mut pool: Vec<u32> = Vec::new();
    let mut pos = 0usize;
    let mut slot = head;
    while slot < slots {
        let row = slot / bits;
        let row_start = row * bits;
        // Rebuild the membership of the current row (it may be partly filled from `first`).
        in_row.iter_mut().for_each(|x| *x = false);
        let mut distinct = 0usize;
        for &v in &conn[row_start..slot] {
            if !in_row[v as usize] {
                in_row[v as usize] = true;
                distinct += 1;
            }
        }
        while slot < row_start + bits {
            if pos == pool.len() {
                pool = rng.permutation(t);
                pos = 0;
            }
            let v = pool[pos];
            pos += 1;
            if in_row[v as usize] && distinct < t {
                continue; // discard: already in this row and the row does not yet cover all bits
            }
            if !in_row[v as usize] {
                in_row[v as usize] = true;
                distinct += 1;
            }
            conn[slot] = v;
            slot += 1;
        }
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_known_values() {
        // First outputs of SplitMix64 seeded with 0 (published test vector).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn coverage_and_no_duplicates() {
        let (n, b, t) = (50, 12, 64);
        let c = init_connectivity(n, b, t, 7).unwrap();
        let mut seen = vec![false; t];
        for row in c.chunks(b) {
            let mut r = row.to_vec();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), b, "duplicate within a row");
            for &v in row {
                seen[v as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn wider_than_input_allows_duplicates_only_after_full_row() {
        let c = init_connectivity(3, 10, 4, 1).unwrap();
        for row in c.chunks(10) {
            let mut first4 = row[..4].to_vec();
            first4.sort();
            assert_eq!(first4, vec![0, 1, 2, 3]);
        }
    }

    #[test]
    fn identity_when_bits_equal_inputs() {
        let c = init_connectivity(2, 5, 5, 3).unwrap();
        assert_eq!(c, vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn deterministic() {
        assert_eq!(init_connectivity(20, 8, 64, 5).unwrap(), init_connectivity(20, 8, 64, 5).unwrap());
        assert_ne!(init_connectivity(20, 8, 64, 5).unwrap(), init_connectivity(20, 8, 64, 6).unwrap());
    }
}
