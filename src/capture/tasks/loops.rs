//! Which thread runs an event loop.
//!
//! `BaseEventLoop` (every loop of the standard library) records it in
//! `_thread_id`, set by `run_forever` and cleared when it stops. Loops
//! written in C (uvloop) keep it private, so for those the interpreter's own
//! record of each thread's running loop is read: the one `get_running_loop()`
//! returns, kept per thread state.

use super::AddrMap;
use crate::capture::cpython::{self, RunningLoopRecord};
use crate::capture::inert;
use crate::capture::Capture;
use pyo3::ffi;
use pyo3::prelude::*;

/// The thread of each loop, found on demand and cached for the capture.
#[derive(Default)]
pub struct LoopThreads {
    known: AddrMap<Option<u64>>,
    running: Option<AddrMap<u64>>,
}

impl LoopThreads {
    /// Ident of the thread running `event_loop`, or `None` when it is not running.
    pub fn thread_of<'py>(
        &mut self,
        cap: &Capture<'py>,
        event_loop: &Bound<'py, PyAny>,
    ) -> Option<u64> {
        let key = event_loop.as_ptr() as usize;
        if let Some(known) = self.known.get(&key) {
            return *known;
        }
        let found = match inert::instance_dict(event_loop)
            .and_then(|d| inert::dict_get_named(&d, c"_thread_id"))
        {
            Some(ident) => inert::int_value(&ident),
            None => self
                .running
                .get_or_insert_with(|| running_loops(cap))
                .get(&key)
                .copied(),
        };
        self.known.insert(key, found);
        found
    }

    /// Records a thread learnt another way (a running task's frames were
    /// found on that thread's stack).
    pub fn learn(&mut self, event_loop: &Bound<'_, PyAny>, ident: u64) {
        let entry = self
            .known
            .entry(event_loop.as_ptr() as usize)
            .or_insert(None);
        if entry.is_none() {
            *entry = Some(ident);
        }
    }
}

/// Running loop address -> thread ident, for every thread of this interpreter.
///
/// Thread states are matched to idents through their current frame, which
/// is the very object `sys._current_frames()` returned for that ident.
/// The loop pointer read from a thread state is only ever compared with
/// addresses of loops we hold, never dereferenced.
fn running_loops(cap: &Capture<'_>) -> AddrMap<u64> {
    let mut out = AddrMap::default();
    for &(ident, ts) in cap.thread_states() {
        // SAFETY: `ts` is a live thread state of this interpreter (the GIL is
        // still held since it was found).
        if let Some(loop_ptr) = unsafe { running_loop_ptr(cap.py, ts) } {
            out.insert(loop_ptr, ident);
        }
    }
    out
}

#[cfg(not(Py_3_13))]
extern "C" {
    // PyAPI_FUNC in 3.9-3.12 (cpython/pystate.h): a thread state's dict.
    fn _PyThreadState_GetDict(tstate: *mut ffi::PyThreadState) -> *mut ffi::PyObject;
}

/// The address of the loop `_asyncio` records as running in thread state
/// `ts`, wherever this version keeps it (see [`RunningLoopRecord`]). Only
/// compared, never followed: a wrong guess finds nothing.
///
/// # Safety
/// `ts` is a live thread state of this interpreter; the GIL is held.
unsafe fn running_loop_ptr(py: Python<'_>, ts: *mut ffi::PyThreadState) -> Option<usize> {
    let value = match cpython::current::running_loop_record() {
        #[cfg(not(Py_3_13))]
        RunningLoopRecord::HolderInThreadDict | RunningLoopRecord::LoopInThreadDict => {
            let dict = inert::borrowed(py, _PyThreadState_GetDict(ts))?;
            let value = inert::dict_get_named(&dict, c"__asyncio_running_event_loop__")?;
            if value.is_none() {
                return None;
            }
            #[cfg(not(Py_3_12))]
            {
                if !inert::is_static_type_named(&value, c"_RunningLoopHolder") {
                    return None;
                }
                use crate::capture::cpython::current::RunningLoopHolder;
                let tp = ffi::Py_TYPE(value.as_ptr());
                if ((*tp).tp_basicsize as usize) < std::mem::size_of::<RunningLoopHolder>() {
                    return None;
                }
                (*(value.as_ptr() as *const RunningLoopHolder)).rl_loop as usize
            }
            #[cfg(Py_3_12)]
            {
                value.as_ptr() as usize
            }
        }
        RunningLoopRecord::ThreadStateField(offset) => {
            let _ = py;
            *((ts as *const u8).add(offset) as *const usize)
        }
        #[cfg(tbc_published)]
        RunningLoopRecord::AsyncioDebug => return super::native::running_loop_ptr(py, ts),
        _ => return None,
    };
    (value != 0).then_some(value)
}
