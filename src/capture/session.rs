//! One capture: the GIL held, the GC paused, every backend run once.

use super::frames::FrameWalker;
use super::{greenlets, inert, labels, locals, lockwait, tasks, threads, waits};
use crate::capture::enrich;
use crate::model::history::History;
use crate::model::{analysis, iso8601_utc, Frame, Frames, Snapshot};
use pyo3::ffi;
use pyo3::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// What `collect()` was asked for.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub threads: bool,
    pub greenlets: bool,
    pub tasks: bool,
    pub source: bool,
    pub max_depth: usize,
    /// List tasks that are done or cancelled too (issue #3).
    pub done_tasks: bool,
    /// Capture each frame's local variables (issue #6).
    pub locals: LocalsMode,
    /// With locals: a variable or `str` dict key whose name contains one of
    /// these (case-insensitive) is shown as `[redacted]`.
    pub redact: Vec<String>,
}

/// How frame locals are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalsMode {
    /// No locals (the default).
    #[default]
    Off,
    /// Built-in values rendered by our own code; others as `<module.Class object at 0x...>`.
    Safe,
    /// As `Safe`, but other objects through their (guarded, capped) `repr()`.
    Repr,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            threads: true,
            greenlets: true,
            tasks: true,
            source: true,
            max_depth: 1024,
            done_tasks: false,
            locals: LocalsMode::Off,
            redact: locals::DEFAULT_REDACT
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// State shared by the backends during one capture.
pub struct Capture<'py> {
    pub py: Python<'py>,
    pub options: CaptureOptions,
    pub walker: FrameWalker<'py>,
    /// Problems met while collecting; they end up in `Snapshot::errors`.
    pub errors: Vec<String>,
    /// `threading.get_ident()` of the thread that called the collector.
    pub current_thread: u64,
    /// `sys._current_frames()` as (ident, innermost frame), in its order:
    /// taken once and shared (greenlets and tasks running in a thread need
    /// it too).
    pub thread_tops: Vec<(u64, Bound<'py, PyAny>)>,
    /// Directory of the `tbcollect` package, whose frames are trimmed from
    /// the top of the calling thread's stack.
    own_dir: Option<String>,
    /// The locks blocked threads' innermost frames refer to; their system
    /// calls are read once the GIL is let go.
    pub thread_waits: Vec<crate::capture::waits::ThreadWait>,
    /// Reads the registered labels; `None` when none is registered.
    pub labels: Option<labels::LabelReader<'py>>,
    /// Each thread's state with its ident: those [`threads::live_thread_states`]
    /// keeps, or where it cannot check them, matched through the frames when
    /// first needed (running loops, threads' labels).
    thread_states: std::cell::OnceCell<Vec<(u64, *mut ffi::PyThreadState)>>,
}

