//! The asyncio backend (issue #3): every task of every event loop in every
//! thread, its whole await chain, what it waits for and who waits for it.
//!
//! Tasks are found in asyncio's own registries, which the C `_asyncio`
//! module shares with `asyncio.tasks`: the `_all_tasks` WeakSet (3.9-3.11),
//! or the `_scheduled_tasks` WeakSet plus the `_eager_tasks` set (3.12+).
//! The WeakSet's underlying set of weak references is read directly, never
//! through WeakSet methods.

mod asyncio;
mod chain;
mod links;
mod locks;
mod loops;
#[cfg(tbc_published)]
mod native;
mod timers;

use crate::capture::awaiting::{self, Facts, Waiter};
use crate::capture::{inert, Capture};
use crate::model::{Frame, Frames, Stack, StackDetails, StackFacts, TaskDetails, Text};
use asyncio::{Asyncio, FutState, TaskView};
use chain::ThreadStacks;
use links::{Parent, Waiters};
use loops::LoopThreads;
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::HashMap;
use timers::{loop_timers, Timers};

pub(crate) type AddrMap<V> = crate::model::fasthash::FastMap<usize, V>;
pub(crate) type AddrSet = crate::model::fasthash::FastSet<usize>;

#[cfg(not(Py_3_12))]
const REGISTRIES: &[&std::ffi::CStr] = &[c"_all_tasks"];
#[cfg(Py_3_12)]
const REGISTRIES: &[&std::ffi::CStr] = &[c"_scheduled_tasks", c"_eager_tasks"];

pub fn capture<'py>(cap: &mut Capture<'py>) -> Vec<Stack> {
    let Some(aio) = Asyncio::new(cap.py) else {
        return Vec::new();
    };
    let v = cap.py.version_info();
    let version = crate::capture::cpython::running_version((v.major, v.minor));
    if let Some(why) = crate::capture::cpython::unreadable(version, cfg!(Py_GIL_DISABLED)) {
        cap.errors.push(format!("tasks not captured: {why}"));
        return Vec::new();
    }
    #[allow(unused_mut)]
    let mut current = current_tasks(&aio);
    #[allow(unused_mut)]
    let mut sources = Sources::default();
    #[cfg(tbc_published)]
    match native::collect(cap.py, &mut cap.errors) {
        Ok(found) => {
            if cap.options.done_tasks {
                cap.errors.push(
                    "tasks incomplete: CPython 3.14+ unlinks an _asyncio.Task once it is done; \
                     done and cancelled ones are not listed"
                        .into(),
                );
            }
            for (task, event_loop) in found.running {
                if let Some(event_loop) = event_loop {
                    current.insert(task.as_ptr() as usize, event_loop);
                }
            }
            sources.tasks = found.tasks;
            sources.registries = found.registries;
        }
        Err(why) => cap.errors.push(format!(
            "tasks not captured: the interpreter's task lists were not read: {why}"
        )),
    }
    let tasks = registered_tasks(&aio, cap, &current, sources);
    let mut views: Vec<TaskView<'py>> = Vec::with_capacity(tasks.len());
    for (i, obj) in tasks.iter().enumerate() {
        // A task's fields span its first four cache lines.
        if let Some(ahead) = tasks.get(i + 8) {
            inert::prefetch(ahead.as_ptr(), 4);
        }
        match aio.task(obj) {
            Some(view) => views.push(view),
            None => cap.errors.push(format!(
                "the asyncio task registry holds a {} that is not an asyncio Task; left out",
                inert::type_name(obj)
            )),
        }
    }
    drop(tasks);
    if !cap.options.done_tasks {
        views.retain(|v| v.fut.state == FutState::Pending);
    }
    Backend::new(aio, views, current).stacks(cap)
}

/// `asyncio.tasks._current_tasks`: task address -> its loop, for the task
/// each loop is executing right now.
fn current_tasks<'py>(aio: &Asyncio<'py>) -> AddrMap<Bound<'py, PyAny>> {
    let mut out = AddrMap::default();
    let Some(dict) = inert::module_attr(&aio.tasks_module, c"_current_tasks") else {
        return out;
    };
    // SAFETY: `dict` is alive and the GIL is held (a `Bound`) and checked to be a dict;
    // `PyDict_Next` runs no code.
    unsafe {
        if ffi::PyDict_Check(dict.as_ptr()) == 0 {
            return out;
        }
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key: *mut ffi::PyObject = std::ptr::null_mut();
        let mut value: *mut ffi::PyObject = std::ptr::null_mut();
        while ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut key, &mut value) != 0 {
            out.insert(value as usize, Bound::from_borrowed_ptr(aio.py, key));
        }
    }
    out
}

