//! The extension module `tbcollect._tbcollect`: every `#[pyfunction]` and
//! `#[pyclass]`, and nothing else. Each submodule captures or calls into the
//! pure-Rust modules and converts the result; no logic of its own.

mod diff;
mod errors;
#[cfg(unix)]
mod live;
mod options;
mod snapshot;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_tbcollect")]
fn tbcollect_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    snapshot::register(m)?;
    diff::register(m)?;
    #[cfg(unix)]
    live::register(m)?;
    Ok(())
}
