//! Native extension for overnight. The core lives in plain Rust modules; this file is the
//! thin PyO3 layer that exposes it to Python.
use pyo3::prelude::*;

/// Version of the native crate, so Python can tell which build it loaded.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
