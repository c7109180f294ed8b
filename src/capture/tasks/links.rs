//! Who waits for whom: `awaited_by` and the classification of the future a
//! task is blocked on, derived from done-callbacks and `_fut_waiter`.
//!
//! A task T waits for X when X's done-callbacks lead back to T: T's own
//! wakeup (T awaits X directly), a `TaskGroup`'s `_on_task_done` (T is the
//! group's parent task), or a helper closure (`gather`, `shield`,
//! `asyncio.wait`, `wait_for`) that holds an intermediate future, which T
//! (or a further helper) waits on in turn.

use super::asyncio::{Asyncio, Fut};
use super::{AddrMap, AddrSet};
use crate::capture::inert;
use pyo3::prelude::*;
use std::collections::VecDeque;

/// How far intermediate futures are followed (gather of gather of ...).
const MAX_HOPS: usize = 64;

/// One edge from a future towards what waits for it.
pub enum Parent<'py> {
    /// A task, woken directly by the future (`await x`).
    Task(usize),
    /// A task that is the parent of the future's `TaskGroup`.
    Group(usize),
    /// An intermediate future some helper resolves when this one is done;
    /// `via` is that helper (`gather`, `shield`, `_wait`, `_release_waiter`).
    Future(Bound<'py, PyAny>, Option<String>),
    /// A `concurrent.futures.Future` this task feeds (`run_coroutine_threadsafe`):
    /// whoever awaits a future chained to it, in any loop, waits for this task.
    Concurrent(usize),
}

/// The edges leaving a future, from its done-callbacks.
pub fn parents<'py>(aio: &Asyncio<'py>, fut: &Fut<'py>) -> Vec<Parent<'py>> {
    let mut out = Vec::new();
    for callback in &fut.callbacks {
        if let Some(task) = aio.woken_task(callback) {
            out.push(Parent::Task(task.as_ptr() as usize));
            continue;
        }
        if let Some((_, this)) = inert::bound_method_parts(callback) {
            // TaskGroup._on_task_done: the group knows its parent task.
            if let Some(parent) = inert::instance_attr(&this, c"_parent_task") {
                if aio.is_task(&parent) {
                    out.push(Parent::Group(parent.as_ptr() as usize));
                }
            }
            continue;
        }
        let (func, mut values) = match aio.partial_parts(callback) {
            Some((func, args)) => (func, args),
            None => (callback.clone(), Vec::new()),
        };
        let via = inert::function_qualname(&func).map(|q| helper_name(&q));
        values.extend(inert::closure_values(&func));
        for value in values {
            // Tasks a closure holds are never what waits: only a task's
            // wakeup says that (shield's outer callback holds the inner task).
            if aio.is_future(&value) && !aio.is_task(&value) && !value.is(&fut.obj) {
                out.push(Parent::Future(value, via.clone()));
            } else if aio.is_concurrent_future(&value) && aio.is_task(&fut.obj) {
                out.push(Parent::Concurrent(value.as_ptr() as usize));
            }
        }
    }
    out
}

/// `gather.<locals>._done_callback` -> `gather`.
fn helper_name(qualname: &str) -> String {
    qualname
        .split(".<locals>")
        .next()
        .unwrap_or(qualname)
        .to_string()
}

/// The tasks whose `_fut_waiter` each future is.
///
/// Indexed in two parts: the waiters that are tasks up front (every task
/// asks for its own awaiters), the rest only when an intermediate future is
/// followed. Ten thousand tasks usually wait on ten thousand plain futures
/// that nobody asks about.
pub struct Waiters {
    /// (task, waiter) in registry order.
    pairs: Vec<(usize, usize)>,
    tasks: Index,
    all: std::cell::OnceCell<Index>,
}

/// One flat list sorted by future, each future mapped to its run: a `Vec`
/// per future would be one allocation each.
struct Index {
    by_future: AddrMap<(usize, usize)>,
    tasks: Vec<usize>,
}

impl Index {
    fn new(pairs: impl Iterator<Item = (usize, usize)>) -> Self {
        // (future, position, task): the position keeps each future's tasks
        // in the order they came.
        let mut sorted: Vec<(usize, usize, usize)> = pairs
            .enumerate()
            .map(|(n, (task, waiter))| (waiter, n, task))
            .collect();
        sorted.sort_unstable();
        let mut by_future: AddrMap<(usize, usize)> = AddrMap::default();
        by_future.reserve(sorted.len());
        let mut start = 0;
        for (end, &(future, _, _)) in sorted.iter().enumerate().skip(1) {
            if future != sorted[start].0 {
                by_future.insert(sorted[start].0, (start, end));
                start = end;
            }
        }
        if start < sorted.len() {
            by_future.insert(sorted[start].0, (start, sorted.len()));
        }
        let tasks = sorted.into_iter().map(|(_, _, task)| task).collect();
        Index { by_future, tasks }
    }

