//! Cell storage backends behind one trait (docs/studies/ramlm.md, 'Memory' and
//! 'Memory backends').
//!
//! Internal 2-bit cell codes are EMPTY=00, FALSE=01, TRUE=11: zeroed memory is all EMPTY (fresh
//! allocations come lazily zeroed from the OS), and both training writes are a plain OR (FALSE
//! ORed into TRUE leaves TRUE, so "FALSE only into EMPTY" needs no read or branch). The public
//! codes (FALSE=0, TRUE=1, EMPTY=2) are produced only at the boundary by [`to_public`].
use crate::error::{CoreError, Result};
use crate::tiers::{Backend, LSH_FOLD_BITS};
use rayon::prelude::*;
use std::hash::Hasher;

pub const ST_EMPTY: u8 = 0;
pub const ST_FALSE: u8 = 1;
pub const ST_TRUE: u8 = 3;

/// Internal code -> public code (FALSE=0, TRUE=1, EMPTY=2).
#[inline]
pub fn to_public(s: u8) -> u8 {
    match s {
        ST_EMPTY => 2,
        ST_FALSE => 0,
        _ => 1,
    }
}

/// Public code -> internal code.
#[inline]
pub fn from_public(s: u8) -> u8 {
    match s {
        0 => ST_FALSE,
        1 => ST_TRUE,
        _ => ST_EMPTY,
    }
}

/// A zero-filled `Vec<u64>` from `alloc_zeroed`: pages are mapped lazily by the OS, and a failed
/// allocation is an error instead of an abort.
pub fn zeroed_words(n: usize) -> Result<Vec<u64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u64>(n)
        .map_err(|_| CoreError::Memory(format!("cannot allocate {n} words")))?;
    // SAFETY: layout has non-zero size; the pointer comes from the global allocator with the
    // layout Vec<u64> uses for capacity n, and zeroed u64s are valid values.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut u64;
        if ptr.is_null() {
            return Err(CoreError::Memory(format!(
                "out of memory allocating {} MiB of cells",
                (n * 8) >> 20
            )));
        }
        Ok(Vec::from_raw_parts(ptr, n, n))
    }
}

/// Number of u64 words holding 2^bits cells at 32 cells per word.
#[inline]
pub fn words_for_bits(bits: u32) -> usize {
    if bits <= 5 {
        1
    } else {
        1usize << (bits - 5)
    }
}

#[inline(always)]
fn word_get(words: &[u64], addr: u64) -> u8 {
    ((words[(addr >> 5) as usize] >> ((addr & 31) * 2)) & 3) as u8
}

#[inline(always)]
fn word_set_true(words: &mut [u64], addr: u64) {
    let w = &mut words[(addr >> 5) as usize];
    *w |= (ST_TRUE as u64) << ((addr & 31) * 2);
}

#[inline(always)]
fn word_set_false_if_empty(words: &mut [u64], addr: u64) {
    let w = &mut words[(addr >> 5) as usize];
    *w |= (ST_FALSE as u64) << ((addr & 31) * 2); // no-op on FALSE and TRUE
}

/// (false, true) cell counts of a packed word array.
fn word_counts(words: &[u64]) -> (u64, u64) {
    const LO: u64 = 0x5555_5555_5555_5555;
    let (mut f, mut t) = (0u64, 0u64);
    for &w in words {
        f += (w & LO & !(w >> 1)).count_ones() as u64; // code 01
        t += (w & (w >> 1) & LO).count_ones() as u64; // code 11
    }
    (f, t)
}

/// Appends `(address, internal state)` of all written cells in ascending address order.
fn word_cells(words: &[u64], limit: u64, out: &mut Vec<(u64, u8)>) {
    for (wi, &w) in words.iter().enumerate() {
        if w == 0 {
            continue;
        }
        for k in 0..32u64 {
            let s = ((w >> (2 * k)) & 3) as u8;
            let a = wi as u64 * 32 + k;
            if s != ST_EMPTY && a < limit {
                out.push((a, s));
            }
        }
    }
}

