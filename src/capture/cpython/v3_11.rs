//! CPython 3.11: `internal/pycore_frame.h`, `cpython/genobject.h`,
//! `cpython/frameobject.h` (private part in `internal/pycore_frame.h`),
//! `internal/pycore_gc.h` and `Modules/_asynciomodule.c`.

use super::{GenState, RunningLoopRecord};
use pyo3::ffi;
use std::os::raw::{c_char, c_int};

/// `_PyInterpreterFrame`.
#[repr(C)]
pub struct InterpreterFrame {
    f_func: *mut ffi::PyObject,
    f_globals: *mut ffi::PyObject,
    f_builtins: *mut ffi::PyObject,
    f_locals: *mut ffi::PyObject,
    f_code: *mut ffi::PyCodeObject,
    frame_obj: *mut ffi::PyObject,
    previous: *mut InterpreterFrame,
    prev_instr: *mut u16,
    stacktop: c_int,
    is_entry: bool,
    owner: c_char,
    localsplus: [*mut ffi::PyObject; 1],
}

impl super::InterpreterFrame for InterpreterFrame {
    fn executable(&self) -> *mut ffi::PyObject {
        self.f_code as *mut ffi::PyObject
    }
    fn previous(&self) -> *mut Self {
        self.previous
    }
    fn frame_obj(&self) -> *mut ffi::PyObject {
        self.frame_obj
    }
    fn instr(&self) -> usize {
        self.prev_instr as usize
    }
    fn is_shim(&self) -> bool {
        false // 3.11 pushes no shim frames
    }
    fn stack_depth(&self) -> c_int {
        self.stacktop
    }
    fn localsplus(&self) -> *const *mut ffi::PyObject {
        self.localsplus.as_ptr()
    }
}

/// `PyFrameObject` (private since 3.11), up to the interpreter frame it
/// stands for while that runs (`f_frame`, pointing into the thread's stack).
#[repr(C)]
pub struct FrameObject {
    ob_base: ffi::PyObject,
    pub f_back: *mut ffi::PyObject,
    pub f_frame: *mut InterpreterFrame,
}

/// `_PyGenObject_HEAD` (generators, coroutines and async generators alike):
/// the state and the interpreter frame the object embeds.
#[repr(C)]
pub struct GenObject {
    ob_base: ffi::PyObject,
    gi_code: *mut ffi::PyObject,
    gi_weakreflist: *mut ffi::PyObject,
    gi_name: *mut ffi::PyObject,
    gi_qualname: *mut ffi::PyObject,
    gi_exc_state: [*mut ffi::PyObject; 2],
    gi_origin_or_finalizer: *mut ffi::PyObject,
    gi_hooks_inited: c_char,
    gi_closed: c_char,
    gi_running_async: c_char,
    gi_frame_state: i8,
    pub gi_iframe: InterpreterFrame,
}

impl GenObject {
    /// `FRAME_CREATED` -2, `SUSPENDED` -1, `EXECUTING` 0, then
    /// `COMPLETED` 1 and `CLEARED` 4. One suspended state for `yield` and
    /// `await` alike.
    pub fn state(&self) -> GenState {
        match self.gi_frame_state {
            -2 => GenState::Created,
            -1 => GenState::Suspended { in_await: true },
            0 => GenState::Running,
            _ => GenState::Done,
        }
    }
}

// The interpreter's own header, as pyo3 mirrors it, agrees.
const _: () = assert!(
    std::mem::offset_of!(GenObject, gi_frame_state)
        == std::mem::offset_of!(ffi::PyGenObject, gi_frame_state)
);
const _: () = assert!(
    std::mem::offset_of!(GenObject, gi_iframe) == std::mem::offset_of!(ffi::PyGenObject, gi_iframe)
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

/// Whether [`InterpreterFrame`] may be read in place: this version
/// publishes no offsets to check it against.
pub fn frames_agree() -> bool {
    true
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

/// The head of `PyDictKeysObject` (`struct _dictkeysobject`, the same in
/// the default and free-threaded builds up to `dk_kind`): whether every key
/// is an exact `str`, so that a hashed lookup compares only `str`s.
#[repr(C)]
pub struct DictKeysHead {
    pub dk_refcnt: isize,
    pub dk_log2_size: u8,
    pub dk_log2_index_bytes: u8,
    pub dk_kind: u8,
}

/// `dk_kind` of a dict that may hold keys of any type (`DICT_KEYS_GENERAL`);
/// the other kinds (unicode, split) hold exact `str` keys only.
pub const DICT_KEYS_GENERAL: u8 = 0;

/// `offsetof(PyThreadState, context)` (`cpython/pystate.h`, 64-bit): the
/// `contextvars.Context` the thread runs in (labels). Checked against the
/// calling thread's before any other thread's is read.
pub const THREAD_STATE_CONTEXT: usize = 224;

/// `offsetof(PyThreadState, thread_id)` and `native_thread_id` (`cpython/pystate.h`, 64-bit).
pub const THREAD_STATE_IDS: super::ThreadStateIds = super::ThreadStateIds {
    thread_id: 152,
    native_thread_id: Some(160),
};

/// `TaskObj` (`Modules/_asynciomodule.c`, 64-bit): the C task offers no
/// getter for its context before 3.12's `get_context()`. Used only when the
/// type's size matches and the coroutine read at `coro` is the one the
/// `_coro` getter returns.
pub const TASK_CONTEXT: Option<super::TaskContextLayout> = Some(super::TaskContextLayout {
    size: 176,
    coro: 136,
    context: 152,
});

/// `_thread.lock` and `_thread.RLock`, as 3.9 to 3.12 lay them out.
#[path = "thread_locks_3_9.rs"]
mod thread_locks;
pub use thread_locks::{Lock, RLock};

/// Where a code object's bytecode (`co_code_adaptive`) starts: right after
/// the fixed part of the variable-size object, at `PyCode_Type.tp_basicsize`.
///
/// # Safety
/// `code` is a live code object; the GIL is held.
pub unsafe fn bytecode_start(code: *mut ffi::PyObject) -> usize {
    code as usize + (*std::ptr::addr_of!(ffi::PyCode_Type)).tp_basicsize as usize
}
