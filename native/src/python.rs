//! Thin PyO3 layer over the core: argument checking with clear messages, zero-copy numpy
//! views, and the GIL released around every call that does real work.
use crate::error::CoreError;
use crate::memory::{Input, Negatives, TieredMemory};
use crate::store::to_public;
use crate::tiers::TierSpec;
use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyMemoryError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple, PyType};

/// Two numpy arrays, returned to Python as one tuple.
type ArrayPair<'py, A, B> = (Bound<'py, A>, Bound<'py, B>);

impl From<CoreError> for PyErr {
    fn from(e: CoreError) -> PyErr {
        match e {
            CoreError::Type(m) => PyTypeError::new_err(m),
            CoreError::Value(m) => PyValueError::new_err(m),
            CoreError::Memory(m) => PyMemoryError::new_err(m),
            CoreError::Io(m) => PyOSError::new_err(m),
        }
    }
}

// ---- argument extraction -------------------------------------------------------------------

/// "ndarray of dtype int32 with 3 dimensions" / "list" — for error messages.
fn describe(obj: &Bound<'_, PyAny>) -> String {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        let dt = a.dtype().str().map(|s| s.to_string()).unwrap_or_else(|_| "?".into());
        return format!("a numpy array of dtype {dt} with shape {:?}", a.shape());
    }
    match obj.get_type().name() {
        Ok(n) => format!("an object of type {n}"),
        Err(_) => "an object of unknown type".into(),
    }
}

fn type_err<T>(name: &str, want: &str, obj: &Bound<'_, PyAny>) -> PyResult<T> {
    Err(PyTypeError::new_err(format!("{name} must be {want}, got {}", describe(obj))))
}

/// A borrowed (or, if not C-contiguous, copied) numpy array.
enum Arr<'py, T: numpy::Element> {
    View1(PyReadonlyArray1<'py, T>),
    View2(PyReadonlyArray2<'py, T>),
    Owned(Vec<T>),
}

impl<T: numpy::Element + Copy> Arr<'_, T> {
    fn slice(&self) -> &[T] {
        match self {
            Arr::View1(a) => a.as_slice().expect("checked contiguous"),
            Arr::View2(a) => a.as_slice().expect("checked contiguous"),
            Arr::Owned(v) => v,
        }
    }
}

fn borrow_err(name: &str) -> PyErr {
    PyValueError::new_err(format!("{name}: the array is being written elsewhere and cannot be read now"))
}

fn arr1<'py, T: numpy::Element + Copy>(obj: &Bound<'py, PyAny>, name: &str, want: &str) -> PyResult<Arr<'py, T>> {
    let Ok(a) = obj.cast::<PyArray1<T>>() else { return type_err(name, want, obj) };
    let ro = a.try_readonly().map_err(|_| borrow_err(name))?;
    if ro.as_slice().is_ok() {
        Ok(Arr::View1(ro))
    } else {
        Ok(Arr::Owned(ro.as_array().iter().copied().collect()))
    }
}

fn arr2<'py, T: numpy::Element + Copy>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    want: &str,
) -> PyResult<(Arr<'py, T>, usize, usize)> {
    let Ok(a) = obj.cast::<PyArray2<T>>() else { return type_err(name, want, obj) };
    let ro = a.try_readonly().map_err(|_| borrow_err(name))?;
    let (r, c) = (ro.shape()[0], ro.shape()[1]);
    if ro.as_slice().is_ok() {
        Ok((Arr::View2(ro), r, c))
    } else {
        Ok((Arr::Owned(ro.as_array().iter().copied().collect()), r, c))
    }
}

/// Input bits: a 2-D uint8 or bool array of 0/1 values.
struct Bits<'py> {
    arr: Arr<'py, u8>,
    rows: usize,
    cols: usize,
}

impl Bits<'_> {
    fn slice(&self) -> &[u8] {
        self.arr.slice()
    }
}

