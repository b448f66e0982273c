//! Neuron addresses from input bits: `addr = sum_i x[conn[i]] << (b-1-i)` (docs/studies/ramlm.md,
//! 'Architecture').
//!
//! Batched forms work on *bit planes* (the input transposed to `[T][examples]`), so that one
//! neuron's addresses for a block of examples are a few vectorisable shift-or passes.

/// Transposes rows `[start, start+len)` of row-major `bits` (`[B, t]`) into `planes` (`[t][len]`).
pub fn fill_planes(bits: &[u8], t: usize, start: usize, len: usize, planes: &mut Vec<u8>) {
    planes.clear();
    planes.resize(t * len, 0);
    // Blocks of 64 rows keep both the source rows and the destination runs in cache.
    const BLK: usize = 64;
    let mut r0 = 0;
    while r0 < len {
        let r1 = (r0 + BLK).min(len);
        for k in 0..t {
            let dst = &mut planes[k * len + r0..k * len + r1];
            for (r, d) in (r0..r1).zip(dst.iter_mut()) {
                *d = bits[(start + r) * t + k];
            }
        }
        r0 = r1;
    }
}

/// Accumulates in the narrowest lane type that holds `conn.len()` bits (more lanes per vector),
/// in blocks of `BLOCK` examples, then widens to u64.
#[inline(always)]
fn addresses_narrow<T>(planes: &[u8], stride: usize, conn: &[u32], out: &mut [u64])
where
    T: Copy + Default + std::ops::Shl<u32, Output = T> + std::ops::BitOr<Output = T> + From<u8> + Into<u64>,
{
    const BLOCK: usize = 256;
    let mut acc = [T::default(); BLOCK];
    let mut r0 = 0;
    while r0 < out.len() {
        let n = (out.len() - r0).min(BLOCK);
        let acc = &mut acc[..n];
        acc.fill(T::default());
        for &c in conn {
            let base = c as usize * stride + r0;
            for (o, &x) in acc.iter_mut().zip(&planes[base..base + n]) {
                *o = (*o << 1) | T::from(x);
            }
        }
        for (o, &a) in out[r0..r0 + n].iter_mut().zip(acc.iter()) {
            *o = a.into();
        }
        r0 += n;
    }
}

#[inline(always)]
fn addresses_generic(planes: &[u8], stride: usize, conn: &[u32], out: &mut [u64]) {
    if conn.len() <= 16 {
        addresses_narrow::<u16>(planes, stride, conn, out)
    } else if conn.len() <= 32 {
        addresses_narrow::<u32>(planes, stride, conn, out)
    } else {
        addresses_narrow::<u64>(planes, stride, conn, out)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn addresses_avx2(planes: &[u8], stride: usize, conn: &[u32], out: &mut [u64]) {
    addresses_generic(planes, stride, conn, out)
}

/// Explicit AVX-512 for up to 32 bits: 16 examples per register, four registers in flight, the
/// accumulators stay in registers across all connections.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn addresses_avx512(planes: &[u8], stride: usize, conn: &[u32], out: &mut [u64]) {
    use std::arch::x86_64::*;
    let n = out.len();
    if conn.len() > 32 || n < 16 {
        return addresses_generic(planes, stride, conn, out);
    }
    // every load below reads planes[c*stride + r .. + 16] with r + 16 <= n <= stride, c < T
    let last = conn.iter().copied().max().unwrap_or(0) as usize;
    assert!(last * stride + n <= planes.len());
    let base = planes.as_ptr();
    let load = |c: u32, r: usize| _mm512_cvtepu8_epi32(_mm_loadu_si128(base.add(c as usize * stride + r) as *const __m128i));
    let store = |acc: __m512i, r: usize, out: &mut [u64]| {
        let lo = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(acc));
        let hi = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64::<1>(acc));
        _mm512_storeu_si512(out.as_mut_ptr().add(r) as *mut __m512i, lo);
        _mm512_storeu_si512(out.as_mut_ptr().add(r + 8) as *mut __m512i, hi);
    };
    let mut r = 0;
    while r + 64 <= n {
        let (mut a0, mut a1, mut a2, mut a3) =
            (_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512());
        for &c in conn {
            a0 = _mm512_or_si512(_mm512_slli_epi32::<1>(a0), load(c, r));
            a1 = _mm512_or_si512(_mm512_slli_epi32::<1>(a1), load(c, r + 16));
            a2 = _mm512_or_si512(_mm512_slli_epi32::<1>(a2), load(c, r + 32));
            a3 = _mm512_or_si512(_mm512_slli_epi32::<1>(a3), load(c, r + 48));
        }
        store(a0, r, out);
        store(a1, r + 16, out);
        store(a2, r + 32, out);
        store(a3, r + 48, out);
        r += 64;
    }
    while r + 16 <= n {
        let mut a = _mm512_setzero_si512();
        for &c in conn {
            a = _mm512_or_si512(_mm512_slli_epi32::<1>(a), load(c, r));
        }
        store(a, r, out);
        r += 16;
    }
    if r < n {
        // the last partial group: recompute the final 16 examples (n >= 16), overlapping
        let r = n - 16;
        let mut a = _mm512_setzero_si512();
        for &c in conn {
            a = _mm512_or_si512(_mm512_slli_epi32::<1>(a), load(c, r));
        }
        store(a, r, out);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Simd {
    Unknown,
    Base,
    Avx2,
    Avx512,
}

static SIMD: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(Simd::Unknown as u8);

#[inline]
fn simd_level() -> Simd {
    let v = SIMD.load(std::sync::atomic::Ordering::Relaxed);
    if v != Simd::Unknown as u8 {
        return match v {
            1 => Simd::Base,
            2 => Simd::Avx2,
            _ => Simd::Avx512,
        };
    }
    #[allow(unused_mut)]
    let mut level = Simd::Base;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") {
            level = Simd::Avx512;
        } else if std::arch::is_x86_feature_detected!("avx2") {
            level = Simd::Avx2;
        }
    }
    SIMD.store(level as u8, std::sync::atomic::Ordering::Relaxed);
    level
}

