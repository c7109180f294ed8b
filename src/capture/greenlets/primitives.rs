//! What a greenlet switched out inside gevent's compiled primitives waits
//! for. With gevent's Cython modules (its default wheels) `Event.wait`,
//! `AsyncResult.get`, `Queue.get`, `Semaphore.acquire` and `joinall` leave
//! no Python frame: the greenlet's innermost frame is its caller's, so
//! [`crate::capture::waits::api`] has nothing to name.
//!
//! The primitive knows its waiters. An `AbstractLinkable` (`Event`,
//! `AsyncResult`, `Semaphore`) and a gevent `Greenlet` keep the waiter's
//! resume callback in their links: the greenlet's bound `switch`, or a
//! `Waiter`'s (`joinall` and `gevent.wait` link one `MultipleWaiter` into
//! every object). A queue keeps `Waiter`s in its `getters` and `putters`
//! (a `Channel` puts `(item, Waiter)` pairs), and a `Waiter` records the
//! greenlet blocked in its `get`. The primitives come from the heap walk
//! that finds the greenlets; the containers inside one come from its
//! type's `tp_traverse` (what `gc.get_referents` returns), so no field
//! offset of gevent's is assumed, and only entries that are such
//! callbacks or waiters of a greenlet found count. A greenlet parked on a
//! bare watcher (`wait_read(fd)`, `hub.wait(io)`, psycogreen's wait
//! callback) is the callback of libev-cext's `io` watcher, which says which
//! fd and events. Nothing here runs code:
//! type pointers, C getters and container reads only.

use super::api::instance_of;
use crate::capture::inert::{self, BuiltinGetter};
use crate::model::fasthash::FastMap as HashMap;
use crate::model::Text;
use pyo3::ffi;
use pyo3::prelude::*;
use std::cell::Cell;
use std::ffi::CStr;

/// gevent's waitable types and `Waiter`, when gevent is imported.
#[derive(Default)]
pub struct Primitives<'py> {
    linkable: Option<Bound<'py, PyAny>>,
    /// `SimpleQueue` (gevent 24.10+), else `Queue`: every queue's base.
    queue: Option<Bound<'py, PyAny>>,
    channel: Option<Bound<'py, PyAny>>,
    event: Option<Bound<'py, PyAny>>,
    async_result: Option<Bound<'py, PyAny>>,
    semaphore: Option<Bound<'py, PyAny>>,
    waiter: Option<Bound<'py, PyAny>>,
    multiple_waiter: Option<Bound<'py, PyAny>>,
    item_waiter: Option<Bound<'py, PyAny>>,
    /// `Waiter.greenlet` (a Cython field or a slot).
    waiter_greenlet: Option<BuiltinGetter<'py>>,
    /// `SimpleQueue.queue`: the items, which are not read.
    queue_items: Option<BuiltinGetter<'py>>,
    deque: Option<*mut ffi::PyTypeObject>,
    /// libev-cext's `io` watcher (`hub.wait(io)`, `wait_read`), and its C
    /// getters `fd` and `events`.
    io: Option<Bound<'py, PyAny>>,
    io_fd: Option<BuiltinGetter<'py>>,
    io_events: Option<BuiltinGetter<'py>>,
    /// greenlet's `switch` method definition, once one was seen.
    switch_def: Cell<usize>,
}

/// How a greenlet came to be in a primitive's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Its own bound `switch` (`Greenlet.join`, `Event.wait`, ...).
    Switch,
    /// A `Waiter` (`Queue.get`).
    Waiter,
    /// A `MultipleWaiter`, linked into every object waited for
    /// (`joinall`, `gevent.wait`).
    Several,
    /// A put: a queue's `ItemWaiter`, or a `Channel`'s `(item, Waiter)`.
    Put,
}