/// Hints the CPU to start loading the cache line at `p` (cells are read in random order, so
/// the hardware prefetcher cannot help; a few addresses of lookahead hide most of the latency).
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults, whatever the address; SSE is part of x86_64.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const i8, std::arch::x86_64::_MM_HINT_T0)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How many addresses ahead the training write loops prefetch.
pub const PREFETCH_AHEAD: usize = 64;
/// Lookahead of the forward read loops (short runs of FWD_CHUNK addresses per neuron: the first
/// READ_AHEAD are prefetched before the loop starts).
pub const READ_AHEAD: usize = 16;

/// Write access to one neuron's cells.
pub trait NeuronWrite {
    /// Starts loading the cell of `addr` into cache (no effect on the contents).
    #[inline(always)]
    fn prefetch(&self, _addr: u64) {}
    /// TRUE always wins.
    fn write_true(&mut self, addr: u64);
    /// FALSE only into an EMPTY cell.
    fn write_false_if_empty(&mut self, addr: u64);
}

/// A tier's cell storage. Reads take `&self` and may run from many threads; writes go through
/// `par_for_each_neuron_mut`, which hands each neuron to exactly one thread, so training needs no
/// atomics and its result does not depend on the thread count.
pub trait CellBackend: Send + Sync {
    type NeuronMut<'a>: NeuronWrite
    where
        Self: 'a;

    fn kind(&self) -> Backend;
    fn bits(&self) -> u32;
    fn neurons(&self) -> usize;
    /// Internal state of neuron `j` at (unfolded) address `addr`.
    fn get(&self, j: usize, addr: u64) -> u8;
    /// Adds, per address, TRUE to `t` and EMPTY to `e`.
    fn count_into(&self, j: usize, addrs: &[u64], t: &mut [u16], e: &mut [u16]) {
        for ((&a, tt), ee) in addrs.iter().zip(t.iter_mut()).zip(e.iter_mut()) {
            let s = self.get(j, a);
            *tt += (s == ST_TRUE) as u16;
            *ee += (s == ST_EMPTY) as u16;
        }
    }
    /// Runs `f(j, neuron)` for every neuron with `active(j)`, in parallel.
    fn par_for_each_neuron_mut<A, F>(&mut self, active: A, f: F)
    where
        A: Fn(usize) -> bool + Sync + Send,
        F: for<'a> Fn(usize, Self::NeuronMut<'a>) + Sync + Send;
    fn reset(&mut self) -> Result<()>;
    /// (FALSE cells, TRUE cells).
    fn counts(&self) -> (u64, u64);
    /// Written cells of neuron `j` as (stored address, internal state), ascending address.
    /// Stored address = folded address for LSH.
    fn neuron_cells(&self, j: usize, out: &mut Vec<(u64, u8)>);
    /// Sets a cell by stored address (used by `load`).
    fn set_stored(&mut self, j: usize, stored_addr: u64, state: u8);
    /// Bytes of heap memory held.
    fn heap_bytes(&self) -> usize;
}

// ------------------------------------------------------------------------------------------
// DENSE: one contiguous packed array, `words_per_neuron` words per neuron.

pub struct DenseBackend {
    bits: u32,
    neurons: usize,
    wpn: usize,
    words: Vec<u64>,
}

impl DenseBackend {
    pub fn new(neurons: usize, bits: u32) -> Result<Self> {
        let wpn = words_for_bits(bits);
        let n = neurons
            .checked_mul(wpn)
            .ok_or_else(|| CoreError::Memory("dense tier size overflows".into()))?;
        Ok(DenseBackend { bits, neurons, wpn, words: zeroed_words(n)? })
    }
}

pub struct DenseNeuronMut<'a> {
    words: &'a mut [u64],
}

impl NeuronWrite for DenseNeuronMut<'_> {
    #[inline(always)]
    fn prefetch(&self, addr: u64) {
        prefetch(self.words.as_ptr().wrapping_add((addr >> 5) as usize))
    }
    #[inline(always)]
    fn write_true(&mut self, addr: u64) {
        word_set_true(self.words, addr)
    }
    #[inline(always)]
    fn write_false_if_empty(&mut self, addr: u64) {
        word_set_false_if_empty(self.words, addr)
    }
}

/// Whether the AVX-512 lookup for neurons of <= 8 bits can be used.
#[cfg(target_arch = "x86_64")]
fn small_simd() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
    })
}

