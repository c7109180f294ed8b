//! The range of every numeric option the extension takes, checked in one
//! place, as the value arrives from Python: a value out of range is one
//! InvalidOptionError naming the public option, never an OverflowError or an
//! allocation that aborts the interpreter (`to_json(indent=10**9)` once
//! did). `tbcollect/_options.py` does the same for the options of the Python
//! layer.

use crate::error::Error;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt};

/// JSON indent: wider than this is no longer indentation.
pub const INDENT_MAX: i64 = 64;
/// `collect()`'s `max_depth` when none is given.
pub const DEFAULT_MAX_DEPTH: usize = 1024;
/// Frames kept per stack: 1e9 is far above any real recursion limit.
pub const MAX_DEPTH_MAX: i64 = 1_000_000_000;

/// An integer option within `lo..=hi`. Only an exact `int` (or a subclass,
/// read by value) is taken: `True`, `1.5` and `"3"` are refused.
fn integer(name: &'static str, value: &Bound<'_, PyAny>, lo: i64, hi: i64) -> Result<i64, Error> {
    let invalid = |got: String| Error::InvalidOption {
        name,
        reason: format!("must be an integer from {lo} to {hi}, got {got}"),
    };
    if value.is_instance_of::<PyBool>() || !value.is_instance_of::<PyInt>() {
        let type_name = value
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(invalid(format!("a {type_name}")));
    }
    match value.extract::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        Ok(n) => Err(invalid(n.to_string())),
        Err(_) => {
            // Past i64: say which side without printing a huge number.
            let negative = value.lt(0i64).unwrap_or(false);
            Err(invalid(
                if negative {
                    "a larger negative number"
                } else {
                    "a larger number"
                }
                .into(),
            ))
        }
    }
}

/// `indent=` of the JSON renderers: None (one line) or 0 to [`INDENT_MAX`].
pub fn indent(value: Option<&Bound<'_, PyAny>>) -> Result<Option<usize>, Error> {
    match value.filter(|v| !v.is_none()) {
        None => Ok(None),
        Some(v) => Ok(Some(integer("indent", v, 0, INDENT_MAX)? as usize)),
    }
}

/// `max_depth=` of `collect()`: 1 to [`MAX_DEPTH_MAX`].
pub fn max_depth(value: &Bound<'_, PyAny>) -> Result<usize, Error> {
    Ok(integer("max_depth", value, 1, MAX_DEPTH_MAX)? as usize)
}

/// A file descriptor given as `dump_all(file=N)`: 0 to `i32::MAX`.
pub fn fd(value: &Bound<'_, PyAny>) -> Result<i32, Error> {
    Ok(integer("file", value, 0, i32::MAX as i64)? as i32)
}
