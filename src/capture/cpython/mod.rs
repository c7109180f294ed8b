//! What the capture knows of CPython's internals, one place per version:
//! every struct layout it reads in place, and where to find what in the
//! offsets the interpreter publishes.
//!
//! `v3_9.rs` .. `v3_15.rs` each describe one minor version, complete on
//! its own (a new version starts as a copy of the previous file; see
//! docs/design.md, "Per-version layouts"). [`current`] is the file of the
//! version this build was compiled for; each offers the same names for what
//! it has. Which families of layouts a version has is decided in `build.rs`
//! (`tbc_iframe`, `tbc_gc_lists`, `tbc_frame_prefix`), so code that reads a
//! layout says `#[cfg(tbc_iframe)]`, never a list of versions.
//!
//! 3.13 and later publish their own offsets for debuggers: `_PyRuntime`
//! begins with `_Py_DebugOffsets` (3.13+), and the `_asyncio` extension
//! carries `Py_AsyncioModuleDebugOffsets` in its `.AsyncioDebug` section
//! (3.14+). Where they exist they are preferred over compiled-in layouts,
//! or checked against them before those are used.
//!
//! Nothing here decides whether a read is right for a given object: the
//! callers check types first, and compare their reads with the C API once
//! per capture (`inert::CheckedRead`). Layouts of extension modules
//! (greenlet, gevent), the same on every CPython version, are in
//! [`greenlet`].

pub mod published;
pub mod v3_14;
pub mod v3_15;

/// The CPython versions this build of tbcollect knows how to read.
pub const KNOWN: std::ops::RangeInclusive<(u8, u8)> = (3, 9)..=(3, 15);

/// Test hook: `TBCOLLECT_TEST_PRETEND_PYTHON=3.99` makes the capture take
/// the running interpreter for that version, so that the "unknown version"
/// path can be tested on a real interpreter.
pub const PRETEND_ENV: &str = "TBCOLLECT_TEST_PRETEND_PYTHON";

/// The running interpreter's (major, minor), or the pretended one.
pub fn running_version(actual: (u8, u8)) -> (u8, u8) {
    std::env::var(PRETEND_ENV)
        .ok()
        .and_then(|v| parse_version(&v))
        .unwrap_or(actual)
}

fn parse_version(text: &str) -> Option<(u8, u8)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Why the interpreter's task registries cannot be read, if they cannot:
/// a version newer (or older) than this build knows, or a free-threaded
/// build, where other threads mutate the task lists without a GIL to stop them.
pub fn unreadable(version: (u8, u8), free_threaded: bool) -> Option<String> {
    if free_threaded {
        return Some(format!(
            "free-threaded CPython {}.{} (Py_GIL_DISABLED) is not supported: \
             its task lists change under other threads while they are read",
            version.0, version.1
        ));
    }
    if !KNOWN.contains(&version) {
        return Some(format!(
            "CPython {}.{} is not one this tbcollect knows ({}.{} to {}.{}); \
             its task layout is unknown",
            version.0,
            version.1,
            KNOWN.start().0,
            KNOWN.start().1,
            KNOWN.end().0,
            KNOWN.end().1
        ));
    }
    None
}

