//! The tiered memory: tiers of clusters of RAM neurons over one logical<->token mapping
//! (docs/studies/ramlm.md, 'Architecture' to 'Tiered architecture'), with batched
//! order-independent training, forward counts/scores, evaluation (softmax CE, argmax) and parallel
//! candidate evaluation (docs/studies/ramlm.md, 'Fitness and candidate evaluation').
use crate::address::{address_from_row, addresses_from_planes, fill_planes};
use crate::dispatch;
use crate::error::{try_vec, value_err, CoreError, Result};
use crate::rng::init_connectivity;
use crate::store::{CellBackend, NeuronWrite, TierStore, PREFETCH_AHEAD};
use crate::tiers::{Backend, TierSpec};
use rayon::prelude::*;

/// Examples per internal training chunk (bounds the bit-plane buffer; the result does not
/// depend on it).
const TRAIN_CHUNK: usize = 65536;
/// Examples per forward task.
const FWD_CHUNK: usize = 64;
/// Examples per address block inside a neuron's negative pass.
const ADDR_BLOCK: usize = 512;

/// Where addresses come from.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// Row-major `[B, T]` of 0/1 bytes.
    Bits(&'a [u8]),
    /// Per tier, row-major `[B, neurons_in_tier]` addresses.
    Addresses(&'a [&'a [u64]]),
}

/// Negative clusters (token ids).
#[derive(Clone, Copy)]
pub enum Negatives<'a> {
    None,
    /// The same list for every example.
    Shared(&'a [i64]),
    /// `[B, k]` row-major, one list per example.
    PerExample { ids: &'a [i64], k: usize },
}

pub struct Tier {
    pub spec: TierSpec,
    /// First logical cluster of the tier.
    pub start: usize,
    /// `[count * neurons, bits]` row-major.
    pub conn: Vec<u32>,
    pub store: TierStore,
}

pub struct TieredMemory {
    total_input_bits: usize,
    num_clusters: usize,
    tiers: Vec<Tier>,
    /// logical position -> token id
    order: Vec<u32>,
    /// token id -> logical position
    logical: Vec<u32>,
    /// token id -> tier
    token_tier: Vec<u32>,
}

/// Compressed rows: for each logical cluster, the chunk rows that touch it.
struct Csr {
    offsets: Vec<u32>,
    rows: Vec<u32>,
}

impl Csr {
    fn build(num_clusters: usize, pairs: impl Iterator<Item = (u32, u32)> + Clone) -> Csr {
        let mut offsets = vec![0u32; num_clusters + 1];
        for (c, _) in pairs.clone() {
            offsets[c as usize + 1] += 1;
        }
        for i in 0..num_clusters {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut rows = vec![0u32; *offsets.last().unwrap() as usize];
        for (c, r) in pairs {
            let p = &mut fill[c as usize];
            rows[*p as usize] = r;
            *p += 1;
        }
        Csr { offsets, rows }
    }

    #[inline]
    fn get(&self, c: usize) -> &[u32] {
        &self.rows[self.offsets[c] as usize..self.offsets[c + 1] as usize]
    }
}

enum NegRows<'a> {
    None,
    All,
    List(&'a [u32]),
}

/// Everything a neuron needs to train on one chunk.
struct Chunk<'a> {
    input: Input<'a>,
    t: usize,
    start: usize,
    len: usize,
    planes: &'a [u8],
    pos: &'a Csr,
    shared_neg: Option<&'a [bool]>,
    neg_csr: Option<&'a Csr>,
}

impl Chunk<'_> {
    #[inline]
    fn neg(&self, c: usize) -> NegRows<'_> {
        if let Some(flags) = self.shared_neg {
            if flags[c] {
                return NegRows::All;
            }
            return NegRows::None;
        }
        match self.neg_csr {
            Some(csr) => {
                let r = csr.get(c);
                if r.is_empty() {
                    NegRows::None
                } else {
                    NegRows::List(r)
                }
            }
            None => NegRows::None,
        }
    }

    #[inline]
    fn addr(&self, tier: usize, neurons_in_tier: usize, j: usize, conn: &[u32], r: u32) -> u64 {
        let e = self.start + r as usize;
        match self.input {
            Input::Bits(bits) => address_from_row(&bits[e * self.t..(e + 1) * self.t], conn),
            Input::Addresses(a) => a[tier][e * neurons_in_tier + j],
        }
    }
}

