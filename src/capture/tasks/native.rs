//! 3.14+: the `_asyncio.Task`s (and subclasses), which the interpreter no
//! longer keeps in a WeakSet but links into lists: one per thread state
//! (`asyncio_tasks_head`), plus one in the interpreter state for the tasks
//! of threads that have ended. Each thread state also holds its running
//! loop and running task. Tasks that are not `_asyncio.Task`s (the
//! pure-Python `_PyTask`, third-party task types) are in two sets of the
//! `_asyncio` module's state.
//!
//! Where these are is read from the offsets the interpreter publishes (see
//! [`crate::capture::cpython::published`]), checked before use. The lists
//! are changed only with the GIL held (`register_task`/`unregister_task`,
//! and a thread's clear moving its list to the interpreter's), which the
//! capture holds throughout and while it runs no Python code: nothing
//! moves during a walk. Every link is still checked against its
//! neighbour's and every element's type before it is taken.

use crate::capture::cpython::published::{self, AsyncioOffsets};
use crate::capture::inert;
use pyo3::ffi;
use pyo3::prelude::*;
use std::sync::OnceLock;

/// More tasks than this in one list means the walk went wrong.
const MAX_TASKS_PER_LIST: usize = 1 << 26;

/// What the thread states and the module state hold.
#[derive(Default)]
pub struct Native<'py> {
    /// Every linked task, each held.
    pub tasks: Vec<Bound<'py, PyAny>>,
    /// Each thread's running task, with that thread's running loop.
    pub running: Vec<(Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)>,
    /// The module state's registries of tasks that are not `_asyncio.Task`s.
    pub registries: Vec<(&'static str, Bound<'py, PyAny>)>,
}

/// The checked offsets, read once per process (the interpreter and its
/// `_asyncio` do not change under it). Only asked for once `_asyncio` is
/// loaded, so a failure is final too.
fn offsets(version: (u8, u8)) -> Result<&'static AsyncioOffsets, String> {
    static OFFSETS: OnceLock<Result<AsyncioOffsets, String>> = OnceLock::new();
    OFFSETS
        .get_or_init(|| {
            let (layout, _) = published::layouts(version)
                .ok_or_else(|| format!("no layout for CPython {}.{}", version.0, version.1))?;
            let (debug, asyncio) = published::read_published(layout)?;
            published::asyncio_offsets(version, layout, &debug, &asyncio)
        })
        .as_ref()
        .map_err(Clone::clone)
}

static GEN: OnceLock<Option<published::GenOffsets>> = OnceLock::new();

/// [`gen_offsets`] once a capture has read them (each does, as it starts).
pub fn gen_offsets_known() -> Option<&'static published::GenOffsets> {
    GEN.get()?.as_ref()
}

/// Where coroutines keep their frame (3.14+), checked against
/// `PyCoro_Type`'s size; read once per process, on the first capture.
pub fn gen_offsets(py: Python<'_>) -> Option<&'static published::GenOffsets> {
    GEN.get_or_init(|| {
        let version = version_of(py);
        let (layout, _) = published::layouts(version)?;
        let debug = published::read_debug(layout).ok()?;
        // SAFETY: reads fields of a static type object.
        let (size, item) = unsafe {
            let tp = std::ptr::addr_of!(ffi::PyCoro_Type);
            ((*tp).tp_basicsize, (*tp).tp_itemsize)
        };
        // The frame's slots are the variable part, a pointer each.
        if usize::try_from(item).ok()? != std::mem::size_of::<usize>() {
            return None;
        }
        published::gen_offsets(version, layout, &debug, usize::try_from(size).ok()?).ok()
    })
    .as_ref()
}

fn version_of(py: Python<'_>) -> (u8, u8) {
    let v = py.version_info();
    (v.major, v.minor)
}

/// The running loop a thread state holds, as an address to compare with
/// (3.14+), or `None` when the offsets are not known good.
///
/// # Safety
/// `ts` is a live thread state of this interpreter; the GIL is held.
pub unsafe fn running_loop_ptr(py: Python<'_>, ts: *mut ffi::PyThreadState) -> Option<usize> {
    let off = offsets(version_of(py)).ok()?;
    let value = *((ts as *const u8).add(off.thread_running_loop) as *const usize);
    (value != 0).then_some(value)
}

/// Every native task, every thread's running task and the registries of
/// the others. `Ok` with nothing when `_asyncio` is not loaded (then every
/// task is a pure-Python one, in `asyncio.tasks`' own sets). An `Err` says
/// why the native tasks could not be listed; `errors` gets what was left
/// out of an otherwise good walk.
pub fn collect<'py>(py: Python<'py>, errors: &mut Vec<String>) -> Result<Native<'py>, String> {
    let mut out = Native::default();
    let Some(module) = inert::imported_module(py, c"_asyncio") else {
        return Ok(out);
    };
    let type_of = |name: &std::ffi::CStr| {
        inert::module_attr(&module, name)
            .as_ref()
            .and_then(inert::as_type)
            .ok_or_else(|| format!("_asyncio.{} is not a type", name.to_string_lossy()))
    };
    let task_tp = type_of(c"Task")?;
    let future_tp = type_of(c"Future")?;
    let version = version_of(py);
    let off = offsets(version)?;
    // SAFETY: `task_tp` is the live type `_asyncio.Task` (the module holds it).
    let basicsize = unsafe { (*task_tp).tp_basicsize };
    if usize::try_from(basicsize).ok() != Some(off.task_size) {
        return Err(format!(
            "_asyncio.Task is {basicsize} bytes, the published offsets say {}",
            off.task_size
        ));
    }
    // SAFETY: the GIL is held; the thread states of this interpreter stay
    // in its list while it is (a thread state is unlinked only under the
    // runtime's HEAD_LOCK, taken by threads that hold the GIL or none of
    // our objects), and each is a `_PyThreadStateImpl` (3.13+), whose size
    // the offsets were checked against.
    unsafe {
        let interp = ffi::PyInterpreterState_Get();
        let mut ts = ffi::PyInterpreterState_ThreadHead(interp);
        let mut threads = 0usize;
        while !ts.is_null() {
            threads += 1;
            if threads > MAX_TASKS_PER_LIST {
                return Err("the thread state list does not end".into());
            }
            let base = ts as *const u8;
            walk(
                py,
                base.add(off.thread_tasks_head),
                off,
                task_tp,
                &mut out.tasks,
            )
            .map_err(|e| format!("a thread's task list: {e}"))?;
            let read = |at: usize| *(base.add(at) as *const *mut ffi::PyObject);
            let task = read(off.thread_running_task);
            if !task.is_null() && ffi::Py_REFCNT(task) > 0 {
                // The thread state holds strong references to both.
                let event_loop = inert::borrowed(py, read(off.thread_running_loop));
                out.running
                    .push((Bound::from_borrowed_ptr(py, task), event_loop));
            }
            ts = ffi::PyThreadState_Next(ts);
        }
        walk(
            py,
            (interp as *const u8).add(off.interp_tasks_head),
            off,
            task_tp,
            &mut out.tasks,
        )
        .map_err(|e| format!("the task list of ended threads: {e}"))?;
    }
    match module_registries(py, &module, version, task_tp, future_tp) {
        Ok(registries) => out.registries = registries,
        Err(e) => errors.push(format!(
            "tasks incomplete: tasks that are not _asyncio.Task (pure-Python, third-party) are not listed: {e}"
        )),
    }
    Ok(out)
}