/// Counts for a neuron whose cells fit in one 512-bit register (<= 8 bits = <= 8 words): the
/// word of each address is picked by a lane permutation, eight addresses per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn count_small_avx512(words: &[u64], addrs: &[u64], t: &mut [u16], e: &mut [u16]) {
    use std::arch::x86_64::*;
    let mut buf = [0u64; 8];
    buf[..words.len()].copy_from_slice(words);
    let n = addrs.len().min(t.len()).min(e.len());
    let table = _mm512_loadu_si512(buf.as_ptr() as *const _);
    let three = _mm512_set1_epi64(3);
    let thirty_one = _mm512_set1_epi64(31);
    let true_code = _mm512_set1_epi64(ST_TRUE as i64);
    let zero = _mm512_setzero_si512();
    let one = _mm_set1_epi16(1);
    let mut i = 0;
    while i + 8 <= n {
        let a = _mm512_loadu_si512(addrs.as_ptr().add(i) as *const _);
        let w = _mm512_permutexvar_epi64(_mm512_srli_epi64::<5>(a), table);
        let sh = _mm512_slli_epi64::<1>(_mm512_and_si512(a, thirty_one));
        let s = _mm512_and_si512(_mm512_srlv_epi64(w, sh), three);
        let kt = _mm512_cmpeq_epi64_mask(s, true_code);
        let ke = _mm512_cmpeq_epi64_mask(s, zero);
        let tp = t.as_mut_ptr().add(i) as *mut __m128i;
        let tv = _mm_loadu_si128(tp);
        _mm_storeu_si128(tp, _mm_mask_add_epi16(tv, kt, tv, one));
        let ep = e.as_mut_ptr().add(i) as *mut __m128i;
        let ev = _mm_loadu_si128(ep);
        _mm_storeu_si128(ep, _mm_mask_add_epi16(ev, ke, ev, one));
        i += 8;
    }
    while i < n {
        let s = word_get(&buf, addrs[i]);
        t[i] += (s == ST_TRUE) as u16;
        e[i] += (s == ST_EMPTY) as u16;
        i += 1;
    }
}

impl CellBackend for DenseBackend {
    type NeuronMut<'a> = DenseNeuronMut<'a>;

    fn kind(&self) -> Backend {
        Backend::Dense
    }
    fn bits(&self) -> u32 {
        self.bits
    }
    fn neurons(&self) -> usize {
        self.neurons
    }
    #[inline(always)]
    fn get(&self, j: usize, addr: u64) -> u8 {
        word_get(&self.words[j * self.wpn..(j + 1) * self.wpn], addr)
    }
    fn count_into(&self, j: usize, addrs: &[u64], t: &mut [u16], e: &mut [u16]) {
        let w = &self.words[j * self.wpn..(j + 1) * self.wpn];
        #[cfg(target_arch = "x86_64")]
        if self.wpn <= 8 && small_simd() {
            // SAFETY: the CPU has the features (checked by small_simd); lengths handled inside.
            unsafe { count_small_avx512(w, addrs, t, e) };
            return;
        }
        let prefetching = self.wpn > 64; // arrays of a few lines are in cache anyway
        if prefetching {
            for &a in addrs.iter().take(READ_AHEAD) {
                prefetch(w.as_ptr().wrapping_add((a >> 5) as usize));
            }
        }
        for (i, ((&a, tt), ee)) in addrs.iter().zip(t.iter_mut()).zip(e.iter_mut()).enumerate() {
            if prefetching {
                if let Some(&next) = addrs.get(i + READ_AHEAD) {
                    prefetch(w.as_ptr().wrapping_add((next >> 5) as usize));
                }
            }
            let s = word_get(w, a);
            *tt += (s == ST_TRUE) as u16;
            *ee += (s == ST_EMPTY) as u16;
        }
    }
    fn par_for_each_neuron_mut<A, F>(&mut self, active: A, f: F)
    where
        A: Fn(usize) -> bool + Sync + Send,
        F: for<'a> Fn(usize, Self::NeuronMut<'a>) + Sync + Send,
    {
        if self.wpn == 0 {
            return;
        }
        self.words
            .par_chunks_mut(self.wpn)
            .with_min_len(16)
            .enumerate()
            .for_each(|(j, w)| {
                if active(j) {
                    f(j, DenseNeuronMut { words: w })
                }
            });
    }
    fn reset(&mut self) -> Result<()> {
        // A fresh lazily-zeroed allocation is cheaper than touching every page.
        self.words = Vec::new();
        self.words = zeroed_words(self.neurons * self.wpn)?;
        Ok(())
    }
    fn counts(&self) -> (u64, u64) {
        self.words
            .par_chunks(4096)
            .map(word_counts)
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
    fn neuron_cells(&self, j: usize, out: &mut Vec<(u64, u8)>) {
        word_cells(&self.words[j * self.wpn..(j + 1) * self.wpn], 1u64 << self.bits, out)
    }
    fn set_stored(&mut self, j: usize, addr: u64, state: u8) {
        let w = &mut self.words[j * self.wpn..(j + 1) * self.wpn];
        let word = &mut w[(addr >> 5) as usize];
        let sh = (addr & 31) * 2;
        *word = (*word & !(3u64 << sh)) | ((state as u64) << sh);
    }
    fn heap_bytes(&self) -> usize {
        self.words.len() * 8
    }
}

