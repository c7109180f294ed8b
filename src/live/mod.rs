//! Live processes: the dump directory, dump-on-signal and the raw dump made
//! without the GIL. `tbcollect/_live.py` and `tbcollect/_dumpdir.py` are the
//! Python side.

use crate::dumpdir::{current_uid, DumpDir};
use crate::error::Error;
use pyo3::prelude::*;
use std::path::PathBuf;

/// Checks (and with `create`, first creates mode 0700) a dump directory:
/// not a symlink, owned by `owner` (default: this process's user), not
/// writable by group or others. Raises DumpDirectoryError.
#[pyfunction]
#[pyo3(signature = (path, *, create = false, owner = None))]
fn check_dump_directory(
    py: Python<'_>,
    path: PathBuf,
    create: bool,
    owner: Option<u32>,
) -> Result<(), Error> {
    let owner = owner.unwrap_or_else(current_uid);
    py.detach(|| DumpDir::open(&path, create, owner).map(|_| ()))
}

/// Writes `text` as a new dump file `tbcollect-<pid>-<time>-<seq>.<extension>`
/// in the (checked) directory; returns its path.
#[pyfunction]
#[pyo3(signature = (text, *, directory, extension))]
fn write_new_dump(
    py: Python<'_>,
    text: &str,
    directory: PathBuf,
    extension: &str,
) -> Result<PathBuf, Error> {
    if !matches!(extension, "txt" | "json") {
        return Err(Error::InvalidOption {
            name: "extension",
            reason: format!("must be \"txt\" or \"json\", got {extension:?}"),
        });
    }
    let data = text.as_bytes();
    py.detach(|| DumpDir::open(&directory, false, current_uid())?.write_new(extension, data))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(check_dump_directory, m)?)?;
    m.add_function(wrap_pyfunction!(write_new_dump, m)?)?;
    Ok(())
}
