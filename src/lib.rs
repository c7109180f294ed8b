//! tbcollect: a concurrency-aware traceback collector for Python.
//!
//! The model ([`model`]), the renderers ([`render`]) and the post-capture
//! steps ([`enrich`], [`output`]) are pure Rust, as is the two-thread list
//! walk the greenlet scan uses ([`split_walk`]). With the `python` feature,
//! [`capture`] reads the interpreter and [`python`] is the extension module.

pub mod awaiting;
pub mod diff;
#[cfg(unix)]
pub mod dumpdir;
pub mod enrich;
pub mod error;
pub mod fasthash;
pub mod model;
pub mod output;
pub mod render;
pub mod split_walk;

#[cfg(feature = "python")]
pub mod capture;
#[cfg(all(feature = "python", unix))]
mod live;
#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod python_diff;

pub use error::Error;
pub use model::{Frame, Snapshot, Stack, StackDetails, StackKind};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