fn bits_arg<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Bits<'py>> {
    const WANT: &str = "a 2-D numpy array of dtype uint8 or bool (one row of 0/1 bits per example)";
    if obj.cast::<PyArray2<bool>>().is_ok() {
        let (a, rows, cols) = arr2::<bool>(obj, name, WANT)?;
        // numpy bools are single bytes holding 0 or 1
        let bytes: Vec<u8> = a.slice().iter().map(|&b| b as u8).collect();
        return Ok(Bits { arr: Arr::Owned(bytes), rows, cols });
    }
    let (arr, rows, cols) = arr2::<u8>(obj, name, WANT)?;
    Ok(Bits { arr, rows, cols })
}

fn check_width(name: &str, bits: &Bits, t: usize) -> PyResult<()> {
    if bits.cols != t {
        return Err(PyValueError::new_err(format!(
            "{name} has {} columns but the memory has total_input_bits = {t}",
            bits.cols
        )));
    }
    Ok(())
}

fn ids1<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Arr<'py, i64>> {
    arr1::<i64>(obj, name, "a 1-D numpy array of dtype int64")
}

/// `None`, 1-D int64 (shared) or 2-D int64 (per example).
enum NegArg<'py> {
    None,
    Shared(Arr<'py, i64>),
    PerExample(Arr<'py, i64>, usize),
}

impl NegArg<'_> {
    fn get(&self) -> Negatives<'_> {
        match self {
            NegArg::None => Negatives::None,
            NegArg::Shared(a) => Negatives::Shared(a.slice()),
            NegArg::PerExample(a, k) => Negatives::PerExample { ids: a.slice(), k: *k },
        }
    }
}

fn neg_arg<'py>(obj: Option<&Bound<'py, PyAny>>, name: &str, batch: usize) -> PyResult<NegArg<'py>> {
    const WANT: &str = "None or a numpy array of dtype int64, 1-D (shared by all examples) or 2-D [B, k]";
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(NegArg::None) };
    if obj.cast::<PyArray1<i64>>().is_ok() {
        return Ok(NegArg::Shared(arr1::<i64>(obj, name, WANT)?));
    }
    let (a, r, k) = arr2::<i64>(obj, name, WANT)?;
    if r != batch {
        return Err(PyValueError::new_err(format!("{name} has {r} rows for {batch} examples")));
    }
    Ok(NegArg::PerExample(a, k))
}

fn targets_arg<'py>(obj: &Bound<'py, PyAny>, name: &str, batch: usize) -> PyResult<Arr<'py, i64>> {
    let t = ids1(obj, name)?;
    if t.slice().len() != batch {
        return Err(PyValueError::new_err(format!(
            "{name} has length {} but there are {batch} examples",
            t.slice().len()
        )));
    }
    Ok(t)
}

/// Per tier uint64 `[B, neurons_in_tier]`.
fn addresses_arg<'py>(obj: &Bound<'py, PyAny>, m: &TieredMemory) -> PyResult<(Vec<Arr<'py, u64>>, usize)> {
    const WANT: &str = "a list with one 2-D uint64 numpy array [B, neurons_in_tier] per tier";
    let Ok(list) = obj.cast::<PyList>().cloned().or_else(|_| obj.cast::<PyTuple>().map(|t| t.to_list()))
    else {
        return type_err("addresses", WANT, obj);
    };
    if list.len() != m.tiers().len() {
        return Err(PyValueError::new_err(format!(
            "addresses: {} arrays given for {} tiers",
            list.len(),
            m.tiers().len()
        )));
    }
    let mut out = Vec::with_capacity(list.len());
    let mut batch = None;
    for (i, item) in list.iter().enumerate() {
        let name = format!("addresses[{i}]");
        let (a, r, c) = arr2::<u64>(&item, &name, "a 2-D numpy array of dtype uint64")?;
        let nt = m.tiers()[i].spec.total_neurons();
        if c != nt {
            return Err(PyValueError::new_err(format!("{name} has {c} columns, tier {i} has {nt} neurons")));
        }
        if *batch.get_or_insert(r) != r {
            return Err(PyValueError::new_err("addresses: arrays have different numbers of rows"));
        }
        out.push(a);
    }
    Ok((out, batch.unwrap_or(0)))
}

