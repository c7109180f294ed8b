//! The holder of an `asyncio.Lock`: the lock records none, but the task
//! inside an `async with lock:` keeps the lock's `__aexit__` on its
//! coroutine's value stack for the whole block (3.9-3.13: the bound method
//! `BEFORE_ASYNC_WITH` pushed; 3.14+: `LOAD_SPECIAL`'s function, then the
//! lock itself). The value stack is what the coroutine's own `tp_traverse`
//! reports (3.9/3.10 its frame's), the way the garbage collector sees it:
//! no attribute is read, no code runs.
//!
//! A lock is named only when it is locked, some task waits in its
//! `acquire`, and exactly one other task has it so; a lock taken with a bare
//! `await lock.acquire()` shows no holder (nothing says who took it).

use super::asyncio::{Asyncio, TaskView};
use crate::capture::inert;
use crate::model::{Stack, Text};
use pyo3::ffi;
use pyo3::prelude::*;

/// Coroutines followed down one task's await chain.
const MAX_CHAIN: usize = 1000;

/// The coroutines (and generators) of a task's await chain, outermost first.
fn chain<'py>(aio: &Asyncio<'py>, view: &TaskView<'py>) -> Vec<Bound<'py, PyAny>> {
    let mut out = Vec::new();
    let mut current = view.coro.clone();
    while let Some(obj) = current.take() {
        let Some(kind) = aio.coro_type(&obj) else {
            break;
        };
        if out.len() == MAX_CHAIN {
            break;
        }
        current = aio.awaited(kind, &obj);
        out.push(obj);
    }
    out
}

/// What a coroutine's value stack (and locals) hold, as its traversal reports.
fn held<'py>(aio: &Asyncio<'py>, coro: &Bound<'py, PyAny>) -> Vec<Bound<'py, PyAny>> {
    if cfg!(Py_3_11) {
        // The frame is embedded in the coroutine, which traverses it.
        inert::referents(coro)
    } else {
        aio.coro_type(coro)
            .and_then(|kind| aio.frame_of(kind, coro))
            .map(|frame| inert::referents(&frame))
            .unwrap_or_default()
    }
}

/// Whether `objects` (what one coroutine holds, in its traversal's order:
/// locals, then the value stack) put it inside `async with lock`: the bound
/// `lock.__aexit__` (3.9-3.13), or the `__aexit__` function right before the
/// lock itself (3.14+ `LOAD_SPECIAL`; a local that is the lock is not enough).
fn inside_async_with(objects: &[Bound<'_, PyAny>], lock: usize, aexit: usize) -> bool {
    let at = |obj: &Bound<'_, PyAny>| obj.as_ptr() as usize;
    objects.iter().enumerate().any(|(i, obj)| {
        if at(obj) == aexit {
            return objects.get(i + 1).is_some_and(|next| at(next) == lock);
        }
        inert::bound_method_parts(obj)
            .is_some_and(|(func, this)| at(&this) == lock && at(&func) == aexit)
    })
}

/// The lock a task waiting in `Lock.acquire` waits on: `self` of the
/// innermost coroutine of its chain, an `asyncio.Lock` that is locked.
fn awaited_lock<'py>(
    aio: &Asyncio<'py>,
    lock_tp: *mut ffi::PyTypeObject,
    view: &TaskView<'py>,
) -> Option<Bound<'py, PyAny>> {
    let innermost = chain(aio, view).pop()?;
    let frame = aio.frame_of(aio.coro_type(&innermost)?, &innermost)?;
    let lock = crate::capture::framevars::frame_var(&frame, "self")?;
    if !inert::is_instance(&lock, lock_tp) {
        return None;
    }
    let locked = inert::instance_attr(&lock, c"_locked").and_then(|v| inert::bool_value(&v));
    (locked == Some(true)).then_some(lock)
}

/// Names the holder in each `Lock.acquire` waiter's `awaiting` and
/// `waiting_for`, and lists the lock in the holder's `holds`. `stacks[k]`
/// is the stack of `views[order[k]]`.
pub fn name_holders<'py>(
    aio: &Asyncio<'py>,
    views: &[TaskView<'py>],
    order: &[usize],
    stacks: &mut [Stack],
) {
    let waiting: Vec<usize> = (0..stacks.len())
        .filter(|&k| stacks[k].facts.awaiting.as_deref() == Some("Lock.acquire"))
        .collect();
    if waiting.is_empty() {
        return;
    }
    let Some(lock_tp) = inert::imported_module(aio.py, c"asyncio.locks")
        .and_then(|m| inert::module_attr(&m, c"Lock"))
        .as_ref()
        .and_then(inert::as_type)
    else {
        return;
    };
    // SAFETY: `lock_tp` is `asyncio.locks.Lock`, a live type its module holds.
    let Some(aexit) = (unsafe { inert::type_lookup(aio.py, lock_tp, c"__aexit__") }) else {
        return;
    };
    // Each lock waited on, with its waiters (stack indices).
    let mut locks: Vec<(Bound<'py, PyAny>, Vec<usize>)> = Vec::new();
    for &k in &waiting {
        let Some(lock) = awaited_lock(aio, lock_tp, &views[order[k]]) else {
            continue;
        };
        match locks.iter_mut().find(|(l, _)| l.as_ptr() == lock.as_ptr()) {
            Some((_, list)) => list.push(k),
            None => locks.push((lock, vec![k])),
        }
    }
    if locks.is_empty() {
        return;
    }
    let aexit = aexit.as_ptr() as usize;
    // Each lock's candidates: tasks (not waiting on it) inside its `async with`.
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); locks.len()];
    for k in 0..stacks.len() {
        if &*stacks[k].state != "pending" && &*stacks[k].state != "cancelling" {
            continue;
        }
        let coros = chain(aio, &views[order[k]]);
        let held: Vec<Vec<Bound<'py, PyAny>>> = coros.iter().map(|c| held(aio, c)).collect();
        for (at, (lock, waiters)) in locks.iter().enumerate() {
            if waiters.binary_search(&k).is_ok() {
                continue;
            }
            let lock = lock.as_ptr() as usize;
            if held
                .iter()
                .any(|objects| inside_async_with(objects, lock, aexit))
            {
                holders[at].push(k);
            }
        }
    }
    for ((lock, waiters), candidates) in locks.iter().zip(holders) {
        let [h] = candidates[..] else {
            continue;
        };
        let words = format!("<{:#x}>", lock.as_ptr() as usize);
        let awaiting: Text =
            format!("Lock.acquire {words} (held by Task {:?})", &*stacks[h].name).into();
        let holder_id = stacks[h].id.clone();
        for &w in waiters {
            stacks[w].facts.awaiting = Some(awaiting.clone());
            if !stacks[w].facts.waiting_for.contains(&holder_id) {
                stacks[w].facts.waiting_for.push(holder_id.clone());
            }
        }
        stacks[h]
            .facts
            .holds
            .push(format!("asyncio.Lock {words}").into());
    }
}
