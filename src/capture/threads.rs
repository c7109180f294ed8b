//! The thread backend: every OS thread with a Python frame, named from
//! `threading` where it knows the thread.

use crate::capture::{enrich, lockwait, waits};
use crate::capture::{inert, Capture};
use crate::model::fasthash::{FastMap, FastSet};
use crate::model::{Stack, StackDetails, ThreadDetails};
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};

/// Name given to threads `threading` has no object for (started through
/// `_thread.start_new_thread` or from C).
pub const UNKNOWN_THREAD_NAME: &str = "<thread not known to threading>";

struct ThreadInfo {
    name: Option<String>,
    daemon: Option<bool>,
    native_id: Option<u64>,
}

/// The name of the main thread when `threading` cannot say (its own name for it).
pub const MAIN_THREAD_NAME: &str = "MainThread";

/// Ident of the main thread, noted whenever code runs on it (module import,
/// a capture): with gevent's monkey patching, `threading` keys the main
/// thread by a greenlet id and this is how it is found again.
static MAIN_THREAD_IDENT: AtomicU64 = AtomicU64::new(0);

/// Remembers the calling thread's ident if it is the process's main thread
/// (on Linux its native id is the pid).
pub fn note_main_thread() {
    if enrich::own_native_id() == Some(u64::from(std::process::id())) {
        // SAFETY: the GIL is held (called from the module's init or a capture).
        let ident = unsafe { ffi::PyThread_get_thread_ident() } as u64;
        MAIN_THREAD_IDENT.store(ident, Ordering::Relaxed);
    }
}

/// gevent's `monkey.patch_all()` makes `threading.get_ident()` return
/// greenlet ids, so `threading._active` no longer matches the OS idents of
/// `sys._current_frames()`. Entries whose ident matches no thread are moved
/// to the real ident by their native id: the calling thread's own, and the
/// main thread's (native id == pid).
fn rekey_patched_threads(
    known: &mut [(u64, ThreadInfo)],
    tops: &HashMap<u64, Bound<'_, PyAny>>,
    current: u64,
) {
    if known.iter().all(|(ident, _)| tops.contains_key(ident)) {
        return;
    }
    note_main_thread();
    let own = enrich::own_native_id();
    let pid = u64::from(std::process::id());
    let main = MAIN_THREAD_IDENT.load(Ordering::Relaxed);
    for (ident, info) in known.iter_mut() {
        if tops.contains_key(ident) {
            continue;
        }
        let real = match info.native_id {
            Some(n) if Some(n) == own => current,
            Some(n) if n == pid && main != 0 => main,
            _ => continue,
        };
        if tops.contains_key(&real) {
            *ident = real;
        }
    }
}

/// The ident of the process's main thread: the interpreter's own answer
/// where it gives one (`_thread._get_main_thread_ident`, a builtin, 3.12+;
/// right in a child forked from another thread too), else the ident noted
/// when code last ran on the thread whose OS id is the pid.
fn main_thread_ident(py: Python<'_>) -> u64 {
    let builtin = inert::imported_module(py, c"_thread")
        .and_then(|m| inert::module_attr(&m, c"_get_main_thread_ident"))
        // SAFETY: `f` is a live object (a `Bound`); only its type is checked.
        .filter(|f| unsafe { ffi::PyCFunction_Check(f.as_ptr()) } != 0)
        // SAFETY: a builtin of `_thread` (checked above) that takes no
        // arguments and runs no Python code.
        .and_then(|f| unsafe { inert::owned(py, ffi::PyObject_CallNoArgs(f.as_ptr())) })
        .and_then(|v| inert::int_value(&v));
    builtin.unwrap_or_else(|| MAIN_THREAD_IDENT.load(Ordering::Relaxed))
}

