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
mod primitives;
mod scan;
mod sleep;

#[cfg(tbc_iframe)]
use crate::capture::iframe;
use crate::capture::{inert, Capture};
use crate::model::fasthash::FastMap as HashMap;
use crate::model::{Frames, GreenletDetails, Stack, StackDetails, Text};
use api::{instance_of, read, Flags, Gevent, GreenletApi};
use naming::Namer;
use pyo3::ffi;
use pyo3::prelude::*;
use std::cell::RefCell;

pub use naming::MAIN_GREENLET_NAME;
pub use scan::source as heap_scan_source;

/// What one greenlet looks like before its stack is built.
pub(crate) struct Raw<'py> {
    /// A reference of our own: see `scan`.
    obj: Bound<'py, PyAny>,
    flags: Flags,
    /// Index of the parent greenlet.
    parent: Option<usize>,
    /// `gr_frame`: the top frame of a greenlet that is switched out.
    frame: Option<Bound<'py, PyAny>>,
    /// Part of its C stack is copied to the heap: it is not running. Read
    /// only for active greenlets without a frame, the ones it decides about.
    stack_saved: bool,
    hub: bool,
    /// `Hub.thread_ident`.
    hub_thread: Option<u64>,
}

pub fn capture(cap: &mut Capture<'_>) -> Vec<Stack> {
    if cfg!(Py_GIL_DISABLED) {
        let why = crate::capture::cpython::free_threaded_refusal("greenlet");
        cap.errors.push(why);
        return Vec::new();
    }
    let py = cap.py;
    let api = match GreenletApi::load(py) {
        Ok(Some(api)) => api,
        Ok(None) => return Vec::new(),
        Err(e) => {
            cap.errors.push(e);
            return Vec::new();
        }
    };
    let primitives = primitives::Primitives::load(py);
    let scan::Found {
        greenlets: found,
        primitives: found_primitives,
    } = match scan::find_greenlets(py, &api, &primitives.scanned()) {
        Ok(found) => found,
        Err(e) => {
            cap.errors.push(e);
            return Vec::new();
        }
    };
    if found.is_empty() {
        return Vec::new();
    }
    let gevent = Gevent::load(py, &api);
    let index: HashMap<usize, usize> = found
        .iter()
        .enumerate()
        .map(|(i, g)| (g.as_ptr() as usize, i))
        .collect();
    let mut parents = ParentIndex::default();
    let mut raws: Vec<Raw<'_>> = found
        .into_iter()
        .map(|g| read_greenlet(&api, &gevent, &index, &mut parents, g))
        .collect();
    let current = raws.iter().position(|raw| {
        raw.flags.active && raw.frame.is_none() && !raw.stack_saved && api.runs_here(&raw.obj)
    });
    let own = owner::attribute(cap, &api, &raws, &index, current);

    let ids = Ids::default();
    let api_memo = RefCell::new(ApiMemo::default());
    let mut namer = Namer::new(py);
    let mut stacks = Vec::with_capacity(raws.len());
    let mut lock_waits: Vec<(usize, usize)> = Vec::new();
    let mut sleeps = sleep::SleepTimers::load(py);

    let order = tree_order(&raws, &own.root, current);
    for (k, &i) in order.iter().enumerate() {
        prefetch_ahead(&gevent, &raws, &order, k);
        let ctx = Context {
            api: &api,
            gevent: &gevent,
            raws: &raws,
            own: &own,
            ids: &ids,
            index: &index,
            current,
            api_memo: &api_memo,
        };
        let mut stack = build(cap, &ctx, &mut namer, i);
        if stack.facts.awaiting.as_deref() == Some("sleep") {
            if let Some(words) = raws[i].frame.as_ref().and_then(|f| sleeps.words(f)) {
                stack.facts.awaiting = Some(words.into());
            }
        }
        if stack.facts.awaiting.as_deref() == Some("RLock.acquire") {
            if let Some(lock) = raws[i].frame.as_ref().and_then(gevent_lock_owner) {
                let (lock_addr, owner) = lock;
                if index.contains_key(&owner) {
                    stack.facts.waiting_for = vec![crate::model::address_text("greenlet:", owner)];
                    lock_waits.push((stacks.len(), lock_addr));
                }
            }
        }
        stacks.push(stack);
        // Released while the frame is still in the cache, not in a pass at the end.
        raws[i].frame = None;
    }
    // Who joins whom, and what the others wait in: a waiter's `switch`
    // sits in the links of the greenlet it joins (gevent's
    // `join`/`joinall`/`get` rawlink it) or of the primitive it waits on
    // (see `primitives`). Such a greenlet is switched out in compiled code,
    // its innermost frame the user's: the links are read only when some
    // greenlet waits so (ten thousand in `sleep` need none of it).
    let unexplained = |s: &Stack| {
        &*s.state == "suspended"
            && s.facts.awaiting.is_none()
            && matches!(&s.details, StackDetails::Greenlet(d) if !d.hub)
    };
    // Pure-Python gevent's frames name a join but not whom it joins.
    let joining = |s: &Stack| {
        matches!(
            s.facts.awaiting.as_deref(),
            Some("Greenlet.join" | "joinall")
        ) && s.facts.waiting_for.is_empty()
    };
    // ... nor which semaphore.
    let on_semaphore = |s: &Stack| s.facts.awaiting.as_deref() == Some(primitives::SEMAPHORE_WAIT);
    if stacks
        .iter()
        .any(|s| unexplained(s) || joining(s) || on_semaphore(s))
    {
        let joins = joiners(&gevent, &primitives, &raws, &index);
        for (k, &i) in order.iter().enumerate() {
            let Some((joined, words)) = joins.get(&i) else {
                continue;
            };
            let stack = &mut stacks[k];
            for &j in joined {
                let id = greenlet_id(&raws[j].obj);
                if !stack.facts.waiting_for.contains(&id) {
                    stack.facts.waiting_for.push(id);
                }
            }
            if stack.facts.awaiting.is_none() {
                stack.facts.awaiting = Some(Text::new_static(words));
            }
        }
        let mut at = vec![0; raws.len()];
        for (k, &i) in order.iter().enumerate() {
            at[i] = k;
        }
        primitives.waits(&found_primitives, &index, |greenlet, words| {
            let stack = &mut stacks[at[greenlet]];
            let refines = on_semaphore(stack) && words.starts_with(primitives::SEMAPHORE_WAIT);
            if unexplained(stack) || refines {
                stack.facts.awaiting = Some(words);
            }
        });
    }
    drop(found_primitives);
    name_lock_holders(&mut stacks, &lock_waits);
    drop_bare_main_greenlets(&mut stacks, &raws, &own.root, &order);
    stacks
}