/// Where else tasks are kept (3.14+: the interpreter's task lists and the
/// `_asyncio` module state's sets).
#[derive(Default)]
struct Sources<'py> {
    tasks: Vec<Bound<'py, PyAny>>,
    registries: Vec<(&'static str, Bound<'py, PyAny>)>,
}

/// Every task in the registries (plus the running ones), each once, alive
/// and strongly held until the capture ends.
fn registered_tasks<'py>(
    aio: &Asyncio<'py>,
    cap: &mut Capture<'py>,
    current: &AddrMap<Bound<'py, PyAny>>,
    more: Sources<'py>,
) -> Vec<Bound<'py, PyAny>> {
    let mut out = more.tasks;
    let mut sources = usize::from(!out.is_empty());
    let named = REGISTRIES.iter().filter_map(|name| {
        let found = inert::module_attr(&aio.tasks_module, name);
        if found.is_none() {
            cap.errors.push(format!(
                "asyncio.tasks.{} is missing; its tasks are not listed",
                name.to_string_lossy()
            ));
        }
        Some((format!("asyncio.tasks.{}", name.to_string_lossy()), found?))
    });
    let named: Vec<(String, Bound<'py, PyAny>)> = named
        .chain(
            more.registries
                .into_iter()
                .map(|(name, set)| (format!("_asyncio's {name} non-native tasks"), set)),
        )
        .collect();
    for (name, registry) in named {
        // A plain set holds tasks; a WeakSet keeps weak references in `data`.
        let members = match inert::set_items(&registry) {
            Some(tasks) => tasks,
            None => {
                match inert::instance_attr(&registry, c"data").and_then(|d| inert::set_items(&d)) {
                    Some(refs) => refs.iter().filter_map(inert::weakref_target).collect(),
                    None => {
                        cap.errors.push(format!(
                            "{name} is neither a set nor a WeakSet; its tasks are not listed"
                        ));
                        continue;
                    }
                }
            }
        };
        if !members.is_empty() {
            sources += 1;
            if out.is_empty() {
                out = members;
            } else {
                out.extend(members);
            }
        }
    }
    for &addr in current.keys() {
        sources += 1;
        // SAFETY: `addr` is a key of `current`, whose tasks `_current_tasks` holds, and nothing ran
        // since it was read.
        out.push(unsafe { Bound::from_borrowed_ptr(aio.py, addr as *mut ffi::PyObject) });
    }
    // Each set holds a task once: only several sources can repeat one.
    if sources > 1 {
        let mut seen = AddrSet::default();
        seen.reserve(out.len());
        out.retain(|task| seen.insert(task.as_ptr() as usize));
    }
    out
}

/// A running coroutine found on a thread's stack.
struct OnStack {
    ident: u64,
    depth: usize,
}

/// What every task of one event loop shares.
struct LoopInfo {
    id: Text,
    thread: Option<u64>,
    /// See [`loop_timers`]; read when a task of the loop first needs a
    /// deadline that its sleep's own timer does not give.
    timers: Option<Timers>,
    /// See [`timers::keeps_base_clock`]; read when a task of the loop first
    /// needs a deadline.
    base_clock: Option<bool>,
}

struct Backend<'py> {
    aio: Asyncio<'py>,
    views: Vec<TaskView<'py>>,
    current: AddrMap<Bound<'py, PyAny>>,
    /// Task address -> index in `views`, built when a task is found
    /// waiting on another task.
    by_addr: Option<AddrMap<usize>>,
    stacks: ThreadStacks<'py>,
    loop_threads: LoopThreads,
    /// Per event loop met: its id, thread and timers, read once.
    loops: Vec<LoopInfo>,
    loop_at: AddrMap<usize>,
    workers: Option<AddrMap<u64>>,
    /// `concurrent.futures.Future` -> index of the task that resolves it.
    feeders: AddrMap<usize>,
    now: Option<Option<f64>>,
    /// The buffer of the last chain's links, reused by the next.
    links: Vec<crate::capture::awaiting::Link>,
    awaiting: awaiting::Texts,
    /// Tasks whose sleep's own timer gave their wake time, without the
    /// loop's table: (task index, loop index, seconds until it wakes). See
    /// `time_out_sleepers`.
    sleepers: Vec<(usize, usize, f64)>,
}