/// `threading._active` as ident -> info, in start order (MainThread first).
fn known_threads(py: Python<'_>) -> Vec<(u64, ThreadInfo)> {
    let mut out = Vec::new();
    let Some(threading) = inert::imported_module(py, c"threading") else {
        return out;
    };
    let Some(active) = inert::module_attr(&threading, c"_active") else {
        return out;
    };
    for (key, thread) in inert::dict_entries(&active).unwrap_or_default() {
        let Some(ident) = inert::int_value(&key) else {
            continue;
        };
        // Thread attributes are read from the instance dict: `name` and
        // `daemon` are properties a subclass may override.
        // Walked, not hashed into: a foreign key sharing a hash would
        // have its `__eq__` called by a hashed lookup.
        let [name, daemon, native_id] = match inert::instance_dict(&thread) {
            Some(dict) => inert::dict_get_scan_many(
                &dict,
                [
                    inert::interned!(py, "_name").as_any(),
                    inert::interned!(py, "_daemonic").as_any(),
                    inert::interned!(py, "_native_id").as_any(),
                ],
            ),
            None => [None, None, None],
        };
        out.push((
            ident,
            ThreadInfo {
                name: name.and_then(|v| name_text(&v)),
                daemon: daemon.and_then(|v| inert::bool_value(&v)),
                native_id: native_id.and_then(|v| inert::int_value(&v)),
            },
        ));
    }
    out
}

/// tbcollect's own OS threads (dumper, watchdog), ident -> name, from
/// `tbcollect._live.OWN_THREADS`: under gevent's monkey-patching they start
/// outside `threading`, which then knows them as `Dummy-N` or not at all.
/// Read as `threading._active` is: a dict walked in C, int keys, str values.
fn own_threads(py: Python<'_>) -> Vec<(u64, String)> {
    inert::imported_module(py, c"tbcollect._live")
        .and_then(|m| inert::module_attr(&m, c"OWN_THREADS"))
        .and_then(|table| inert::dict_entries(&table))
        .unwrap_or_default()
        .iter()
        .filter_map(|(key, value)| Some((inert::int_value(key)?, inert::str_value(value)?)))
        .collect()
}

/// (ident, native id, name) of every thread `threading` knows, read the way
/// a capture reads them (no user code): the raw dump's name table.
pub fn names(py: Python<'_>) -> Vec<(u64, Option<u64>, String)> {
    let own = own_threads(py);
    let mut out: Vec<(u64, Option<u64>, String)> = known_threads(py)
        .into_iter()
        .map(|(ident, info)| {
            let name = own
                .iter()
                .find(|(i, _)| *i == ident)
                .map(|(_, n)| n.clone())
                .or(info.name)
                .unwrap_or_else(|| UNKNOWN_THREAD_NAME.to_string());
            (ident, info.native_id, name)
        })
        .collect();
    for (ident, name) in own {
        if !out.iter().any(|(i, _, _)| *i == ident) {
            out.push((ident, None, name));
        }
    }
    out
}

/// A thread's `_name` as text, read without running any code: a `str` (or
/// subclass) as it is; the program may have set anything else, which is
/// shown by value when the interpreter holds it plainly (an int, bytes as
/// `b'...'`, a bool) and by type otherwise, never as an unknown thread.
fn name_text(value: &Bound<'_, PyAny>) -> Option<String> {
    if value.is_none() {
        return None;
    }
    if let Some(text) = inert::str_value(value) {
        return Some(text);
    }
    if let Some(flag) = inert::bool_value(value) {
        return Some(if flag { "True" } else { "False" }.into());
    }
    unsafe {
        // SAFETY: type checks first; the GIL is held; the bytes buffer is
        // read while `value` keeps it alive.
        if ffi::PyLong_Check(value.as_ptr()) != 0 {
            let n = ffi::PyLong_AsLongLong(value.as_ptr());
            if n == -1 && !ffi::PyErr_Occurred().is_null() {
                inert::clear_error();
                return Some("<int too large to show>".into());
            }
            return Some(n.to_string());
        }
        if ffi::PyBytes_Check(value.as_ptr()) != 0 {
            let ptr = ffi::PyBytes_AsString(value.as_ptr()) as *const u8;
            let len = ffi::PyBytes_Size(value.as_ptr());
            if ptr.is_null() || len < 0 {
                inert::clear_error();
                return Some("<bytes>".into());
            }
            let data = std::slice::from_raw_parts(ptr, len as usize);
            let mut out = String::from("b'");
            for &b in data {
                match b {
                    b'\\' => out.push_str("\\\\"),
                    b'\'' => out.push_str("\\'"),
                    0x20..=0x7e => out.push(b as char),
                    _ => out.push_str(&format!("\\x{b:02x}")),
                }
            }
            out.push('\'');
            return Some(out);
        }
    }
    Some(format!("<{} object>", inert::type_name(value)))
}