/// Why a free-threaded build (`Py_GIL_DISABLED`) gets no stacks of `kind`
/// (`"thread"`, `"greenlet"`): without a GIL, the threads whose frames and
/// greenlets would be read keep running, and may free what is being read.
/// Only public APIs that stop the world could read them safely, and frame
/// chains have none; so capture reads none and says so.
pub fn free_threaded_refusal(kind: &str) -> String {
    format!(
        "{kind}s not captured: free-threaded CPython (Py_GIL_DISABLED) is not supported: \
         other threads run while their {kind}s' frames would be read"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_free_threaded_versions_are_unreadable() {
        assert_eq!(unreadable((3, 14), false), None);
        assert_eq!(unreadable((3, 9), false), None);
        let newer = unreadable((3, 99), false).unwrap();
        assert!(
            newer.contains("CPython 3.99") && newer.contains("3.9 to 3.15"),
            "{newer}"
        );
        assert!(unreadable((3, 8), false).is_some());
        assert!(unreadable((3, 14), true)
            .unwrap()
            .contains("Py_GIL_DISABLED"));
    }

    #[test]
    fn free_threaded_builds_say_which_kind_is_not_captured() {
        let why = free_threaded_refusal("greenlet");
        assert!(why.starts_with("greenlets not captured: "), "{why}");
        assert!(why.contains("Py_GIL_DISABLED"), "{why}");
    }

    #[test]
    fn stack_references_name_objects_only() {
        for stackref in [v3_14::stackref_object, v3_15::stackref_object] {
            assert_eq!(stackref(0x7f00_1000), Some(0x7f00_1000));
            assert_eq!(stackref(0x7f00_1001), Some(0x7f00_1000), "deferred");
            assert_eq!(stackref(0x7f00_1002), None, "invalid");
            assert_eq!(stackref(0x7f00_1003), None, "tagged int");
            assert_eq!(stackref(0), None);
            assert_eq!(stackref(1), None);
        }
    }

    #[test]
    fn versions_parse_as_major_dot_minor() {
        assert_eq!(parse_version("3.99"), Some((3, 99)));
        assert_eq!(parse_version(" 3.14\n"), Some((3, 14)));
        assert_eq!(parse_version("3"), None);
        assert_eq!(parse_version("x.y"), None);
    }
}

#[cfg(feature = "python")]
pub mod greenlet;

#[cfg(all(feature = "python", Py_3_9, not(Py_3_10)))]
pub mod v3_9;
#[cfg(all(Py_3_9, not(Py_3_10)))]
pub use v3_9 as current;

#[cfg(all(feature = "python", Py_3_10, not(Py_3_11)))]
pub mod v3_10;
#[cfg(all(Py_3_10, not(Py_3_11)))]
pub use v3_10 as current;

#[cfg(all(feature = "python", Py_3_11, not(Py_3_12)))]
pub mod v3_11;
#[cfg(all(Py_3_11, not(Py_3_12)))]
pub use v3_11 as current;

#[cfg(all(feature = "python", Py_3_12, not(Py_3_13)))]
pub mod v3_12;
#[cfg(all(Py_3_12, not(Py_3_13)))]
pub use v3_12 as current;

#[cfg(all(feature = "python", Py_3_13, not(Py_3_14)))]
pub mod v3_13;
#[cfg(all(Py_3_13, not(Py_3_14)))]
pub use v3_13 as current;

#[cfg(all(Py_3_14, not(Py_3_15)))]
pub use v3_14 as current;
// Also a CPython newer than 3.15 (pyo3 sets `Py_3_15` there too), on
// purpose: `build.rs` warns, and `unreadable` refuses its tasks at run time.
#[cfg(Py_3_15)]
pub use v3_15 as current;

/// What the capture reads of a `_PyInterpreterFrame` (3.11+), whichever
/// version's struct it is. Implemented by `current::InterpreterFrame`, a
/// `#[repr(C)]` mirror; a reference to one is made only from a frame the
/// interpreter handed over (a thread's, a generator's), with the GIL held.
#[cfg(feature = "python")]
pub trait InterpreterFrame {
    /// The code object it runs (`f_code`; 3.13's `f_executable`, which may
    /// be something else): not checked to be code.
    fn executable(&self) -> *mut pyo3::ffi::PyObject;
    /// The frame that called it, shim frames included.
    fn previous(&self) -> *mut Self;
    /// The frame object made for it, or null.
    fn frame_obj(&self) -> *mut pyo3::ffi::PyObject;
    /// The instruction pointer the interpreter keeps (3.11/3.12 `prev_instr`,
    /// 3.13 `instr_ptr`), as an address.
    fn instr(&self) -> usize;
    /// Whether it is a shim frame an entry from C pushes (3.12+
    /// `FRAME_OWNED_BY_CSTACK`), which is no Python frame.
    fn is_shim(&self) -> bool;
    /// The value stack's depth past `localsplus` (`stacktop`), as saved
    /// when the frame was suspended.
    fn stack_depth(&self) -> std::os::raw::c_int;
    /// The first of the fast slots and value stack (`localsplus`).
    fn localsplus(&self) -> *const *mut pyo3::ffi::PyObject;
}

/// What the capture reads of `_thread.lock` and `_thread.RLock` objects
/// (`lockobject`, `rlockobject` in `Modules/_threadmodule.c`), whichever
/// version's structs they are. Implemented by `current::Lock` and
/// `current::RLock`, `#[repr(C)]` mirrors whose size the caller compares
/// with the type's `tp_basicsize` before reading.
#[cfg(feature = "python")]
pub trait ThreadLock {
    /// Reads the lock's fields once, each with a volatile load: other
    /// threads take and release it without the GIL.
    ///
    /// # Safety
    /// `this` points at a live object of exactly this lock type, whose
    /// `tp_basicsize` is at least `size_of::<Self>()`; the GIL is held.
    unsafe fn read(this: *const Self) -> LockFields;
}

/// A lock's fields as the capture uses them.
#[cfg(feature = "python")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockFields {
    /// The address of the OS lock a thread blocked on it waits on (the
    /// futex the kernel reports), or 0 where waiters park elsewhere (3.13+).
    pub os_lock: u64,
    /// The ident of the thread holding it, or 0 (a plain lock records none).
    pub owner: u64,
    pub held: bool,
}