fn nonneg(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {v}")))
}

fn tier_specs(tiers: &Bound<'_, PyAny>) -> PyResult<Vec<TierSpec>> {
    let want = "a list of (count, neurons_per_cluster, bits) tuples of ints";
    let Ok(raw) = tiers.extract::<Vec<(i64, i64, i64)>>() else { return type_err("tiers", want, tiers) };
    let mut out = Vec::with_capacity(raw.len());
    for (i, (c, n, b)) in raw.into_iter().enumerate() {
        let s = TierSpec {
            count: nonneg(&format!("tiers[{i}] count"), c)?,
            neurons: nonneg(&format!("tiers[{i}] neurons"), n)?,
            bits: u32::try_from(b).unwrap_or(u32::MAX),
        };
        s.validate(i)?;
        out.push(s);
    }
    Ok(out)
}

fn u2d<'py, T: numpy::Element>(py: Python<'py>, v: Vec<T>, rows: usize, cols: usize) -> PyResult<Bound<'py, PyArray2<T>>> {
    PyArray1::from_vec(py, v).reshape([rows, cols])
}

// ---- the class -----------------------------------------------------------------------------

/// Tiered memory of RAM neurons. See native/API.md.
#[pyclass(name = "TieredMemory", module = "native._core")]
pub struct PyTieredMemory {
    inner: TieredMemory,
}

