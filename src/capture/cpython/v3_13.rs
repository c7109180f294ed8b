//! CPython 3.13: `internal/pycore_frame.h`, `cpython/genobject.h`,
//! `cpython/frameobject.h` (private part in `internal/pycore_frame.h`),
//! `internal/pycore_gc.h` and `Modules/_asynciomodule.c`.

use super::{GenState, RunningLoopRecord};
use pyo3::ffi;
use std::os::raw::{c_char, c_int, c_ulong, c_void};

/// `_PyInterpreterFrame`.
#[repr(C)]
pub struct InterpreterFrame {
    f_executable: *mut ffi::PyObject,
    previous: *mut InterpreterFrame,
    f_funcobj: *mut ffi::PyObject,
    f_globals: *mut ffi::PyObject,
    f_builtins: *mut ffi::PyObject,
    f_locals: *mut ffi::PyObject,
    frame_obj: *mut ffi::PyObject,
    instr_ptr: *mut u16,
    stacktop: c_int,
    return_offset: u16,
    owner: c_char,
    localsplus: [*mut ffi::PyObject; 1],
}

/// `FRAME_OWNED_BY_CSTACK`: the shim frame an entry from C pushes.
const FRAME_OWNED_BY_CSTACK: c_char = 3;

impl super::InterpreterFrame for InterpreterFrame {
    fn executable(&self) -> *mut ffi::PyObject {
        self.f_executable
    }
    fn previous(&self) -> *mut Self {
        self.previous
    }
    fn frame_obj(&self) -> *mut ffi::PyObject {
        self.frame_obj
    }
    fn instr(&self) -> usize {
        self.instr_ptr as usize
    }
    fn is_shim(&self) -> bool {
        self.owner == FRAME_OWNED_BY_CSTACK
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
    /// `FRAME_CREATED` -3, `SUSPENDED` -2, `SUSPENDED_YIELD_FROM` -1,
    /// `EXECUTING` 0, then `COMPLETED` 1 and `CLEARED` 4.
    pub fn state(&self) -> GenState {
        match self.gi_frame_state {
            -3 => GenState::Created,
            -2 => GenState::Suspended { in_await: false },
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

/// `_PyThreadStateImpl.asyncio_running_loop`, its first field after the
/// public `PyThreadState`: at `debug_offsets.thread_state.size`.
pub fn running_loop_record() -> RunningLoopRecord {
    match published() {
        Some(offsets) => RunningLoopRecord::ThreadStateField(offsets.thread_state.size as usize),
        None => RunningLoopRecord::Unknown,
    }
}

/// Whether the interpreter's published offsets of `_PyInterpreterFrame`
/// are those of [`InterpreterFrame`]: interpreter frames are read in place
/// only then.
pub fn frames_agree() -> bool {
    use std::mem::offset_of;
    static AGREE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AGREE.get_or_init(|| {
        published().is_some_and(|o| {
            let f = &o.interpreter_frame;
            let at = |n: usize| n as u64;
            f.previous == at(offset_of!(InterpreterFrame, previous))
                && f.executable == at(offset_of!(InterpreterFrame, f_executable))
                && f.instr_ptr == at(offset_of!(InterpreterFrame, instr_ptr))
                && f.localsplus == at(offset_of!(InterpreterFrame, localsplus))
                && f.owner == at(offset_of!(InterpreterFrame, owner))
        })
    })
}

/// The start of `_Py_DebugOffsets` (`internal/pycore_runtime.h`), the
/// first field of `_PyRuntime`, which the interpreter fills for debuggers.
#[repr(C)]
struct DebugOffsets {
    cookie: [u8; 8],
    version: u64,
    free_threaded: u64,
    runtime_state: [u64; 3],
    interpreter_state: [u64; 13],
    thread_state: ThreadStateOffsets,
    interpreter_frame: FrameOffsets,
}

#[repr(C)]
struct ThreadStateOffsets {
    size: u64,
    prev: u64,
    next: u64,
    interp: u64,
    current_frame: u64,
    thread_id: u64,
    native_thread_id: u64,
    datastack_chunk: u64,
    status: u64,
}

#[repr(C)]
struct FrameOffsets {
    size: u64,
    previous: u64,
    executable: u64,
    instr_ptr: u64,
    localsplus: u64,
    owner: u64,
}

extern "C" {
    // PyAPI_DATA(_PyRuntimeState) _PyRuntime: only its first field is read.
    static _PyRuntime: DebugOffsets;
}

/// The published offsets, when their cookie and version say they are
/// 3.13's (`_Py_Debug_Cookie`, `PY_VERSION_HEX`) and the build has the GIL.
fn published() -> Option<&'static DebugOffsets> {
    // SAFETY: `_PyRuntime` is a static of libpython, initialised before any
    // extension is imported; its debug offsets are written once, at build
    // time, and never change.
    let offsets = unsafe { &*std::ptr::addr_of!(_PyRuntime) };
    (&offsets.cookie == b"xdebugpy"
        && offsets.version >> 16 == 0x030d
        && offsets.free_threaded == 0
        && (64..=4096).contains(&offsets.thread_state.size)
        && offsets.thread_state.size % 8 == 0)
        .then_some(offsets)
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
pub const THREAD_STATE_CONTEXT: usize = 208;

/// `offsetof(PyThreadState, thread_id)` and `native_thread_id` (`cpython/pystate.h`, 64-bit).
/// The same offsets as `_Py_DebugOffsets.thread_state` publishes.
pub const THREAD_STATE_IDS: super::ThreadStateIds = super::ThreadStateIds {
    thread_id: 152,
    native_thread_id: Some(160),
};

/// None: the C task's context is read through its own `get_context()`.
pub const TASK_CONTEXT: Option<super::TaskContextLayout> = None;

/// `lockobject` (`Modules/_threadmodule.c`): the OS lock, the weakref
/// list, and the `locked` flag the lock's methods keep.
#[repr(C)]
pub struct Lock {
    ob_base: ffi::PyObject,
    lock_lock: *mut c_void,
    in_weakreflist: *mut ffi::PyObject,
    locked: c_char,
}

/// `rlockobject`: the OS lock, the owner's ident, the recursion count.
#[repr(C)]
pub struct RLock {
    ob_base: ffi::PyObject,
    rlock_lock: *mut c_void,
    /// `PyThread_ident_t` since 3.13.
    rlock_owner: u64,
    rlock_count: c_ulong,
    in_weakreflist: *mut ffi::PyObject,
}

// 3.13's OS lock is a `PyMutex` whose waiters park in the interpreter's
// parking lot: no futex word names the lock, so `os_lock` is 0.
impl super::ThreadLock for Lock {
    unsafe fn read(this: *const Self) -> super::LockFields {
        super::LockFields {
            os_lock: 0,
            owner: 0,
            held: std::ptr::addr_of!((*this).locked).read_volatile() != 0,
        }
    }
}

impl super::ThreadLock for RLock {
    unsafe fn read(this: *const Self) -> super::LockFields {
        let owner = std::ptr::addr_of!((*this).rlock_owner).read_volatile();
        super::LockFields {
            os_lock: 0,
            owner,
            held: owner != 0,
        }
    }
}
