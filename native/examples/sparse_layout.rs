//! Measures the SPARSE layout choice: per-neuron FxHashMap<u32, u8> (the spec's "hash map per
//! neuron") against this crate's packed open-addressing tables (with per-neuron promotion to a
//! 2-bit array). Same random writes (TRUE, then FALSE-if-EMPTY) and reads, one thread.
//!
//!     cargo run --release --example sparse_layout
use _core::store::{CellBackend, NeuronWrite, SparseBackend};
use _core::rng::SplitMix64;
use rustc_hash::FxHashMap;
use std::time::Instant;

fn main() {
    _core::pool::set_num_threads(1).unwrap();
    let bits = 20u32;
    for &(neurons, writes_per_neuron) in &[(4000usize, 1000usize), (2000, 20_000), (200, 400_000)] {
        let mut r = SplitMix64::new(1);
        let addrs: Vec<u64> = (0..writes_per_neuron * 2).map(|_| r.below(1 << bits)).collect();
        let reads: Vec<u64> = (0..writes_per_neuron).map(|_| r.below(1 << bits)).collect();
        let total = (neurons * writes_per_neuron * 2) as f64;

        // FxHashMap per neuron
        let t0 = Instant::now();
        let mut maps: Vec<FxHashMap<u32, u8>> = (0..neurons).map(|_| FxHashMap::default()).collect();
        for (j, m) in maps.iter_mut().enumerate() {
            let off = j % 7;
            for &a in &addrs[off..off + writes_per_neuron] {
                m.insert(a as u32, 2);
            }
            for &a in &addrs[writes_per_neuron - off..2 * writes_per_neuron - off] {
                m.entry(a as u32).or_insert(1);
            }
        }
        let map_write = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let mut hits = 0u64;
        for m in &maps {
            for &a in &reads {
                hits += (m.get(&(a as u32)).copied().unwrap_or(0) == 2) as u64;
            }
        }
        let map_read = t0.elapsed().as_secs_f64();
        // hashbrown: buckets of (u32, u8) = 8 bytes plus one control byte each
        let map_bytes: usize = maps.iter().map(|m| ((m.capacity() * 8 / 7).max(1)).next_power_of_two() * 9).sum();

        // packed tables
        let t0 = Instant::now();
        let mut sb = SparseBackend::new(neurons, bits, false).unwrap();
        // one thread, like the FxHashMap loop
        _core::pool::install(|| {
            sb.par_for_each_neuron_mut(|_| true, |j, mut c| {
                let off = j % 7;
                for &a in &addrs[off..off + writes_per_neuron] {
                    c.write_true(a);
                }
                for &a in &addrs[writes_per_neuron - off..2 * writes_per_neuron - off] {
                    c.write_false_if_empty(a);
                }
            })
        });
        let tab_write = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let mut hits2 = 0u64;
        for j in 0..neurons {
            for &a in &reads {
                hits2 += (sb.get(j, a) == _core::store::ST_TRUE) as u64;
            }
        }
        let tab_read = t0.elapsed().as_secs_f64();
        assert_eq!(hits, hits2);
        let nreads = (neurons * reads.len()) as f64;
        println!(
            "{neurons} neurons x {writes_per_neuron} TRUE + {writes_per_neuron} FALSE writes (20 bits): \
             FxHashMap {:.1} M writes/s, {:.1} M reads/s, {} MiB | packed tables {:.1} M writes/s, {:.1} M reads/s, {} MiB",
            total / map_write / 1e6,
            nreads / map_read / 1e6,
            map_bytes >> 20,
            total / tab_write / 1e6,
            nreads / tab_read / 1e6,
            sb.heap_bytes() >> 20
        );
    }
}
