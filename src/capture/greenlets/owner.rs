//! Which OS thread each greenlet belongs to, and which greenlet is running.
//!
//! greenlet keeps its per-thread state in C++ thread-local storage that is not
//! reachable from another thread, so the owner of a greenlet is found from
//! what is: every greenlet's parent chain ends at the main greenlet of the
//! thread it belongs to (greenlet forbids parents from another thread), so
//! the greenlets of one thread are exactly those sharing a root. A root is
//! tied to its thread, in this order, by:
//!
//! 1. the calling thread's running greenlet (the one greenlet's `gr_context`
//!    getter answers for in this thread, see `GreenletApi::runs_here`);
//! 2. a gevent hub among its descendants: `Hub.thread_ident`, which gevent
//!    records with the real `_thread.get_ident` when the hub is created;
//! 3. a suspended main greenlet whose outermost frame is
//!    `threading.Thread._bootstrap`: that frame's `self` is the thread;
//! 4. a live thread whose frames hold, in a local variable (or a list or
//!    tuple in one), a greenlet of that root, when exactly one such thread
//!    and root pair up.
//!
//! A root tied to nothing keeps `thread: null` rather than a guess. When a
//! root's thread is not alive (a hub's thread has exited, or the root is
//! tied to nothing while every live thread is tied to another root), its
//! greenlets are dead, as greenlet itself counts them.
//!
//! The running greenlet of a thread is, in the calling thread, that one;
//! in another thread, the one greenlet that is active, has no saved frame
//! (greenlet keeps `gr_frame` only for greenlets switched out) and no C stack
//! copied to the heap (a running greenlet's stack is all on the C stack). A
//! greenlet that passes those tests but is not running is one suspended in
//! C or Cython code only (`gevent.spawn(event.wait)`), hence the last test.

use super::api::GreenletApi;
use super::Raw;
use crate::capture::{framevars, inert, Capture};
use crate::model::fasthash::{FastMap as HashMap, FastSet as HashSet};
use pyo3::ffi;
use pyo3::prelude::*;

/// Frames of a thread searched for greenlet references (rule 4).
const LOCALS_SCAN_FRAMES: usize = 256;
/// Items of one list or tuple local searched for greenlets (rule 4).
const LOCALS_SCAN_ITEMS: isize = 1024;

pub struct Ownership {
    /// Index of each greenlet's root (the main greenlet of its thread).
    pub root: Vec<usize>,
    /// The OS thread of each greenlet, when known.
    pub thread: Vec<Option<u64>>,
    /// Whether each greenlet is the one running in its thread.
    pub running: Vec<bool>,
    /// Whether the thread of each greenlet has exited: greenlet then counts
    /// all of that thread's greenlets as dead (they can never run again).
    pub exited: Vec<bool>,
}

pub fn attribute<'py>(
    cap: &Capture<'py>,
    api: &GreenletApi<'py>,
    raws: &[Raw<'py>],
    index: &HashMap<usize, usize>,
    current: Option<usize>,
) -> Ownership {
    let root = roots(raws);
    let live: Vec<u64> = live_threads(cap);
    let mut owners = Owners::default();

    // 1. The calling thread.
    if let Some(c) = current {
        owners.tie(root[c], cap.current_thread);
    }
    // 2. gevent hubs.
    for (i, raw) in raws.iter().enumerate() {
        if let (true, Some(ident)) = (raw.hub, raw.hub_thread) {
            owners.tie(root[i], ident);
        }
    }
    // 3. Suspended main greenlets of `threading` threads (and, when that
    // thread is no longer alive, roots known to belong to an exited thread).
    let bootstrap = bootstrap_code(cap.py);
    let mut gone_roots: HashSet<usize> = HashSet::default();
    for (i, raw) in raws.iter().enumerate() {
        if root[i] != i || owners.owner.contains_key(&i) || !raw.flags.main {
            continue;
        }
        let ident = raw
            .frame
            .as_ref()
            .and_then(|f| bootstrap_thread(f, bootstrap.as_ref()));
        match ident {
            Some(ident) if live.contains(&ident) => owners.tie(i, ident),
            Some(_) if !live.is_empty() => {
                gone_roots.insert(i);
            }
            _ => {}
        }
    }
    // 4. Greenlets referenced from exactly one other thread's locals.
    let unmapped_roots: HashSet<usize> = (0..root.len())
        .filter(|&r| root[r] == r && !owners.owner.contains_key(&r))
        .collect();
    if !unmapped_roots.is_empty() {
        let threads: Vec<u64> = live
            .iter()
            .copied()
            .filter(|t| *t != cap.current_thread && !owners.taken.contains(t))
            .collect();
        for (ident, r) in locals_pairs(cap, api, index, &root, &unmapped_roots, &threads) {
            owners.tie(r, ident);
        }
    }
    let owner = &owners.owner;

    // Greenlets of one thread mostly come in runs: remember the last root.
    let mut last: Option<(usize, Option<u64>)> = None;
    let thread: Vec<Option<u64>> = root
        .iter()
        .map(|&r| match last {
            Some((at, t)) if at == r => t,
            _ => {
                let t = owner.get(&r).copied();
                last = Some((r, t));
                t
            }
        })
        .collect();
    // A root tied to no thread while every live thread is tied to another
    // root belongs to a thread that has exited (one main greenlet per thread).
    // (Without `sys._current_frames` nothing is known to be alive, nor dead.)
    // The calling thread with no running greenlet has no main greenlet
    // (greenlet makes one on first use), so it owns no root either.
    let all_live_tied = live
        .iter()
        .all(|t| owners.taken.contains(t) || (current.is_none() && *t == cap.current_thread));
    let exited: Vec<bool> = thread
        .iter()
        .zip(&root)
        .map(|(t, r)| match t {
            _ if live.is_empty() => false,
            _ if gone_roots.contains(r) => true,
            Some(t) => !live.contains(t),
            None => all_live_tied,
        })
        .collect();
    let running = running(raws, &root, &exited, current);
    Ownership {
        root,
        thread,
        running,
        exited,
    }
}