// ------------------------------------------------------------------------------------------
// SPARSE: per neuron an open-addressing table of packed u32 entries
// `((addr + 1) << 1) | is_true` (0 = vacant), linear probing, load <= 1/2. A neuron whose table
// would outgrow a packed 2-bit array over its key space switches to that array (never a dense
// allocation for the whole tier).

pub enum SparseNeuron {
    Table { slots: Vec<u32>, len: u32 },
    Dense(Vec<u64>),
}

impl Default for SparseNeuron {
    fn default() -> Self {
        SparseNeuron::Table { slots: Vec::new(), len: 0 }
    }
}

#[inline(always)]
fn slot_index(key: u64, mask: usize) -> usize {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u32(key as u32);
    (h.finish() as usize) & mask
}

/// Position of `key` in `slots` (found) or of the vacant slot where it would go.
#[inline(always)]
fn probe(slots: &[u32], key: u64) -> (usize, bool) {
    let mask = slots.len() - 1;
    let want = ((key as u32) + 1) << 1;
    let mut i = slot_index(key, mask);
    loop {
        let s = slots[i];
        if s == 0 {
            return (i, false);
        }
        if s & !1 == want {
            return (i, true);
        }
        i = (i + 1) & mask;
    }
}

impl SparseNeuron {
    #[inline(always)]
    fn prefetch(&self, key: u64) {
        match self {
            SparseNeuron::Table { slots, .. } => {
                if !slots.is_empty() {
                    prefetch(slots.as_ptr().wrapping_add(slot_index(key, slots.len() - 1)))
                }
            }
            SparseNeuron::Dense(w) => prefetch(w.as_ptr().wrapping_add((key >> 5) as usize)),
        }
    }

    #[inline(always)]
    fn get(&self, key: u64) -> u8 {
        match self {
            SparseNeuron::Table { slots, .. } => {
                if slots.is_empty() {
                    return ST_EMPTY;
                }
                let (i, found) = probe(slots, key);
                if !found {
                    ST_EMPTY
                } else if slots[i] & 1 == 1 {
                    ST_TRUE
                } else {
                    ST_FALSE
                }
            }
            SparseNeuron::Dense(w) => word_get(w, key),
        }
    }

    /// Table capacity above which the packed array over 2^key_bits cells is smaller.
    #[inline]
    fn max_table_slots(key_bits: u32) -> usize {
        (words_for_bits(key_bits) * 2).max(8)
    }

    /// Makes room for one more entry; may switch to the dense array.
    fn grow(&mut self, key_bits: u32) {
        let SparseNeuron::Table { slots, len } = self else { return };
        let cap = slots.len();
        if cap != 0 && (*len as usize + 1) * 2 <= cap {
            return;
        }
        let new_cap = if cap == 0 { 8 } else { cap * 2 };
        if new_cap > Self::max_table_slots(key_bits) {
            let mut words = vec![0u64; words_for_bits(key_bits)];
            for &s in slots.iter().filter(|&&s| s != 0) {
                let key = ((s >> 1) - 1) as u64;
                let st = if s & 1 == 1 { ST_TRUE } else { ST_FALSE };
                let w = &mut words[(key >> 5) as usize];
                *w |= (st as u64) << ((key & 31) * 2);
            }
            *self = SparseNeuron::Dense(words);
            return;
        }
        let mut fresh = vec![0u32; new_cap];
        for &s in slots.iter().filter(|&&s| s != 0) {
            let (i, _) = probe(&fresh, ((s >> 1) - 1) as u64);
            fresh[i] = s;
        }
        *slots = fresh;
    }

