//! The greenlet backend (issue #4): every greenlet of every thread, with its
//! stack, its parent, its thread, and gevent's hub and spawn records.
//!
//! Nothing here imports a module, calls a Python-level attribute lookup on
//! a greenlet or runs a property: greenlet's state comes from its C API and
//! its C getters on the base type (`gr_frame`, `run`, `_stack_saved`), gevent's
//! from Cython field getters and instance dicts. Every reference held is one
//! the heap already had, and all are dropped before `capture` returns.

mod api;
mod naming;
mod owner;
mod scan;

use crate::capture::{safe, Capture};
use crate::model::{Frame, GreenletDetails, Stack, StackDetails};
use api::{instance_of, type_ptr, Flags, Gevent, GreenletApi};
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::HashMap;

pub use naming::MAIN_GREENLET_NAME;

/// What one greenlet looks like before its stack is built.
pub(crate) struct Raw<'py> {
    obj: Bound<'py, PyAny>,
    flags: Flags,
    /// Index of the parent greenlet.
    parent: Option<usize>,
    /// `gr_frame`: the top frame of a greenlet that is switched out.
    frame: Option<Bound<'py, PyAny>>,
    /// Part of its C stack is copied to the heap: it is not running.
    stack_saved: bool,
    hub: bool,
    /// `Hub.thread_ident`.
    hub_thread: Option<u64>,
}

pub fn capture(cap: &mut Capture<'_>) -> Vec<Stack> {
    let py = cap.py;
    let api = match GreenletApi::load(py) {
        Ok(Some(api)) => api,
        Ok(None) => return Vec::new(),
        Err(e) => {
            cap.errors.push(e);
            return Vec::new();
        }
    };
    let found = match scan::find_greenlets(py, &api) {
        Ok(found) => found,
        Err(e) => {
            cap.errors.push(e);
            return Vec::new();
        }
    };
    if found.is_empty() {
        return Vec::new();
    }
    let gevent = Gevent::load(py);
    let index: HashMap<usize, usize> = found
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_ptr() as usize, i))
        .collect();
    let raws: Vec<Raw<'_>> = found
        .into_iter()
        .map(|g| read(&api, &gevent, &index, g))
        .collect();
    // After the scan: a thread without greenlets gets its main greenlet here.
    let current = api
        .current(py)
        .and_then(|c| index.get(&(c.as_ptr() as usize)).copied());
    let own = owner::attribute(cap, &api, &raws, &index, current);

    let mut stacks = Vec::with_capacity(raws.len());
    for i in tree_order(&raws, &own.root, current) {
        stacks.push(build(cap, &api, &gevent, &raws, &own, current, i));
    }
    stacks
}

fn read<'py>(
    api: &GreenletApi<'py>,
    gevent: &Gevent<'py>,
    index: &HashMap<usize, usize>,
    obj: Bound<'py, PyAny>,
) -> Raw<'py> {
    let flags = api.flags(&obj);
    let parent = api
        .parent(&obj)
        .and_then(|p| index.get(&(p.as_ptr() as usize)).copied());
    let frame = safe::builtin_attr(&obj, api.tp, c"gr_frame")
        .filter(|f| unsafe { ffi::PyFrame_Check(f.as_ptr()) } != 0);
    let stack_saved = safe::builtin_attr(&obj, api.tp, c"_stack_saved")
        .and_then(|n| safe::int_value(&n))
        .is_some_and(|n| n != 0);
    let hub = gevent.is_hub(&obj);
    let hub_thread = if hub {
        safe::instance_attr(&obj, c"thread_ident").and_then(|t| safe::int_value(&t))
    } else {
        None
    };
    Raw {
        obj,
        flags,
        parent,
        frame,
        stack_saved,
        hub,
        hub_thread,
    }
}

/// Threads in order (the caller's first), each as a tree walk from its main
/// greenlet: a hub before its siblings, other children in heap order.
fn tree_order(raws: &[Raw<'_>], root: &[usize], current: Option<usize>) -> Vec<usize> {
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); raws.len()];
    for (i, raw) in raws.iter().enumerate() {
        if let Some(p) = raw.parent.filter(|&p| p != i && root[i] != i) {
            children[p].push(i);
        }
    }
    for kids in &mut children {
        kids.sort_by_key(|&k| (!raws[k].hub, k));
    }
    let mut roots: Vec<usize> = (0..raws.len()).filter(|&i| root[i] == i).collect();
    if let Some(first) = current.map(|c| root[c]) {
        roots.sort_by_key(|&r| r != first);
    }
    let mut seen = vec![false; raws.len()];
    let mut order = Vec::with_capacity(raws.len());
    for r in roots {
        let mut todo = vec![r];
        while let Some(i) = todo.pop() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            order.push(i);
            todo.extend(children[i].iter().rev());
        }
    }
    // Only reachable if parents were inconsistent: list them rather than drop them.
    order.extend((0..raws.len()).filter(|&i| !seen[i]));
    order
}