/// The interpreter's thread states that belong to threads of this process,
/// with their idents, newest first (the interpreter's order); see
/// [`live_thread_states`].
pub struct LiveThreadStates {
    pub states: Vec<(u64, *mut ffi::PyThreadState)>,
    /// States left out: threads this process does not have.
    pub left_out: usize,
}

/// The interpreter's thread states whose threads run in this process now.
///
/// A child forked straight from C (uWSGI's workers, unless uWSGI runs with
/// `--py-call-osafterfork`) keeps all its parent's thread states, since
/// `PyOS_AfterFork_Child` never ran there. Their threads are gone, and on
/// 3.11+ a state's frames are reached through memory on its thread's C
/// stack (3.11/3.12's `cframe`, the entry frames), which glibc hands on to
/// the child's new threads: `sys._current_frames()` follows it into
/// garbage (a uWSGI worker died of SIGSEGV there), and since a new thread
/// on a reused stack gets the dead one's ident, it gives the new thread the
/// dead thread's frames. So a state is left out, and nothing past the state
/// itself is read of it, when
/// - (3.11+, Linux) its OS thread id is no thread of this process, unless
///   it is the calling thread's own state, or the main thread's where that
///   was the parent's main thread: the thread that forked goes on in the
///   child under its old state, and the process's first stack is never
///   given to another thread;
/// - (3.9/3.10, whose states have no OS thread id, and whose frames are
///   frame objects, which stay valid) a newer state with the same ident
///   runs Python code: an ident is reused only once its thread has ended.
///   `enrich` drops the other threads of another process.
///
/// The ident offset is checked on the calling thread's own state first.
/// A state made in one thread and used from another (`PyThreadState_New`,
/// then `PyEval_RestoreThread` elsewhere) keeps its maker's OS id on 3.11+,
/// and is left out too if its maker has ended.
pub fn live_thread_states(py: Python<'_>) -> Result<LiveThreadStates, String> {
    let ids = crate::capture::cpython::current::THREAD_STATE_IDS;
    let wrong_layout = || {
        "thread states not checked for threads of another process: \
         the thread state's layout is not the one known for this Python"
            .to_string()
    };
    // SAFETY: the GIL is held (`py`), so no thread state is freed or added
    // while the list is walked; only the two id fields inside each state are
    // read, at offsets checked on the calling thread's own state first.
    let (own, all) = unsafe {
        let read = |ts: *mut ffi::PyThreadState, offset: usize| {
            *((ts as *const u8).add(offset) as *const u64)
        };
        let own = ffi::PyThreadState_Get();
        if read(own, ids.thread_id) != ffi::PyThread_get_thread_ident() as u64 {
            return Err(wrong_layout());
        }
        let mut all = Vec::new();
        let mut ts = ffi::PyInterpreterState_ThreadHead(ffi::PyInterpreterState_Get());
        while !ts.is_null() {
            let native = ids.native_thread_id.map(|at| read(ts, at));
            all.push((ts, read(ts, ids.thread_id), native));
            ts = ffi::PyThreadState_Next(ts);
        }
        (own, all)
    };
    let mut os_threads = match ids.native_thread_id {
        Some(_) if cfg!(target_os = "linux") => Some(OsThreads::of_this_process()),
        _ => None,
    };
    let mut out = LiveThreadStates {
        states: Vec::with_capacity(all.len()),
        left_out: 0,
    };
    let mut by_ident: FastMap<u64, usize> = FastMap::default();
    for (ts, ident, native) in all {
        if native == Some(0) {
            // Not bound to a thread yet (3.12+): a thread about to start.
            continue;
        }
        let in_this_process = match (&mut os_threads, native) {
            (Some(os), Some(native)) => {
                if ts == own && Some(native) != os.own && os.has(native) {
                    // Another live thread's id: the offset is wrong. (A stale
                    // one is possible: the thread that forked from C.)
                    return Err(wrong_layout());
                }
                ts == own || os.has_state(ts, native) || os.is_parents_main(py, ident, native)
            }
            _ => true,
        };
        if !in_this_process {
            out.left_out += 1;
            continue;
        }
        let Some(&at) = by_ident.get(&ident) else {
            by_ident.insert(ident, out.states.len());
            out.states.push((ident, ts));
            continue;
        };
        // Two states with one ident. A thread not started yet has its
        // parent's until it runs (3.9-3.11), and no frame; an older state
        // with a frame lost its ident to a new thread on its reused stack
        // (3.9/3.10, where no OS thread id tells it apart).
        match (has_frame(out.states[at].1), has_frame(ts)) {
            (false, true) => out.states[at] = (ident, ts),
            (true, true) => out.left_out += 1,
            _ => {}
        }
    }
    if let Some(os) = os_threads {
        os.keep();
    }
    Ok(out)
}