impl<'py> Capture<'py> {
    fn new(py: Python<'py>, options: CaptureOptions) -> Self {
        let mut errors = Vec::new();
        let thread_states = std::cell::OnceCell::new();
        // Free-threaded: no frame of another thread is read (see
        // `cpython::free_threaded_refusal`), so none is asked for.
        let thread_tops = if cfg!(Py_GIL_DISABLED) {
            Ok(Vec::new())
        } else {
            match threads::live_thread_states(py) {
                // Not through `sys._current_frames()`, which would follow
                // the left-out states' frames (see `live_thread_states`).
                Ok(live) if live.left_out > 0 => {
                    errors.push(format!(
                        "thread states of threads this process does not have: {} left out \
                         unread; it was forked from C without Python's at-fork hooks \
                         (a uWSGI worker without --py-call-osafterfork)",
                        live.left_out
                    ));
                    let tops = threads::tops_of(py, &live.states);
                    let _ = thread_states.set(live.states);
                    Ok(tops)
                }
                checked => {
                    match checked {
                        Ok(live) => {
                            let _ = thread_states.set(live.states);
                        }
                        Err(why) => errors.push(why),
                    }
                    current_frames(py).map(|frames| dict_by_ident(&frames))
                }
            }
        };
        let thread_tops = thread_tops.unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        });
        let labels = labels::LabelReader::new(py, &options.redact);
        Capture {
            py,
            walker: FrameWalker::new(py, options.max_depth)
                .with_locals(options.locals, &options.redact),
            options,
            errors,
            // SAFETY: the GIL is held (`py`): the calling thread's own ident.
            current_thread: unsafe { ffi::PyThread_get_thread_ident() } as u64,
            thread_tops,
            own_dir: own_dir(py),
            thread_waits: Vec::new(),
            labels,
            thread_states,
        }
    }

    /// Each Python thread's state with its ident; the pointers are good
    /// while the capture holds the GIL.
    pub fn thread_states(&self) -> &[(u64, *mut ffi::PyThreadState)] {
        states_or_matched(&self.thread_states, &self.thread_tops)
    }

    /// The labels set in `context` (see [`labels`]).
    pub fn labels_of_context(
        &mut self,
        context: Option<&Bound<'py, PyAny>>,
    ) -> Vec<(crate::model::Text, crate::model::Text)> {
        match self.labels.as_mut() {
            Some(reader) => reader.of_context(context),
            None => Vec::new(),
        }
    }

    /// The labels set in the context thread `ident` runs in.
    pub fn labels_of_thread(
        &mut self,
        ident: u64,
    ) -> Vec<(crate::model::Text, crate::model::Text)> {
        let Some(reader) = self.labels.as_mut() else {
            return Vec::new();
        };
        reader.of_thread(
            states_or_matched(&self.thread_states, &self.thread_tops),
            ident,
        )
    }

    /// Drops the collector's own innermost frames (`dump_all`, `collect`) so a
    /// stack ends at the caller's line.
    pub fn trim_own_frames(&self, frames: &mut Frames) {
        let own = self.own_frames(frames);
        if own > 0 {
            *frames = frames[..frames.len() - own].into();
        }
    }

    /// Drops the outermost frames `tbcollect run` puts under the program
    /// (runpy, the CLI's `main` and `_run`, runpy again), so the main
    /// thread's stack starts at the program's `<module>` as under `python
    /// script.py`. Only the first few frames are looked at.
    pub fn trim_run_frames(&self, frames: &mut Frames) {
        let Some(dir) = self.own_dir.as_deref() else {
            return;
        };
        let runner = frames.iter().take(8).position(|f| {
            &*f.function == "_run"
                && f.filename.starts_with(dir)
                && f.filename.ends_with("/__main__.py")
        });
        let Some(at) = runner else {
            return;
        };
        let program = at
            + 1
            + frames[at + 1..]
                .iter()
                .take_while(|f| is_runpy(&f.filename))
                .count();
        if program > at + 1 && program < frames.len() {
            *frames = frames[program..].into();
        }
    }

    /// How many of the innermost `frames` are tbcollect's own.
    pub fn own_frames(&self, frames: &[Frame]) -> usize {
        match &self.own_dir {
            Some(dir) => frames
                .iter()
                .rev()
                .take_while(|f| f.filename.starts_with(dir.as_str()))
                .count(),
            None => 0,
        }
    }

    /// The innermost frame of thread `ident`, if it runs Python code.
    pub fn thread_top(&self, ident: u64) -> Option<Bound<'py, PyAny>> {
        self.thread_tops
            .iter()
            .find(|(i, _)| *i == ident)
            .map(|(_, top)| top.clone())
    }

    /// Runs one backend; a panic inside it becomes an error entry instead of
    /// an exception in the host program.
    fn run_backend(
        &mut self,
        name: &str,
        backend: fn(&mut Capture<'py>) -> Vec<crate::model::Stack>,
    ) -> Vec<crate::model::Stack> {
        match catch_unwind(AssertUnwindSafe(|| backend(self))) {
            Ok(stacks) => stacks,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                inert::clear_error();
                self.errors.push(format!("{name} backend failed: {what}"));
                Vec::new()
            }
        }
    }
}