impl<'py> Primitives<'py> {
    pub fn load(py: Python<'py>) -> Self {
        if inert::imported_module(py, c"gevent").is_none() {
            return Primitives::default();
        }
        let type_in = |module: &CStr, name: &CStr| {
            let module = inert::imported_module(py, module)?;
            inert::module_attr(&module, name).filter(|t| inert::as_type(t).is_some())
        };
        let waiter = type_in(c"gevent._waiter", c"Waiter");
        let io = type_in(c"gevent.libev.corecext", c"io");
        let queue =
            type_in(c"gevent.queue", c"SimpleQueue").or_else(|| type_in(c"gevent.queue", c"Queue"));
        let getter = |tp: &Option<Bound<'py, PyAny>>, name: &CStr| {
            tp.as_ref().and_then(|tp| BuiltinGetter::new(tp, name))
        };
        Primitives {
            linkable: type_in(c"gevent._abstract_linkable", c"AbstractLinkable"),
            channel: type_in(c"gevent.queue", c"Channel"),
            event: type_in(c"gevent.event", c"Event"),
            async_result: type_in(c"gevent.event", c"AsyncResult"),
            semaphore: type_in(c"gevent._semaphore", c"Semaphore"),
            multiple_waiter: type_in(c"gevent._waiter", c"MultipleWaiter"),
            item_waiter: type_in(c"gevent.queue", c"ItemWaiter"),
            waiter_greenlet: getter(&waiter, c"greenlet"),
            queue_items: getter(&queue, c"queue"),
            io_fd: getter(&io, c"fd"),
            io_events: getter(&io, c"events"),
            io,
            waiter,
            queue,
            deque: inert::imported_module(py, c"collections")
                .and_then(|m| inert::module_attr(&m, c"deque"))
                .and_then(|t| inert::as_type(&t)),
            switch_def: Cell::new(0),
        }
    }

    /// The types whose instances the heap walk hands over (none without gevent).
    pub fn scanned(&self) -> Vec<*mut ffi::PyTypeObject> {
        [&self.linkable, &self.queue, &self.channel, &self.io]
            .into_iter()
            .filter_map(|t| t.as_ref().and_then(inert::as_type))
            .collect()
    }

    pub fn deque(&self) -> Option<*mut ffi::PyTypeObject> {
        self.deque
    }

    /// The greenlet (by address) an entry of a primitive's list resumes,
    /// and how it got there.
    pub fn waiter_of(&self, entry: &Bound<'py, PyAny>) -> Option<(usize, Via)> {
        if let Some(this) = inert::cfunction_self(entry) {
            // greenlet's `switch` is a C method of the greenlet itself.
            return self
                .is_switch(entry)
                .then(|| (this.as_ptr() as usize, Via::Switch));
        }
        let waiter = match inert::bound_method_parts(entry) {
            // A `Waiter`'s `switch`, bound (a Cython binding method too).
            Some((_, this)) => this,
            None => {
                if let Some(waiter) = self.channel_put(entry) {
                    let greenlet = self.waiter_greenlet(&waiter)?;
                    return Some((greenlet, Via::Put));
                }
                entry.clone()
            }
        };
        if !instance_of(&waiter, self.waiter.as_ref()) {
            return None;
        }
        let via = if instance_of(&waiter, self.multiple_waiter.as_ref()) {
            Via::Several
        } else if instance_of(&waiter, self.item_waiter.as_ref()) {
            Via::Put
        } else {
            Via::Waiter
        };
        Some((self.waiter_greenlet(&waiter)?, via))
    }

    /// A `Channel`'s putter: an exact `(item, Waiter)` tuple.
    fn channel_put(&self, entry: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        // SAFETY: `entry` is alive and the GIL is held (a `Bound`); a tuple's
        // items are read by index within its size.
        unsafe {
            let p = entry.as_ptr();
            if ffi::PyTuple_CheckExact(p) == 0 || ffi::PyTuple_GET_SIZE(p) != 2 {
                return None;
            }
            let waiter = inert::borrowed(entry.py(), ffi::PyTuple_GET_ITEM(p, 1))?;
            instance_of(&waiter, self.waiter.as_ref()).then_some(waiter)
        }
    }

    fn waiter_greenlet(&self, waiter: &Bound<'py, PyAny>) -> Option<usize> {
        let greenlet = self.waiter_greenlet.as_ref()?.get(waiter)?;
        inert::not_none(greenlet).map(|g| g.as_ptr() as usize)
    }

    /// Calls `each` with every entry of a list or deque (a `deque`'s
    /// through its traversal); a list's one at a time, as ten thousand
    /// greenlets waiting on one `Event` are ten thousand links.
    pub fn for_each_entry(
        &self,
        container: &Bound<'py, PyAny>,
        mut each: impl FnMut(&Bound<'py, PyAny>),
    ) {
        // SAFETY: only the type is looked at before a list is read through
        // the C API, by index within the size it reports at each step; each
        // item is taken as a new reference before anything else runs.
        unsafe {
            let p = container.as_ptr();
            if ffi::PyList_CheckExact(p) != 0 {
                let mut i = 0;
                while i < ffi::PyList_GET_SIZE(p) {
                    if let Some(entry) = inert::borrowed(container.py(), ffi::PyList_GET_ITEM(p, i))
                    {
                        each(&entry);
                    }
                    i += 1;
                }
                return;
            }
            if Some(ffi::Py_TYPE(p)) == self.deque {
                inert::referents(container).iter().for_each(each);
            }
        }
    }

    /// Calls `found` with each greenlet (by index) waiting in one of
    /// `primitives` (the heap walk's) and what it waits in; `index` maps a
    /// greenlet's address to its index.
    pub fn waits(
        &self,
        primitives: &[Bound<'py, PyAny>],
        index: &HashMap<usize, usize>,
        mut found: impl FnMut(usize, Text),
    ) {
        for primitive in primitives {
            if instance_of(primitive, self.io.as_ref()) {
                // The waiter's `switch` is the watcher's callback itself.
                let Some(text) = self.io_words(primitive) else {
                    continue;
                };
                for callback in inert::referents(primitive) {
                    let waiter = self.waiter_of(&callback);
                    if let Some(&greenlet) = waiter.and_then(|(addr, _)| index.get(&addr)) {
                        found(greenlet, text.clone());
                    }
                }
                continue;
            }
            let Some(kind) = self.kind(primitive) else {
                continue;
            };
            let items = self
                .queue_items
                .as_ref()
                .filter(|_| kind == Kind::Queue)
                .and_then(|g| g.get(primitive));
            // Waiters in one primitive mostly enter it alike: the words are
            // made once per way in.
            let mut said: Option<(Via, Text)> = None;
            for container in inert::referents(primitive) {
                if items.as_ref().is_some_and(|i| i.is(&container)) {
                    continue;
                }
                self.for_each_entry(&container, |entry| {
                    let Some((addr, via)) = self.waiter_of(entry) else {
                        return;
                    };
                    let Some(&greenlet) = index.get(&addr) else {
                        return;
                    };
                    let text = match &said {
                        Some((v, text)) if *v == via => text.clone(),
                        _ => {
                            let text = words(kind, via, primitive.as_ptr() as usize);
                            said = Some((via, text.clone()));
                            text
                        }
                    };
                    found(greenlet, text);
                });
            }
        }
    }

    /// `wait_read (fd 7)`: gevent's names for the events an `io` watcher waits for.
    fn io_words(&self, io: &Bound<'py, PyAny>) -> Option<Text> {
        let number =
            |getter: &Option<BuiltinGetter<'py>>| inert::int_value(&getter.as_ref()?.get(io)?);
        let fd = number(&self.io_fd)?;
        // libev's EV_READ (1) and EV_WRITE (2).
        let what = match number(&self.io_events)? & 3 {
            1 => "wait_read",
            2 => "wait_write",
            3 => "wait_readwrite",
            _ => return None,
        };
        Some(format!("{what} (fd {fd})").into())
    }

    fn kind(&self, obj: &Bound<'py, PyAny>) -> Option<Kind> {
        let is = |tp: &Option<Bound<'py, PyAny>>| instance_of(obj, tp.as_ref());
        Some(if is(&self.async_result) {
            Kind::AsyncResult
        } else if is(&self.event) {
            Kind::Event
        } else if is(&self.semaphore) {
            Kind::Semaphore
        } else if is(&self.queue) {
            Kind::Queue
        } else if is(&self.channel) {
            Kind::Channel
        } else {
            return None;
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Event,
    AsyncResult,
    Semaphore,
    Queue,
    Channel,
}

/// The words a wait in `kind` entered `via` is named by, as the frames of
/// pure-Python gevent name it (see `waits::WAIT_APIS`). A semaphore is
/// named by its address, as a lock is: gevent records no holder for it.
fn words(kind: Kind, via: Via, addr: usize) -> Text {
    Text::new_static(match (kind, via) {
        (_, Via::Several) => "gevent.wait",
        (Kind::Queue, Via::Put) => "Queue.put",
        (Kind::Queue, _) => "Queue.get",
        (Kind::Channel, Via::Put) => "Channel.put",
        (Kind::Channel, _) => "Channel.get",
        (Kind::Event, _) => "Event.wait",
        (Kind::AsyncResult, _) => "AsyncResult.get",
        (Kind::Semaphore, _) => {
            return format!("{SEMAPHORE_WAIT} <{addr:#x}> (a gevent Semaphore records no holder)")
                .into()
        }
    })
}

/// What pure-Python gevent's frames name a semaphore wait (see
/// `waits::WAIT_APIS`); the primitive's side adds which one.
pub const SEMAPHORE_WAIT: &str = "Semaphore.acquire";

impl Primitives<'_> {
    /// Whether a builtin method is named `switch` (greenlet's resume
    /// method); its definition, once seen, is compared by address.
    fn is_switch(&self, method: &Bound<'_, PyAny>) -> bool {
        // SAFETY: the caller found `method` to be a `PyCFunction`, whose
        // method definition and its NUL-terminated name live as long as it.
        unsafe {
            let def = (*(method.as_ptr() as *mut ffi::PyCFunctionObject)).m_ml;
            if def.is_null() {
                return false;
            }
            if self.switch_def.get() == def as usize {
                return true;
            }
            let named = !(*def).ml_name.is_null() && CStr::from_ptr((*def).ml_name) == c"switch";
            if named {
                self.switch_def.set(def as usize);
            }
            named
        }
    }
}