/// Whether a thread state that belongs to a thread of this process (see
/// [`live_thread_states`]) runs Python code.
fn has_frame(ts: *mut ffi::PyThreadState) -> bool {
    // SAFETY: the GIL is held (the caller's), and `ts` is a state whose
    // frames may be read; the new reference is released at once.
    unsafe {
        let frame = ffi::PyThreadState_GetFrame(ts) as *mut ffi::PyObject;
        if frame.is_null() {
            return false;
        }
        ffi::Py_DECREF(frame);
        true
    }
}

/// Thread states an earlier capture found to be a thread of this process,
/// as (state address, OS thread id), and the pid they were found in. A
/// state leaves the interpreter's list when its thread ends, so one found
/// before is still its thread's while it is listed with the same OS id; a
/// child forked from C has another pid and asks afresh. Saves a system call
/// per thread and dump (10% of a dump of 91 threads).
static FOUND_LIVE: Mutex<Option<(u32, StatesAndTids)>> = Mutex::new(None);

/// (thread state address, OS thread id) pairs.
type StatesAndTids = FastSet<(usize, u64)>;

/// What [`live_thread_states`] compares thread states with (Linux).
struct OsThreads {
    pid: u32,
    /// The calling thread's OS id.
    own: Option<u64>,
    /// The main thread's ident and the parent's pid (the OS id its main
    /// thread had), asked only once a state's OS thread is not found.
    main_and_parent: std::cell::OnceCell<(u64, u64)>,
    /// Found by earlier captures (see [`FOUND_LIVE`]), and by this one.
    found_before: StatesAndTids,
    found: StatesAndTids,
}

impl OsThreads {
    fn of_this_process() -> Self {
        let pid = std::process::id();
        let found_before = match FOUND_LIVE.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(TryLockError::Poisoned(e)) => e.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        OsThreads {
            pid,
            own: enrich::own_native_id(),
            main_and_parent: std::cell::OnceCell::new(),
            found_before: found_before
                .filter(|(found_in, _)| *found_in == pid)
                .map(|(_, found)| found)
                .unwrap_or_default(),
            found: FastSet::default(),
        }
    }