impl<'py> Backend<'py> {
    fn new(
        aio: Asyncio<'py>,
        views: Vec<TaskView<'py>>,
        current: AddrMap<Bound<'py, PyAny>>,
    ) -> Self {
        Backend {
            aio,
            views,
            current,
            by_addr: None,
            stacks: ThreadStacks::default(),
            loop_threads: LoopThreads::default(),
            loops: Vec::new(),
            loop_at: AddrMap::default(),
            workers: None,
            feeders: AddrMap::default(),
            now: None,
            links: Vec::new(),
            awaiting: awaiting::Texts::default(),
            sleepers: Vec::new(),
        }
    }

    fn stacks(mut self, cap: &mut Capture<'py>) -> Vec<Stack> {
        let n = self.views.len();
        let on_stack = self.running_coroutines(cap);
        let running_frames = self.running_frames(cap, &on_stack);

        let waiters = Waiters::new(
            &self.aio,
            self.views
                .iter()
                .filter_map(|v| Some((v.fut.obj.as_ptr() as usize, v.waiter.as_ref()?))),
        );
        let direct: Vec<Vec<Parent<'py>>> = self
            .views
            .iter()
            .map(|v| links::parents(&self.aio, &v.fut))
            .collect();
        // Per intermediate future: the tasks whose helper callbacks resolve it.
        let mut proxied: AddrMap<(Option<String>, Vec<String>)> = AddrMap::default();
        let mut group_sizes: AddrMap<usize> = AddrMap::default();
        for (i, parents) in direct.iter().enumerate() {
            for parent in parents {
                match parent {
                    Parent::Future(f, via) => {
                        let entry = proxied.entry(f.as_ptr() as usize).or_default();
                        if entry.0.is_none() {
                            entry.0 = via.clone();
                        }
                        entry.1.push(self.views[i].name.to_string());
                    }
                    Parent::Group(t) => *group_sizes.entry(*t).or_default() += 1,
                    Parent::Concurrent(c) => {
                        self.feeders.insert(*c, i);
                    }
                    Parent::Task(_) => {}
                }
            }
        }

        let bridged = self.bridged();
        let blocked = self.blocked_threads(cap);
        let mut stacks = Vec::with_capacity(n);
        // The loop of the previous task: tasks of one loop come in runs.
        let mut last_loop: Option<(usize, usize)> = None;
        // Stacks are made in the order they are listed, so none is moved after.
        let order = listing_order(&self.views);
        for (k, &i) in order.iter().enumerate() {
            if crate::capture::fastpaths::on() {
                asyncio::prefetch_chains(&self.views, &order, k);
            }
            let addr = self.views[i].fut.obj.as_ptr() as usize;
            let waited_by = links::awaited_by(
                &self.aio,
                &waiters,
                &bridged,
                &self.views[i].fut,
                &direct[i],
            );
            let mut awaited_by: Vec<String> = if waited_by.is_empty() {
                Vec::new()
            } else {
                waited_by
                    .into_iter()
                    .map(|t| crate::model::address_id("task:", t))
                    .collect()
            };
            for parent in &direct[i] {
                if let Parent::Concurrent(c) = parent {
                    for ident in blocked.get(c).map_or(&[][..], Vec::as_slice) {
                        awaited_by.push(format!("thread:{ident}"));
                    }
                }
            }
            let event_loop = match self.views[i].fut.event_loop.as_ref() {
                None => None,
                Some(l) => {
                    let key = l.as_ptr() as usize;
                    match last_loop {
                        Some((k, at)) if k == key => Some(at),
                        _ => {
                            let l = l.clone();
                            let at = self.loop_index(cap, &l);
                            last_loop = Some((key, at));
                            Some(at)
                        }
                    }
                }
            };
            let thread = event_loop.and_then(|at| self.loops[at].thread);
            let running = !self.current.is_empty() && self.current.contains_key(&addr);
            let on_stack = if running_frames.is_empty() {
                None
            } else {
                running_frames.get(&i)
            };
            let (frames, omitted, awaiting, executor) = match on_stack {
                Some((frames, omitted)) => (frames.clone(), *omitted, None, None),
                None => self.suspended(cap, i, event_loop, &proxied, &group_sizes),
            };
            let view = &self.views[i];
            let state = match view.fut.state {
                FutState::Finished => "done",
                FutState::Cancelled => "cancelled",
                FutState::Pending if running => "running",
                FutState::Pending
                    if view.must_cancel
                        || view.cancel_requests > 0
                        || view.waiter.as_ref().and_then(|w| self.aio.future_state(w))
                            == Some(FutState::Cancelled) =>
                {
                    "cancelling"
                }
                FutState::Pending => "pending",
            };
            let labels = if cap.labels.is_some() {
                let context = self.aio.task_context(&view.fut.obj, view.coro.as_ref());
                cap.labels_of_context(context.as_ref())
            } else {
                Vec::new()
            };
            stacks.push(Stack {
                facts: StackFacts {
                    awaiting,
                    labels,
                    // The worker thread running its `to_thread` job.
                    waiting_for: executor
                        .map(|ident| vec![format!("thread:{ident}").into()])
                        .unwrap_or_default(),
                    ..Default::default()
                },
                id: crate::model::address_text("task:", addr),
                name: view.name.clone(),
                thread,
                state: Text::new_static(state),
                frames,
                frames_omitted: omitted,
                details: StackDetails::Task(TaskDetails {
                    event_loop: match event_loop {
                        Some(at) => self.loops[at].id.clone(),
                        None => Text::new_static("loop:none"),
                    },
                    awaited_by,
                }),
            });
        }
        self.time_out_sleepers(&order, &mut stacks);
        locks::name_holders(&self.aio, &self.views, &order, &mut stacks);
        stacks
    }

