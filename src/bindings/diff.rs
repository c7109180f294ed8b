//! `tbcollect.diff(a, b)`: the Python face of [`crate::render::diff`].

use super::snapshot::{to_py_dict, PySnapshot, PyStack};
use crate::error::Error;
use crate::render::diff::{self, Diff};
use pyo3::prelude::*;

/// How the stacks of dump B differ from those of dump A.
#[pyclass(name = "Diff", module = "tbcollect", frozen)]
pub struct PyDiff {
    a: Py<PySnapshot>,
    b: Py<PySnapshot>,
    inner: Diff,
}

fn stacks(stacks: &[crate::model::Stack]) -> Vec<PyStack> {
    stacks
        .iter()
        .cloned()
        .map(|inner| PyStack { inner })
        .collect()
}

#[pymethods]
impl PyDiff {
    /// Stacks with the same frames in both dumps (as in B): possibly stuck.
    #[getter]
    fn unchanged(&self) -> Vec<PyStack> {
        stacks(&self.inner.unchanged)
    }
    /// Stacks in both dumps at different frames: (as in A, as in B).
    #[getter]
    fn moved(&self) -> Vec<(PyStack, PyStack)> {
        self.inner
            .moved
            .iter()
            .map(|(a, b)| (PyStack { inner: a.clone() }, PyStack { inner: b.clone() }))
            .collect()
    }
    /// Stacks only in B.
    #[getter]
    fn appeared(&self) -> Vec<PyStack> {
        stacks(&self.inner.appeared)
    }
    /// Stacks only in A.
    #[getter]
    fn disappeared(&self) -> Vec<PyStack> {
        stacks(&self.inner.disappeared)
    }
    /// tbcollect's own stacks (dumper, watcher, watchdog), left out of the
    /// four lists and the counts.
    #[getter]
    fn own(&self) -> Vec<PyStack> {
        stacks(&self.inner.own)
    }
    /// Seconds from A to B, when both timestamps are readable.
    #[getter]
    fn seconds(&self) -> Option<f64> {
        self.inner.seconds()
    }
    #[getter]
    fn same_process(&self) -> bool {
        self.inner.same_process()
    }

    /// `3 unchanged, 1 moved, 2 appeared, 0 disappeared`
    fn summary(&self) -> String {
        self.inner.summary()
    }

    /// The diff for a person: a summary line, then four headings.
    fn to_text(&self, py: Python<'_>) -> String {
        let (a, b) = (&self.a.get().inner, &self.b.get().inner);
        py.detach(|| self.inner.to_text(a, b))
    }

    /// The diff as JSON (schema `tbcollect-diff/1`).
    #[pyo3(signature = (indent = None))]
    fn to_json(&self, indent: Option<&Bound<'_, PyAny>>) -> Result<String, Error> {
        Ok(self.inner.to_json(super::options::indent(indent)?))
    }

    /// The diff as plain Python data (what `json.loads(to_json())` gives).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_dict(py, &self.inner.json_value())
    }

    /// `"text"` or `"json"`.
    #[pyo3(signature = (format = "text", *, indent = None))]
    fn render(
        &self,
        py: Python<'_>,
        format: &str,
        indent: Option<&Bound<'_, PyAny>>,
    ) -> Result<String, Error> {
        match format {
            "text" => Ok(self.to_text(py)),
            "json" => self.to_json(indent),
            _ => Err(Error::InvalidOption {
                name: "format",
                reason: format!("a diff renders as text or json, not '{format}'"),
            }),
        }
    }

    fn __repr__(&self) -> String {
        format!("<tbcollect.Diff {}>", self.inner.summary())
    }
}

/// Compares two snapshots of one process: which stacks are unchanged (same id
/// and frames: stuck?), moved, appeared or disappeared between A and B.
#[pyfunction(name = "diff")]
fn diff_snapshots(py: Python<'_>, a: Py<PySnapshot>, b: Py<PySnapshot>) -> PyDiff {
    let inner = py.detach(|| diff::diff(&a.get().inner, &b.get().inner));
    PyDiff { a, b, inner }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DIFF_SCHEMA", diff::DIFF_SCHEMA)?;
    m.add_class::<PyDiff>()?;
    m.add_function(wrap_pyfunction!(diff_snapshots, m)?)?;
    Ok(())
}
