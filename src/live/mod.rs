//! Live processes: where dumps are written ([`dumpdir`], [`output`]), and
//! (with the `python` feature) dump-on-signal and the raw dump made without
//! the GIL ([`signals`]). `tbcollect/_live.py` and `tbcollect/_dumpdir.py`
//! are the Python side; `bindings::live` is the extension's face of it.

pub mod channel;
pub mod dumpdir;
pub mod output;
pub mod raw;

#[cfg(feature = "python")]
pub mod abort;
#[cfg(feature = "python")]
mod handler;
#[cfg(feature = "python")]
pub mod signals;
