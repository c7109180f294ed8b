//! The loop timers a task's `awaiting` reads its deadline from.

use super::asyncio::Asyncio;
use crate::capture::inert::{self, BuiltinAttr};
use pyo3::ffi;
use pyo3::prelude::*;

/// Deadlines by object address. Open addressing, so the slot a lookup
/// will read is known before the lookup and can be fetched ahead: ten
/// thousand sleeping tasks each look one timer up, in an order that has
/// nothing to do with the table's, and the table falls out of the cache
/// while their coroutines stream through it.
#[derive(Default)]
pub struct Timers {
    /// (address, deadline); address 0 marks a free slot (no object lives there).
    slots: Vec<(usize, f64)>,
    len: usize,
}

impl Timers {
    fn slot_of(&self, key: usize) -> usize {
        let x = (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x ^ (x >> 29)) as usize & (self.slots.len() - 1)
    }

    /// Room for `n` keys without growing (at most half the slots used).
    pub fn reserve(&mut self, n: usize) {
        let want = (2 * (self.len + n)).next_power_of_two().max(16);
        if want > self.slots.len() {
            let old = std::mem::replace(&mut self.slots, vec![(0, 0.0); want]);
            self.len = 0;
            for (key, when) in old.into_iter().filter(|(k, _)| *k != 0) {
                self.insert_min(key, when);
            }
        }
    }

    /// Sets `key`'s deadline to `when`, or keeps the earlier one it has.
    pub fn insert_min(&mut self, key: usize, when: f64) {
        if key == 0 {
            return;
        }
        if 2 * (self.len + 1) > self.slots.len() {
            self.reserve(1);
        }
        let mask = self.slots.len() - 1;
        let mut at = self.slot_of(key);
        loop {
            let slot = &mut self.slots[at];
            if slot.0 == key {
                slot.1 = slot.1.min(when);
                return;
            }
            if slot.0 == 0 {
                *slot = (key, when);
                self.len += 1;
                return;
            }
            at = (at + 1) & mask;
        }
    }

    pub fn get(&self, key: usize) -> Option<f64> {
        if self.len == 0 || key == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = self.slot_of(key);
        loop {
            let (k, when) = self.slots[at];
            if k == key {
                return Some(when);
            }
            if k == 0 {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Starts loading the slot a lookup (or insertion) of `key` reads first.
    pub fn prefetch(&self, key: usize) {
        if !self.slots.is_empty() {
            inert::prefetch(&self.slots[self.slot_of(key)], 1);
        }
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
    // Read first, then filed: filing one timer can then fetch the slot of
    // the timer eight on (the table is far larger than the cache lines
    // recently read).
    let mut read: Vec<(usize, f64)> = Vec::with_capacity(scheduled.len());
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
            read.push((key, timer.when));
        }
    }
    out.reserve(read.len());
    for (i, &(key, when)) in read.iter().enumerate() {
        if let Some(&(ahead, _)) = read.get(i + 8) {
            out.prefetch(ahead);
        }
        out.insert_min(key, when);
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
        unsafe { inert::type_lookup(aio.py, ffi::Py_TYPE(event_loop.as_ptr()), c"time") };
    let base_clock = unsafe { inert::type_lookup(aio.py, base, c"time") };
    matches!((own_clock, base_clock), (Some(a), Some(b)) if a.is(&b))
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