/// The thread states [`threads::live_thread_states`] kept, or where it
/// could not check them, those matched through `tops` (a field apart from
/// the rest of [`Capture`], so that the labels reader can borrow it too).
fn states_or_matched<'a>(
    states: &'a std::cell::OnceCell<Vec<(u64, *mut ffi::PyThreadState)>>,
    tops: &[(u64, Bound<'_, PyAny>)],
) -> &'a [(u64, *mut ffi::PyThreadState)] {
    states.get_or_init(|| threads::thread_states(tops))
}

/// The interpreter's own `sys._current_frames`, taken when tbcollect is
/// imported: a program that replaces `sys._current_frames` afterwards (a
/// monkeypatch, a mock left behind) cannot redirect capture to its function
/// nor make threads vanish from dumps.
static CURRENT_FRAMES: std::sync::OnceLock<Option<Py<PyAny>>> = std::sync::OnceLock::new();

/// `runpy`'s frames: `<frozen runpy>` (3.11+) or its source file.
fn is_runpy(filename: &str) -> bool {
    filename == "<frozen runpy>" || filename.ends_with("/runpy.py")
}

/// Takes the reference [`CURRENT_FRAMES`] holds; called once, at import.
/// Only the real builtin is kept: a C function named `_current_frames`
/// whose `self` is the `sys` module.
pub fn remember_builtins(py: Python<'_>) {
    CURRENT_FRAMES.get_or_init(|| unsafe {
        // SAFETY: the GIL is held; every pointer is checked before use and
        // borrowed references are turned into owned ones before returning.
        let func = ffi::PySys_GetObject(c"_current_frames".as_ptr());
        inert::clear_error();
        if func.is_null() || ffi::PyCFunction_Check(func) == 0 {
            return None;
        }
        let cfunc = func as *mut ffi::PyCFunctionObject;
        let def = (*cfunc).m_ml;
        // Called from the module's init (never first during a capture), where
        // importing the always-loaded `sys` is fine.
        let Ok(sys) = py.import("sys") else {
            inert::clear_error();
            return None;
        };
        let named = !def.is_null()
            && !(*def).ml_name.is_null()
            && std::ffi::CStr::from_ptr((*def).ml_name) == c"_current_frames";
        (named && (*cfunc).m_self == sys.as_ptr())
            .then(|| Bound::from_borrowed_ptr(py, func).unbind())
    });
}

/// `sys._current_frames()` through the reference taken at import (see
/// [`CURRENT_FRAMES`]); when there is none, `errors` says why no thread is listed.
fn current_frames(py: Python<'_>) -> Result<Bound<'_, PyAny>, String> {
    remember_builtins(py);
    let func = CURRENT_FRAMES
        .get()
        .and_then(|f| f.as_ref())
        .ok_or("sys._current_frames was not the interpreter's builtin when tbcollect was imported; no thread stacks")?;
    unsafe {
        // SAFETY: `func` is the builtin, kept alive by the static; GIL held.
        let frames = inert::owned(py, ffi::PyObject_CallNoArgs(func.as_ptr()))
            .ok_or("sys._current_frames() failed; no thread stacks")?;
        if ffi::PyDict_Check(frames.as_ptr()) == 0 {
            return Err("sys._current_frames() returned no dict; no thread stacks".into());
        }
        Ok(frames)
    }
}

/// `CLOCK_MONOTONIC` in seconds: what `time.monotonic()` (and so every
/// asyncio loop's `time()`) reads on Linux, read without the `time` module.
pub fn monotonic_seconds() -> Option<f64> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec to write into.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
            return None;
        }
        Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The entries of an `{ident: value}` dict with exact-int keys, in order.
