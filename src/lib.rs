//! tbcollect: a concurrency-aware traceback collector for Python.
//!
//! By role:
//! - [`model`]: the normalized stack model (pure Rust);
//! - [`render`]: text, JSON, collapsed, SVG and diff renderers (pure Rust);
//! - [`capture`]: all that reads the interpreter (with the `python` feature),
//!   and its pure helpers;
//! - [`live`]: where dumps are written, dump on signal;
//! - `bindings`: the extension module's `#[pyfunction]`s and `#[pyclass]`es.

// Every `unsafe` block says why it holds (`make lint` denies warnings).
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod capture;
pub mod error;
#[cfg(unix)]
pub mod live;
pub mod model;
pub mod render;

#[cfg(feature = "python")]
mod bindings;

pub use error::Error;
pub use model::{Frame, Snapshot, Stack, StackDetails, StackKind};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