fn train_tier<B: CellBackend>(store: &mut B, tier_idx: usize, tier_start: usize, spec: TierSpec, conn: &[u32], ch: &Chunk) {
    let n = spec.neurons;
    let bits = spec.bits as usize;
    let nt = spec.total_neurons();
    store.par_for_each_neuron_mut(
        |j| {
            let c = tier_start + j / n;
            !ch.pos.get(c).is_empty() || !matches!(ch.neg(c), NegRows::None)
        },
        |j, mut cell| {
            let c = tier_start + j / n;
            let cj = &conn[j * bits..(j + 1) * bits];
            // Phase 1: TRUE from positives. Phase 2: FALSE into EMPTY only. Within a neuron
            // the order does not matter for the result either (TRUE overwrites FALSE).
            for &r in ch.pos.get(c) {
                cell.write_true(ch.addr(tier_idx, nt, j, cj, r));
            }
            match ch.neg(c) {
                NegRows::None => {}
                NegRows::List(rows) => {
                    for &r in rows {
                        cell.write_false_if_empty(ch.addr(tier_idx, nt, j, cj, r));
                    }
                }
                NegRows::All => match ch.input {
                    Input::Bits(_) => {
                        let mut buf = [0u64; ADDR_BLOCK];
                        let mut r0 = 0;
                        while r0 < ch.len {
                            let m = (ch.len - r0).min(ADDR_BLOCK);
                            addresses_from_planes(&ch.planes[r0..], ch.len, cj, &mut buf[..m]);
                            for i in 0..m {
                                if i + PREFETCH_AHEAD < m {
                                    cell.prefetch(buf[i + PREFETCH_AHEAD]);
                                }
                                cell.write_false_if_empty(buf[i]);
                            }
                            r0 += m;
                        }
                    }
                    Input::Addresses(a) => {
                        let arr = a[tier_idx];
                        for e in ch.start..ch.start + ch.len {
                            cell.write_false_if_empty(arr[e * nt + j]);
                        }
                    }
                },
            }
        },
    );
}

/// Per-thread scratch for the forward pass.
struct FwdScratch {
    planes: Vec<u8>,
    addrs: Vec<u64>,
    t_acc: Vec<u16>,
    e_acc: Vec<u16>,
}

impl FwdScratch {
    fn new() -> Self {
        FwdScratch {
            planes: Vec::new(),
            addrs: vec![0; FWD_CHUNK],
            t_acc: vec![0; FWD_CHUNK],
            e_acc: vec![0; FWD_CHUNK],
        }
    }
}

// The hot loop's state passed as is: bundling it in a struct would only move the same fields.
#[allow(clippy::too_many_arguments)]
fn forward_tier<B: CellBackend>(
    store: &B,
    tier_idx: usize,
    tier_start: usize,
    spec: TierSpec,
    conn: &[u32],
    input: Input,
    start: usize,
    len: usize,
    s: &mut FwdScratch,
    sink: &mut impl FnMut(usize, &[u16], &[u16]),
) {
    let n = spec.neurons;
    let bits = spec.bits as usize;
    let nt = spec.total_neurons();
    for c in 0..spec.count {
        s.t_acc[..len].fill(0);
        s.e_acc[..len].fill(0);
        for j in c * n..(c + 1) * n {
            match input {
                Input::Bits(_) => {
                    addresses_from_planes(&s.planes, len, &conn[j * bits..(j + 1) * bits], &mut s.addrs[..len])
                }
                Input::Addresses(a) => {
                    let arr = a[tier_idx];
                    for (r, o) in s.addrs[..len].iter_mut().enumerate() {
                        *o = arr[(start + r) * nt + j];
                    }
                }
            }
            store.count_into(j, &s.addrs[..len], &mut s.t_acc[..len], &mut s.e_acc[..len]);
        }
        sink(tier_start + c, &s.t_acc[..len], &s.e_acc[..len]);
    }
}

fn check_ids(name: &str, ids: &[i64], num_clusters: usize) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&x| x < 0 || x as u64 >= num_clusters as u64) {
        return value_err(format!("{name} contains {bad}, outside [0, {num_clusters})"));
    }
    Ok(())
}