fn dict_by_ident<'py>(dict: &Bound<'py, PyAny>) -> Vec<(u64, Bound<'py, PyAny>)> {
    let mut out = Vec::new();
    // SAFETY: `dict` is alive and the GIL is held (a `Bound`); `PyDict_Next` runs no code and
    // yields borrowed entries the dict holds.
    unsafe {
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key: *mut ffi::PyObject = std::ptr::null_mut();
        let mut value: *mut ffi::PyObject = std::ptr::null_mut();
        while ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut key, &mut value) != 0 {
            if let Some(ident) = inert::int_value(&Bound::from_borrowed_ptr(dict.py(), key)) {
                out.push((ident, Bound::from_borrowed_ptr(dict.py(), value)));
            }
        }
    }
    out
}

fn own_dir(py: Python<'_>) -> Option<String> {
    let module = inert::imported_module(py, c"tbcollect")?;
    let file = inert::str_value(&inert::module_attr(&module, c"__file__")?)?;
    let dir = std::path::Path::new(&file).parent()?.to_str()?.to_string();
    Some(format!("{dir}/"))
}

/// Keeps the cyclic garbage collector off for the duration of a capture: a
/// collection triggered by one of our allocations would run arbitrary
/// finalizers (`__del__`, weakref callbacks) in the middle of it.
struct GcPause {
    was_enabled: bool,
}

impl GcPause {
    fn new(py: Python<'_>) -> Self {
        #[cfg(Py_3_10)]
        {
            let _ = py;
            // SAFETY: the GIL is held (`py`); this only clears the collector's enabled flag.
            let was_enabled = unsafe { ffi::PyGC_Disable() } != 0;
            GcPause { was_enabled }
        }
        #[cfg(not(Py_3_10))]
        {
            // 3.9 has no C API for this; the `gc` module's builtins are C.
            let was_enabled =
                gc_call(py, c"isenabled").is_some_and(|v| v.is_truthy().unwrap_or(false));
            if was_enabled {
                gc_call(py, c"disable");
            }
            GcPause { was_enabled }
        }
    }

    fn resume(self, py: Python<'_>) {
        if !self.was_enabled {
            return;
        }
        #[cfg(Py_3_10)]
        {
            let _ = py;
            // SAFETY: the GIL is held (`py`); this only sets the collector's enabled flag.
            unsafe { ffi::PyGC_Enable() };
        }
        #[cfg(not(Py_3_10))]
        {
            gc_call(py, c"enable");
        }
    }
}

#[cfg(not(Py_3_10))]
fn gc_call<'py>(py: Python<'py>, name: &std::ffi::CStr) -> Option<Bound<'py, PyAny>> {
    let gc = inert::imported_module(py, c"gc")?;
    let func = inert::module_attr(&gc, name)?;
    // SAFETY: `func` is alive and the GIL is held (a `Bound`); it is called
    // only when it is the `gc` module's own C function (a replacement put
    // there could run user code), whose `m_self` is read once it is checked
    // to be a builtin function.
    unsafe {
        let builtin = ffi::PyCFunction_CheckExact(func.as_ptr()) != 0
            && (*(func.as_ptr() as *mut ffi::PyCFunctionObject)).m_self == gc.as_ptr();
        if !builtin {
            return None;
        }
        inert::owned(py, ffi::PyObject_CallNoArgs(func.as_ptr()))
    }
}

fn python_version(py: Python<'_>) -> String {
    let v = py.version_info();
    format!("{}.{}.{}", v.major, v.minor, v.patch)
}

fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_micros() as i64
}

/// Moves `more` to the end of `stacks`; ten thousand stacks are handed over,
/// not copied, when they are the first.
fn append(stacks: &mut Vec<crate::model::Stack>, mut more: Vec<crate::model::Stack>) {
    if stacks.is_empty() {
        *stacks = more;
    } else {
        stacks.append(&mut more);
    }
}

