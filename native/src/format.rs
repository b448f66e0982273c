//! Canonical byte format of a memory (see native/API.md, "Save format"). Equal memories give
//! equal bytes whatever the internal layout (e.g. sparse tables vs promoted arrays).
use crate::error::{value_err, CoreError, Result};
use crate::memory::TieredMemory;
use crate::store::{from_public, to_public, ST_TRUE};
use crate::tiers::{Backend, TierSpec, MAX_UNFOLDED_BITS};

pub const MAGIC: &[u8; 8] = b"OVNRAM\x00\x01";

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn write(m: &TieredMemory) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    put_u64(&mut out, m.total_input_bits() as u64);
    put_u64(&mut out, m.num_clusters() as u64);
    put_u64(&mut out, m.tiers().len() as u64);
    for &tok in m.order() {
        out.extend_from_slice(&(tok as i64).to_le_bytes());
    }
    for t in m.tiers() {
        put_u64(&mut out, t.spec.count as u64);
        put_u64(&mut out, t.spec.neurons as u64);
        put_u64(&mut out, t.spec.bits as u64);
        out.push(t.store.kind().code());
    }
    for t in m.tiers() {
        for &c in &t.conn {
            out.extend_from_slice(&(c as i64).to_le_bytes());
        }
    }
    let mut buf = Vec::new();
    for (ti, t) in m.tiers().iter().enumerate() {
        let nt = t.spec.total_neurons();
        match t.store.kind() {
            Backend::Dense => {
                let cells = 1usize << t.spec.bits;
                let nbytes = cells.div_ceil(4);
                for j in 0..nt {
                    // EMPTY (public 2) everywhere, then the written cells.
                    let start = out.len();
                    out.resize(start + nbytes, 0xAA);
                    if !cells.is_multiple_of(4) {
                        // unused trailing fields of the last byte stay 0
                        let last = start + nbytes - 1;
                        out[last] = (0..cells % 4).fold(0u8, |b, k| b | (2 << (2 * k)));
                    }
                    buf.clear();
                    crate::dispatch!(&t.store, s => crate::store::CellBackend::neuron_cells(s, j, &mut buf));
                    for &(a, st) in &buf {
                        let byte = &mut out[start + (a / 4) as usize];
                        let sh = 2 * (a % 4);
                        *byte = (*byte & !(3 << sh)) | (to_public(st) << sh);
                    }
                }
            }
            Backend::Sparse | Backend::Lsh => {
                for j in 0..nt {
                    buf.clear();
                    crate::dispatch!(&t.store, s => crate::store::CellBackend::neuron_cells(s, j, &mut buf));
                    put_u64(&mut out, buf.len() as u64);
                    for &(a, st) in &buf {
                        put_u64(&mut out, (a << 1) | (st == ST_TRUE) as u64);
                    }
                }
            }
        }
        let _ = ti;
    }
    out
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return value_err("memory data is truncated");
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn usize(&mut self, what: &str, max: u64) -> Result<usize> {
        let v = self.u64()?;
        if v > max {
            return value_err(format!("memory data: {what} = {v} is out of range"));
        }
        Ok(v as usize)
    }
    fn i64s(&mut self, n: usize) -> Result<Vec<i64>> {
        let bytes = self.take(n.checked_mul(8).ok_or_else(|| CoreError::Value("memory data: size overflow".into()))?)?;
        Ok(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect())
    }
}

pub fn read(data: &[u8]) -> Result<TieredMemory> {
    let mut r = Reader { data, pos: 0 };
    if r.take(8).ok() != Some(&MAGIC[..]) {
        return value_err("not a memory file (bad magic or unsupported format version)");
    }
    let remaining = data.len() as u64;
    let t = r.usize("total_input_bits", u32::MAX as u64)?;
    let c = r.usize("num_clusters", remaining / 8)?;
    let nt = r.usize("num_tiers", remaining / 25)?;
    let order = r.i64s(c)?;
    let mut specs = Vec::with_capacity(nt);
    let mut backends = Vec::with_capacity(nt);
    for _ in 0..nt {
        let count = r.usize("count", u32::MAX as u64)?;
        let neurons = r.usize("neurons", u16::MAX as u64)?;
        let bits = r.usize("bits", 64)? as u32;
        let backend = Backend::from_code(r.take(1)?[0])?;
        specs.push(TierSpec { count, neurons, bits });
        backends.push(backend.name().to_string());
    }
    for (i, s) in specs.iter().enumerate() {
        s.validate(i)?;
        // a corrupt header must not make us allocate far more than the data could describe
        if (s.total_neurons() as u64).saturating_mul(s.bits as u64) > remaining / 8 {
            return value_err("memory data is truncated (connectivity)");
        }
    }
    let mut conn = Vec::with_capacity(nt);
    for s in &specs {
        conn.push(r.i64s(s.total_neurons() * s.bits as usize)?);
    }
    let mut m = TieredMemory::new(&specs, t, Some(conn), Some(&order), &backends, 0)?;
    for (ti, s) in specs.iter().enumerate() {
        let kind = m.tiers()[ti].store.kind();
        let key_bits = m.tiers()[ti].store.key_bits();
        match kind {
            Backend::Dense => {
                debug_assert!(s.bits <= MAX_UNFOLDED_BITS);
                let cells = 1usize << s.bits;
                let nbytes = cells.div_ceil(4);
                for j in 0..s.total_neurons() {
                    let bytes = r.take(nbytes)?;
                    for (bi, &byte) in bytes.iter().enumerate() {
                        if byte == 0xAA {
                            continue; // four EMPTY cells
                        }
                        for k in 0..4 {
                            let a = bi * 4 + k;
                            if a >= cells {
                                break;
                            }
                            let p = (byte >> (2 * k)) & 3;
                            if p == 3 {
                                return value_err("memory data: invalid cell state 3");
                            }
                            if p != 2 {
                                m.set_stored(ti, j, a as u64, from_public(p));
                            }
                        }
                    }
                }
            }
            Backend::Sparse | Backend::Lsh => {
                for j in 0..s.total_neurons() {
                    let cnt = r.usize("cell count", (data.len() - r.pos) as u64 / 8)?;
                    let mut prev: Option<u64> = None;
                    for _ in 0..cnt {
                        let v = r.u64()?;
                        let a = v >> 1;
                        if a >> key_bits != 0 {
                            return value_err(format!("memory data: address {a} does not fit in {key_bits} bits"));
                        }
                        if prev.is_some_and(|p| p >= a) {
                            return value_err("memory data: addresses not strictly ascending");
                        }
                        prev = Some(a);
                        m.set_stored(ti, j, a, if v & 1 == 1 { ST_TRUE } else { crate::store::ST_FALSE });
                    }
                }
            }
        }
    }
    if r.pos != data.len() {
        return value_err(format!("memory data has {} trailing bytes", data.len() - r.pos));
    }
    Ok(m)
}