/// Leaves out each main greenlet that has no greenlet under it and is not
/// switched out: running, it shows its thread's frames, which the thread's
/// stack shows; dead (its thread ended, or a forked child's copy of a
/// parent thread's), it has none. greenlet makes one in any thread that
/// asks for the current greenlet: Celery asks in every thread that logs,
/// tbcollect's dumper included, and each then read as a stray `<main
/// greenlet>`, under no thread in a forked pool process. One that another
/// greenlet waits for stays.
fn drop_bare_main_greenlets(
    stacks: &mut Vec<Stack>,
    raws: &[Raw<'_>],
    root: &[usize],
    order: &[usize],
) {
    let mut has_children = vec![false; raws.len()];
    for (i, &r) in root.iter().enumerate() {
        if r != i {
            has_children[r] = true;
        }
    }
    let bare = |k: usize, stack: &Stack| {
        let i = order[k];
        raws[i].flags.main && !has_children[i] && &*stack.state != "suspended"
    };
    if !stacks.iter().enumerate().any(|(k, s)| bare(k, s)) {
        return;
    }
    let waited_for: std::collections::HashSet<Text> = stacks
        .iter()
        .flat_map(|s| s.facts.waiting_for.iter().cloned())
        .collect();
    let mut k = 0;
    stacks.retain(|stack| {
        let keep = !bare(k, stack) || waited_for.contains(&stack.id);
        k += 1;
        keep
    });
}

/// The gevent `RLock` a greenlet blocked in `RLock.acquire` waits on (the
/// frame's `self`) and its `_owner` greenlet, by address.
fn gevent_lock_owner(top: &Bound<'_, PyAny>) -> Option<(usize, usize)> {
    let lock = crate::capture::framevars::frame_var(top, "self")?;
    // gevent's RLock keeps `_owner` in a slot: read through the slot's own
    // member descriptor (a property of a subclass is refused).
    let owner_of = inert::BuiltinGetter::new(lock.get_type().as_any(), c"_owner")?;
    let owner = inert::not_none(owner_of.get(&lock)?)?;
    Some((lock.as_ptr() as usize, owner.as_ptr() as usize))
}

/// Each waiter's text names the holder, and the holder lists the lock.
fn name_lock_holders(stacks: &mut [Stack], lock_waits: &[(usize, usize)]) {
    for &(w, lock) in lock_waits {
        let Some(holder_id) = stacks[w].facts.waiting_for.first().cloned() else {
            continue;
        };
        let Some(h) = stacks.iter().position(|s| s.id == holder_id) else {
            continue;
        };
        let words = format!("<{lock:#x}>");
        stacks[w].facts.awaiting = Some(
            format!(
                "RLock.acquire {words} (held by Greenlet {:?})",
                stacks[h].name
            )
            .into(),
        );
        let held: Text = format!("gevent RLock {words}").into();
        if !stacks[h].facts.holds.contains(&held) {
            stacks[h].facts.holds.push(held);
        }
    }
}

/// For each greenlet index, the greenlets it joins and the words for it
/// (`Greenlet.join`, or `joinall` through a `MultipleWaiter`): a started
/// gevent `Greenlet`'s links (one of its Cython fields) holding another
/// greenlet's bound `switch`, or a `Waiter`'s.
fn joiners(
    gevent: &Gevent<'_>,
    primitives: &primitives::Primitives<'_>,
    raws: &[Raw<'_>],
    index: &HashMap<usize, usize>,
) -> HashMap<usize, (Vec<usize>, &'static str)> {
    let mut out: HashMap<usize, (Vec<usize>, &'static str)> = HashMap::default();
    let Some(greenlet_type) = gevent.greenlet.as_ref().and_then(inert::as_type) else {
        return out;
    };
    let deque = primitives.deque();
    for (j, raw) in raws.iter().enumerate() {
        if !raw.flags.started || !raw.flags.active || raw.hub {
            continue;
        }
        if !inert::is_instance(&raw.obj, greenlet_type) {
            continue;
        }
        // SAFETY: only the type of what a field holds is read.
        let is_links = |value: *mut ffi::PyObject| unsafe {
            ffi::PyList_CheckExact(value) != 0 || Some(ffi::Py_TYPE(value)) == deque
        };
        // SAFETY: `raw.obj` was checked to be a gevent `Greenlet`.
        let mut fields = unsafe { gevent.link_fields(&raw.obj, is_links) };
        if !gevent.compiled() {
            // Pure-Python gevent keeps them in the instance `__dict__`.
            fields.extend(inert::instance_dict(&raw.obj).and_then(|d| {
                inert::dict_get_scan(&d, inert::interned!(d.py(), "_links").as_any())
            }));
        }
        for field in fields {
            primitives.for_each_entry(&field, |link| {
                let Some((joiner, via)) = primitives.waiter_of(link) else {
                    return;
                };
                if let Some(&i) = index.get(&joiner) {
                    if i != j {
                        let words = match via {
                            primitives::Via::Several => "joinall",
                            _ => "Greenlet.join",
                        };
                        let entry = out.entry(i).or_insert_with(|| (Vec::new(), words));
                        entry.0.push(j);
                    }
                }
            });
        }
    }
    out
}

/// Index lookups of parents, remembering the last answer: the greenlets of
/// one hub come one after another in the heap and share it as parent.
#[derive(Default)]
struct ParentIndex(Option<(usize, Option<usize>)>);

impl ParentIndex {
    fn get(&mut self, index: &HashMap<usize, usize>, parent: usize) -> Option<usize> {
        match self.0 {
            Some((last, i)) if last == parent => i,
            _ => {
                let i = index.get(&parent).copied();
                self.0 = Some((parent, i));
                i
            }
        }
    }
}

fn read_greenlet<'py>(
    api: &GreenletApi<'py>,
    gevent: &Gevent<'py>,
    index: &HashMap<usize, usize>,
    parents: &mut ParentIndex,
    obj: Bound<'py, PyAny>,
) -> Raw<'py> {
    let parent_obj = api.parent(&obj);
    let flags = api.flags(&obj, parent_obj.is_some());
    let parent = parent_obj.and_then(|p| parents.get(index, p.as_ptr() as usize));
    // SAFETY: the heap scan found `obj` as an instance of greenlet's type.
    let frame = api
        .gr_frame
        .as_ref()
        .and_then(|g| unsafe { g.get_unchecked(&obj) })
        .filter(|f| unsafe { ffi::PyFrame_Check(f.as_ptr()) } != 0);
    // Only decides between an active greenlet with no frame running and one
    // suspended in C (see `owner`); the getter allocates an int, so others skip it.
    let stack_saved = flags.active
        && frame.is_none()
        && read(&api.stack_saved, &obj)
            .and_then(|n| inert::int_value(&n))
            .is_some_and(|n| n != 0);
    let hub = gevent.is_hub(&obj);
    let hub_thread = if hub {
        inert::instance_dict(&obj)
            .and_then(|d| {
                inert::dict_get_scan(&d, inert::interned!(obj.py(), "thread_ident").as_any())
            })
            .and_then(|t| inert::int_value(&t))
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

/// Starts loading what building the stacks of the greenlets further on in
/// `order` will read: ten thousand suspended greenlets' frames and gevent
/// spawn records lie scattered, and each is a chain of dependent loads.
/// Three stages: sixteen places on, the frame object's `f_frame` field and
/// a gevent Greenlet's Cython fields; eight places on (those in the cache
/// by now), what they point at: the interpreter frame and the first spawn
/// records; four places on, the frame that called it (3.11+: on the
/// greenlet's own data stack, a page of its own). Only hints: a prefetch
/// never faults and changes nothing.
fn prefetch_ahead(gevent: &Gevent<'_>, raws: &[Raw<'_>], order: &[usize], k: usize) {
    const FAR: usize = 16;
    const MID: usize = 8;
    const NEAR: usize = 4;
    if !crate::capture::fastpaths::on() {
        return;
    }
    if let Some(raw) = order.get(k + FAR).map(|&a| &raws[a]) {
        if let Some(frame) = &raw.frame {
            prefetch_frame_object(frame);
        }
        gevent.prefetch_fields(raw.obj.as_ptr());
    }
    if let Some(raw) = order.get(k + MID).map(|&a| &raws[a]) {
        if let Some(frame) = &raw.frame {
            prefetch_frame_data(frame, false);
        }
        // SAFETY: `raws` holds each greenlet.
        unsafe { gevent.prefetch_spawning_stack(&raw.obj) };
    }
    if let Some(frame) = order.get(k + NEAR).and_then(|&a| raws[a].frame.as_ref()) {
        prefetch_frame_data(frame, true);
    }
}

/// The stage-one read of a frame object: the word holding `f_frame`.
#[cfg(tbc_iframe)]
fn prefetch_frame_object(frame: &Bound<'_, PyAny>) {
    inert::prefetch(iframe::f_frame_field(frame.as_ptr()), 1);
}

/// The interpreter frame `f_frame` points at (stage two), or the frame
/// below it (stage three, `caller`: on the greenlet's own data stack, a
/// page of its own), which reading the stack will need.
#[cfg(tbc_iframe)]
fn prefetch_frame_data(frame: &Bound<'_, PyAny>, caller: bool) {
    // SAFETY: `frame` is a live frame object (the caller's `gr_frame`,
    // checked with `PyFrame_Check`) whose interpreter frame is live too
    // (the greenlet is suspended, so its data stack is kept).
    let data = unsafe { *iframe::f_frame_field(frame.as_ptr()) };
    match caller {
        false => inert::prefetch(data, 2),
        // SAFETY: as above.
        true if !data.is_null() => inert::prefetch(unsafe { iframe::previous_hint(data) }, 2),
        true => {}
    }
}

/// 3.9/3.10: the frame object holds its data itself, fetched in stage two.
#[cfg(not(tbc_iframe))]
fn prefetch_frame_object(_frame: &Bound<'_, PyAny>) {}

#[cfg(not(tbc_iframe))]
fn prefetch_frame_data(frame: &Bound<'_, PyAny>, caller: bool) {
    if !caller {
        inert::prefetch(frame.as_ptr(), 2);
    }
}

/// Threads (the caller's first), each as a tree walk from its main
/// greenlet: a hub before its siblings. Otherwise by address, which is the
/// stack's id: the heap's order is no order to keep, as a collection
/// between two captures may move objects from one list to another
/// (3.14+'s incremental collector does, so two captures of a still
/// process listed greenlets in different orders).
fn tree_order(raws: &[Raw<'_>], root: &[usize], current: Option<usize>) -> Vec<usize> {
    let addr = |k: usize| raws[k].obj.as_ptr() as usize;
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); raws.len()];
    for (i, raw) in raws.iter().enumerate() {
        if let Some(p) = raw.parent.filter(|&p| p != i && root[i] != i) {
            children[p].push(i);
        }
    }
    for kids in &mut children {
        kids.sort_by_key(|&k| (!raws[k].hub, addr(k)));
    }
    let mut roots: Vec<usize> = (0..raws.len()).filter(|&i| root[i] == i).collect();
    let first = current.map(|c| root[c]);
    roots.sort_by_key(|&r| (Some(r) != first, addr(r)));
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

/// What building one stack needs to look at.
struct Context<'a, 'py> {
    api: &'a GreenletApi<'py>,
    gevent: &'a Gevent<'py>,
    raws: &'a [Raw<'py>],
    own: &'a owner::Ownership,
    ids: &'a Ids,
    index: &'a HashMap<usize, usize>,
    current: Option<usize>,
    api_memo: &'a RefCell<ApiMemo>,
}

/// [`crate::capture::waits::api`] of the last frame list asked about, by
/// address: greenlets one after another share their lists. Lives for one
/// capture, while the lists are held.
#[derive(Default)]
struct ApiMemo(Option<(usize, usize, Option<&'static str>)>);

impl ApiMemo {
    fn api(&mut self, frames: &Frames) -> Option<Text> {
        let key = (frames.as_ptr() as usize, frames.len());
        let words = match self.0 {
            Some((p, n, words)) if (p, n) == key => words,
            _ => {
                let words = crate::capture::waits::api(frames);
                self.0 = Some((key.0, key.1, words));
                words
            }
        };
        words.map(Text::new_static)
    }
}

fn build<'py>(
    cap: &mut Capture<'py>,
    ctx: &Context<'_, 'py>,
    namer: &mut Namer<'py>,
    i: usize,
) -> Stack {
    let raw = &ctx.raws[i];
    let thread = ctx.own.thread[i];
    // A greenlet of a thread that has exited can never run, started or not
    // (greenlet's own later cleanup may clear its started flag).
    let state = if ctx.own.exited[i] {
        "dead"
    } else if !raw.flags.started {
        "not_started"
    } else if !raw.flags.active {
        "dead"
    } else if ctx.own.running[i] {
        "running"
    } else {
        "suspended"
    };
    let (frames, frames_omitted) = match state {
        "running" if ctx.current == Some(i) => cap
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
        _ => (Frames::default(), 0),
    };
    let mut frames = frames;
    if raw.flags.main && frames_omitted == 0 {
        cap.trim_run_frames(&mut frames);
    }
    // The outermost function names a raw greenlet whose run callable is gone;
    // a dead one of an exited thread may still hold its frames for that.
    let held;
    let entry = match (frames.first(), &raw.frame) {
        (Some(first), _) if frames_omitted == 0 => Some(&*first.function),
        (None, Some(frame)) if !raw.flags.main => {
            held = cap
                .walker
                .walk_from(frame)
                .and_then(|(f, omitted)| (omitted == 0).then(|| f.first().cloned()).flatten());
            held.as_ref().map(|f| &*f.function)
        }
        _ => None,
    };
    let name = namer.greenlet_name(
        ctx.api,
        ctx.gevent,
        &raw.obj,
        raw.flags.main,
        raw.hub,
        entry,
    );
    let (spawned_by, spawn_frames) = spawn_record(cap, ctx, &raw.obj);
    let awaiting = match state {
        "suspended" if !raw.hub => ctx.api_memo.borrow_mut().api(&frames),
        _ => None,
    };
    let labels = if cap.labels.is_none() {
        Vec::new()
    } else {
        match (state, thread) {
            // Running in another thread: its context is that thread's,
            // which greenlet's getter does not give from here.
            ("running", Some(t)) if ctx.current != Some(i) => cap.labels_of_thread(t),
            ("dead", _) => Vec::new(),
            _ => {
                let context = read(&ctx.api.gr_context, &raw.obj).and_then(inert::not_none);
                cap.labels_of_context(context.as_ref())
            }
        }
    };
    Stack {
        facts: crate::model::StackFacts {
            awaiting,
            labels,
            ..Default::default()
        },
        id: greenlet_id(&raw.obj),
        name,
        thread,
        state: Text::new_static(state),
        frames,
        frames_omitted,
        details: StackDetails::Greenlet(GreenletDetails {
            parent: raw.parent.map(|p| ctx.ids.shared(p, &ctx.raws[p].obj)),
            hub: raw.hub,
            spawned_by,
            spawn_frames,
        }),
    }
}

/// Ids of the greenlets others point at (parents, spawners: usually a hub
/// and a main greenlet for thousands of greenlets), kept so each is
/// formatted once rather than once per child.
#[derive(Default)]
struct Ids {
    /// The last few handed out, newest last; an id not among them is made
    /// again.
    recent: RefCell<Vec<(usize, Text)>>,
}

impl Ids {
    const KEEP: usize = 8;

    fn shared(&self, i: usize, obj: &Bound<'_, PyAny>) -> Text {
        let mut recent = self.recent.borrow_mut();
        if let Some((_, id)) = recent.iter().find(|(at, _)| *at == i) {
            return id.clone();
        }
        if recent.len() == Self::KEEP {
            recent.remove(0);
        }
        let id = greenlet_id(obj);
        recent.push((i, id.clone()));
        id
    }
}

fn greenlet_id(obj: &Bound<'_, PyAny>) -> Text {
    crate::model::address_text("greenlet:", obj.as_ptr() as usize)
}

/// gevent's `spawning_greenlet` (a weak reference) and `spawning_stack` (a
/// chain of `_Frame` records, newest first), kept when
/// `gevent.config.track_greenlet_tree` is on (the default).
fn spawn_record<'py>(
    cap: &mut Capture<'py>,
    ctx: &Context<'_, 'py>,
    obj: &Bound<'py, PyAny>,
) -> (Option<Text>, Frames) {
    let gevent = ctx.gevent;
    if !gevent.is_greenlet(obj) {
        return (None, Frames::default());
    }
    // SAFETY: `obj` is a gevent Greenlet (checked above).
    let built = unsafe { gevent.fields_ready(obj) };
    // Cython fields are C getters; pure-Python gevent keeps them in `__dict__`.
    let field = |getter, name: &Bound<'py, pyo3::types::PyString>| {
        built.then(|| read(getter, obj)).flatten().or_else(|| {
            inert::instance_dict(obj).and_then(|d| inert::dict_get_scan(&d, name.as_any()))
        })
    };
    let py = obj.py();
    let spawner = field(
        &gevent.spawning_greenlet,
        inert::interned!(py, "spawning_greenlet"),
    )
    .and_then(|r| dereference(&r))
    .filter(|g| ctx.api.is_greenlet(g))
    .map(|g| match ctx.index.get(&(g.as_ptr() as usize)) {
        Some(&k) => ctx.ids.shared(k, &g),
        None => greenlet_id(&g),
    });

    // Spawned from one place, greenlets share one frame list (the walker's).
    let mut frames = cap.walker.list();
    let mut record = field(
        &gevent.spawning_stack,
        inert::interned!(py, "spawning_stack"),
    );
    if let (true, Some(first)) = (built, &record) {
        // SAFETY: a gevent Greenlet with every field set (checked above).
        unsafe { gevent.learn_spawning_stack(obj, first) };
    }
    while let Some(entry) = record.take() {
        if frames.len() >= cap.walker.max_depth() || !instance_of(&entry, gevent.frame.as_ref()) {
            break;
        }
        let (code, lineno, back) = gevent.frame_record(&entry);
        if let Some(code) = code {
            cap.walker.push_code(&mut frames, &code, lineno);
        }
        record = back;
    }
    (spawner, cap.walker.finish(frames, true).0)
}

/// The referent of a `weakref.ref` (or the object itself if it is none).
fn dereference<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `obj` is alive and the GIL is held (a `Bound`); `PyWeakref_GetRef` is called only on
    // a weak reference and returns a new reference or NULL.
    unsafe {
        if ffi::PyWeakref_CheckRef(obj.as_ptr()) == 0 {
            return Some(obj.clone());
        }
        let mut target: *mut ffi::PyObject = std::ptr::null_mut();
        if ffi::compat::PyWeakref_GetRef(obj.as_ptr(), &mut target) < 0 {
            inert::clear_error();
            return None;
        }
        // 0: the referent is gone; target is NULL.
        inert::owned(obj.py(), target)
    }
}