#[pymethods]
impl PyTieredMemory {
    #[new]
    #[pyo3(signature = (tiers, total_input_bits, connectivity=None, cluster_order=None, backends=None, seed=0))]
    fn new(
        py: Python<'_>,
        tiers: &Bound<'_, PyAny>,
        total_input_bits: i64,
        connectivity: Option<&Bound<'_, PyAny>>,
        cluster_order: Option<&Bound<'_, PyAny>>,
        backends: Option<&Bound<'_, PyAny>>,
        seed: u64,
    ) -> PyResult<Self> {
        let specs = tier_specs(tiers)?;
        let t = nonneg("total_input_bits", total_input_bits)?;
        let backend_names: Vec<String> = match backends {
            None => vec!["auto".into(); specs.len()],
            Some(b) if b.is_none() => vec!["auto".into(); specs.len()],
            Some(b) => {
                if let Ok(s) = b.cast::<PyString>() {
                    vec![s.to_str()?.to_string(); specs.len()]
                } else if let Ok(v) = b.extract::<Vec<String>>() {
                    v
                } else {
                    return type_err("backends", "a string or a list of strings", b);
                }
            }
        };
        let conn: Option<Vec<Vec<i64>>> = match connectivity.filter(|c| !c.is_none()) {
            None => None,
            Some(c) => {
                let Ok(list) = c.extract::<Vec<Bound<'_, PyAny>>>() else {
                    return type_err("connectivity", "a list of int64 arrays [neurons_in_tier, bits], one per tier", c);
                };
                if list.len() != specs.len() {
                    return Err(PyValueError::new_err(format!(
                        "connectivity: {} arrays given for {} tiers",
                        list.len(),
                        specs.len()
                    )));
                }
                let mut out = Vec::with_capacity(list.len());
                for (i, item) in list.iter().enumerate() {
                    let name = format!("connectivity[{i}]");
                    let (a, r, cols) = arr2::<i64>(item, &name, "a 2-D numpy array of dtype int64 [neurons_in_tier, bits]")?;
                    let s = specs[i];
                    if r != s.total_neurons() || cols != s.bits as usize {
                        return Err(PyValueError::new_err(format!(
                            "{name} has shape ({r}, {cols}), tier {i} needs ({}, {})",
                            s.total_neurons(),
                            s.bits
                        )));
                    }
                    out.push(a.slice().to_vec());
                }
                Some(out)
            }
        };
        let order = match cluster_order.filter(|c| !c.is_none()) {
            None => None,
            Some(o) => Some(ids1(o, "cluster_order")?.slice().to_vec()),
        };
        let inner = py.detach(|| TieredMemory::new(&specs, t, conn, order.as_deref(), &backend_names, seed))?;
        Ok(PyTieredMemory { inner })
    }

    #[getter]
    fn num_clusters(&self) -> usize {
        self.inner.num_clusters()
    }
    #[getter]
    fn total_input_bits(&self) -> usize {
        self.inner.total_input_bits()
    }
    #[getter]
    fn num_tiers(&self) -> usize {
        self.inner.tiers().len()
    }
    #[getter]
    fn tiers(&self) -> Vec<(usize, usize, u32)> {
        self.inner.specs().iter().map(|s| (s.count, s.neurons, s.bits)).collect()
    }
    #[getter]
    fn backends(&self) -> Vec<&'static str> {
        self.inner.backends().iter().map(|b| b.name()).collect()
    }
    #[getter]
    fn num_neurons(&self) -> usize {
        self.inner.num_neurons()
    }
    #[getter]
    fn connection_count(&self) -> usize {
        self.inner.connection_count()
    }
    /// Heap bytes held by connectivity and cells (approximate, excludes allocator overhead).
    #[getter]
    fn heap_bytes(&self) -> usize {
        self.inner.heap_bytes()
    }

    fn __repr__(&self) -> String {
        let tiers: Vec<String> = self
            .inner
            .tiers()
            .iter()
            .map(|t| format!("{},{},{}:{}", t.spec.count, t.spec.neurons, t.spec.bits, t.store.kind().name()))
            .collect();
        format!("TieredMemory([{}], total_input_bits={})", tiers.join("; "), self.inner.total_input_bits())
    }

    #[pyo3(signature = (bits, targets, negatives=None))]
    fn train(
        &mut self,
        py: Python<'_>,
        bits: &Bound<'_, PyAny>,
        targets: &Bound<'_, PyAny>,
        negatives: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let x = bits_arg(bits, "bits")?;
        check_width("bits", &x, self.inner.total_input_bits())?;
        let tg = targets_arg(targets, "targets", x.rows)?;
        let ng = neg_arg(negatives, "negatives", x.rows)?;
        let (xs, ts, ns, b) = (x.slice(), tg.slice(), ng.get(), x.rows);
        let inner = &mut self.inner;
        py.detach(|| inner.train(Input::Bits(xs), b, ts, ns))?;
        Ok(())
    }

    #[pyo3(signature = (addresses, targets, negatives=None))]
    fn train_addresses(
        &mut self,
        py: Python<'_>,
        addresses: &Bound<'_, PyAny>,
        targets: &Bound<'_, PyAny>,
        negatives: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let (arrs, b) = addresses_arg(addresses, &self.inner)?;
        let tg = targets_arg(targets, "targets", b)?;
        let ng = neg_arg(negatives, "negatives", b)?;
        let slices: Vec<&[u64]> = arrs.iter().map(|a| a.slice()).collect();
        let (ts, ns) = (tg.slice(), ng.get());
        let inner = &mut self.inner;
        py.detach(|| inner.train(Input::Addresses(&slices), b, ts, ns))?;
        Ok(())
    }

    fn addresses<'py>(&self, py: Python<'py>, bits: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyArray2<u64>>>> {
        let x = bits_arg(bits, "bits")?;
        check_width("bits", &x, self.inner.total_input_bits())?;
        let (xs, b) = (x.slice(), x.rows);
        let inner = &self.inner;
        let per_tier = py.detach(|| inner.addresses(xs, b))?;
        per_tier
            .into_iter()
            .zip(self.inner.tiers())
            .map(|(v, t)| u2d(py, v, b, t.spec.total_neurons()))
            .collect()
    }

    fn forward_counts<'py>(
        &self,
        py: Python<'py>,
        bits: &Bound<'py, PyAny>,
    ) -> PyResult<ArrayPair<'py, PyArray2<u16>, PyArray2<u16>>> {
        let x = bits_arg(bits, "bits")?;
        check_width("bits", &x, self.inner.total_input_bits())?;
        let (xs, b, c) = (x.slice(), x.rows, self.inner.num_clusters());
        let inner = &self.inner;
        let (t, e) = py.detach(|| inner.forward_counts(Input::Bits(xs), b))?;
        Ok((u2d(py, t, b, c)?, u2d(py, e, b, c)?))
    }

    fn forward_counts_addresses<'py>(
        &self,
        py: Python<'py>,
        addresses: &Bound<'py, PyAny>,
    ) -> PyResult<ArrayPair<'py, PyArray2<u16>, PyArray2<u16>>> {
        let (arrs, b) = addresses_arg(addresses, &self.inner)?;
        let slices: Vec<&[u64]> = arrs.iter().map(|a| a.slice()).collect();
        let c = self.inner.num_clusters();
        let inner = &self.inner;
        let (t, e) = py.detach(|| inner.forward_counts(Input::Addresses(&slices), b))?;
        Ok((u2d(py, t, b, c)?, u2d(py, e, b, c)?))
    }

    #[pyo3(signature = (bits, empty_value=0.0))]
    fn forward_scores<'py>(
        &self,
        py: Python<'py>,
        bits: &Bound<'py, PyAny>,
        empty_value: f64,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let x = bits_arg(bits, "bits")?;
        check_width("bits", &x, self.inner.total_input_bits())?;
        let (xs, b, c) = (x.slice(), x.rows, self.inner.num_clusters());
        let inner = &self.inner;
        let s = py.detach(|| inner.forward_scores(Input::Bits(xs), b, empty_value))?;
        u2d(py, s, b, c)
    }

    #[pyo3(signature = (bits, targets, empty_value=0.0))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        bits: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
        empty_value: f64,
    ) -> PyResult<ArrayPair<'py, PyArray1<f64>, PyArray1<i64>>> {
        let x = bits_arg(bits, "bits")?;
        check_width("bits", &x, self.inner.total_input_bits())?;
        let tg = targets_arg(targets, "targets", x.rows)?;
        let (xs, ts, b) = (x.slice(), tg.slice(), x.rows);
        let inner = &self.inner;
        let (ce, pred) = py.detach(|| inner.evaluate(Input::Bits(xs), b, ts, empty_value))?;
        Ok((PyArray1::from_vec(py, ce), PyArray1::from_vec(py, pred)))
    }

    fn reset(&mut self, py: Python<'_>) -> PyResult<()> {
        let inner = &mut self.inner;
        py.detach(|| inner.reset())?;
        Ok(())
    }

    fn written_cells<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let inner = &self.inner;
        let counts = py.detach(|| inner.cell_counts());
        PyArray1::from_vec(py, counts.iter().map(|&(f, t)| (f + t) as i64).collect())
    }

    fn true_cells<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        let inner = &self.inner;
        let counts = py.detach(|| inner.cell_counts());
        PyArray1::from_vec(py, counts.iter().map(|&(_, t)| t as i64).collect())
    }

    fn connectivity<'py>(&self, py: Python<'py>, tier: usize) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let c = self.inner.connectivity(tier)?;
        let s = self.inner.tiers()[tier].spec;
        u2d(py, c.iter().map(|&x| x as i64).collect(), s.total_neurons(), s.bits as usize)
    }

    fn set_connectivity(&mut self, py: Python<'_>, tier: usize, conn: &Bound<'_, PyAny>) -> PyResult<()> {
        let (a, r, c) = arr2::<i64>(conn, "conn", "a 2-D numpy array of dtype int64 [neurons_in_tier, bits]")?;
        let spec = *self
            .inner
            .tiers()
            .get(tier)
            .map(|t| &t.spec)
            .ok_or_else(|| PyValueError::new_err(format!("tier {tier} out of range (there are {})", self.inner.tiers().len())))?;
        if r != spec.total_neurons() || c != spec.bits as usize {
            return Err(PyValueError::new_err(format!(
                "conn has shape ({r}, {c}), tier {tier} needs ({}, {})",
                spec.total_neurons(),
                spec.bits
            )));
        }
        let s = a.slice();
        let inner = &mut self.inner;
        py.detach(|| inner.set_connectivity(tier, s))?;
        Ok(())
    }

    fn connectivity_flat<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_vec(py, self.inner.connectivity_flat().iter().map(|&x| x as i64).collect())
    }

    fn set_connectivity_flat(&mut self, py: Python<'_>, flat: &Bound<'_, PyAny>) -> PyResult<()> {
        let a = ids1(flat, "flat")?;
        let s = a.slice();
        let inner = &mut self.inner;
        py.detach(|| inner.set_connectivity_flat(s))?;
        Ok(())
    }

    fn cluster_order<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_vec(py, self.inner.order().iter().map(|&x| x as i64).collect())
    }

    fn cluster_tiers<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_vec(py, self.inner.token_tier().iter().map(|&x| x as i64).collect())
    }

    #[allow(clippy::type_complexity)]
    fn cells<'py>(
        &self,
        py: Python<'py>,
        tier: usize,
    ) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<u64>>, Bound<'py, PyArray1<u8>>)> {
        let inner = &self.inner;
        let cells = py.detach(|| inner.cells(tier))?;
        let neuron = cells.iter().map(|c| c.0 as i64).collect();
        let addr = cells.iter().map(|c| c.1).collect();
        let state = cells.iter().map(|c| to_public(c.2)).collect();
        Ok((PyArray1::from_vec(py, neuron), PyArray1::from_vec(py, addr), PyArray1::from_vec(py, state)))
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let inner = &self.inner;
        let data = py.detach(|| inner.to_bytes());
        PyBytes::new(py, &data)
    }

    #[classmethod]
    fn from_bytes(_cls: &Bound<'_, PyType>, py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let inner = py.detach(|| TieredMemory::from_bytes(data))?;
        Ok(PyTieredMemory { inner })
    }

    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| {
            let data = inner.to_bytes();
            std::fs::write(&path, data).map_err(|e| CoreError::Io(format!("cannot write {}: {e}", path.display())))
        })?;
        Ok(())
    }

    #[classmethod]
    fn load(_cls: &Bound<'_, PyType>, py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| {
            let data = std::fs::read(&path).map_err(|e| CoreError::Io(format!("cannot read {}: {e}", path.display())))?;
            TieredMemory::from_bytes(&data)
        })?;
        Ok(PyTieredMemory { inner })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let ctor = slf.get_type().getattr("from_bytes")?;
        let bytes = slf.borrow().to_bytes(py);
        Ok((ctor, (bytes,)))
    }

    #[pyo3(signature = (candidates, train_bits, train_targets, train_negatives, eval_bits, eval_targets, empty_value=0.0, clamp=true))]
    #[allow(clippy::too_many_arguments)]
    fn evaluate_candidates<'py>(
        &self,
        py: Python<'py>,
        candidates: &Bound<'py, PyAny>,
        train_bits: &Bound<'py, PyAny>,
        train_targets: &Bound<'py, PyAny>,
        train_negatives: Option<&Bound<'py, PyAny>>,
        eval_bits: &Bound<'py, PyAny>,
        eval_targets: &Bound<'py, PyAny>,
        empty_value: f64,
        clamp: bool,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let (cand, k, g) = arr2::<i64>(candidates, "candidates", "a 2-D numpy array of dtype int64 [K, connection_count]")?;
        if g != self.inner.connection_count() {
            return Err(PyValueError::new_err(format!(
                "candidates have {g} columns but connection_count is {}",
                self.inner.connection_count()
            )));
        }
        let t = self.inner.total_input_bits();
        let tx = bits_arg(train_bits, "train_bits")?;
        check_width("train_bits", &tx, t)?;
        let tt = targets_arg(train_targets, "train_targets", tx.rows)?;
        let tn = neg_arg(train_negatives, "train_negatives", tx.rows)?;
        let ex = bits_arg(eval_bits, "eval_bits")?;
        check_width("eval_bits", &ex, t)?;
        let et = targets_arg(eval_targets, "eval_targets", ex.rows)?;
        let (cs, txs, tts, tns, exs, ets) = (cand.slice(), tx.slice(), tt.slice(), tn.get(), ex.slice(), et.slice());
        let inner = &self.inner;
        let out = py.detach(|| inner.evaluate_candidates(cs, k, txs, tts, tns, exs, ets, empty_value, clamp))?;
        Ok(PyArray1::from_vec(py, out))
    }
}

