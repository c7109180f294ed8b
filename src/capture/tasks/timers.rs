//! The loop timers a task's `awaiting` reads its deadline from.

use super::asyncio::Asyncio;
use crate::capture::inert::{self, BuiltinAttr};
use crate::model::fasthash::FastMap;
use pyo3::ffi;
use pyo3::prelude::*;

/// Deadlines by object address: the earliest timer of each key.
#[derive(Default)]
pub struct Timers(FastMap<usize, f64>);

impl Timers {
    /// Sets `key`'s deadline to `when`, or keeps the earlier one it has.
    fn insert_min(&mut self, key: usize, when: f64) {
        self.0
            .entry(key)
            .and_modify(|w| *w = w.min(when))
            .or_insert(when);
    }

    pub fn get(&self, key: usize) -> Option<f64> {
        self.0.get(&key).copied()
    }
}

/// When each pending timer of a `BaseEventLoop` fires, keyed by the first
/// argument of its callback (the future `sleep` and `wait_for` resolve) or by
/// the task an `asyncio.timeout` will cancel. For a loop that
/// [`keeps_base_clock`] (the caller asks); empty for one whose timers are
/// not `TimerHandle`s (uvloop).
pub fn loop_timers<'py>(aio: &Asyncio<'py>, event_loop: &Bound<'py, PyAny>) -> Timers {
    let mut out = Timers::default();
    let Some(scheduled) =
        inert::instance_attr(event_loop, c"_scheduled").and_then(|s| inert::sequence_items(&s))
    else {
        return out;
    };
    for handle in &scheduled {
        let Some(timer) = pending_timer(aio, handle) else {
            continue;
        };
        let task = timer
            .callback
            .and_then(|c| inert::bound_method_parts(&c))
            .and_then(|(_, this)| inert::instance_attr(&this, c"_task"))
            .filter(|x| aio.is_task(x))
            .map(|task| task.as_ptr() as usize);
        for key in [timer.first, task].into_iter().flatten() {
            out.insert_min(key, timer.when);
        }
    }
    out
}

/// Whether `event_loop` is a `BaseEventLoop` telling time with
/// `BaseEventLoop.time` (`time.monotonic()`), the clock capture reads.
pub fn keeps_base_clock<'py>(aio: &Asyncio<'py>, event_loop: &Bound<'py, PyAny>) -> bool {
    let (Some(base), Some(_)) = (aio.base_loop, aio.timers.as_ref()) else {
        return false;
    };
    if !inert::is_instance(event_loop, base) {
        return false;
    }
    // Both types are alive: the loop's own type and a type it inherits from.
    let own_clock =
        // SAFETY: `event_loop` is alive and the GIL is held (a `Bound`), so is its type.
        unsafe { inert::type_lookup(aio.py, ffi::Py_TYPE(event_loop.as_ptr()), c"time") };
    // SAFETY: `base` is `BaseEventLoop`, held by its module.
    let base_clock = unsafe { inert::type_lookup(aio.py, base, c"time") };
    matches!((own_clock, base_clock), (Some(a), Some(b)) if a.is(&b))
}

/// How many timers `event_loop`'s heap (`_scheduled`) holds, cancelled
/// ones included.
pub fn scheduled_count(event_loop: &Bound<'_, PyAny>) -> Option<usize> {
    inert::instance_attr(event_loop, c"_scheduled").and_then(|s| inert::container_len(&s))
}

/// What a pending `TimerHandle` holds.
struct PendingTimer<'py> {
    when: f64,
    /// Address of its callback's first argument.
    first: Option<usize>,
    callback: Option<Bound<'py, PyAny>>,
}

/// `handle` if it is a `TimerHandle` that is neither cancelled nor done.
fn pending_timer<'py>(aio: &Asyncio<'py>, handle: &Bound<'py, PyAny>) -> Option<PendingTimer<'py>> {
    let t = aio.timers.as_ref()?;
    if !inert::is_instance(handle, t.timer_tp) {
        return None;
    }
    // A TimerHandle, so a Handle: the slot readers need no subtype check
    // (four MRO walks a handle otherwise).
    let slot =
        // SAFETY: `handle` is a `TimerHandle` (checked above), so a `Handle`, whose slots these
        // are.
        |a: &Option<BuiltinAttr<'py>>| a.as_ref().and_then(|a| unsafe { a.get_unchecked(handle) });
    let cancelled = slot(&t.cancelled).and_then(|v| inert::bool_value(&v));
    if cancelled != Some(false) {
        return None;
    }
    let when = slot(&t.when).and_then(|v| inert::float_value(&v))?;
    let first = slot(&t.args)
        .and_then(|a| inert::first_item(&a))
        .map(|first| first.as_ptr() as usize);
    Some(PendingTimer {
        when,
        first,
        callback: slot(&t.callback),
    })
}

/// When the timer of an `asyncio.sleep` (see `Asyncio::sleep_timer`) fires,
/// if it is one [`loop_timers`] would list: a `TimerHandle`, not cancelled,
/// still in its loop's heap (`_scheduled`). That it resolves the future the
/// task waits on is given: it is the timer `asyncio.sleep`'s own code made
/// for the future it awaits.
pub fn sleep_deadline<'py>(aio: &Asyncio<'py>, handle: &Bound<'py, PyAny>) -> Option<f64> {
    let t = aio.timers.as_ref()?;
    if !inert::is_instance(handle, t.timer_tp) {
        return None;
    }
    // SAFETY: a TimerHandle, so a Handle.
    let slot =
        |a: &Option<BuiltinAttr<'py>>| a.as_ref().and_then(|a| unsafe { a.get_unchecked(handle) });
    let flag = |a: &Option<BuiltinAttr<'py>>| slot(a).and_then(|v| inert::bool_value(&v));
    if flag(&t.cancelled) != Some(false) || flag(&t.scheduled) != Some(true) {
        return None;
    }
    slot(&t.when).and_then(|v| inert::float_value(&v))
}
