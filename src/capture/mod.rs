//! Capture: the only part that touches the interpreter. It holds the GIL,
//! copies code/line/ids into the model, runs no user code and keeps no
//! reference to any Python object once it returns.
//!
//! The pure parts ([`awaiting`], [`elf`], [`enrich`], [`fastpaths`], and what [`cpython`] says of versions and published
//! offsets) build without the `python` feature, so `cargo test` checks them
//! without libpython.

pub mod awaiting;
pub mod cpython;
#[cfg(target_os = "linux")]
pub mod elf;
pub mod enrich;
pub mod fastpaths;
pub mod waits;

#[cfg(feature = "python")]
pub mod frames;
#[cfg(feature = "python")]
pub mod framevars;
#[cfg(feature = "python")]
pub mod greenlets;
#[cfg(all(feature = "python", tbc_iframe))]
pub mod iframe;
#[cfg(feature = "python")]
pub mod inert;
#[cfg(feature = "python")]
pub mod labels;
#[cfg(feature = "python")]
pub mod locals;
#[cfg(feature = "python")]
pub mod lockwait;
#[cfg(feature = "python")]
mod session;
#[cfg(feature = "python")]
pub mod tasks;
#[cfg(feature = "python")]
pub mod threads;
#[cfg(feature = "python")]
pub use session::*;
