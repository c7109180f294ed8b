//! CPython 3.15: as 3.14 (see `v3_14`), with more fields in
//! `_Py_DebugOffsets` (thread state: base frame, profiling and GIL fields;
//! type object: basicsize, dictoffset; heap type; GC stats), counted from
//! 3.15's `Include/internal/pycore_debug_offsets.h`. `_asyncio`'s own
//! offsets (`.AsyncioDebug`) keep 3.14's struct; the symbol is renamed
//! `_Py_AsyncioDebug`, which is why the section, not the symbol, is read.

use super::published::DebugLayout;

pub const DEBUG_LAYOUT: DebugLayout = DebugLayout {
    words: 111,
    interpreter_state_size: 6,
    thread_state_size: 22,
    llist_next: 103,
    llist_prev: 104,
    frame_localsplus: 43,
    frame_stackpointer: 45,
    gen_iframe: 101,
    gen_frame_state: 102,
};

/// Unchanged from 3.14.
pub const MODULE_STATE: super::published::ModuleStateLayout = super::v3_14::MODULE_STATE;

/// As 3.14.
pub use super::v3_14::{running_loop_record, stackref_object};

/// Renumbered from 0: FRAME_CREATED 0, SUSPENDED 1, SUSPENDED_YIELD_FROM 2,
/// SUSPENDED_YIELD_FROM_LOCKED 3, EXECUTING 4, CLEARED 5 (no COMPLETED).
pub const FRAME_STATES: super::published::FrameStates = super::published::FrameStates {
    executing: 4,
    in_await: 2,
    finished_from: 5,
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
pub const THREAD_STATE_CONTEXT: usize = 232;

/// `offsetof(PyThreadState, thread_id)` and `native_thread_id` (`cpython/pystate.h`, 64-bit).
/// The same offsets as `_Py_DebugOffsets.thread_state` publishes.
pub const THREAD_STATE_IDS: super::ThreadStateIds = super::ThreadStateIds {
    thread_id: 176,
    native_thread_id: Some(184),
};

/// None: the C task's context is read through its own `get_context()`.
pub const TASK_CONTEXT: Option<super::TaskContextLayout> = None;

/// `_thread.lock` and `_thread.RLock` as 3.14's.
#[cfg(feature = "python")]
pub use super::v3_14::{Lock, RLock};
