//! The one mapping of [`Error`] onto the Python exception tree defined in
//! `tbcollect/_errors.py`.

use crate::error::Error;

impl From<Error> for pyo3::PyErr {
    fn from(error: Error) -> pyo3::PyErr {
        use pyo3::prelude::*;
        let class = match &error {
            Error::UnknownFormat { .. } => "UnknownFormatError",
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