/// Roots tied to threads; one thread per root and one root per thread.
#[derive(Default)]
struct Owners {
    owner: HashMap<usize, u64>,
    taken: HashSet<u64>,
}

impl Owners {
    fn tie(&mut self, root: usize, ident: u64) {
        if !self.owner.contains_key(&root) && self.taken.insert(ident) {
            self.owner.insert(root, ident);
        }
    }
}

/// Root of every greenlet: the end of its parent chain (a main greenlet).
fn roots(raws: &[Raw<'_>]) -> Vec<usize> {
    let mut root: Vec<Option<usize>> = vec![None; raws.len()];
    let mut path = Vec::new();
    for start in 0..raws.len() {
        path.clear();
        let mut at = start;
        let found = loop {
            if let Some(r) = root[at] {
                break r;
            }
            path.push(at);
            match raws[at].parent {
                // greenlet forbids parent cycles; the length check is a guard.
                Some(p) if !raws[at].flags.main && path.len() <= raws.len() => at = p,
                _ => break at,
            }
        };
        for &i in &path {
            root[i] = Some(found);
        }
    }
    root.into_iter().map(|r| r.unwrap_or(0)).collect()
}

/// Idents of the threads that run Python code now (`sys._current_frames()`).
fn live_threads(cap: &Capture<'_>) -> Vec<u64> {
    cap.thread_tops.iter().map(|(ident, _)| *ident).collect()
}

fn running(raws: &[Raw<'_>], root: &[usize], exited: &[bool], current: Option<usize>) -> Vec<bool> {
    let mut running = vec![false; raws.len()];
    let current_root = current.map(|c| root[c]);
    if let Some(c) = current {
        running[c] = true;
    }
    // (root, pick): each root's first candidate, or its first main one.
    // Roots are threads, a handful: a list searched beats a map.
    let mut picks: Vec<(usize, usize)> = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let r = root[i];
        // A thread that has exited runs nothing.
        if Some(r) == current_root
            || exited[r]
            || !(raw.flags.active && raw.frame.is_none() && !raw.stack_saved)
        {
            continue;
        }
        // More than one only if some greenlet sits in C code alone with an
        // unsaved stack; the main greenlet is then the likelier one to run.
        match picks.iter_mut().find(|(at, _)| *at == r) {
            None => picks.push((r, i)),
            Some((_, p)) if !raws[*p].flags.main && raw.flags.main => *p = i,
            Some(_) => {}
        }
    }
    for (_, i) in picks {
        running[i] = true;
    }
    running
}

/// The code object of `threading.Thread._bootstrap`, the outermost frame of
/// every thread `threading` starts.
fn bootstrap_code(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    let threading = inert::imported_module(py, c"threading")?;
    let thread = inert::module_attr(&threading, c"Thread")
        // SAFETY: `t` is alive and the GIL is held (a `Bound`).
        .filter(|t| unsafe { ffi::PyType_Check(t.as_ptr()) } != 0)?;
    // SAFETY: `thread` was checked to be a type; `threading`'s module keeps it alive.
    unsafe {
        let func =
            inert::type_lookup(py, thread.as_ptr() as *mut ffi::PyTypeObject, c"_bootstrap")?;
        if ffi::PyFunction_Check(func.as_ptr()) == 0 {
            return None;
        }
        inert::borrowed(py, ffi::PyFunction_GetCode(func.as_ptr()))
    }
}

/// The ident of the `threading.Thread` whose `_bootstrap` frame is the
/// outermost frame of the chain ending at `top`.
fn bootstrap_thread(top: &Bound<'_, PyAny>, bootstrap: Option<&Bound<'_, PyAny>>) -> Option<u64> {
    let bootstrap = bootstrap?;
    let outer = frame_chain(top, usize::MAX).pop()?;
    // SAFETY: `outer` is a frame object `frame_chain` returned (checked with `PyFrame_Check`),
    // held.
    let code = unsafe {
        inert::owned(
            top.py(),
            ffi::PyFrame_GetCode(outer.as_ptr() as *mut ffi::PyFrameObject) as *mut ffi::PyObject,
        )?
    };
    if !code.is(bootstrap) {
        return None;
    }
    let thread = framevars::frame_var(&outer, "self")?;
    let key = inert::interned!(top.py(), "_ident");
    inert::instance_dict(&thread)
        .and_then(|d| inert::dict_get_scan(&d, key.as_any()))
        .and_then(|i| inert::int_value(&i))
}

/// `top` and its callers, innermost first, at most `limit` frames.
fn frame_chain<'py>(top: &Bound<'py, PyAny>, limit: usize) -> Vec<Bound<'py, PyAny>> {
    let mut out = Vec::new();
    let mut frame = top.clone();
    // SAFETY: `frame` is held, and read as a frame only after `PyFrame_Check`; `PyFrame_GetBack`
    // returns a new reference or NULL.
    unsafe {
        while ffi::PyFrame_Check(frame.as_ptr()) != 0 && out.len() < limit {
            let back = ffi::PyFrame_GetBack(frame.as_ptr() as *mut ffi::PyFrameObject);
            out.push(frame);
            match inert::owned(top.py(), back as *mut ffi::PyObject) {
                Some(b) => frame = b,
                None => break,
            }
        }
    }
    out
}