/// The state of a generator, coroutine or async generator (3.11+
/// `gi_frame_state`), as the capture needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    Created,
    /// Suspended at a `yield` (a generator's) or inside an `await` /
    /// `yield from` (`in_await`: its stack top is what it awaits).
    Suspended {
        in_await: bool,
    },
    Running,
    /// Completed or cleared: its frame is going.
    Done,
}

/// Where `_asyncio` records each thread's running loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningLoopRecord {
    /// 3.9-3.11: `__asyncio_running_event_loop__` in the thread state's dict,
    /// inside a `_RunningLoopHolder` (`current::RunningLoopHolder`).
    HolderInThreadDict,
    /// 3.12: the loop itself, under the same key of the thread state's dict.
    LoopInThreadDict,
    /// 3.13: a field this many bytes into the thread state.
    ThreadStateField(usize),
    /// 3.14+: where `.AsyncioDebug` says (see `tasks::native`).
    AsyncioDebug,
    /// Not known for this build.
    Unknown,
}

/// Where a thread state (`PyThreadState`, `cpython/pystate.h`, 64-bit)
/// keeps its thread's ids (each version's `THREAD_STATE_IDS`). Checked
/// against the calling thread's own state before any other is read.
#[derive(Debug, Clone, Copy)]
pub struct ThreadStateIds {
    /// `thread_id`: the ident (`pthread_self()`) `sys._current_frames()`
    /// keys its answer by.
    pub thread_id: usize,
    /// `native_thread_id`, the OS thread id (3.11+; the state has none before).
    pub native_thread_id: Option<usize>,
}

/// Where a C `_asyncio.Task` keeps its context (3.9-3.11; see each
/// version's `TASK_CONTEXT`), in bytes from the object's start.
#[derive(Debug, Clone, Copy)]
pub struct TaskContextLayout {
    /// `sizeof(TaskObj)`, the type's `tp_basicsize`.
    pub size: usize,
    /// `task_coro`.
    pub coro: usize,
    /// `task_context`.
    pub context: usize,
}

/// `PyContext` (`internal/pycore_context.h`), the same 3.7 to 3.15, up to
/// its variables: copies of a context share them until one is changed.
#[cfg(feature = "python")]
#[repr(C)]
pub struct ContextObject {
    ob_base: pyo3::ffi::PyObject,
    pub ctx_prev: *mut pyo3::ffi::PyObject,
    pub ctx_vars: *mut pyo3::ffi::PyObject,
}
