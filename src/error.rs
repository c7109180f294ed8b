//! The project's one error type. `bindings::errors` maps it onto the Python
//! exception tree, in one place.
//!
//! Problems met *while collecting* are not errors: they go into
//! `Snapshot::errors`. These are for the caller's own mistakes.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown format '{given}' (expected one of: {})", expected.join(", "))]
    UnknownFormat {
        given: String,
        expected: &'static [&'static str],
    },

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
