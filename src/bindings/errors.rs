//! The exception tree, declared here and only here, and the one mapping of
//! [`Error`] onto it. The classes live in the extension module (the Python
//! package re-exports them), so raising one never imports the package that
//! wraps this module.
//!
//! Each error also inherits the standard exception a caller would catch
//! anyway (`except ValueError`, `except OSError` keep working). Two bases
//! are more than `create_exception!` can declare, so the classes are made
//! with `type(name, bases, namespace)` when the module is initialized.

use crate::error::Error;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// (name, bases, doc): a base is an earlier name of this table or a builtin.
const TREE: &[(&str, &[&str], &str)] = &[
    (
        "TbcollectError",
        &["Exception"],
        "Base class of every error tbcollect raises.",
    ),
    (
        "InvalidOptionError",
        &["TbcollectError", "ValueError"],
        "An option has a value it cannot take (``max_depth=0``).",
    ),
    (
        "UnknownFormatError",
        &["TbcollectError", "ValueError"],
        "A format name that no renderer knows.",
    ),
    (
        "DumpWriteError",
        &["TbcollectError", "OSError"],
        "The dump could not be written; nothing was left half-written.",
    ),
    (
        "InvalidDumpError",
        &["TbcollectError", "ValueError"],
        "A file or string that is not a ``tbcollect/1`` JSON dump.",
    ),
    (
        "MissingDependencyError",
        &["TbcollectError", "ImportError"],
        "An optional integration's package (e.g. ``sentry-sdk``) is not installed.",
    ),
    (
        "ProbesError",
        &["TbcollectError", "OSError"],
        "The probes directory cannot be read (missing, not a directory).",
    ),
    (
        "UnsafeProbesError",
        &["ProbesError", "PermissionError"],
        "A probes directory or file that someone else could change; nothing was run.",
    ),
    (
        "DumpDirectoryError",
        &["TbcollectError", "OSError"],
        "The dump directory cannot be used: missing and not creatable, a symlink, \
         owned by another user, or writable by group or others.",
    ),
    (
        "InstallError",
        &["TbcollectError", "RuntimeError"],
        "``install()`` or ``uninstall()`` cannot be done here (not the main thread, \
         or a platform without POSIX signals).",
    ),
];

/// The classes by name, made once per process.
static CLASSES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    let made = CLASSES.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
        let builtins = py.import("builtins")?;
        let made = PyDict::new(py);
        for (name, bases, doc) in TREE {
            let bases = bases
                .iter()
                .map(|base| match made.get_item(base)? {
                    Some(class) => Ok(class),
                    None => builtins.getattr(base),
                })
                .collect::<PyResult<Vec<_>>>()?;
            let namespace = PyDict::new(py);
            namespace.set_item("__module__", "tbcollect")?;
            namespace.set_item("__doc__", doc)?;
            let class =
                py.get_type::<PyType>()
                    .call1((name, PyTuple::new(py, bases)?, namespace))?;
            made.set_item(name, class)?;
        }
        Ok(made.unbind())
    })?;
    Ok(made.bind(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    for (name, class) in classes(m.py())?.iter() {
        m.add(name.extract::<String>()?, class)?;
    }
    Ok(())
}

impl From<Error> for PyErr {
    fn from(error: Error) -> PyErr {
        let class = match &error {
            Error::UnknownFormat { .. } => "UnknownFormatError",
            Error::InvalidOption { .. } => "InvalidOptionError",
            Error::Write { .. } | Error::WriteFd { .. } => "DumpWriteError",
            Error::InvalidDump(_) => "InvalidDumpError",
            Error::DumpDirectory { .. } => "DumpDirectoryError",
        };
        let message = error.to_string();
        Python::attach(|py| {
            match classes(py)
                .and_then(|all| {
                    all.get_item(class)?
                        .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(class))
                })
                .and_then(|cls| cls.call1((message.clone(),)))
            {
                Ok(instance) => PyErr::from_value(instance),
                // Only if the classes could not be made: still one clear message.
                Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
            }
        })
    }
}
