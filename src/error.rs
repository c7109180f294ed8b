//! The project's one error type, and (with the `python` feature) its one
//! mapping onto the Python exception tree defined in `tbcollect/_errors.py`.
//!
//! Problems met *while collecting* are not errors: they go into
//! `Snapshot::errors`. These are for the caller's own mistakes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown format '{0}' (expected one of: {names})", names = crate::render::Format::NAMES.join(", "))]
    UnknownFormat(String),

    #[error("invalid option {name}: {reason}")]
    InvalidOption { name: &'static str, reason: String },

    #[error("cannot write dump to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot write dump to file descriptor {fd}: {source}")]
    WriteFd { fd: i32, source: std::io::Error },

    #[error("not a tbcollect/1 dump: {0}")]
    InvalidDump(String),

    #[error("dump directory {}: {reason}", path.display())]
    DumpDirectory { path: PathBuf, reason: String },
}

#[cfg(feature = "python")]
impl From<Error> for pyo3::PyErr {
    fn from(error: Error) -> pyo3::PyErr {
        use pyo3::prelude::*;
        let class = match &error {
            Error::UnknownFormat(_) => "UnknownFormatError",
            Error::InvalidOption { .. } => "InvalidOptionError",
            Error::Write { .. } | Error::WriteFd { .. } => "DumpWriteError",
            Error::InvalidDump(_) => "InvalidDumpError",
            Error::DumpDirectory { .. } => "DumpDirectoryError",
        };
        let message = error.to_string();
        Python::attach(|py| {
            match py
                .import("tbcollect._errors")
                .and_then(|m| m.getattr(class))
                .and_then(|cls| cls.call1((message.clone(),)))
            {
                Ok(instance) => PyErr::from_value(instance),
                // Only when the package is broken: still one clear message.
                Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
            }
        })
    }
}
