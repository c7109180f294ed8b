//! The one switch for every fast path: `TBCOLLECT_FASTPATHS=0` in the
//! environment turns them all off, so that a capture goes through the C
//! API and the plain walks only. The answer must not change: the test
//! suite runs once this way (`make test-nofast`), and
//! `tests/test_fastpaths.py` compares both ways on one frozen process.
//!
//! What the switch covers:
//! - in-place reads of the interpreter's structs checked once per capture
//!   against the C API (`inert::CheckedRead`: coroutine frames, awaits,
//!   states and positions, gevent's spawn records);
//! - a gevent greenlet's links read from the Cython field the first
//!   greenlet had them in, instead of looking at every field;
//! - walking interpreter frames instead of frame objects (`FrameWalker`);
//! - the greenlet heap scan over the collector's own lists (`gc_lists`)
//!   instead of the interpreter's walk (`PyUnstable_GC_VisitObjects`,
//!   `gc.get_objects()`);
//! - the timer of an `asyncio.sleep` read from its coroutine's frame
//!   instead of the loop's table of timers;
//! - memory prefetch hints.
//!
//! The environment is read once per capture ([`refresh`]), so a process
//! can compare both ways by changing it between two captures.

use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(true);

/// Reads `TBCOLLECT_FASTPATHS` again: anything but `0` (or unset) means on.
pub fn refresh() {
    let on = std::env::var_os("TBCOLLECT_FASTPATHS").is_none_or(|v| v != "0");
    ON.store(on, Ordering::Relaxed);
}

/// Whether fast paths may be taken in this capture.
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}