    /// Sleeps inside an `asyncio.timeout()` that fires before they wake
    /// say `sleep (times out in N s)`. A sleep's own timer gave its wake
    /// time without the loop's timer table (ten thousand sleepers read
    /// none), so the timeouts are looked up here, and only in a loop that
    /// already has its table or whose heap holds more timers than those
    /// sleeps' own: otherwise none of them can be a timeout.
    fn time_out_sleepers(&mut self, order: &[usize], stacks: &mut [Stack]) {
        let sleepers = std::mem::take(&mut self.sleepers);
        if sleepers.is_empty() {
            return;
        }
        let Some(now) = self.now() else {
            return;
        };
        let mut counts = vec![0usize; self.loops.len()];
        for &(_, at, _) in &sleepers {
            counts[at] += 1;
        }
        // Per loop: whether its table may hold a timeout (read once).
        let mut worth: Vec<Option<bool>> = vec![None; self.loops.len()];
        let mut position: Option<Vec<usize>> = None;
        for (i, at, wakes) in sleepers {
            let Some(event_loop) = self.views[i].fut.event_loop.clone() else {
                continue;
            };
            let info = &mut self.loops[at];
            let table = match (&mut info.timers, worth[at]) {
                (Some(table), _) => table,
                (None, Some(false)) => continue,
                (None, _) => {
                    // Each sleep's own timer is in the heap (`sleep_deadline`
                    // checks): a timeout is one more.
                    let more = timers::scheduled_count(&event_loop).is_some_and(|n| n > counts[at]);
                    worth[at] = Some(more);
                    if !more {
                        continue;
                    }
                    info.timers.insert(loop_timers(&self.aio, &event_loop))
                }
            };
            let task = self.views[i].fut.obj.as_ptr() as usize;
            let Some(timeout) = table.get(task).map(|when| when - now) else {
                continue;
            };
            if timeout >= wakes {
                continue;
            }
            let position = position.get_or_insert_with(|| {
                let mut at = vec![0; self.views.len()];
                for (k, &i) in order.iter().enumerate() {
                    at[i] = k;
                }
                at
            });
            let stack = &mut stacks[position[i]];
            if !stack
                .facts
                .awaiting
                .as_deref()
                .is_some_and(|a| a.starts_with("sleep (wakes in "))
            {
                continue;
            }
            let facts = awaiting::Facts {
                links: vec![awaiting::Link::new("sleep", true)],
                waiter: awaiting::Waiter::Unexamined,
                deadline: Some(wakes),
                timeout: Some(timeout),
                ..Default::default()
            };
            stack.facts.awaiting = self.awaiting.describe(&facts);
        }
    }

