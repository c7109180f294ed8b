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

/// None: the C task's context is read through its own `get_context()`.
pub const TASK_CONTEXT: Option<super::TaskContextLayout> = None;