impl TieredMemory {
    /// `conn`: per tier `[count*neurons*bits]` values (checked against `total_input_bits`);
    /// `None` draws them with `init_connectivity(.., seed + tier)`. `order`: logical -> token
    /// permutation (`None` = identity). `backends`: one name per tier.
    pub fn new(
        specs: &[TierSpec],
        total_input_bits: usize,
        conn: Option<Vec<Vec<i64>>>,
        order: Option<&[i64]>,
        backends: &[String],
        seed: u64,
    ) -> Result<Self> {
        if specs.is_empty() {
            return value_err("at least one tier is required");
        }
        if total_input_bits == 0 || total_input_bits > crate::tiers::MAX_INPUT_BITS {
            return value_err(format!(
                "total_input_bits must be in 1..={}, got {total_input_bits}",
                crate::tiers::MAX_INPUT_BITS
            ));
        }
        for (i, s) in specs.iter().enumerate() {
            s.validate(i)?;
        }
        let num_clusters = specs
            .iter()
            .try_fold(0usize, |a, s| a.checked_add(s.count))
            .ok_or_else(|| CoreError::Value("tier counts overflow".into()))?;
        if num_clusters == 0 || num_clusters > u32::MAX as usize {
            return value_err(format!("number of clusters must be in 1..2^32, got {num_clusters}"));
        }
        if backends.len() != specs.len() {
            return value_err(format!("{} backends given for {} tiers", backends.len(), specs.len()));
        }
        let order: Vec<u32> = match order {
            None => {
                let mut v = try_vec(num_clusters, 0u32, "the cluster mapping")?;
                v.iter_mut().enumerate().for_each(|(i, x)| *x = i as u32);
                v
            }
            Some(o) => {
                if o.len() != num_clusters {
                    return value_err(format!(
                        "cluster_order has length {} but the tiers cover {num_clusters} clusters",
                        o.len()
                    ));
                }
                check_ids("cluster_order", o, num_clusters)?;
                o.iter().map(|&x| x as u32).collect()
            }
        };
        let mut logical = try_vec(num_clusters, u32::MAX, "the cluster mapping")?;
        for (l, &tok) in order.iter().enumerate() {
            if logical[tok as usize] != u32::MAX {
                return value_err(format!("cluster_order is not a permutation: token {tok} appears twice"));
            }
            logical[tok as usize] = l as u32;
        }
        if let Some(c) = &conn {
            if c.len() != specs.len() {
                return value_err(format!("{} connectivity arrays given for {} tiers", c.len(), specs.len()));
            }
        }
        let mut tiers = Vec::with_capacity(specs.len());
        let mut token_tier = try_vec(num_clusters, 0u32, "the cluster mapping")?;
        let mut start = 0usize;
        for (i, spec) in specs.iter().enumerate() {
            let backend = Backend::resolve(&backends[i], spec.bits)?;
            let nt = spec.total_neurons();
            let tier_conn = match &conn {
                Some(c) => Self::check_conn(i, &c[i], *spec, total_input_bits)?,
                None => init_connectivity(nt, spec.bits as usize, total_input_bits, seed.wrapping_add(i as u64))?,
            };
            for l in start..start + spec.count {
                token_tier[order[l] as usize] = i as u32;
            }
            tiers.push(Tier { spec: *spec, start, conn: tier_conn, store: TierStore::new(backend, nt, spec.bits)? });
            start += spec.count;
        }
        Ok(TieredMemory { total_input_bits, num_clusters, tiers, order, logical, token_tier })
    }

    fn check_conn(tier: usize, c: &[i64], spec: TierSpec, t: usize) -> Result<Vec<u32>> {
        let want = spec.total_neurons() * spec.bits as usize;
        if c.len() != want {
            return value_err(format!(
                "connectivity of tier {tier} has {} entries, expected {} neurons x {} bits = {want}",
                c.len(),
                spec.total_neurons(),
                spec.bits
            ));
        }
        if let Some(&bad) = c.iter().find(|&&x| x < 0 || x as u64 >= t as u64) {
            return value_err(format!(
                "connectivity of tier {tier} contains input bit {bad}, outside [0, {t}) (total_input_bits)"
            ));
        }
        Ok(c.iter().map(|&x| x as u32).collect())
    }

    // ---- accessors ------------------------------------------------------------------------