    /// For each `concurrent.futures.Future` a task feeds, the futures some
    /// task waits on that are chained to it (`asyncio.wrap_future` in another
    /// loop). Built only when a task feeds one: it reads every waiter's callbacks.
    fn bridged(&self) -> AddrMap<Vec<Bound<'py, PyAny>>> {
        let mut out: AddrMap<Vec<Bound<'py, PyAny>>> = AddrMap::default();
        if self.feeders.is_empty() {
            return out;
        }
        for waiter in self.views.iter().filter_map(|v| v.waiter.as_ref()) {
            for source in self.chained_sources(waiter) {
                if self.feeders.contains_key(&(source.as_ptr() as usize)) {
                    out.entry(source.as_ptr() as usize)
                        .or_default()
                        .push(waiter.clone());
                }
            }
        }
        out
    }

    /// The `concurrent.futures.Future`s an asyncio future's done-callbacks
    /// hold (`_chain_future` keeps its source in their closures).
    fn chained_sources(&self, future: &Bound<'py, PyAny>) -> Vec<Bound<'py, PyAny>> {
        let Some(fut) = self.aio.future(future) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for callback in &fut.callbacks {
            let (func, mut values) = self
                .aio
                .partial_parts(callback)
                .unwrap_or_else(|| (callback.clone(), Vec::new()));
            values.extend(inert::closure_values(&func));
            out.extend(
                values
                    .into_iter()
                    .filter(|v| self.aio.is_concurrent_future(v)),
            );
        }
        out
    }

    /// Threads blocked in `concurrent.futures.Future.result()` (or
    /// `.exception()`) on a future a task feeds, by future: the caller of
    /// `run_coroutine_threadsafe(...).result()` waits for that task.
    fn blocked_threads(&mut self, cap: &mut Capture<'py>) -> AddrMap<Vec<u64>> {
        let mut out: AddrMap<Vec<u64>> = AddrMap::default();
        if self.feeders.is_empty() {
            return out;
        }
        let frames: Vec<(u64, Bound<'py, PyAny>)> =
            self.stacks.all(cap).map(|(t, f)| (t, f.clone())).collect();
        for (ident, frame) in frames {
            let Some(info) = cap.walker.frame_of(&frame) else {
                continue;
            };
            let is_result = info.filename.ends_with("concurrent/futures/_base.py")
                && matches!(
                    &*info.function,
                    "result" | "Future.result" | "exception" | "Future.exception"
                );
            if !is_result {
                continue;
            }
            if let Some(future) = crate::capture::framevars::frame_var(&frame, "self") {
                let key = future.as_ptr() as usize;
                if self.feeders.contains_key(&key) {
                    out.entry(key).or_default().push(ident);
                }
            }
        }
        out
    }

    /// Tasks whose coroutine is executing, located on their thread's stack.
    fn running_coroutines(&mut self, cap: &mut Capture<'py>) -> AddrMap<OnStack> {
        let mut out = AddrMap::default();
        for (i, view) in self.views.iter().enumerate() {
            let Some(coro) = view.coro.as_ref() else {
                continue;
            };
            if !self.aio.is_running(coro) {
                continue;
            }
            let Some(frame) = self.aio.coro_frame(coro) else {
                continue;
            };
            match self.stacks.locate(cap, &frame) {
                Some((ident, depth)) => {
                    if let Some(l) = view.fut.event_loop.as_ref() {
                        self.loop_threads.learn(l, ident);
                    }
                    out.insert(i, OnStack { ident, depth });
                }
                None => cap.errors.push(format!(
                    "task {:?} is running but its frame is on no thread's stack",
                    view.name
                )),
            }
        }
        out
    }

    /// The frames of each executing task: its thread's stack from the task's
    /// coroutine up to the next executing task above it (an eager task
    /// started from inside it), or to the top.
    fn running_frames(
        &mut self,
        cap: &mut Capture<'py>,
        on_stack: &AddrMap<OnStack>,
    ) -> AddrMap<(Frames, u64)> {
        let mut by_thread: HashMap<u64, Vec<(usize, usize)>> = HashMap::new();
        for (i, at) in on_stack {
            by_thread.entry(at.ident).or_default().push((at.depth, *i));
        }
        let mut out = AddrMap::default();
        for (ident, mut entries) in by_thread {
            entries.sort_unstable();
            let mut top = 0;
            for (depth, i) in entries {
                let slice = self.stacks.slice(ident, top, depth);
                let mut frames: Vec<Frame> = slice
                    .iter()
                    .rev()
                    .filter_map(|f| cap.walker.frame_of(f))
                    .collect();
                if top == 0 && ident == cap.current_thread {
                    frames.truncate(frames.len() - cap.own_frames(&frames));
                }
                let max = cap.walker.max_depth();
                let omitted = frames.len().saturating_sub(max);
                frames.drain(..omitted);
                out.insert(i, (frames.into(), omitted as u64));
                top = depth + 1;
            }
        }
        out
    }

    /// Frames and `awaiting` of a task that is not executing.
    fn suspended(
        &mut self,
        cap: &mut Capture<'py>,
        i: usize,
        event_loop: Option<usize>,
        proxied: &AddrMap<(Option<String>, Vec<String>)>,
        group_sizes: &AddrMap<usize>,
    ) -> (Frames, u64, Option<Text>, Option<u64>) {
        let Some(coro) = self.views[i].coro.clone() else {
            return (Frames::default(), 0, None, None);
        };
        let links = std::mem::take(&mut self.links);
        let chain = chain::follow(&self.aio, cap, &coro, links);
        if self.views[i].fut.state != FutState::Pending {
            self.links = chain.links;
            return (chain.frames, chain.omitted, None, None);
        }
        // Inside `wait_for` (3.12+ awaits the coroutine in place, so a sleep
        // it was given is in the chain) the timeout may end the wait first.
        let needs_waiter = awaiting::needs_waiter(&chain.links);
        let waiter = match &self.views[i].waiter {
            Some(w) if needs_waiter => {
                let w = w.clone();
                self.classify(cap, &w, proxied)
            }
            Some(_) => Waiter::Unexamined,
            None => Waiter::Nothing,
        };
        let leaf = match (&waiter, &chain.leaf) {
            (Waiter::Nothing, Some(leaf)) => Some(inert::type_name(leaf)),
            _ => None,
        };
        let executor = match &waiter {
            Waiter::Executor { thread } => *thread,
            _ => None,
        };
        let addr = self.views[i].fut.obj.as_ptr() as usize;
        let earliest = needs_waiter || chain.timed.is_some();
        let (deadline, timeout) = event_loop
            .and_then(|at| self.deadline(i, at, chain.sleep.as_ref(), earliest))
            .unwrap_or_default();
        let facts = Facts {
            links: chain.links,
            waiter,
            leaf,
            deadline,
            timeout,
            timed: chain.timed,
            group_size: if group_sizes.is_empty() {
                None
            } else {
                group_sizes.get(&addr).copied()
            },
        };
        let awaiting = self.awaiting.describe(&facts);
        // The link list's buffer serves the next task.
        self.links = facts.links;
        (chain.frames, chain.omitted, awaiting, executor)
    }

    /// What kind of future a task is blocked on.
    fn classify(
        &mut self,
        cap: &mut Capture<'py>,
        waiter: &Bound<'py, PyAny>,
        proxied: &AddrMap<(Option<String>, Vec<String>)>,
    ) -> Waiter {
        let addr = waiter.as_ptr() as usize;
        if self.aio.is_task(waiter) {
            let views = &self.views;
            let by_addr = self.by_addr.get_or_insert_with(|| {
                views
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.fut.obj.as_ptr() as usize, i))
                    .collect()
            });
            let name = match by_addr.get(&addr) {
                Some(&j) => self.views[j].name.to_string(),
                None => self
                    .aio
                    .task(waiter)
                    .map_or_else(|| inert::type_name(waiter), |t| t.name.to_string()),
            };
            return Waiter::Task { name };
        }
        let Some(state) = self.aio.future_state(waiter) else {
            return Waiter::Other {
                type_name: inert::type_name(waiter),
            };
        };
        if let Some(children) = self.aio.gather_size(waiter) {
            return Waiter::Gather { children };
        }
        if let Some(source) = self.chained_sources(waiter).first() {
            // A task of another loop (`run_coroutine_threadsafe`), else an
            // executor's work item (`to_thread`, `run_in_executor`).
            if let Some(&j) = self.feeders.get(&(source.as_ptr() as usize)) {
                return Waiter::Task {
                    name: self.views[j].name.to_string(),
                };
            }
            let thread = self.worker_of(cap, source);
            return Waiter::Executor { thread };
        }
        let (via, tasks) = proxied.get(&addr).cloned().unwrap_or_default();
        Waiter::Future {
            type_name: inert::type_name(waiter),
            state: state.word().to_string(),
            via,
            tasks,
        }
    }

    /// The thread running a `concurrent.futures` work item: the worker whose
    /// stack has `_WorkItem.run` with that item's future.
    fn worker_of(&mut self, cap: &mut Capture<'py>, source: &Bound<'py, PyAny>) -> Option<u64> {
        if self.workers.is_none() {
            let mut workers = AddrMap::default();
            if let Some(work_item) = self.aio.work_item {
                let frames: Vec<(u64, Bound<'py, PyAny>)> =
                    self.stacks.all(cap).map(|(t, f)| (t, f.clone())).collect();
                for (ident, frame) in frames {
                    let Some(info) = cap.walker.frame_of(&frame) else {
                        continue;
                    };
                    let is_run = info.filename.ends_with("concurrent/futures/thread.py")
                        && matches!(&*info.function, "run" | "_WorkItem.run");
                    if !is_run {
                        continue;
                    }
                    let item = crate::capture::framevars::frame_var(&frame, "self")
                        .filter(|s| inert::is_instance(s, work_item));
                    if let Some(future) = item.and_then(|s| inert::instance_attr(&s, c"future")) {
                        workers.insert(future.as_ptr() as usize, ident);
                    }
                }
            }
            self.workers = Some(workers);
        }
        self.workers
            .as_ref()?
            .get(&(source.as_ptr() as usize))
            .copied()
    }

    /// Seconds until the loop timers of task `i`'s wait fire: the one of
    /// what it waits on (a sleep's, or 3.9-3.11 `wait_for`'s, keyed by the
    /// future waited on) and the task's own timeout (`asyncio.timeout`,
    /// 3.12+ `wait_for`, keyed by the task), see `awaiting::Facts`. The
    /// loop's table is read unless the sleep's own timer was found, or with
    /// `earliest` (a wait a timeout may end first) in any case.
    fn deadline(
        &mut self,
        i: usize,
        event_loop: usize,
        sleep: Option<&Bound<'py, PyAny>>,
        earliest: bool,
    ) -> Option<(Option<f64>, Option<f64>)> {
        let now = self.now()?;
        // Both the sleep's own timer and the loop's table are read only for
        // a loop telling time with the clock `now` was read from.
        let info = &mut self.loops[event_loop];
        let base_clock = match info.base_clock {
            Some(known) => known,
            None => {
                let l = self.views[i].fut.event_loop.as_ref()?;
                *info
                    .base_clock
                    .insert(timers::keeps_base_clock(&self.aio, l))
            }
        };
        if !base_clock {
            return None;
        }
        // A sleep's own timer, read from its frame.
        let slept = sleep
            .and_then(|s| self.aio.sleep_timer(s))
            .and_then(|handle| timers::sleep_deadline(&self.aio, &handle));
        if let (Some(when), false) = (slept, earliest) {
            self.sleepers.push((i, event_loop, when - now));
            return Some((Some(when - now), None));
        }
        let view = &self.views[i];
        let keys = [
            view.waiter.as_ref().map(|w| w.as_ptr() as usize),
            Some(view.fut.obj.as_ptr() as usize),
        ];
        let info = &mut self.loops[event_loop];
        let timers = match &mut info.timers {
            Some(timers) => timers,
            None => {
                let l = self.views[i].fut.event_loop.as_ref()?;
                info.timers.insert(loop_timers(&self.aio, l))
            }
        };
        let [waited_on, task] = keys.map(|k| k.and_then(|k| timers.get(k)));
        let own = slept.or(waited_on);
        Some((own.map(|w| w - now), task.map(|w| w - now)))
    }

    /// The index in `self.loops` of `event_loop`, read on first sight.
    fn loop_index(&mut self, cap: &Capture<'py>, event_loop: &Bound<'py, PyAny>) -> usize {
        let key = event_loop.as_ptr() as usize;
        if let Some(&at) = self.loop_at.get(&key) {
            return at;
        }
        let at = self.loops.len();
        self.loops.push(LoopInfo {
            id: format!("loop:{}", inert::address(event_loop)).into(),
            thread: self.loop_threads.thread_of(cap, event_loop),
            timers: None,
            base_clock: None,
        });
        self.loop_at.insert(key, at);
        at
    }

    /// The loop clock: `BaseEventLoop.time()` is `time.monotonic()`, which
    /// is `CLOCK_MONOTONIC`; read from the system, never through the `time`
    /// module, whose `monotonic` the program may have replaced (by
    /// `breakpoint`, even: a builtin, that would stop the capture in pdb).
    fn now(&mut self) -> Option<f64> {
        *self
            .now
            .get_or_insert_with(crate::capture::monotonic_seconds)
    }
}

