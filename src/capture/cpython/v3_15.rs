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
    gen_iframe: 101,
    gen_frame_state: 102,
};

/// Unchanged from 3.14.
pub const MODULE_STATE: super::published::ModuleStateLayout = super::v3_14::MODULE_STATE;

/// As 3.14.
pub use super::v3_14::running_loop_record;

/// Renumbered from 0: FRAME_CREATED 0, SUSPENDED 1, SUSPENDED_YIELD_FROM 2,
/// SUSPENDED_YIELD_FROM_LOCKED 3, EXECUTING 4, CLEARED 5 (no COMPLETED).
pub const FRAME_STATES: super::published::FrameStates = super::published::FrameStates {
    executing: 4,
    finished_from: 5,
};