    pub fn total_input_bits(&self) -> usize {
        self.total_input_bits
    }
    pub fn num_clusters(&self) -> usize {
        self.num_clusters
    }
    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }
    pub fn specs(&self) -> Vec<TierSpec> {
        self.tiers.iter().map(|t| t.spec).collect()
    }
    pub fn backends(&self) -> Vec<Backend> {
        self.tiers.iter().map(|t| t.store.kind()).collect()
    }
    pub fn order(&self) -> &[u32] {
        &self.order
    }
    pub fn token_tier(&self) -> &[u32] {
        &self.token_tier
    }
    pub fn num_neurons(&self) -> usize {
        self.tiers.iter().map(|t| t.spec.total_neurons()).sum()
    }
    pub fn connection_count(&self) -> usize {
        self.tiers.iter().map(|t| t.conn.len()).sum()
    }
    pub fn connectivity(&self, tier: usize) -> Result<&[u32]> {
        self.tiers
            .get(tier)
            .map(|t| t.conn.as_slice())
            .ok_or_else(|| CoreError::Value(format!("tier {tier} out of range (there are {})", self.tiers.len())))
    }

    /// Replaces one tier's connectivity and resets its cells.
    pub fn set_connectivity(&mut self, tier: usize, conn: &[i64]) -> Result<()> {
        if tier >= self.tiers.len() {
            return value_err(format!("tier {tier} out of range (there are {})", self.tiers.len()));
        }
        let c = Self::check_conn(tier, conn, self.tiers[tier].spec, self.total_input_bits)?;
        let t = &mut self.tiers[tier];
        t.conn = c;
        dispatch!(&mut t.store, s => s.reset())
    }

    pub fn connectivity_flat(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.connection_count());
        for t in &self.tiers {
            v.extend_from_slice(&t.conn);
        }
        v
    }

    /// Inverse of `connectivity_flat`; resets all cells.
    pub fn set_connectivity_flat(&mut self, flat: &[i64]) -> Result<()> {
        let checked = self.split_flat(flat)?;
        for (t, c) in self.tiers.iter_mut().zip(checked) {
            t.conn = c;
        }
        self.reset()
    }

    fn split_flat(&self, flat: &[i64]) -> Result<Vec<Vec<u32>>> {
        if flat.len() != self.connection_count() {
            return value_err(format!(
                "flat connectivity has {} entries, expected {}",
                flat.len(),
                self.connection_count()
            ));
        }
        let mut out = Vec::with_capacity(self.tiers.len());
        let mut off = 0;
        for (i, t) in self.tiers.iter().enumerate() {
            let n = t.conn.len();
            out.push(Self::check_conn(i, &flat[off..off + n], t.spec, self.total_input_bits)?);
            off += n;
        }
        Ok(out)
    }

    pub fn reset(&mut self) -> Result<()> {
        for t in &mut self.tiers {
            dispatch!(&mut t.store, s => s.reset())?;
        }
        Ok(())
    }

    /// Per tier (FALSE cells, TRUE cells).
    pub fn cell_counts(&self) -> Vec<(u64, u64)> {
        crate::pool::install(|| self.tiers.iter().map(|t| dispatch!(&t.store, s => s.counts())).collect())
    }

    /// Non-EMPTY cells of a tier: (neuron, stored address, internal state), sorted.
    pub fn cells(&self, tier: usize) -> Result<Vec<(u64, u64, u8)>> {
        let t = self
            .tiers
            .get(tier)
            .ok_or_else(|| CoreError::Value(format!("tier {tier} out of range (there are {})", self.tiers.len())))?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for j in 0..t.spec.total_neurons() {
            buf.clear();
            dispatch!(&t.store, s => s.neuron_cells(j, &mut buf));
            out.extend(buf.iter().map(|&(a, st)| (j as u64, a, st)));
        }
        Ok(out)
    }

    pub fn heap_bytes(&self) -> usize {
        self.tiers
            .iter()
            .map(|t| t.conn.capacity() * 4 + dispatch!(&t.store, s => s.heap_bytes()))
            .sum::<usize>()
            + (self.order.len() + self.logical.len() + self.token_tier.len()) * 4
    }

    // ---- validation -----------------------------------------------------------------------

    fn check_input(&self, input: Input, b: usize, what: &str) -> Result<()> {
        match input {
            Input::Bits(bits) => {
                let t = self.total_input_bits;
                if bits.len() != b * t {
                    return value_err(format!(
                        "{what}: expected {b} x {t} bits (total_input_bits = {t}), got {} values",
                        bits.len()
                    ));
                }
                let bad = crate::pool::install(|| bits.par_chunks(1 << 16).any(|c| c.iter().any(|&x| x > 1)));
                if bad {
                    return value_err(format!("{what}: bits must be 0 or 1"));
                }
            }
            Input::Addresses(a) => {
                if a.len() != self.tiers.len() {
                    return value_err(format!("{what}: {} address arrays given for {} tiers", a.len(), self.tiers.len()));
                }
                for (i, (arr, t)) in a.iter().zip(&self.tiers).enumerate() {
                    let nt = t.spec.total_neurons();
                    if arr.len() != b * nt {
                        return value_err(format!(
                            "{what}: addresses of tier {i} must be {b} x {nt}, got {} values",
                            arr.len()
                        ));
                    }
                    let limit = 1u64 << t.spec.bits;
                    if let Some(&x) = arr.iter().find(|&&x| x >= limit) {
                        return value_err(format!(
                            "{what}: address {x} in tier {i} does not fit in {} bits",
                            t.spec.bits
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_negatives(&self, negs: Negatives, b: usize) -> Result<()> {
        match negs {
            Negatives::None => Ok(()),
            Negatives::Shared(ids) => check_ids("negatives", ids, self.num_clusters),
            Negatives::PerExample { ids, k } => {
                if ids.len() != b * k {
                    return value_err(format!(
                        "per-example negatives must be {b} x {k}, got {} values",
                        ids.len()
                    ));
                }
                check_ids("negatives", ids, self.num_clusters)
            }
        }
    }

    fn check_targets(&self, targets: &[i64], b: usize, what: &str) -> Result<()> {
        if targets.len() != b {
            return value_err(format!("{what}: {} targets for {b} examples", targets.len()));
        }
        check_ids(what, targets, self.num_clusters)
    }

    /// Batch size implied by an input.
    pub fn batch_of(&self, input: Input) -> Result<usize> {
        match input {
            Input::Bits(bits) => Ok(bits.len() / self.total_input_bits),
            Input::Addresses(a) => {
                let nt = self.tiers[0].spec.total_neurons();
                if nt == 0 {
                    return value_err("cannot infer the batch size from addresses of an empty tier 0");
                }
                Ok(a.first().map(|x| x.len() / nt).unwrap_or(0))
            }
        }
    }

    /// Addresses of every neuron for every example: per tier `[B, neurons_in_tier]`.
    pub fn addresses(&self, bits: &[u8], b: usize) -> Result<Vec<Vec<u64>>> {
        self.check_input(Input::Bits(bits), b, "addresses")?;
        let t = self.total_input_bits;
        crate::pool::install(|| {
            self.tiers
                .iter()
                .map(|tier| {
                    let nt = tier.spec.total_neurons();
                    let nb = tier.spec.bits as usize;
                    let mut out = try_vec(b.saturating_mul(nt), 0u64, "the addresses")?;
                    if nt > 0 {
                        out.par_chunks_mut(nt).enumerate().for_each(|(e, row)| {
                            let x = &bits[e * t..(e + 1) * t];
                            for (j, o) in row.iter_mut().enumerate() {
                                *o = address_from_row(x, &tier.conn[j * nb..(j + 1) * nb]);
                            }
                        });
                    }
                    Ok(out)
                })
                .collect()
        })
    }

    // ---- training -------------------------------------------------------------------------

    /// Trains on `b` examples (see the module doc for the rule). Validates everything first;
    /// on error nothing is written.
    pub fn train(&mut self, input: Input, b: usize, targets: &[i64], negs: Negatives) -> Result<()> {
        self.check_input(input, b, "train")?;
        self.check_targets(targets, b, "targets")?;
        self.check_negatives(negs, b)?;
        crate::pool::install(|| self.train_unchecked(input, b, targets, negs));
        Ok(())
    }

    fn train_unchecked(&mut self, input: Input, b: usize, targets: &[i64], negs: Negatives) {
        let c = self.num_clusters;
        let logical = &self.logical;
        let shared: Option<Vec<bool>> = match negs {
            Negatives::Shared(ids) => {
                let mut f = vec![false; c];
                for &id in ids {
                    f[logical[id as usize] as usize] = true;
                }
                Some(f)
            }
            _ => None,
        };
        let any_shared = shared.as_ref().is_some_and(|f| f.iter().any(|&x| x));
        let mut planes = Vec::new();
        let mut start = 0;
        // the per-example negative CSR of a chunk must stay below u32 entries
        let chunk = match negs {
            Negatives::PerExample { k, .. } if k > 0 => TRAIN_CHUNK.min(((u32::MAX / 2) as usize / k).max(1)),
            _ => TRAIN_CHUNK,
        };
        while start < b {
            let len = (b - start).min(chunk);
            let pos = Csr::build(
                c,
                (0..len as u32).map(|r| (logical[targets[start + r as usize] as usize], r)),
            );
            let neg_csr = match negs {
                Negatives::PerExample { ids, k } => Some(Csr::build(
                    c,
                    (0..len * k).map(|i| (logical[ids[start * k + i] as usize], (i / k) as u32)),
                )),
                _ => None,
            };
            if let (Input::Bits(bits), true) = (input, any_shared) {
                fill_planes(bits, self.total_input_bits, start, len, &mut planes);
            }
            let ch = Chunk {
                input,
                t: self.total_input_bits,
                start,
                len,
                planes: &planes,
                pos: &pos,
                shared_neg: shared.as_deref(),
                neg_csr: neg_csr.as_ref(),
            };
            for (ti, tier) in self.tiers.iter_mut().enumerate() {
                let (spec, tstart, conn) = (tier.spec, tier.start, &tier.conn);
                dispatch!(&mut tier.store, s => train_tier(s, ti, tstart, spec, conn, &ch));
            }
            start += len;
        }
    }

    // ---- forward --------------------------------------------------------------------------

    /// Runs the forward pass over rows `[start, start+len)` and calls `sink(logical cluster,
    /// true counts, empty counts)` once per cluster.
    fn block(&self, input: Input, start: usize, len: usize, s: &mut FwdScratch, sink: &mut impl FnMut(usize, &[u16], &[u16])) {
        if let Input::Bits(bits) = input {
            fill_planes(bits, self.total_input_bits, start, len, &mut s.planes);
        }
        for (ti, tier) in self.tiers.iter().enumerate() {
            dispatch!(&tier.store, st => forward_tier(st, ti, tier.start, tier.spec, &tier.conn, input, start, len, s, sink));
        }
    }

    /// Per-example, per-token TRUE and EMPTY counts, `[B, C]` row-major each.
    pub fn forward_counts(&self, input: Input, b: usize) -> Result<(Vec<u16>, Vec<u16>)> {
        self.check_input(input, b, "forward")?;
        let c = self.num_clusters;
        let cells = b.checked_mul(c).ok_or_else(|| CoreError::Memory("batch x clusters overflows".into()))?;
        let mut t_out = try_vec(cells, 0u16, "the TRUE counts")?;
        let mut e_out = try_vec(cells, 0u16, "the EMPTY counts")?;
        crate::pool::install(|| {
            t_out
                .par_chunks_mut(FWD_CHUNK * c)
                .zip(e_out.par_chunks_mut(FWD_CHUNK * c))
                .enumerate()
                .for_each_init(
                    || (FwdScratch::new(), vec![0u16; FWD_CHUNK * c], vec![0u16; FWD_CHUNK * c]),
                    |(s, tb, eb), (ci, (to, eo))| {
                        let len = to.len() / c;
                        // logical-order rows first (neighbouring writes), then one permutation per row
                        self.block(input, ci * FWD_CHUNK, len, s, &mut |l, t, e| {
                            for r in 0..len {
                                tb[r * c + l] = t[r];
                                eb[r * c + l] = e[r];
                            }
                        });
                        for r in 0..len {
                            let (trow, erow) = (&mut to[r * c..(r + 1) * c], &mut eo[r * c..(r + 1) * c]);
                            for (l, &tok) in self.order.iter().enumerate() {
                                trow[tok as usize] = tb[r * c + l];
                                erow[tok as usize] = eb[r * c + l];
                            }
                        }
                    },
                );
        });
        Ok((t_out, e_out))
    }

    /// `score = (T + empty_value * E) / n` in f64, rounded to f32; `[B, C]` in token order.
    pub fn forward_scores(&self, input: Input, b: usize, empty_value: f64) -> Result<Vec<f32>> {
        self.check_input(input, b, "forward")?;
        check_empty_value(empty_value)?;
        let c = self.num_clusters;
        let cells = b.checked_mul(c).ok_or_else(|| CoreError::Memory("batch x clusters overflows".into()))?;
        let mut out = try_vec(cells, 0f32, "the scores")?;
        let neurons_of_logical: Vec<f64> = self
            .tiers
            .iter()
            .flat_map(|t| std::iter::repeat_n(t.spec.neurons as f64, t.spec.count))
            .collect();
        crate::pool::install(|| {
            out.par_chunks_mut(FWD_CHUNK * c).enumerate().for_each_init(
                || (FwdScratch::new(), vec![0u16; FWD_CHUNK * c], vec![0u16; FWD_CHUNK * c]),
                |(s, tb, eb), (ci, o)| {
                    let len = o.len() / c;
                    self.block(input, ci * FWD_CHUNK, len, s, &mut |l, t, e| {
                        for r in 0..len {
                            tb[r * c + l] = t[r];
                            eb[r * c + l] = e[r];
                        }
                    });
                    for r in 0..len {
                        let orow = &mut o[r * c..(r + 1) * c];
                        for (l, &tok) in self.order.iter().enumerate() {
                            let n = neurons_of_logical[l];
                            orow[tok as usize] =
                                ((tb[r * c + l] as f64 + empty_value * eb[r * c + l] as f64) / n) as f32;
                        }
                    }
                },
            );
        });
        Ok(out)
    }

    /// Per example: unclamped softmax CE over all clusters and the argmax token (lowest id on
    /// ties). Scores in f64 as in `forward_scores` (before rounding).
    pub fn evaluate(&self, input: Input, b: usize, targets: &[i64], empty_value: f64) -> Result<(Vec<f64>, Vec<i64>)> {
        self.check_input(input, b, "evaluate")?;
        self.check_targets(targets, b, "targets")?;
        check_empty_value(empty_value)?;
        Ok(crate::pool::install(|| self.evaluate_unchecked(input, b, targets, empty_value)))
    }

    fn evaluate_unchecked(&self, input: Input, b: usize, targets: &[i64], ev: f64) -> (Vec<f64>, Vec<i64>) {
        let c = self.num_clusters;
        let mut ce = vec![0f64; b];
        let mut pred = vec![0i64; b];
        let sides: Vec<usize> = self.tiers.iter().map(|t| t.spec.neurons + 1).collect();
        // score = (T + ev*E)/n depends only on (tier, T, E): one table per tier, the exact values
        // of the direct formula.
        let score_tabs: Vec<Vec<f64>> = self
            .tiers
            .iter()
            .zip(&sides)
            .map(|(tier, &side)| {
                let n = tier.spec.neurons as f64;
                (0..side * side).map(|k| ((k / side) as f64 + ev * (k % side) as f64) / n).collect()
            })
            .collect();
        ce.par_chunks_mut(FWD_CHUNK)
            .zip(pred.par_chunks_mut(FWD_CHUNK))
            .enumerate()
            .for_each_init(
                || (FwdScratch::new(), vec![0u16; FWD_CHUNK * c], vec![0u16; FWD_CHUNK * c], Vec::<Vec<f64>>::new()),
                |(s, tb, eb, exp_tables), (ci, (ce_o, pred_o))| {
                    let start = ci * FWD_CHUNK;
                    let len = ce_o.len();
                    // rows in *logical* order: consecutive clusters write neighbouring cells
                    self.block(input, start, len, s, &mut |l, t, e| {
                        for r in 0..len {
                            tb[r * c + l] = t[r];
                            eb[r * c + l] = e[r];
                        }
                    });
                    exp_tables.resize_with(self.tiers.len(), Vec::new);
                    for r in 0..len {
                        let (tr, er) = (&tb[r * c..(r + 1) * c], &eb[r * c..(r + 1) * c]);
                        // max score; argmax = lowest token id among the maxima
                        let mut m = f64::NEG_INFINITY;
                        let mut arg = usize::MAX;
                        for (ti, tier) in self.tiers.iter().enumerate() {
                            let (side, tab) = (sides[ti], &score_tabs[ti]);
                            for l in tier.start..tier.start + tier.spec.count {
                                let v = tab[tr[l] as usize * side + er[l] as usize];
                                let tok = self.order[l] as usize;
                                if v > m || (v == m && tok < arg) {
                                    m = v;
                                    arg = tok;
                                }
                            }
                        }
                        // exp(score - m), tabulated per row; summed in logical order
                        let mut sum = 0f64;
                        for (ti, tier) in self.tiers.iter().enumerate() {
                            let tab = &mut exp_tables[ti];
                            tab.clear();
                            tab.extend(score_tabs[ti].iter().map(|&v| (v - m).exp()));
                            let side = sides[ti];
                            for l in tier.start..tier.start + tier.spec.count {
                                sum += tab[tr[l] as usize * side + er[l] as usize];
                            }
                        }
                        let tgt = self.logical[targets[start + r] as usize] as usize;
                        let tt = self.token_tier[targets[start + r] as usize] as usize;
                        let target_score = score_tabs[tt][tr[tgt] as usize * sides[tt] + er[tgt] as usize];
                        ce_o[r] = m + sum.ln() - target_score;
                        pred_o[r] = arg as i64;
                    }
                },
            );
        (ce, pred)
    }

    // ---- candidate evaluation -------------------------------------------------------------

    /// A memory with this one's tiers, backends and mapping, empty cells and the given
    /// connectivity (already checked).
    fn fresh_with(&self, conn: Vec<Vec<u32>>) -> Result<TieredMemory> {
        let mut tiers = Vec::with_capacity(self.tiers.len());
        for (t, c) in self.tiers.iter().zip(conn) {
            tiers.push(Tier {
                spec: t.spec,
                start: t.start,
                conn: c,
                store: TierStore::new(t.store.kind(), t.spec.total_neurons(), t.spec.bits)?,
            });
        }
        Ok(TieredMemory {
            total_input_bits: self.total_input_bits,
            num_clusters: self.num_clusters,
            tiers,
            order: self.order.clone(),
            logical: self.logical.clone(),
            token_tier: self.token_tier.clone(),
        })
    }

    /// For each of the `k` flat genomes in `candidates` (`[k, connection_count]`): a fresh
    /// memory trained on the train set, mean softmax CE on the eval set (`clamp`: per-example CE
    /// capped at ln C). Rayon over candidates. This memory is not modified.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate_candidates(
        &self,
        candidates: &[i64],
        k: usize,
        train_bits: &[u8],
        train_targets: &[i64],
        train_negs: Negatives,
        eval_bits: &[u8],
        eval_targets: &[i64],
        empty_value: f64,
        clamp: bool,
    ) -> Result<Vec<f64>> {
        let g = self.connection_count();
        if candidates.len() != k * g {
            return value_err(format!(
                "candidates must be {k} x {g} (connection_count), got {} values",
                candidates.len()
            ));
        }
        let tb = train_bits.len() / self.total_input_bits;
        let eb = eval_bits.len() / self.total_input_bits;
        self.check_input(Input::Bits(train_bits), tb, "train_bits")?;
        self.check_targets(train_targets, tb, "train_targets")?;
        self.check_negatives(train_negs, tb)?;
        self.check_input(Input::Bits(eval_bits), eb, "eval_bits")?;
        self.check_targets(eval_targets, eb, "eval_targets")?;
        check_empty_value(empty_value)?;
        if eb == 0 {
            return value_err("eval set is empty");
        }
        let conns: Vec<Vec<Vec<u32>>> =
            (0..k).map(|i| self.split_flat(&candidates[i * g..(i + 1) * g])).collect::<Result<_>>()?;
        let cap = (self.num_clusters as f64).ln();
        crate::pool::install(|| {
            conns
                .into_par_iter()
                .with_max_len(1)
                .map(|conn| {
                    let mut m = self.fresh_with(conn)?;
                    m.train_unchecked(Input::Bits(train_bits), tb, train_targets, train_negs);
                    let (ce, _) = m.evaluate_unchecked(Input::Bits(eval_bits), eb, eval_targets, empty_value);
                    let total: f64 = ce.iter().map(|&x| if clamp { x.min(cap) } else { x }).sum();
                    Ok(total / eb as f64)
                })
                .collect()
        })
    }

    // ---- save / load ----------------------------------------------------------------------

    pub fn to_bytes(&self) -> Vec<u8> {
        crate::format::write(self)
    }

    pub fn from_bytes(data: &[u8]) -> Result<TieredMemory> {
        crate::format::read(data)
    }

    /// Used by the loader: sets a cell by stored address and internal state.
    pub(crate) fn set_stored(&mut self, tier: usize, j: usize, key: u64, state: u8) {
        dispatch!(&mut self.tiers[tier].store, s => s.set_stored(j, key, state))
    }
}

fn check_empty_value(v: f64) -> Result<()> {
    if !v.is_finite() {
        return value_err(format!("empty_value must be finite, got {v}"));
    }
    Ok(())
}