    #[inline(always)]
    fn write(&mut self, key: u64, state: u8, overwrite: bool, key_bits: u32) {
        loop {
            match self {
                SparseNeuron::Dense(w) => {
                    if overwrite {
                        let word = &mut w[(key >> 5) as usize];
                        let sh = (key & 31) * 2;
                        *word = (*word & !(3u64 << sh)) | ((state as u64) << sh);
                    } else {
                        // OR: FALSE leaves FALSE and TRUE as they are
                        w[(key >> 5) as usize] |= (state as u64) << ((key & 31) * 2);
                    }
                    return;
                }
                SparseNeuron::Table { slots, len } => {
                    if !slots.is_empty() {
                        let (i, found) = probe(slots, key);
                        if found {
                            if overwrite {
                                slots[i] = (slots[i] & !1) | (state == ST_TRUE) as u32;
                            }
                            return;
                        }
                        if (*len as usize + 1) * 2 <= slots.len() {
                            slots[i] = (((key as u32) + 1) << 1) | (state == ST_TRUE) as u32;
                            *len += 1;
                            return;
                        }
                    }
                }
            }
            self.grow(key_bits); // then retry in the (possibly new) representation
        }
    }

    fn counts(&self) -> (u64, u64) {
        match self {
            SparseNeuron::Table { slots, .. } => {
                let t = slots.iter().filter(|&&s| s != 0 && s & 1 == 1).count() as u64;
                let f = slots.iter().filter(|&&s| s != 0 && s & 1 == 0).count() as u64;
                (f, t)
            }
            SparseNeuron::Dense(w) => word_counts(w),
        }
    }

    fn cells(&self, key_bits: u32, out: &mut Vec<(u64, u8)>) {
        match self {
            SparseNeuron::Table { slots, .. } => {
                let start = out.len();
                out.extend(slots.iter().filter(|&&s| s != 0).map(|&s| {
                    (((s >> 1) - 1) as u64, if s & 1 == 1 { ST_TRUE } else { ST_FALSE })
                }));
                out[start..].sort_unstable();
            }
            SparseNeuron::Dense(w) => word_cells(w, 1u64 << key_bits, out),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            SparseNeuron::Table { slots, .. } => slots.capacity() * 4,
            SparseNeuron::Dense(w) => w.capacity() * 8,
        }
    }
}

/// SPARSE (`fold = false`, keys = addresses up to 30 bits) and LSH (`fold = true`, keys =
/// addresses XOR-folded to `min(20, bits)` bits) share this storage.
pub struct SparseBackend {
    bits: u32,
    key_bits: u32,
    fold: bool,
    cells: Vec<SparseNeuron>,
}

/// XOR of successive `LSH_FOLD_BITS`-bit chunks of `addr`, lowest chunk first.
#[inline(always)]
pub fn lsh_fold(mut addr: u64, bits: u32) -> u64 {
    if bits <= LSH_FOLD_BITS {
        return addr;
    }
    let mask = (1u64 << LSH_FOLD_BITS) - 1;
    let mut x = 0u64;
    while addr != 0 {
        x ^= addr & mask;
        addr >>= LSH_FOLD_BITS;
    }
    x
}

impl SparseBackend {
    pub fn new(neurons: usize, bits: u32, fold: bool) -> Result<Self> {
        let key_bits = if fold { bits.min(LSH_FOLD_BITS) } else { bits };
        let mut cells = Vec::new();
        cells
            .try_reserve_exact(neurons)
            .map_err(|_| CoreError::Memory(format!("cannot allocate {neurons} sparse neurons")))?;
        cells.resize_with(neurons, SparseNeuron::default);
        Ok(SparseBackend { bits, key_bits, fold, cells })
    }

    #[inline(always)]
    fn key(&self, addr: u64) -> u64 {
        if self.fold {
            lsh_fold(addr, self.bits)
        } else {
            addr
        }
    }

    pub fn key_bits(&self) -> u32 {
        self.key_bits
    }
}

pub struct SparseNeuronMut<'a> {
    cell: &'a mut SparseNeuron,
    bits: u32,
    key_bits: u32,
    fold: bool,
}