/// One snapshot of every thread, greenlet and task the options ask for.
/// Never raises for what it meets: problems go into `errors`.
pub fn collect(py: Python<'_>, options: CaptureOptions) -> Snapshot {
    let mut snapshot = Snapshot::new(
        std::process::id(),
        python_version(py),
        iso8601_utc(now_micros()),
    );
    crate::capture::fastpaths::refresh();
    let gc = GcPause::new(py);
    let mut cap = Capture::new(py, options.clone());
    if options.threads {
        let stacks = cap.run_backend("thread", threads::capture);
        append(&mut snapshot.stacks, stacks);
    }
    // Thread stacks come first; only they get states from the OS.
    let threads_end = snapshot.stacks.len();
    if options.greenlets {
        let stacks = cap.run_backend("greenlet", greenlets::capture);
        append(&mut snapshot.stacks, stacks);
    }
    if options.tasks {
        let stacks = cap.run_backend("task", tasks::capture);
        append(&mut snapshot.stacks, stacks);
    }
    let reprs = cap.walker.take_pending_reprs();
    let mut locals_errors = cap.walker.take_errors();
    if let Some(reader) = cap.labels.as_mut() {
        locals_errors.append(&mut reader.errors);
    }
    snapshot.errors.append(&mut cap.errors);
    snapshot.errors.append(&mut locals_errors);
    let mut thread_waits = std::mem::take(&mut cap.thread_waits);
    drop(cap);
    inert::clear_error();
    gc.resume(py);
    // `locals="repr"`: the one place user code runs, after the walk is done.
    locals::resolve_reprs(py, &mut snapshot, reprs);

    // Everything below reads files and /proc only: let other threads run.
    py.detach(move || {
        let mut gone = Vec::new();
        let syscalls = enrich::fill_thread_states(
            &mut snapshot.stacks[..threads_end],
            waits::needs_syscall,
            &mut gone,
        );
        let mut threads_end = threads_end;
        if !gone.is_empty() {
            // Thread stacks come first: what is left of them still does.
            let mut at = 0;
            snapshot.stacks.retain(|s| {
                at += 1;
                at > threads_end || s.thread.is_none_or(|t| !gone.contains(&t))
            });
            threads_end -= gone.len();
        }
        lockwait::read_syscalls(&syscalls, &mut thread_waits);
        waits::resolve_threads(&mut snapshot.stacks[..threads_end], &thread_waits);
        if options.source {
            enrich::fill_sources(&snapshot);
        }
        waits::link_threads_to_tasks(&mut snapshot.stacks);
        observe_history(&mut snapshot);
        analysis::analyze(&mut snapshot);
        snapshot
    })
}

/// Fingerprints of the stacks of earlier dumps, kept from `keep_history()`
/// on: plain data, no reference into the interpreter.
static HISTORY: Mutex<Option<History>> = Mutex::new(None);

/// Starts (or stops, forgetting what was seen) marking stacks
/// `unchanged_since` an earlier dump.
pub fn keep_history(on: bool) {
    let mut history = HISTORY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match (on, history.is_some()) {
        (true, false) => *history = Some(History::default()),
        (false, _) => *history = None,
        (true, true) => {}
    }
}

/// True while history is kept.
pub fn keeping_history() -> bool {
    HISTORY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .is_some()
}

fn observe_history(snapshot: &mut Snapshot) {
    // Two dumps at once (a signal and a watchdog) take turns; a lock held
    // across a fork by a thread the child does not have is given up on
    // rather than waited for forever.
    for _ in 0..200 {
        match HISTORY.try_lock() {
            Ok(mut history) => {
                if let Some(history) = history.as_mut() {
                    history.observe(snapshot);
                }
                return;
            }
            Err(std::sync::TryLockError::Poisoned(poisoned)) => {
                if let Some(history) = poisoned.into_inner().as_mut() {
                    history.observe(snapshot);
                }
                return;
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
    snapshot
        .errors
        .push("history: busy for 200 ms; unchanged_since not filled".into());
}