fn build<'py>(
    cap: &mut Capture<'py>,
    api: &GreenletApi<'py>,
    gevent: &Gevent<'py>,
    raws: &[Raw<'py>],
    own: &owner::Ownership,
    current: Option<usize>,
    i: usize,
) -> Stack {
    let raw = &raws[i];
    let thread = own.thread[i];
    let state = if !raw.flags.started {
        "not_started"
    } else if !raw.flags.active {
        "dead"
    } else if own.running[i] {
        "running"
    } else {
        "suspended"
    };
    let (frames, frames_omitted) = match state {
        "running" if current == Some(i) => cap
            .thread_top(cap.current_thread)
            .and_then(|top| cap.walker.walk_from(&top))
            .map(|(mut frames, omitted)| {
                cap.trim_own_frames(&mut frames);
                (frames, omitted)
            })
            .unwrap_or_default(),
        "running" => thread
            .and_then(|t| cap.thread_top(t))
            .and_then(|top| cap.walker.walk_from(&top))
            .unwrap_or_default(),
        "suspended" => raw
            .frame
            .as_ref()
            .and_then(|f| cap.walker.walk_from(f))
            .unwrap_or_default(),
        _ => (Vec::new(), 0),
    };
    let entry = (frames_omitted == 0)
        .then(|| frames.first().map(|f| f.function.as_str()))
        .flatten();
    let name = naming::greenlet_name(api, gevent, &raw.obj, raw.flags.main, raw.hub, entry);
    let (spawned_by, spawn_frames) = spawn_record(cap, api, gevent, &raw.obj);
    Stack {
        id: greenlet_id(&raw.obj),
        name,
        thread,
        state: state.to_string(),
        frames,
        frames_omitted,
        details: StackDetails::Greenlet(GreenletDetails {
            parent: raw.parent.map(|p| greenlet_id(&raws[p].obj)),
            hub: raw.hub,
            spawned_by,
            spawn_frames,
        }),
    }
}

fn greenlet_id(obj: &Bound<'_, PyAny>) -> String {
    format!("greenlet:{}", safe::address(obj))
}

/// gevent's `spawning_greenlet` (a weak reference) and `spawning_stack` (a
/// chain of `_Frame` records, newest first), kept when
/// `gevent.config.track_greenlet_tree` is on (the default).
fn spawn_record<'py>(
    cap: &mut Capture<'py>,
    api: &GreenletApi<'py>,
    gevent: &Gevent<'py>,
    obj: &Bound<'py, PyAny>,
) -> (Option<String>, Vec<Frame>) {
    let Some(gtype) = gevent.greenlet.as_ref().filter(|t| instance_of(obj, Some(t))) else {
        return (None, Vec::new());
    };
    // Cython fields are C getters on the class; pure-Python gevent keeps them in `__dict__`.
    let field = |name| {
        safe::builtin_attr(obj, type_ptr(gtype), name).or_else(|| safe::instance_attr(obj, name))
    };
    let spawner = field(c"spawning_greenlet")
        .and_then(|r| dereference(&r))
        .filter(|g| api.is_greenlet(g))
        .map(|g| greenlet_id(&g));

    let mut frames = Vec::new();
    if let (Some(mut record), Some(ftype)) = (field(c"spawning_stack"), gevent.frame.as_ref()) {
        let ftp = type_ptr(ftype);
        while frames.len() < cap.walker.max_depth() && instance_of(&record, Some(ftype)) {
            let lineno = safe::builtin_attr(&record, ftp, c"f_lineno")
                .and_then(|n| safe::int_value(&n))
                .and_then(|n| u32::try_from(n).ok());
            if let Some(code) = safe::builtin_attr(&record, ftp, c"f_code") {
                frames.extend(cap.walker.code_frame(&code, lineno));
            }
            match safe::builtin_attr(&record, ftp, c"f_back") {
                Some(back) => record = back,
                None => break,
            }
        }
        frames.reverse();
    }
    (spawner, frames)
}

/// The referent of a `weakref.ref` (or the object itself if it is none).
fn dereference<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    unsafe {
        if ffi::PyWeakref_CheckRef(obj.as_ptr()) == 0 {
            return Some(obj.clone());
        }
        let mut target: *mut ffi::PyObject = std::ptr::null_mut();
        if ffi::compat::PyWeakref_GetRef(obj.as_ptr(), &mut target) < 0 {
            safe::clear_error();
            return None;
        }
        // 0: the referent is gone; target is NULL.
        safe::owned(obj.py(), target)
    }
}