    /// Whether state `ts`, whose OS thread id is `tid`, is a thread of this process.
    fn has_state(&mut self, ts: *mut ffi::PyThreadState, tid: u64) -> bool {
        let key = (ts as usize, tid);
        let live = self.found_before.contains(&key) || self.has(tid);
        if live {
            self.found.insert(key);
        }
        live
    }

    /// Whether the state with `ident` and stale OS id `tid` is the main
    /// thread's, carried over from the parent's main thread: the thread
    /// that forked goes on as the child's.
    fn is_parents_main(&self, py: Python<'_>, ident: u64, tid: u64) -> bool {
        let &(main, parent) = self.main_and_parent.get_or_init(|| {
            (
                main_thread_ident(py),
                u64::from(std::os::unix::process::parent_id()),
            )
        });
        ident == main && tid == parent
    }

    /// Keeps what this capture found for the next.
    fn keep(self) {
        if let Ok(mut slot) = FOUND_LIVE.try_lock() {
            *slot = Some((self.pid, self.found));
        }
    }

    /// Whether OS thread `tid` is one of this process's, asked of the
    /// kernel with `tgkill(pid, tid, 0)`, which delivers nothing. (Listing
    /// `/proc/self/task` is not exact: it can skip a live thread while
    /// others end.)
    #[cfg(target_os = "linux")]
    fn has(&self, tid: u64) -> bool {
        let Ok(tid) = libc::pid_t::try_from(tid) else {
            return false;
        };
        // SAFETY: signal 0 checks that the thread exists in this thread
        // group and sends nothing.
        let found =
            unsafe { libc::syscall(libc::SYS_tgkill, self.pid as libc::pid_t, tid, 0) } == 0;
        found || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }

    #[cfg(not(target_os = "linux"))]
    fn has(&self, _tid: u64) -> bool {
        true
    }
}

/// Each live thread's innermost frame, as `sys._current_frames()` would
/// give it, from `states` (see [`live_thread_states`]).
pub fn tops_of<'py>(
    py: Python<'py>,
    states: &[(u64, *mut ffi::PyThreadState)],
) -> Vec<(u64, Bound<'py, PyAny>)> {
    states
        .iter()
        .filter_map(|&(ident, ts)| {
            // SAFETY: `ts` is a live thread state of a thread of this process
            // (the GIL is held since it was found); the frame is a new
            // reference, or null with no error set.
            let frame =
                unsafe { inert::owned(py, ffi::PyThreadState_GetFrame(ts) as *mut ffi::PyObject) };
            frame.map(|f| (ident, f))
        })
        .collect()
}

