//! CPython 3.9: `cpython/frameobject.h`, `cpython/genobject.h`,
//! `internal/pycore_gc.h` and `Modules/_asynciomodule.c`.

use super::RunningLoopRecord;
use pyo3::ffi;
use std::os::raw::c_int;

/// The public `PyFrameObject`, up to `f_valuestack`, which points just
/// past the fast slots (locals, cells, free variables) at the end of the
/// object (`f_localsplus`).
#[repr(C)]
pub struct FrameObject {
    ob_base: ffi::PyVarObject,
    pub f_back: *mut ffi::PyObject,
    pub f_code: *mut ffi::PyCodeObject,
    f_builtins: *mut ffi::PyObject,
    f_globals: *mut ffi::PyObject,
    pub f_locals: *mut ffi::PyObject,
    pub f_valuestack: *mut *mut ffi::PyObject,
}

/// Where the trailing `f_localsplus` array (the fast slots, then the value
/// stack) of a frame object starts: it is the struct's last member, one
/// pointer before `PyFrame_Type.tp_basicsize`.
///
/// # Safety
/// `frame` is a live frame object; the GIL is held.
pub unsafe fn localsplus(frame: *mut ffi::PyFrameObject) -> usize {
    let basic = (*std::ptr::addr_of!(ffi::PyFrame_Type)).tp_basicsize as usize;
    frame as usize + basic - std::mem::size_of::<*mut ffi::PyObject>()
}

/// `_PyGenObject_HEAD` (generators, coroutines and async generators alike),
/// up to the frame object it holds (NULL once finished).
#[repr(C)]
pub struct GenObject {
    ob_base: ffi::PyObject,
    pub gi_frame: *mut ffi::PyFrameObject,
}

const _: () = assert!(
    std::mem::offset_of!(GenObject, gi_frame) == std::mem::offset_of!(ffi::PyGenObject, gi_frame)
);

/// `_RunningLoopHolder` (`PyObject_HEAD; PyObject *rl_loop; pid_t rl_pid`).
#[repr(C)]
pub struct RunningLoopHolder {
    ob_base: ffi::PyObject,
    pub rl_loop: *mut ffi::PyObject,
}

pub fn running_loop_record() -> RunningLoopRecord {
    RunningLoopRecord::HolderInThreadDict
}

/// `PyGC_Head`: two words, whose low bits are flags.
#[repr(C)]
pub struct GcHead {
    pub next: usize,
    pub prev: usize,
}

/// `struct gc_generation`; the interpreter's GC state holds three in a row.
#[repr(C)]
pub struct Generation {
    pub head: GcHead,
    pub threshold: c_int,
    pub count: c_int,
}

pub const GENERATIONS: usize = 3;
/// `_PyGC_PREV_MASK`: `_gc_prev` keeps two flag bits.
pub const GC_PREV_MASK: usize = !3;
/// `NEXT_MASK_UNREACHABLE`, the flag bit of `_gc_next`.
pub const GC_NEXT_MASK: usize = !1;

/// `offsetof(PyThreadState, context)` (`cpython/pystate.h`, 64-bit): the
/// `contextvars.Context` the thread runs in (labels). Checked against the
/// calling thread's before any other thread's is read.
pub const THREAD_STATE_CONTEXT: usize = 240;

/// `offsetof(PyThreadState, thread_id)` and `native_thread_id` (`cpython/pystate.h`, 64-bit).
/// No `native_thread_id` before 3.11; a state's frame is a frame object
/// then, which stays valid in a child forked from C (see `threads::live_thread_states`).
pub const THREAD_STATE_IDS: super::ThreadStateIds = super::ThreadStateIds {
    thread_id: 176,
    native_thread_id: None,
};

/// `TaskObj` (`Modules/_asynciomodule.c`, 64-bit): the C task offers no
/// getter for its context before 3.12's `get_context()`. Used only when the
/// type's size matches and the coroutine read at `coro` is the one the
/// `_coro` getter returns.
pub const TASK_CONTEXT: Option<super::TaskContextLayout> = Some(super::TaskContextLayout {
    size: 184,
    coro: 152,
    context: 168,
});

/// `_thread.lock` and `_thread.RLock`, as 3.9 to 3.12 lay them out.
#[path = "thread_locks_3_9.rs"]
mod thread_locks;
pub use thread_locks::{Lock, RLock};