    fn of(&self, future: usize) -> &[usize] {
        if self.tasks.is_empty() {
            return &[];
        }
        self.by_future
            .get(&future)
            .map_or(&[], |&(start, end)| &self.tasks[start..end])
    }
}

impl Waiters {
    pub fn new<'a, 'py: 'a>(
        aio: &Asyncio<'py>,
        pairs: impl Iterator<Item = (usize, &'a Bound<'py, PyAny>)>,
    ) -> Self {
        let all: Vec<(usize, &Bound<'py, PyAny>)> = pairs.collect();
        let mut on_tasks = Vec::new();
        for (i, &(task, waiter)) in all.iter().enumerate() {
            // Ten thousand futures scattered over memory: their types are
            // fetched sixteen ahead, not waited for one by one.
            if let Some((_, ahead)) = all.get(i + 16) {
                inert::prefetch(ahead.as_ptr(), 1);
            }
            if aio.is_task(waiter) {
                on_tasks.push((task, waiter.as_ptr() as usize));
            }
        }
        let all = all
            .into_iter()
            .map(|(task, waiter)| (task, waiter.as_ptr() as usize))
            .collect();
        Waiters {
            pairs: all,
            tasks: Index::new(on_tasks.into_iter()),
            all: std::cell::OnceCell::new(),
        }
    }

    /// The tasks waiting on `task` directly.
    fn of_task(&self, task: usize) -> &[usize] {
        self.tasks.of(task)
    }

    /// The tasks waiting on any future.
    fn of(&self, future: usize) -> &[usize] {
        self.all
            .get_or_init(|| Index::new(self.pairs.iter().copied()))
            .of(future)
    }
}

/// Addresses of the tasks waiting for `fut` (itself a task), nearest first,
/// each once: direct awaiters and group parents, then the tasks behind
/// intermediate futures, followed up to [`MAX_HOPS`] futures. `bridged`
/// maps a `concurrent.futures.Future` to the asyncio futures chained to it.
pub fn awaited_by<'py>(
    aio: &Asyncio<'py>,
    waiters: &Waiters,
    bridged: &AddrMap<Vec<Bound<'py, PyAny>>>,
    fut: &Fut<'py>,
    direct: &[Parent<'py>],
) -> Vec<usize> {
    let mut found: Vec<usize> = waiters.of_task(fut.obj.as_ptr() as usize).to_vec();
    if direct.is_empty() && found.len() <= 1 {
        // Nothing to follow or de-duplicate: most tasks end here.
        found.retain(|t| *t != fut.obj.as_ptr() as usize);
        return found;
    }
    let mut visited = AddrSet::default();
    visited.insert(fut.obj.as_ptr() as usize);
    let mut queue: VecDeque<Parent<'py>> = direct
        .iter()
        .map(|p| match p {
            Parent::Task(t) => Parent::Task(*t),
            Parent::Group(t) => Parent::Group(*t),
            Parent::Future(f, via) => Parent::Future(f.clone(), via.clone()),
            Parent::Concurrent(c) => Parent::Concurrent(*c),
        })
        .collect();
    while let Some(parent) = queue.pop_front() {
        match parent {
            Parent::Task(t) | Parent::Group(t) => found.push(t),
            Parent::Future(f, _) => {
                let key = f.as_ptr() as usize;
                if visited.len() > MAX_HOPS || !visited.insert(key) {
                    continue;
                }
                found.extend_from_slice(waiters.of(key));
                if let Some(inner) = aio.future(&f) {
                    queue.extend(parents(aio, &inner));
                }
            }
            Parent::Concurrent(c) => {
                if visited.len() > MAX_HOPS || !visited.insert(c) {
                    continue;
                }
                for chained in bridged.get(&c).map_or(&[][..], Vec::as_slice) {
                    queue.push_back(Parent::Future(chained.clone(), None));
                }
            }
        }
    }
    let own = fut.obj.as_ptr() as usize;
    let mut seen = AddrSet::default();
    found.retain(|t| *t != own && seen.insert(*t));
    found
}