/// Each Python thread's state with its ident, matched through its current
/// frame, which is the very object `sys._current_frames()` gave for that
/// ident (`tops`). A pointer is good only while the GIL stays held.
pub fn thread_states(tops: &[(u64, Bound<'_, PyAny>)]) -> Vec<(u64, *mut ffi::PyThreadState)> {
    let mut out = Vec::new();
    if tops.is_empty() {
        return out;
    }
    let by_frame: HashMap<usize, u64> = tops
        .iter()
        .map(|(ident, top)| (top.as_ptr() as usize, *ident))
        .collect();
    // SAFETY: the GIL is held (the `Bound`s in `tops`), so no thread state is
    // freed while the list is walked; each frame taken is a new reference,
    // released right away.
    unsafe {
        let interp = ffi::PyInterpreterState_Get();
        let mut ts = ffi::PyInterpreterState_ThreadHead(interp);
        while !ts.is_null() {
            let frame = ffi::PyThreadState_GetFrame(ts) as *mut ffi::PyObject;
            if !frame.is_null() {
                if let Some(&ident) = by_frame.get(&(frame as usize)) {
                    out.push((ident, ts));
                }
                ffi::Py_DECREF(frame);
            }
            ts = ffi::PyThreadState_Next(ts);
        }
        inert::clear_error();
    }
    out
}

pub fn capture<'py>(cap: &mut Capture<'py>) -> Vec<Stack> {
    if cfg!(Py_GIL_DISABLED) {
        let why = crate::capture::cpython::free_threaded_refusal("thread");
        cap.errors.push(why);
        return Vec::new();
    }
    let py = cap.py;
    let order: Vec<u64> = cap.thread_tops.iter().map(|(ident, _)| *ident).collect();
    let mut tops: HashMap<u64, Bound<'py, PyAny>> = cap.thread_tops.iter().cloned().collect();

    let mut known = known_threads(py);
    rekey_patched_threads(&mut known, &tops, cap.current_thread);
    let own_threads = own_threads(py);
    let main_ident = main_thread_ident(py);
    let lock_types = match lockwait::LockTypes::new(py) {
        Ok(types) => Some(types),
        Err(why) => {
            cap.errors.push(format!("lock holders not read: {why}"));
            None
        }
    };
    let mut stacks = Vec::with_capacity(tops.len());
    let mut emit = |cap: &mut Capture<'py>, ident: u64, info: Option<&ThreadInfo>| {
        let Some(top) = tops.remove(&ident) else {
            return;
        };
        let Some((mut frames, omitted)) = cap.walker.walk_from(&top) else {
            cap.errors.push(format!(
                "thread {ident}: its current frame is not a frame object"
            ));
            return;
        };
        let current = ident == cap.current_thread;
        if current {
            cap.trim_own_frames(&mut frames);
        }
        if omitted == 0 {
            cap.trim_run_frames(&mut frames);
        }
        // tbcollect's own threads (dumper, watchdog, writer) say so
        // themselves: each runs through `_live.run_own_thread`.
        let registered = own_threads
            .iter()
            .find(|(i, _)| *i == ident)
            .map(|(_, name)| name.clone());
        let own = registered.is_some();
        if !current && !own && waits::api(&frames).is_none() {
            if let Some(types) = &lock_types {
                let locks = lockwait::locks_of_frame(types, &top);
                if !locks.is_empty() {
                    cap.thread_waits.push(waits::ThreadWait {
                        ident,
                        locks,
                        syscall: None,
                    });
                }
            }
        }
        let labels = cap.labels_of_thread(ident);
        stacks.push(Stack {
            facts: crate::model::StackFacts {
                own,
                labels,
                ..Default::default()
            },
            id: format!("thread:{ident}").into(),
            name: registered
                .or_else(|| info.and_then(|i| i.name.clone()))
                .unwrap_or_else(|| {
                    // threading not imported (nothing to ask), or keyed by
                    // greenlet ids (gevent's monkey patching): the main
                    // thread is still known, and the one a reader looks for.
                    if ident == MAIN_THREAD_IDENT.load(Ordering::Relaxed) {
                        MAIN_THREAD_NAME.to_string()
                    } else {
                        UNKNOWN_THREAD_NAME.to_string()
                    }
                })
                .into(),
            thread: Some(ident),
            // Refined from the OS after capture (`enrich::fill_thread_states`).
            state: if current { "running" } else { "unknown" }.into(),
            frames,
            frames_omitted: omitted,
            details: StackDetails::Thread(ThreadDetails {
                // The caller's is replaced by the OS's answer after capture
                // (`enrich::fill_thread_states`): threading's is stale in a
                // forked child.
                native_id: if ident == main_ident && cfg!(target_os = "linux") {
                    // The main thread's OS id is the pid. threading's record
                    // of it is stale in a child that forked and then
                    // monkey-patched (gunicorn + gevent), or missing.
                    Some(u64::from(std::process::id()))
                } else {
                    info.and_then(|i| i.native_id)
                },
                daemon: info.and_then(|i| i.daemon),
                current,
            }),
        });
    };
    // threading's order first (MainThread, then start order), then the rest;
    // a thread that ended before `_current_frames` saw it is simply absent.
    for (ident, info) in &known {
        emit(cap, *ident, Some(info));
    }
    for ident in order {
        emit(cap, ident, None);
    }
    stacks
}