impl NeuronWrite for SparseNeuronMut<'_> {
    #[inline(always)]
    fn prefetch(&self, addr: u64) {
        let k = if self.fold { lsh_fold(addr, self.bits) } else { addr };
        self.cell.prefetch(k)
    }
    #[inline(always)]
    fn write_true(&mut self, addr: u64) {
        let k = if self.fold { lsh_fold(addr, self.bits) } else { addr };
        self.cell.write(k, ST_TRUE, true, self.key_bits)
    }
    #[inline(always)]
    fn write_false_if_empty(&mut self, addr: u64) {
        let k = if self.fold { lsh_fold(addr, self.bits) } else { addr };
        self.cell.write(k, ST_FALSE, false, self.key_bits)
    }
}

impl CellBackend for SparseBackend {
    type NeuronMut<'a> = SparseNeuronMut<'a>;

    fn kind(&self) -> Backend {
        if self.fold {
            Backend::Lsh
        } else {
            Backend::Sparse
        }
    }
    fn bits(&self) -> u32 {
        self.bits
    }
    fn neurons(&self) -> usize {
        self.cells.len()
    }
    #[inline(always)]
    fn get(&self, j: usize, addr: u64) -> u8 {
        self.cells[j].get(self.key(addr))
    }
    fn count_into(&self, j: usize, addrs: &[u64], t: &mut [u16], e: &mut [u16]) {
        let cell = &self.cells[j];
        if let SparseNeuron::Table { slots, .. } = cell {
            if slots.is_empty() {
                e.iter_mut().take(addrs.len()).for_each(|x| *x += 1);
                return;
            }
        }
        for &a in addrs.iter().take(READ_AHEAD) {
            cell.prefetch(self.key(a));
        }
        for (i, ((&a, tt), ee)) in addrs.iter().zip(t.iter_mut()).zip(e.iter_mut()).enumerate() {
            if let Some(&next) = addrs.get(i + READ_AHEAD) {
                cell.prefetch(self.key(next));
            }
            let s = cell.get(self.key(a));
            *tt += (s == ST_TRUE) as u16;
            *ee += (s == ST_EMPTY) as u16;
        }
    }
    fn par_for_each_neuron_mut<A, F>(&mut self, active: A, f: F)
    where
        A: Fn(usize) -> bool + Sync + Send,
        F: for<'a> Fn(usize, Self::NeuronMut<'a>) + Sync + Send,
    {
        let (bits, key_bits, fold) = (self.bits, self.key_bits, self.fold);
        self.cells.par_iter_mut().with_min_len(16).enumerate().for_each(|(j, cell)| {
            if active(j) {
                f(j, SparseNeuronMut { cell, bits, key_bits, fold })
            }
        });
    }
    fn reset(&mut self) -> Result<()> {
        self.cells.iter_mut().for_each(|c| *c = SparseNeuron::default());
        Ok(())
    }
    fn counts(&self) -> (u64, u64) {
        self.cells
            .par_iter()
            .with_min_len(256)
            .map(SparseNeuron::counts)
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
    fn neuron_cells(&self, j: usize, out: &mut Vec<(u64, u8)>) {
        self.cells[j].cells(self.key_bits, out)
    }
    fn set_stored(&mut self, j: usize, key: u64, state: u8) {
        self.cells[j].write(key, state, true, self.key_bits)
    }
    fn heap_bytes(&self) -> usize {
        self.cells.capacity() * std::mem::size_of::<SparseNeuron>()
            + self.cells.iter().map(SparseNeuron::heap_bytes).sum::<usize>()
    }
}

/// The per-tier storage, dispatched once per batch to monomorphised code.
pub enum TierStore {
    Dense(DenseBackend),
    Sparse(SparseBackend),
}

impl TierStore {
    pub fn new(backend: Backend, neurons: usize, bits: u32) -> Result<Self> {
        Ok(match backend {
            Backend::Dense => TierStore::Dense(DenseBackend::new(neurons, bits)?),
            Backend::Sparse => TierStore::Sparse(SparseBackend::new(neurons, bits, false)?),
            Backend::Lsh => TierStore::Sparse(SparseBackend::new(neurons, bits, true)?),
        })
    }