/// Addresses of one neuron (`conn`) for examples `0..out.len()` of a plane block with `stride`
/// examples per plane. Every `conn` entry must be a valid plane index (checked by the caller).
#[inline]
pub fn addresses_from_planes(planes: &[u8], stride: usize, conn: &[u32], out: &mut [u64]) {
    debug_assert!(out.len() <= stride);
    match simd_level() {
        // SAFETY: the CPU supports the features these functions were compiled for.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { addresses_avx512(planes, stride, conn, out) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { addresses_avx2(planes, stride, conn, out) },
        _ => addresses_generic(planes, stride, conn, out),
    }
}

/// Address of one neuron for one row-major example.
#[inline(always)]
pub fn address_from_row(row: &[u8], conn: &[u32]) -> u64 {
    let mut a = 0u64;
    for &c in conn {
        a = (a << 1) | row[c as usize] as u64;
    }
    a
}

/// Sliding windows over a token stream (docs/studies/ramlm.md, 'Data and tokenizers' and
/// 'Input encoding'): example i has context `tokens[i..i+context]` (oldest first, each token MSB
/// first in `bits_per_token` bits) and target `tokens[i+context]`. Returns (`[L-N, N*bpt]` bits,
/// `[L-N]` targets).
pub fn encode_contexts(tokens: &[i64], context: usize, bits_per_token: usize) -> crate::error::Result<(Vec<u8>, Vec<i64>)> {
    use crate::error::value_err;
    if context == 0 {
        return value_err("context must be at least 1");
    }
    if bits_per_token == 0 || bits_per_token > 62 {
        return value_err(format!("bits_per_token must be in 1..=62, got {bits_per_token}"));
    }
    if let Some(&bad) = tokens.iter().find(|&&x| x < 0 || (x as u64) >> bits_per_token != 0) {
        return value_err(format!("token id {bad} is negative or does not fit in {bits_per_token} bits"));
    }
    let n = tokens.len().saturating_sub(context);
    let width = context
        .checked_mul(bits_per_token)
        .ok_or_else(|| crate::error::CoreError::Value("context * bits_per_token overflows".into()))?;
    let mut bits = crate::error::try_vec(n.saturating_mul(width), 0u8, "the encoded bits")?;
    if n > 0 {
        use rayon::prelude::*;
        crate::pool::install(|| {
            bits.par_chunks_mut(width).enumerate().for_each(|(i, row)| {
                for (p, &tok) in tokens[i..i + context].iter().enumerate() {
                    for k in 0..bits_per_token {
                        row[p * bits_per_token + k] = ((tok >> (bits_per_token - 1 - k)) & 1) as u8;
                    }
                }
            })
        });
    }
    Ok((bits, tokens[context.min(tokens.len())..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_for_all_lengths_and_widths() {
        let (b, t) = (300, 40);
        let bits: Vec<u8> = (0..b * t).map(|i| ((i * 31 + i / 7) % 5 < 2) as u8).collect();
        let mut planes = Vec::new();
        for len in [1, 15, 16, 17, 63, 64, 65, 130, 300] {
            fill_planes(&bits, t, 0, len, &mut planes);
            for width in [1usize, 8, 16, 17, 32, 33, 60] {
                let conn: Vec<u32> = (0..width as u32).map(|i| (i * 7 + 3) % t as u32).collect();
                let mut out = vec![0u64; len];
                addresses_from_planes(&planes, len, &conn, &mut out);
                for r in 0..len {
                    assert_eq!(out[r], address_from_row(&bits[r * t..(r + 1) * t], &conn), "len {len} width {width} row {r}");
                }
            }
        }
    }

    #[test]
    fn planes_and_rows_agree() {
        let (b, t) = (150, 13);
        let bits: Vec<u8> = (0..b * t).map(|i| ((i * 7 + i / 5) % 3 == 0) as u8).collect();
        let conn = [12u32, 0, 5, 5, 7];
        let mut planes = Vec::new();
        fill_planes(&bits, t, 10, 130, &mut planes);
        let mut out = vec![0u64; 130];
        addresses_from_planes(&planes, 130, &conn, &mut out);
        for r in 0..130 {
            let row = &bits[(10 + r) * t..(11 + r) * t];
            assert_eq!(out[r], address_from_row(row, &conn));
            let manual = conn.iter().fold(0u64, |a, &c| a * 2 + row[c as usize] as u64);
            assert_eq!(out[r], manual);
        }
        // MSB = first connection
        let row = vec![1u8, 0, 0];
        assert_eq!(address_from_row(&row, &[0, 1, 2]), 4);
        assert_eq!(address_from_row(&row, &[2, 1, 0]), 1);
    }
}