/// The values of a frame's fast variables, read in place (never through
/// `f_locals`, whose refresh can release objects and so run code).
fn local_values<'py>(frame: &Bound<'py, PyAny>) -> Vec<Bound<'py, PyAny>> {
    framevars::frame_values(frame)
        .into_iter()
        .map(|(_, value)| value)
        .collect()
}

/// Rule 4: (thread, root) pairs where only that thread's frames reference
/// greenlets of that root, and they reference no other unmapped root.
fn locals_pairs<'py>(
    cap: &Capture<'py>,
    api: &GreenletApi<'py>,
    index: &HashMap<usize, usize>,
    root: &[usize],
    unmapped: &HashSet<usize>,
    threads: &[u64],
) -> Vec<(u64, usize)> {
    let mut seen: Vec<(u64, usize)> = Vec::new();
    for &ident in threads {
        let Some(top) = cap.thread_top(ident) else {
            continue;
        };
        let mut roots_here: HashSet<usize> = HashSet::default();
        let mut note = |obj: &Bound<'py, PyAny>| {
            if api.is_greenlet(obj) {
                if let Some(&i) = index.get(&(obj.as_ptr() as usize)) {
                    if unmapped.contains(&root[i]) {
                        roots_here.insert(root[i]);
                    }
                }
            }
        };
        for frame in frame_chain(&top, LOCALS_SCAN_FRAMES) {
            for value in local_values(&frame) {
                note(&value);
                // SAFETY: `value` is held (a local of a live frame); list and tuple items are read
                // by index below the size the object reports, each borrowed while `value` holds it.
                unsafe {
                    let v = value.as_ptr();
                    if ffi::PyList_CheckExact(v) != 0 {
                        for k in 0..ffi::PyList_GET_SIZE(v).min(LOCALS_SCAN_ITEMS) {
                            if let Some(item) = inert::borrowed(cap.py, ffi::PyList_GET_ITEM(v, k))
                            {
                                note(&item);
                            }
                        }
                    } else if ffi::PyTuple_CheckExact(v) != 0 {
                        for k in 0..ffi::PyTuple_GET_SIZE(v).min(LOCALS_SCAN_ITEMS) {
                            if let Some(item) = inert::borrowed(cap.py, ffi::PyTuple_GET_ITEM(v, k))
                            {
                                note(&item);
                            }
                        }
                    }
                }
            }
        }
        seen.extend(roots_here.into_iter().map(|r| (ident, r)));
    }
    let count = |f: &dyn Fn(&(u64, usize)) -> bool| seen.iter().filter(|p| f(p)).count();
    seen.iter()
        .copied()
        .filter(|&(t, r)| count(&|p| p.0 == t) == 1 && count(&|p| p.1 == r) == 1)
        .collect()
}