    pub fn kind(&self) -> Backend {
        match self {
            TierStore::Dense(b) => b.kind(),
            TierStore::Sparse(b) => b.kind(),
        }
    }

    /// Bits of the stored (folded for LSH) address.
    pub fn key_bits(&self) -> u32 {
        match self {
            TierStore::Dense(b) => b.bits(),
            TierStore::Sparse(b) => b.key_bits(),
        }
    }
}

/// `dispatch!(store, b => expr)` evaluates `expr` with `b` bound to the concrete backend.
#[macro_export]
macro_rules! dispatch {
    ($store:expr, $b:ident => $e:expr) => {
        match $store {
            $crate::store::TierStore::Dense($b) => $e,
            $crate::store::TierStore::Sparse($b) => $e,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise<B: CellBackend>(mut b: B) {
        let n = b.neurons();
        let max = 1u64 << b.bits().min(40);
        // neuron j: TRUE at j, FALSE at j+1 (twice: must stay FALSE), FALSE then TRUE at j+2.
        b.par_for_each_neuron_mut(|_| true, |j, mut c| {
            let j = j as u64;
            c.write_true(j % max);
            c.write_false_if_empty((j + 1) % max);
            c.write_false_if_empty((j + 1) % max);
            c.write_false_if_empty((j + 2) % max);
            c.write_true((j + 2) % max);
            c.write_false_if_empty(j % max); // must not overwrite TRUE
        });
        for j in 0..n {
            let jj = j as u64;
            assert_eq!(b.get(j, jj % max), ST_TRUE);
            assert_eq!(b.get(j, (jj + 1) % max), ST_FALSE);
            assert_eq!(b.get(j, (jj + 2) % max), ST_TRUE);
            assert_eq!(b.get(j, (jj + 3) % max), ST_EMPTY);
        }
        assert_eq!(b.counts(), (n as u64, 2 * n as u64));
        let mut cells = Vec::new();
        b.neuron_cells(0, &mut cells);
        assert_eq!(cells.len(), 3);
        b.reset().unwrap();
        assert_eq!(b.counts(), (0, 0));
        assert_eq!(b.get(0, 0), ST_EMPTY);
    }

    #[test]
    fn dense_semantics() {
        exercise(DenseBackend::new(7, 8).unwrap());
        exercise(DenseBackend::new(3, 2).unwrap());
    }

    #[test]
    fn sparse_semantics() {
        exercise(SparseBackend::new(7, 20, false).unwrap());
        exercise(SparseBackend::new(7, 40, true).unwrap());
    }

    #[test]
    fn sparse_table_grows_then_promotes() {
        let mut b = SparseBackend::new(1, 12, false).unwrap();
        b.par_for_each_neuron_mut(|_| true, |_, mut c| {
            for a in (0..4096u64).step_by(3) {
                c.write_false_if_empty(a);
            }
            for a in (0..4096u64).step_by(6) {
                c.write_true(a);
            }
        });
        assert!(matches!(b.cells[0], SparseNeuron::Dense(_)));
        for a in 0..4096u64 {
            let want = if a % 6 == 0 { ST_TRUE } else if a % 3 == 0 { ST_FALSE } else { ST_EMPTY };
            assert_eq!(b.get(0, a), want, "addr {a}");
        }
        let mut small = SparseBackend::new(1, 30, false).unwrap();
        small.par_for_each_neuron_mut(|_| true, |_, mut c| {
            for a in 0..1000u64 {
                c.write_true(a * 1_000_003 % (1 << 30));
            }
        });
        assert!(matches!(small.cells[0], SparseNeuron::Table { .. }));
        assert_eq!(small.counts(), (0, 1000));
    }

    #[test]
    fn fold() {
        assert_eq!(lsh_fold(0xABCDE, 20), 0xABCDE);
        assert_eq!(lsh_fold((1 << 40) | (3 << 20) | 5, 41), 1 ^ 3 ^ 5);
    }

    #[test]
    fn public_codes() {
        assert_eq!(to_public(ST_FALSE), 0);
        assert_eq!(to_public(ST_TRUE), 1);
        assert_eq!(to_public(ST_EMPTY), 2);
        for s in [ST_EMPTY, ST_FALSE, ST_TRUE] {
            assert_eq!(from_public(to_public(s)), s);
        }
    }
}