/// The order tasks are listed in, as indices into `views`: by loop (in
/// order of first appearance in name order), then by name with a trailing
/// number compared as a number (`worker-2` before `worker-10`), then by
/// full name and address.
///
/// Ten thousand tasks sort on packed integer keys: the few distinct name
/// stems (`Task-`, `worker-`) are ranked once, so no comparison reads a
/// string unless two names have the same stem and number.
fn listing_order(views: &[TaskView<'_>]) -> Vec<usize> {
    // `name.trim_end_matches(ascii digit)` and `digits.parse().unwrap_or(0)`,
    // byte by byte: an ASCII digit is never part of a longer UTF-8 sequence.
    fn split(name: &str) -> (&str, u64) {
        let bytes = name.as_bytes();
        let mut end = bytes.len();
        while end > 0 && bytes[end - 1].is_ascii_digit() {
            end -= 1;
        }
        let mut number: u64 = 0;
        for &d in &bytes[end..] {
            match number
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
            {
                Some(n) => number = n,
                None => return (&name[..end], 0),
            }
        }
        (&name[..end], number)
    }
    if views.len() >= u32::MAX as usize {
        return (0..views.len()).collect();
    }
    let parts: Vec<(&str, u64)> = views.iter().map(|v| split(&v.name)).collect();
    // Tasks of one kind share a stem (`worker-`): runs of it are kept once
    // before the sort, which would otherwise compare ten thousand equal strings.
    let mut heads: Vec<&str> = Vec::new();
    for &(head, _) in &parts {
        if heads.last() != Some(&head) {
            heads.push(head);
        }
    }
    heads.sort_unstable();
    heads.dedup();
    let rank_of = |head: &str| heads.binary_search(&head).unwrap_or(0) as u128;
    // (stem rank, number, index), most significant first.
    let mut order: Vec<u128> = Vec::with_capacity(parts.len());
    let mut last: Option<(&str, u128)> = None;
    for (i, (head, number)) in parts.iter().enumerate() {
        let rank = match last {
            Some((h, r)) if h == *head => r,
            _ => rank_of(head),
        };
        last = Some((head, rank));
        order.push((rank << 96) | ((*number as u128) << 32) | i as u128);
    }
    order.sort_unstable();
    let index = |key: u128| (key & u128::from(u32::MAX)) as usize;
    // Full names (then addresses) break ties between names that differ only
    // in leading zeros, or are the same.
    let mut start = 0;
    while start < order.len() {
        let stem = order[start] >> 32;
        let mut end = start + 1;
        while end < order.len() && order[end] >> 32 == stem {
            end += 1;
        }
        if end - start > 1 {
            order[start..end].sort_unstable_by(|a, b| {
                let (a, b) = (&views[index(*a)], &views[index(*b)]);
                a.name
                    .cmp(&b.name)
                    .then_with(|| a.fut.obj.as_ptr().cmp(&b.fut.obj.as_ptr()))
            });
        }
        start = end;
    }
    let positions: Vec<usize> = order.iter().map(|k| index(*k)).collect();
    // Loops in order of first appearance: one loop (the usual case) keeps
    // the order as it is.
    let loop_of = |i: usize| {
        views[i]
            .fut
            .event_loop
            .as_ref()
            .map_or(0, |l| l.as_ptr() as usize)
    };
    let mut loops: crate::model::fasthash::FastMap<usize, usize> = Default::default();
    let mut last: Option<(usize, usize)> = None;
    let mut ranks: Vec<usize> = Vec::with_capacity(positions.len());
    for &i in &positions {
        let key = loop_of(i);
        let rank = match last {
            Some((l, r)) if l == key => r,
            _ => {
                let next = loops.len();
                *loops.entry(key).or_insert(next)
            }
        };
        last = Some((key, rank));
        ranks.push(rank);
    }
    if loops.len() <= 1 {
        return positions;
    }
    // (loop rank, place in name order, view index)
    let mut ranked: Vec<(usize, usize, usize)> = ranks
        .into_iter()
        .zip(positions)
        .enumerate()
        .map(|(place, (rank, i))| (rank, place, i))
        .collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(_, _, i)| i).collect()
}