/// Appends the tasks of the circular list whose head node is at `head`.
///
/// # Safety
/// `head` is the address of a `struct llist_node` inside a live thread or
/// interpreter state; the GIL is held.
unsafe fn walk<'py>(
    py: Python<'py>,
    head: *const u8,
    off: &AsyncioOffsets,
    task_tp: *mut ffi::PyTypeObject,
    out: &mut Vec<Bound<'py, PyAny>>,
) -> Result<(), String> {
    let next_of = |node: *const u8| *(node.add(off.llist_next) as *const *const u8);
    let prev_of = |node: *const u8| *(node.add(off.llist_prev) as *const *const u8);
    let mut prev = head;
    let mut node = next_of(head);
    let mut count = 0usize;
    while node != head {
        if node.is_null() {
            return Err("a link is NULL".into());
        }
        if prev_of(node) != prev {
            return Err("a task's links do not agree with its neighbour's".into());
        }
        let task = node.sub(off.task_node) as *mut ffi::PyObject;
        let tp = ffi::Py_TYPE(task);
        if tp != task_tp && ffi::PyType_IsSubtype(tp, task_tp) == 0 {
            return Err("it links an object that is not an _asyncio.Task".into());
        }
        // A task whose last reference went is unlinked by its dealloc, after
        // its finalizer: it is left out, not revived.
        if ffi::Py_REFCNT(task) > 0 {
            out.push(Bound::from_borrowed_ptr(py, task));
        }
        count += 1;
        if count > MAX_TASKS_PER_LIST {
            return Err(format!(
                "more than {MAX_TASKS_PER_LIST} tasks; the list does not end"
            ));
        }
        prev = node;
        node = next_of(node);
    }
    Ok(())
}

/// The `_asyncio` module state's sets of tasks that are not
/// `_asyncio.Task`s, once the state's layout is confirmed by the two types
/// it holds before them.
fn module_registries<'py>(
    py: Python<'py>,
    module: &Bound<'py, PyAny>,
    version: (u8, u8),
    task_tp: *mut ffi::PyTypeObject,
    future_tp: *mut ffi::PyTypeObject,
) -> Result<Vec<(&'static str, Bound<'py, PyAny>)>, String> {
    let (_, layout) = published::layouts(version).ok_or("no module state layout")?;
    // SAFETY: `module` is a live module object; its state is an array of
    // object pointers at least up to the eager set, once the two type
    // pointers at their places match (the state is allocated by the module
    // definition, before its types are put into it).
    unsafe {
        if ffi::PyModule_Check(module.as_ptr()) == 0 {
            return Err("_asyncio is not a module".into());
        }
        let def = ffi::PyModule_GetDef(module.as_ptr());
        inert::clear_error();
        if def.is_null()
            || (*def).m_name.is_null()
            || std::ffi::CStr::from_ptr((*def).m_name) != c"_asyncio"
        {
            return Err("_asyncio is not the interpreter's module".into());
        }
        let words = usize::try_from((*def).m_size).unwrap_or(0) / std::mem::size_of::<usize>();
        if words <= layout.non_native_eager_tasks {
            return Err("its state is smaller than expected".into());
        }
        let state = ffi::PyModule_GetState(module.as_ptr()) as *const *mut ffi::PyObject;
        inert::clear_error();
        if state.is_null() {
            return Err("it has no state".into());
        }
        if *state.add(layout.future_type) != future_tp as *mut ffi::PyObject
            || *state.add(layout.task_type) != task_tp as *mut ffi::PyObject
        {
            return Err("its state does not hold Future and Task where expected".into());
        }
        let mut out = Vec::new();
        for (name, at) in [
            ("scheduled", layout.non_native_tasks),
            ("eager", layout.non_native_eager_tasks),
        ] {
            let obj = *state.add(at);
            if let Some(set) = inert::borrowed(py, obj) {
                out.push((name, set));
            }
        }
        Ok(out)
    }
}
