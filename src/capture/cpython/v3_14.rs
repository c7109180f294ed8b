//! CPython 3.14: where things are in the offsets the interpreter publishes.
//!
//! `_Py_DebugOffsets` is a struct of `u64`s whose fields grow from version
//! to version; these are the indices (in `u64`s) of the fields the capture
//! checks its other sources against. Counted from 3.14's
//! `Include/internal/pycore_debug_offsets.h`.

use super::published::DebugLayout;

pub const DEBUG_LAYOUT: DebugLayout = DebugLayout {
    words: 95,
    interpreter_state_size: 6,
    thread_state_size: 22,
    llist_next: 87,
    llist_prev: 88,
    frame_localsplus: 35,
    frame_stackpointer: 37,
    gen_iframe: 85,
    gen_frame_state: 86,
};

/// `asyncio_state` of `Modules/_asynciomodule.c` (the `_asyncio` module's
/// state), in pointers: `FutureIterType, TaskStepMethWrapper_Type,
/// FutureType, TaskType, asyncio_mod, context_kwname, non_asyncio_tasks,
/// non_asyncio_eager_tasks, ...`. The two sets hold the tasks that are not
/// `_asyncio.Task`s (pure-Python `_PyTask`, third-party task types).
pub const MODULE_STATE: super::published::ModuleStateLayout = super::published::ModuleStateLayout {
    future_type: 2,
    task_type: 3,
    non_native_tasks: 6,
    non_native_eager_tasks: 7,
};

/// Each thread's running loop: a thread-state field `.AsyncioDebug` names
/// (`tasks::native`); none a free-threaded build's capture may read.
pub fn running_loop_record() -> super::RunningLoopRecord {
    if cfg!(Py_GIL_DISABLED) {
        super::RunningLoopRecord::Unknown
    } else {
        super::RunningLoopRecord::AsyncioDebug
    }
}

/// FRAME_CREATED -3, SUSPENDED -2, SUSPENDED_YIELD_FROM -1, EXECUTING 0,
/// COMPLETED 1, CLEARED 4 (as 3.13).
pub const FRAME_STATES: super::published::FrameStates = super::published::FrameStates {
    executing: 0,
    in_await: -1,
    finished_from: 1,
};

/// The object a `_PyStackRef` (`internal/pycore_stackref.h`, builds with
/// the GIL) refers to: bit 0 marks a deferred reference (`Py_TAG_REFCNT`),
/// and a word with bit 1 set is no object (`Py_TAG_INVALID` 2, a tagged
/// int `Py_INT_TAG` 3). `None` for those and for NULL.
pub fn stackref_object(bits: usize) -> Option<usize> {
    const TAG_BITS: usize = 3;
    const NOT_AN_OBJECT: usize = 2;
    if bits & NOT_AN_OBJECT != 0 {
        return None;
    }
    let ptr = bits & !TAG_BITS;
    (ptr != 0).then_some(ptr)
}

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
pub const THREAD_STATE_CONTEXT: usize = 208;

/// `offsetof(PyThreadState, thread_id)` and `native_thread_id` (`cpython/pystate.h`, 64-bit).
/// The same offsets as `_Py_DebugOffsets.thread_state` publishes.
pub const THREAD_STATE_IDS: super::ThreadStateIds = super::ThreadStateIds {
    thread_id: 152,
    native_thread_id: Some(160),
};

/// None: the C task's context is read through its own `get_context()`.
pub const TASK_CONTEXT: Option<super::TaskContextLayout> = None;

/// `lockobject` (`Modules/_threadmodule.c`): the header and a `PyMutex`,
/// one byte whose bit 0 says it is locked (the weakref list is managed).
#[cfg(feature = "python")]
#[repr(C)]
pub struct Lock {
    ob_base: pyo3::ffi::PyObject,
    lock: u8,
}

/// `rlockobject`: the header and a `_PyRecursiveMutex` (the `PyMutex`,
/// padded to a word, the owner's `PyThread_ident_t`, the recursion level).
#[cfg(feature = "python")]
#[repr(C)]
pub struct RLock {
    ob_base: pyo3::ffi::PyObject,
    mutex: u8,
    thread: u64,
    level: usize,
}

/// `_Py_LOCKED`, the bit of a `PyMutex` that says it is held.
#[cfg(feature = "python")]
const PY_LOCKED: u8 = 1;

// A `PyMutex`'s waiters park in the interpreter's parking lot: no futex
// word names the lock, so `os_lock` is 0.
#[cfg(feature = "python")]
impl super::ThreadLock for Lock {
    unsafe fn read(this: *const Self) -> super::LockFields {
        super::LockFields {
            os_lock: 0,
            owner: 0,
            held: std::ptr::addr_of!((*this).lock).read_volatile() & PY_LOCKED != 0,
        }
    }
}

#[cfg(feature = "python")]
impl super::ThreadLock for RLock {
    unsafe fn read(this: *const Self) -> super::LockFields {
        let owner = std::ptr::addr_of!((*this).thread).read_volatile();
        super::LockFields {
            os_lock: 0,
            owner,
            held: owner != 0,
        }
    }
}