// ---- free functions ------------------------------------------------------------------------

/// Version of the native crate, so Python can tell which build it loaded.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// "Guaranteed coverage" connectivity `int64 [neurons, bits]` from SplitMix64(seed).
#[pyfunction]
#[pyo3(signature = (neurons, bits, total_input_bits, seed=0))]
fn init_connectivity<'py>(
    py: Python<'py>,
    neurons: i64,
    bits: i64,
    total_input_bits: i64,
    seed: u64,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let n = nonneg("neurons", neurons)?;
    let b = nonneg("bits", bits)?;
    let t = nonneg("total_input_bits", total_input_bits)?;
    let c = py.detach(|| crate::rng::init_connectivity(n, b, t, seed))?;
    u2d(py, c.into_iter().map(|x| x as i64).collect(), n, b)
}

/// Sliding-window encoding of a token stream: (bits uint8 [L-N, N*bpt], targets int64 [L-N]).
#[pyfunction]
fn encode_contexts<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    context: i64,
    bits_per_token: i64,
) -> PyResult<ArrayPair<'py, PyArray2<u8>, PyArray1<i64>>> {
    let tk = ids1(tokens, "tokens")?;
    let n = nonneg("context", context)?;
    let bpt = nonneg("bits_per_token", bits_per_token)?;
    let ts = tk.slice();
    let (bits, targets) = py.detach(|| crate::address::encode_contexts(ts, n, bpt))?;
    let rows = targets.len();
    let cols = n.saturating_mul(bpt);
    Ok((u2d(py, bits, rows, cols)?, PyArray1::from_vec(py, targets)))
}

/// `"100,15,20;400,10,12;rest,5,8"` -> [(count, neurons, bits), ...].
#[pyfunction]
fn parse_tier_spec(spec: &str, num_clusters: i64) -> PyResult<Vec<(usize, usize, u32)>> {
    let c = nonneg("num_clusters", num_clusters)?;
    Ok(crate::tiers::parse_tier_spec(spec, c)?.iter().map(|t| (t.count, t.neurons, t.bits)).collect())
}

/// Size of the native thread pool used by every parallel call.
#[pyfunction]
fn set_num_threads(n: i64) -> PyResult<()> {
    let n = usize::try_from(n).map_err(|_| PyValueError::new_err(format!("n must be >= 1, got {n}")))?;
    crate::pool::set_num_threads(n).map_err(PyValueError::new_err)
}

#[pyfunction]
fn get_num_threads() -> usize {
    crate::pool::num_threads()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTieredMemory>()?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(init_connectivity, m)?)?;
    m.add_function(wrap_pyfunction!(encode_contexts, m)?)?;
    m.add_function(wrap_pyfunction!(parse_tier_spec, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("FALSE", 0u8)?;
    m.add("TRUE", 1u8)?;
    m.add("EMPTY", 2u8)?;
    Ok(())
}
