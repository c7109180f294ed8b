//! Readers for asyncio's own objects: tasks, futures, timer handles, and
//! the coroutine types their await chains are made of.
//!
//! Every read goes through a C descriptor of the interpreter's type (the C
//! `_asyncio.Task`/`Future`, coroutines, generators) or through the
//! instance `__dict__` (the pure-Python `_PyTask`/`_PyFuture`); descriptors
//! are resolved once per capture. Nothing here calls a Python-level method.

use super::AddrMap;
use crate::capture::frames::{FrameKey, FrameWalker};
use crate::capture::inert::{self, BuiltinAttr, BuiltinMethod};
#[cfg(tbc_iframe)]
use crate::capture::{cpython::GenState, iframe};
use crate::model::Text;
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::CStr;

/// `Future._state`, which is one of three strings in every implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutState {
    Pending,
    Cancelled,
    Finished,
}

impl FutState {
    fn parse(value: Option<&str>) -> Self {
        match value {
            Some("CANCELLED") => FutState::Cancelled,
            Some("FINISHED") => FutState::Finished,
            // `_PyFuture` keeps PENDING as a class attribute until it changes.
            _ => FutState::Pending,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            FutState::Pending => "PENDING",
            FutState::Cancelled => "CANCELLED",
            FutState::Finished => "FINISHED",
        }
    }
}

/// What capture needs of a future (or task, which is a future).
pub struct Fut<'py> {
    pub obj: Bound<'py, PyAny>,
    pub state: FutState,
    pub event_loop: Option<Bound<'py, PyAny>>,
    /// The done-callbacks (the callables; their contexts are dropped).
    pub callbacks: Vec<Bound<'py, PyAny>>,
}

/// A task, read once.
pub struct TaskView<'py> {
    pub fut: Fut<'py>,
    /// Made once as the text the stack keeps.
    pub name: Text,
    pub coro: Option<Bound<'py, PyAny>>,
    pub waiter: Option<Bound<'py, PyAny>>,
    pub must_cancel: bool,
    /// `Task.cancelling()` (3.11+; 0 before).
    pub cancel_requests: u64,
}

struct CFuture<'py> {
    tp: *mut ffi::PyTypeObject,
    state: Option<BuiltinAttr<'py>>,
    event_loop: Option<BuiltinAttr<'py>>,
    callbacks: Option<BuiltinAttr<'py>>,
}

struct CTask<'py> {
    tp: *mut ffi::PyTypeObject,
    coro: Option<BuiltinAttr<'py>>,
    waiter: Option<BuiltinAttr<'py>>,
    must_cancel: Option<BuiltinAttr<'py>>,
    // The C task exposes its name and cancel count only through methods;
    // these are the type's own C functions (see `BuiltinMethod`).
    get_name: Option<BuiltinMethod<'py>>,
    /// The future fields as the task type resolves them (the same C getters
    /// as `_asyncio.Future`'s): an exact task then needs no subtype check.
    fut: Option<(BuiltinAttr<'py>, BuiltinAttr<'py>, BuiltinAttr<'py>)>,
    cancelling: Option<BuiltinMethod<'py>>,
    /// `Task.get_context()` (3.12+).
    get_context: Option<BuiltinMethod<'py>>,
}

/// The attributes of one coroutine-like type: frame, awaited object, name.
pub struct CoroType<'py> {
    pub tp: *mut ffi::PyTypeObject,
    pub frame: Option<BuiltinAttr<'py>>,
    pub awaits: Option<BuiltinAttr<'py>>,
    pub running: Option<BuiltinAttr<'py>>,
    pub qualname: Option<BuiltinAttr<'py>>,
}

impl<'py> CoroType<'py> {
    fn new(
        py: Python<'py>,
        tp: *mut ffi::PyTypeObject,
        frame: &CStr,
        awaits: &CStr,
        running: &CStr,
    ) -> Self {
        CoroType {
            tp,
            frame: BuiltinAttr::resolve(py, tp, frame),
            awaits: BuiltinAttr::resolve(py, tp, awaits),
            running: BuiltinAttr::resolve(py, tp, running),
            qualname: BuiltinAttr::resolve(py, tp, c"__qualname__"),
        }
    }

    pub fn is_exact(&self, obj: &Bound<'py, PyAny>) -> bool {
        // SAFETY: `obj` is alive and the GIL is held (a `Bound`); its type is only compared.
        unsafe { ffi::Py_TYPE(obj.as_ptr()) == self.tp }
    }
}

/// Slots of `asyncio.events.Handle`/`TimerHandle` (`__slots__` members).
pub struct TimerReaders<'py> {
    pub callback: Option<BuiltinAttr<'py>>,
    pub args: Option<BuiltinAttr<'py>>,
    pub cancelled: Option<BuiltinAttr<'py>>,
    pub timer_tp: *mut ffi::PyTypeObject,
    pub when: Option<BuiltinAttr<'py>>,
    /// True while the handle is in its loop's `_scheduled` heap.
    pub scheduled: Option<BuiltinAttr<'py>>,
}

/// Everything asyncio-specific one capture reads through, resolved once.
pub struct Asyncio<'py> {
    pub py: Python<'py>,
    pub tasks_module: Bound<'py, PyAny>,
    c_future: Option<CFuture<'py>>,
    c_task: Option<CTask<'py>>,
    py_future: Option<*mut ffi::PyTypeObject>,
    py_task: Option<*mut ffi::PyTypeObject>,
    gathering: Option<*mut ffi::PyTypeObject>,
    pub coroutine: CoroType<'py>,
    pub generator: CoroType<'py>,
    pub async_generator: CoroType<'py>,
    pub timers: Option<TimerReaders<'py>>,
    pub base_loop: Option<*mut ffi::PyTypeObject>,
    pub concurrent_future: Option<*mut ffi::PyTypeObject>,
    pub work_item: Option<*mut ffi::PyTypeObject>,
    partial: Option<(*mut ffi::PyTypeObject, BuiltinAttr<'py>, BuiltinAttr<'py>)>,
    cfunction_name: Option<BuiltinAttr<'py>>,
    /// `.../asyncio/`: coroutines whose code lives here are asyncio's API.
    asyncio_dir: Option<String>,
    /// Per code object (by [`FrameKey::code_index`]): 0 not looked at yet,
    /// 1 not asyncio's, 2 asyncio's. Thirty thousand links, a few codes.
    asyncio_codes: std::cell::RefCell<Vec<u8>>,
    /// Text of `str` objects already read, by address; each object is held
    /// here so its address is not reused while the capture runs.
    texts: std::cell::RefCell<AddrMap<(Bound<'py, PyAny>, Text)>>,
    /// State words already parsed, by object (each held, so its address
    /// stays its own): futures share the same three `str` objects.
    state_words: std::cell::RefCell<Vec<(Bound<'py, PyAny>, FutState)>>,
    /// [`existing_frame`] against the frame getter.
    direct_frames: inert::CheckedRead,
    /// [`awaited_in_place`] against `cr_await`.
    direct_awaits: inert::CheckedRead,
    /// [`running_in_place`] against `cr_running`.
    direct_running: inert::CheckedRead,
    /// The last leaf type [`Asyncio::is_bridge`] found to be no bridge.
    plain_leaf: std::cell::Cell<usize>,
    /// The last types [`Asyncio::is_task`] found to be a task type, and not
    /// (types outlive the capture: their objects are held).
    task_types: std::cell::Cell<(usize, usize)>,
    /// `asyncio.sleep`'s code object and the slot of its local `h`, the
    /// timer it waits for; looked up on first use.
    #[cfg(tbc_iframe)]
    sleep_code: std::cell::OnceCell<Option<(Bound<'py, PyAny>, usize)>>,
    /// [`frame_position`] against the frame object's own answer.
    #[cfg(Py_3_11)]
    direct_positions: inert::CheckedRead,
}

fn module_type<'py>(py: Python<'py>, module: &CStr, name: &CStr) -> Option<*mut ffi::PyTypeObject> {
    let module = inert::imported_module(py, module)?;
    inert::as_type(&inert::module_attr(&module, name)?)
}

impl<'py> Asyncio<'py> {
    /// `None` when the program never imported asyncio: it has no tasks.
    pub fn new(py: Python<'py>) -> Option<Self> {
        let tasks_module = inert::imported_module(py, c"asyncio.tasks")?;
        // The in-place reads below use them without the GIL token in hand.
        #[cfg(tbc_published)]
        let _ = super::native::gen_offsets(py);
        let c_future = module_type(py, c"_asyncio", c"Future").map(|tp| CFuture {
            tp,
            state: BuiltinAttr::resolve(py, tp, c"_state"),
            event_loop: BuiltinAttr::resolve(py, tp, c"_loop"),
            callbacks: BuiltinAttr::resolve(py, tp, c"_callbacks"),
        });
        let c_task = module_type(py, c"_asyncio", c"Task").map(|tp| CTask {
            tp,
            coro: BuiltinAttr::resolve(py, tp, c"_coro"),
            waiter: BuiltinAttr::resolve(py, tp, c"_fut_waiter"),
            must_cancel: BuiltinAttr::resolve(py, tp, c"_must_cancel"),
            // SAFETY: `tp` is `_asyncio.Task`, which its module (imported,
            // so held by `sys.modules`) keeps alive for the capture.
            get_name: unsafe { BuiltinMethod::resolve(py, tp, c"get_name") },
            fut: match (
                BuiltinAttr::resolve(py, tp, c"_state"),
                BuiltinAttr::resolve(py, tp, c"_loop"),
                BuiltinAttr::resolve(py, tp, c"_callbacks"),
            ) {
                (Some(a), Some(b), Some(c)) => Some((a, b, c)),
                _ => None,
            },
            cancelling: if cfg!(Py_3_11) {
                // SAFETY: as for `get_name`.
                unsafe { BuiltinMethod::resolve(py, tp, c"cancelling") }
            } else {
                None
            },
            // SAFETY: as for `get_name`.
            get_context: unsafe { BuiltinMethod::resolve(py, tp, c"get_context") },
        });
        let timers = match (
            module_type(py, c"asyncio.events", c"Handle"),
            module_type(py, c"asyncio.events", c"TimerHandle"),
        ) {
            (Some(handle_tp), Some(timer_tp)) => Some(TimerReaders {
                callback: BuiltinAttr::resolve(py, handle_tp, c"_callback"),
                args: BuiltinAttr::resolve(py, handle_tp, c"_args"),
                cancelled: BuiltinAttr::resolve(py, handle_tp, c"_cancelled"),
                timer_tp,
                when: BuiltinAttr::resolve(py, timer_tp, c"_when"),
                scheduled: BuiltinAttr::resolve(py, timer_tp, c"_scheduled"),
            }),
            _ => None,
        };
        let partial = module_type(py, c"functools", c"partial").and_then(|tp| {
            Some((
                tp,
                BuiltinAttr::resolve(py, tp, c"func")?,
                BuiltinAttr::resolve(py, tp, c"args")?,
            ))
        });
        let asyncio_dir = inert::imported_module(py, c"asyncio")
            .and_then(|m| inert::module_attr(&m, c"__file__"))
            .and_then(|f| inert::str_value(&f))
            .and_then(|f| {
                let dir = std::path::Path::new(&f).parent()?.to_str()?.to_string();
                Some(format!("{dir}/"))
            });
        Some(Asyncio {
            py,
            tasks_module,
            c_future,
            c_task,
            py_future: module_type(py, c"asyncio.futures", c"_PyFuture"),
            py_task: module_type(py, c"asyncio.tasks", c"_PyTask"),
            gathering: module_type(py, c"asyncio.tasks", c"_GatheringFuture"),
            coroutine: CoroType::new(
                py,
                &raw mut ffi::PyCoro_Type,
                c"cr_frame",
                c"cr_await",
                c"cr_running",
            ),
            generator: CoroType::new(
                py,
                &raw mut ffi::PyGen_Type,
                c"gi_frame",
                c"gi_yieldfrom",
                c"gi_running",
            ),
            async_generator: CoroType::new(
                py,
                &raw mut ffi::PyAsyncGen_Type,
                c"ag_frame",
                c"ag_await",
                c"ag_running",
            ),
            timers,
            base_loop: module_type(py, c"asyncio.base_events", c"BaseEventLoop"),
            concurrent_future: module_type(py, c"concurrent.futures._base", c"Future"),
            work_item: module_type(py, c"concurrent.futures.thread", c"_WorkItem"),
            partial,
            cfunction_name: BuiltinAttr::resolve(py, &raw mut ffi::PyCFunction_Type, c"__name__"),
            asyncio_dir,
            asyncio_codes: Default::default(),
            texts: Default::default(),
            state_words: Default::default(),
            direct_frames: Default::default(),
            direct_awaits: Default::default(),
            direct_running: Default::default(),
            plain_leaf: Default::default(),
            task_types: Default::default(),
            #[cfg(tbc_iframe)]
            sleep_code: Default::default(),
            #[cfg(Py_3_11)]
            direct_positions: Default::default(),
        })
    }

    /// The text of a `str`, read once per object: ten thousand coroutines
    /// of one function share their `__qualname__` object.
    pub fn shared_text(&self, s: Bound<'py, PyAny>) -> Option<Text> {
        let key = s.as_ptr() as usize;
        if let Some((_, text)) = self.texts.borrow().get(&key) {
            return Some(text.clone());
        }
        let text: Text = inert::str_value(&s)?.into();
        self.texts.borrow_mut().insert(key, (s, text.clone()));
        Some(text)
    }

    fn is_c_task(&self, obj: &Bound<'py, PyAny>) -> bool {
        self.c_task
            .as_ref()
            .is_some_and(|t| inert::is_instance(obj, t.tp))
    }

    fn is_py_task(&self, obj: &Bound<'py, PyAny>) -> bool {
        self.py_task.is_some_and(|tp| inert::is_instance(obj, tp))
    }

    /// Whether `obj` is an asyncio task. The answer for the last type seen
    /// each way is kept: ten thousand tasks wait on futures of one type, each
    /// of which would otherwise walk two MROs.
    pub fn is_task(&self, obj: &Bound<'py, PyAny>) -> bool {
        // SAFETY: `obj` is alive and the GIL is held (a `Bound`); its type is only read as an
        // address.
        let tp = unsafe { ffi::Py_TYPE(obj.as_ptr()) } as usize;
        let (yes, no) = self.task_types.get();
        if tp == yes {
            return true;
        }
        if tp == no {
            return false;
        }
        let answer = self.is_c_task(obj) || self.is_py_task(obj);
        self.task_types
            .set(if answer { (tp, no) } else { (yes, tp) });
        answer
    }

    pub fn is_future(&self, obj: &Bound<'py, PyAny>) -> bool {
        self.c_future
            .as_ref()
            .is_some_and(|f| inert::is_instance(obj, f.tp))
            || self.py_future.is_some_and(|tp| inert::is_instance(obj, tp))
    }

    pub fn is_concurrent_future(&self, obj: &Bound<'py, PyAny>) -> bool {
        self.concurrent_future
            .is_some_and(|tp| inert::is_instance(obj, tp))
    }

    /// `len(gathering_future._children)` for the future `gather()` returns.
    pub fn gather_size(&self, obj: &Bound<'py, PyAny>) -> Option<usize> {
        if !self.gathering.is_some_and(|tp| inert::is_instance(obj, tp)) {
            return None;
        }
        inert::container_len(&inert::instance_attr(obj, c"_children")?)
    }

    /// Only the state of an asyncio future or task.
    pub fn future_state(&self, obj: &Bound<'py, PyAny>) -> Option<FutState> {
        let value = match &self.c_future {
            Some(c) if inert::is_instance(obj, c.tp) => c.state.as_ref()?.get(obj),
            _ if self.py_future.is_some_and(|tp| inert::is_instance(obj, tp)) => {
                inert::instance_attr(obj, c"_state")
            }
            _ => return None,
        };
        Some(self.state_of(value))
    }

    /// `_state` as a [`FutState`]; `None` (unset) reads as pending.
    fn state_of(&self, value: Option<Bound<'py, PyAny>>) -> FutState {
        let Some(value) = value else {
            return FutState::parse(None);
        };
        let mut known = self.state_words.borrow_mut();
        if let Some((_, state)) = known.iter().find(|(w, _)| w.is(&value)) {
            return *state;
        }
        // The three state words are ASCII: a borrowed read decides.
        let state = FutState::parse(inert::str_ref(&value));
        // A few words at most, unless some future's state is not one of the
        // shared strings: then stop remembering.
        if known.len() < 8 {
            known.push((value, state));
        }
        state
    }

    /// State, loop and callbacks of an asyncio future or task.
    pub fn future(&self, obj: &Bound<'py, PyAny>) -> Option<Fut<'py>> {
        let (state, event_loop, callbacks) = match &self.c_future {
            Some(c) if inert::is_instance(obj, c.tp) => (
                c.state.as_ref().and_then(|a| a.get(obj)),
                c.event_loop.as_ref().and_then(|a| a.get(obj)),
                c.callbacks.as_ref().and_then(|a| a.get(obj)),
            ),
            _ if self.py_future.is_some_and(|tp| inert::is_instance(obj, tp)) => {
                let dict = inert::instance_dict(obj);
                let get = |name| {
                    dict.as_ref()
                        .and_then(|d| inert::dict_get_named(d, name))
                        .and_then(inert::not_none)
                };
                (get(c"_state"), get(c"_loop"), get(c"_callbacks"))
            }
            _ => return None,
        };
        Some(self.fut(obj, state, event_loop, callbacks))
    }

    /// A [`Fut`] from the raw `_state`, `_loop` and `_callbacks`.
    fn fut(
        &self,
        obj: &Bound<'py, PyAny>,
        state: Option<Bound<'py, PyAny>>,
        event_loop: Option<Bound<'py, PyAny>>,
        callbacks: Option<Bound<'py, PyAny>>,
    ) -> Fut<'py> {
        let state = self.state_of(state);
        // 3.9+: a list of (callback, context) pairs.
        let callbacks = callbacks
            .and_then(|list| inert::sequence_items(&list))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|pair| inert::sequence_items(&pair)?.into_iter().next())
            .collect();
        Fut {
            obj: obj.clone(),
            state,
            event_loop,
            callbacks,
        }
    }

    /// A task's fields, or `None` when `obj` is not an asyncio task.
    pub fn task(&self, obj: &Bound<'py, PyAny>) -> Option<TaskView<'py>> {
        if let Some(c) = self.c_task.as_ref().filter(|_| self.is_c_task(obj)) {
            let get = |a: &Option<BuiltinAttr<'py>>| a.as_ref().and_then(|a| a.get(obj));
            let fut = match &c.fut {
                Some((state, event_loop, callbacks)) => {
                    self.fut(obj, state.get(obj), event_loop.get(obj), callbacks.get(obj))
                }
                None => self.future(obj)?,
            };
            let name = c
                .get_name
                .as_ref()
                .and_then(|m| m.call0_direct(obj))
                .and_then(|n| inert::str_text(&n));
            return Some(TaskView {
                fut,
                name: name.unwrap_or_else(|| inert::type_name(obj).into()),
                coro: get(&c.coro),
                waiter: get(&c.waiter),
                must_cancel: get(&c.must_cancel)
                    .and_then(|v| inert::bool_value(&v))
                    .unwrap_or(false),
                cancel_requests: c
                    .cancelling
                    .as_ref()
                    .and_then(|m| m.call0_direct(obj))
                    .and_then(|v| inert::int_value(&v))
                    .unwrap_or(0),
            });
        }
        if self.is_py_task(obj) {
            let fut = self.future(obj)?;
            let dict = inert::instance_dict(obj);
            let get = |name| {
                dict.as_ref()
                    .and_then(|d| inert::dict_get_named(d, name))
                    .and_then(inert::not_none)
            };
            return Some(TaskView {
                fut,
                name: get(c"_name")
                    .and_then(|n| inert::str_text(&n))
                    .unwrap_or_else(|| inert::type_name(obj).into()),
                coro: get(c"_coro"),
                waiter: get(c"_fut_waiter"),
                must_cancel: get(c"_must_cancel")
                    .and_then(|v| inert::bool_value(&v))
                    .unwrap_or(false),
                cancel_requests: get(c"_num_cancels_requested")
                    .and_then(|v| inert::int_value(&v))
                    .unwrap_or(0),
            });
        }
        None
    }

    /// The context a task's steps run in (see [`crate::capture::labels`]);
    /// `coro` is its coroutine as read already (the layout's check).
    pub fn task_context(
        &self,
        obj: &Bound<'py, PyAny>,
        coro: Option<&Bound<'py, PyAny>>,
    ) -> Option<Bound<'py, PyAny>> {
        if let Some(c) = self.c_task.as_ref().filter(|_| self.is_c_task(obj)) {
            if let Some(get) = &c.get_context {
                return get.call0_direct(obj);
            }
            let layout = crate::capture::cpython::current::TASK_CONTEXT?;
            // SAFETY: `obj` is alive and the GIL is held (a `Bound`), and an
            // instance of `_asyncio.Task` (checked), whose own size is the
            // layout's, so both slots lie inside it (a subclass only appends).
            // The coroutine slot must hold what the `_coro` getter returned
            // before the context slot is trusted, and the context is taken
            // only when it is an exact `Context`.
            unsafe {
                if usize::try_from((*c.tp).tp_basicsize).ok() != Some(layout.size) {
                    return None;
                }
                let slot =
                    |at: usize| *((obj.as_ptr() as *const u8).add(at) as *const *mut ffi::PyObject);
                if slot(layout.coro) != coro?.as_ptr() {
                    return None;
                }
                let context = slot(layout.context);
                if context.is_null() || ffi::PyContext_CheckExact(context) == 0 {
                    return None;
                }
                return inert::borrowed(self.py, context);
            }
        }
        if self.is_py_task(obj) {
            return inert::instance_dict(obj).and_then(|d| inert::dict_get_named(&d, c"_context"));
        }
        None
    }

    /// The task a done-callback wakes up, when the callback is a task's
    /// wakeup: the C task's `task_wakeup` (3.10+ a builtin method, 3.9 a
    /// `TaskWakeupMethWrapper`), or the pure-Python task's `__wakeup`.
    pub fn woken_task(&self, callback: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        if let Some(this) = inert::cfunction_self(callback) {
            let name = self
                .cfunction_name
                .as_ref()
                .and_then(|a| a.get(callback))
                .and_then(|n| inert::str_value(&n));
            return (name.as_deref() == Some("task_wakeup") && self.is_task(&this)).then_some(this);
        }
        if inert::is_static_type_named(callback, c"TaskWakeupMethWrapper") {
            // SAFETY: `callback` is alive, and so is its type; the GIL is held.
            let this = unsafe {
                inert::builtin_attr(callback, ffi::Py_TYPE(callback.as_ptr()), c"__self__")
            }?;
            return self.is_task(&this).then_some(this);
        }
        if let Some((func, this)) = inert::bound_method_parts(callback) {
            let name = inert::function_qualname(&func)?;
            return (name.ends_with("__wakeup") && self.is_task(&this)).then_some(this);
        }
        None
    }

    /// The callable and positional arguments of a `functools.partial`.
    pub fn partial_parts(
        &self,
        obj: &Bound<'py, PyAny>,
    ) -> Option<(Bound<'py, PyAny>, Vec<Bound<'py, PyAny>>)> {
        let (tp, func, args) = self.partial.as_ref()?;
        if !inert::is_instance(obj, *tp) {
            return None;
        }
        let f = func.get(obj)?;
        let a = args
            .get(obj)
            .and_then(|a| inert::sequence_items(&a))
            .unwrap_or_default();
        Some((f, a))
    }

    /// Whether the frame at `key` runs code of asyncio itself.
    pub fn is_asyncio_code(&self, walker: &FrameWalker<'py>, key: FrameKey) -> bool {
        let Some(dir) = &self.asyncio_dir else {
            return false;
        };
        let at = key.code_index();
        let mut known = self.asyncio_codes.borrow_mut();
        if known.len() <= at {
            known.resize(at + 1, 0);
        }
        if known[at] == 0 {
            known[at] = 1 + u8::from(walker.filename(key).starts_with(dir.as_str()));
        }
        known[at] == 2
    }

    /// What `obj` (an exact instance of `kind`) awaits: `cr_await`,
    /// `gi_yieldfrom` or `ag_await`. A suspended coroutine's is read from
    /// its frame where the layout was checked (see [`awaited_in_place`]).
    pub fn awaited(
        &self,
        kind: &CoroType<'py>,
        obj: &Bound<'py, PyAny>,
    ) -> Option<Bound<'py, PyAny>> {
        let getter = || kind.awaits.as_ref()?.get(obj);
        if kind.tp != self.coroutine.tp {
            return getter();
        }
        self.direct_awaits.read(
            // SAFETY: `obj` is an exact coroutine, alive; the frame holds
            // what it awaits.
            || unsafe { inert::borrowed(self.py, awaited_in_place(obj.as_ptr())?) },
            getter,
            |direct, got| got.as_ref().is_some_and(|g| g.is(direct)),
        )
    }

    /// The coroutine-like type `obj` is exactly an instance of.
    pub fn coro_type(&self, obj: &Bound<'py, PyAny>) -> Option<&CoroType<'py>> {
        [&self.coroutine, &self.generator, &self.async_generator]
            .into_iter()
            .find(|t| t.is_exact(obj))
    }

    /// `cr_running`/`gi_running` of a coroutine or generator; a coroutine's
    /// read from its state where that was checked (see [`running_in_place`]).
    pub fn is_running(&self, coro: &Bound<'py, PyAny>) -> bool {
        let Some(kind) = self.coro_type(coro) else {
            return false;
        };
        let getter = || {
            kind.running
                .as_ref()?
                .get(coro)
                .and_then(|v| inert::bool_value(&v))
        };
        let running = if kind.tp == self.coroutine.tp {
            self.direct_running.read(
                // SAFETY: `coro` is an exact coroutine.
                || unsafe { running_in_place(coro.as_ptr()) },
                getter,
                |direct, got| *got == Some(*direct),
            )
        } else {
            getter()
        };
        running.unwrap_or(false)
    }

    /// The timer a suspended `asyncio.sleep` coroutine waits for: its local
    /// `h`, read from the slot of its frame (3.11-3.13: a coroutine embeds
    /// its frame), when `coro` runs `asyncio.sleep`'s own code. Ten thousand
    /// sleeping tasks then need no table of every timer of their loop.
    /// `None` on other versions and for anything else: the table decides.
    #[cfg(tbc_iframe)]
    pub fn sleep_timer(&self, coro: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        if !crate::capture::fastpaths::on() || !self.coroutine.is_exact(coro) {
            return None;
        }
        let (code, slot) = self
            .sleep_code
            .get_or_init(|| self.find_sleep_code())
            .as_ref()?;
        // SAFETY: `coro` is an exact coroutine (checked above), held.
        let gen = unsafe { iframe::generator(coro.as_ptr()) };
        // Inside `await future`, so `h` is set.
        if iframe::state(gen) != (GenState::Suspended { in_await: true }) {
            return None;
        }
        // SAFETY: as above.
        let (running, _) = unsafe { frame_position(self.py, coro.as_ptr()) }?;
        if !std::ptr::eq(running as *const ffi::PyObject, code.as_ptr()) {
            return None;
        }
        let frame = iframe::of_generator(gen)?;
        // SAFETY: the frame is suspended and runs `sleep`'s code, which has
        // more than `slot` variables (found in its `co_varnames`); the slot
        // holds a live object or NULL.
        unsafe { inert::borrowed(self.py, iframe::local(frame, *slot)?) }
    }

    #[cfg(not(tbc_iframe))]
    pub fn sleep_timer(&self, _coro: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        None
    }

    /// `asyncio.tasks.sleep.__code__` and the index of `h` among its
    /// variables, if it is a plain function whose code has no cells.
    #[cfg(tbc_iframe)]
    fn find_sleep_code(&self) -> Option<(Bound<'py, PyAny>, usize)> {
        let sleep = inert::module_attr(&self.tasks_module, c"sleep")?;
        // SAFETY: `sleep` is alive and the GIL is held (a `Bound`) and checked to be a plain
        // function before its code is read.
        unsafe {
            if ffi::PyFunction_Check(sleep.as_ptr()) == 0 {
                return None;
            }
            let code = inert::borrowed(self.py, ffi::PyFunction_GetCode(sleep.as_ptr()))?;
            if ffi::PyCode_Check(code.as_ptr()) == 0 {
                return None;
            }
            // `code` cannot be subclassed: these are its own descriptors.
            let names = |attr: &str| -> Option<Vec<String>> {
                let t = code.getattr(attr).ok()?;
                let items = inert::sequence_items(&t)?;
                items.iter().map(inert::str_value).collect()
            };
            let (varnames, cellvars, freevars) = (
                names("co_varnames"),
                names("co_cellvars"),
                names("co_freevars"),
            );
            inert::clear_error();
            if !cellvars?.is_empty() || !freevars?.is_empty() {
                return None;
            }
            let slot = varnames?.iter().position(|n| n == "h")?;
            Some((code, slot))
        }
    }

    /// Whether `obj` is one of the interpreter's helper objects that stand
    /// between two coroutines of a chain (see `chain::follow`). Ten thousand
    /// chains end in the same kind of leaf: a type found to be none of them
    /// is remembered (types outlive the capture: their objects are held).
    pub fn is_bridge(&self, obj: &Bound<'py, PyAny>) -> bool {
        // SAFETY: `obj` is alive and the GIL is held (a `Bound`); its type is only read as an
        // address.
        let tp = unsafe { ffi::Py_TYPE(obj.as_ptr()) } as usize;
        if self.plain_leaf.get() == tp {
            return false;
        }
        let bridge = inert::is_static_type_named(obj, c"async_generator_asend")
            || inert::is_static_type_named(obj, c"async_generator_athrow")
            || inert::is_static_type_named(obj, c"coroutine_wrapper");
        if !bridge {
            self.plain_leaf.set(tp);
        }
        bridge
    }

    /// The frame of a coroutine, generator or async generator.
    pub fn coro_frame(&self, coro: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        self.frame_of(self.coro_type(coro)?, coro)
    }

    /// The frame of `obj`, an exact instance of `kind`: the frame object it
    /// already has, read from the struct where the layout was checked (see
    /// [`existing_frame`]), else through the type's getter.
    pub fn frame_of(
        &self,
        kind: &CoroType<'py>,
        obj: &Bound<'py, PyAny>,
    ) -> Option<Bound<'py, PyAny>> {
        // `obj` is exactly one of the interpreter's generator-like types
        // (`coro_type` matched its type pointer) and keeps its frame alive.
        self.direct_frames.read(
            // SAFETY: `obj` is exactly one of the interpreter's generator-like types (`coro_type`
            // matched its type pointer) and keeps its frame alive.
            || unsafe { inert::borrowed(self.py, existing_frame(obj.as_ptr())) },
            || kind.frame.as_ref()?.get(obj),
            |direct, got| got.as_ref().is_some_and(|f| f.is(direct)),
        )
    }

    /// Where a coroutine, generator or async generator (an exact instance
    /// of `kind`) is: its code and instruction offset (bytes), read from
    /// the interpreter frame it embeds, without a frame object. A suspended
    /// coroutine has none until something asks for one, and the getter
    /// would make one (ten thousand tasks, thirty thousand allocations left
    /// behind in the process on the first dump). Asked of the frame object
    /// (through [`inert::CheckedRead`]) when the struct read is not trusted;
    /// `None` when the coroutine has finished.
    #[cfg(Py_3_11)]
    pub fn frame_position(
        &self,
        kind: &CoroType<'py>,
        obj: &Bound<'py, PyAny>,
    ) -> Option<(*mut ffi::PyCodeObject, std::os::raw::c_int)> {
        // The frame object's answer: made by the getter if there is none yet.
        let from_frame = || {
            let frame = self
                .frame_of(kind, obj)
                // SAFETY: `f` is alive and the GIL is held (a `Bound`).
                .filter(|f| unsafe { ffi::PyFrame_Check(f.as_ptr()) } != 0)?;
            // SAFETY: `frame` is a frame object (checked) held here; it holds its code.
            unsafe {
                let f = frame.as_ptr() as *mut ffi::PyFrameObject;
                let code = inert::owned(self.py, ffi::PyFrame_GetCode(f) as *mut ffi::PyObject)?;
                // The frame holds its code: the address outlives our reference.
                Some((
                    code.as_ptr() as *mut ffi::PyCodeObject,
                    ffi::PyFrame_GetLasti(f),
                ))
            }
        };
        self.direct_positions.read(
            // SAFETY: `obj` is exactly one of the generator-like types.
            || unsafe { frame_position(self.py, obj.as_ptr()) },
            from_frame,
            |&(code, lasti), got| *got == Some((code, lasti.max(-1))),
        )
    }
}

/// Starts loading, ahead of time, the coroutine of the task `FAR` places
/// further on in `order` (indices into `views`): ten thousand tasks'
/// coroutines are scattered over memory, and the chain walk otherwise
/// waits on each in turn. Only a hint: a prefetch never faults.
pub fn prefetch_chains(views: &[TaskView<'_>], order: &[usize], i: usize) {
    const FAR: usize = 8;
    // The generator header, its interpreter frame and the stack top
    // (3.9/3.10: the coroutine, then its frame object's header).
    if let Some(c) = order.get(i + FAR).and_then(|&v| views[v].coro.as_ref()) {
        inert::prefetch(c.as_ptr(), if cfg!(tbc_iframe) { 4 } else { 2 });
    }
}

/// What a suspended coroutine awaits, read as `_PyGen_yf` reads it: the
/// top of its frame's value stack. A coroutine (unlike a generator, whose
/// `yield` suspends it too) is only ever suspended inside an `await`
/// (3.13 says so in its state). `None` for any other state: the getter
/// answers then.
///
/// # Safety
/// `obj` is an exact instance of `PyCoro_Type`; the GIL is held.
#[cfg(tbc_iframe)]
unsafe fn awaited_in_place(obj: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    let gen = iframe::generator(obj);
    if iframe::state(gen) != (GenState::Suspended { in_await: true }) {
        return None;
    }
    iframe::stack_top(iframe::of_generator(gen)?)
}

/// `cr_running` from a coroutine's state.
///
/// # Safety
/// `obj` is an exact instance of `PyCoro_Type`; the GIL is held.
#[cfg(tbc_iframe)]
unsafe fn running_in_place(obj: *mut ffi::PyObject) -> Option<bool> {
    Some(iframe::state(iframe::generator(obj)) == GenState::Running)
}

/// 3.14+: `cr_running` from the state at the published offset.
///
/// # Safety
/// `obj` is an exact instance of `PyCoro_Type`; the GIL is held.
#[cfg(tbc_published)]
unsafe fn running_in_place(obj: *mut ffi::PyObject) -> Option<bool> {
    let gen = super::native::gen_offsets_known()?;
    let state = *((obj as *const u8).add(gen.frame_state) as *const i8);
    Some(state == gen.states.executing)
}

/// 3.14+: as `_PyGen_yf` reads it, the top of the value stack of a
/// coroutine suspended in `await`, through the published offsets. The saved
/// stack pointer must lie among the frame's slots, which end where the
/// variable-size coroutine does; the slot holds a tagged stack reference
/// (`current::stackref_object`), so only object references are taken.
///
/// # Safety
/// `obj` is an exact instance of `PyCoro_Type`; the GIL is held.
#[cfg(tbc_published)]
unsafe fn awaited_in_place(obj: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    let gen = super::native::gen_offsets_known()?;
    let base = obj as usize;
    if *((base + gen.frame_state) as *const i8) != gen.states.in_await {
        return None;
    }
    let slots = base + gen.slots;
    let count = usize::try_from((*(obj as *mut ffi::PyVarObject)).ob_size).ok()?;
    let end = slots.checked_add(count.checked_mul(std::mem::size_of::<usize>())?)?;
    let sp = *((base + gen.stackpointer) as *const usize);
    if sp <= slots || sp > end || !sp.is_multiple_of(std::mem::size_of::<usize>()) {
        return None;
    }
    let bits = *((sp - std::mem::size_of::<usize>()) as *const usize);
    crate::capture::cpython::current::stackref_object(bits).map(|ptr| ptr as *mut ffi::PyObject)
}

#[cfg(not(any(tbc_iframe, tbc_published)))]
unsafe fn running_in_place(_obj: *mut ffi::PyObject) -> Option<bool> {
    None
}

#[cfg(not(any(tbc_iframe, tbc_published)))]
unsafe fn awaited_in_place(_obj: *mut ffi::PyObject) -> Option<*mut ffi::PyObject> {
    None
}

/// (code, instruction offset in bytes) of a generator-like object's
/// interpreter frame, which it embeds (see [`crate::capture::iframe`]).
///
/// # Safety
/// `obj` must be an exact instance of `PyCoro_Type`, `PyGen_Type` or
/// `PyAsyncGen_Type`; the GIL is held.
#[cfg(tbc_iframe)]
unsafe fn frame_position(
    py: Python<'_>,
    obj: *mut ffi::PyObject,
) -> Option<(*mut ffi::PyCodeObject, std::os::raw::c_int)> {
    let gen = iframe::generator(obj);
    if iframe::state(gen) == GenState::Done {
        return None;
    }
    iframe::position(py, iframe::of_generator(gen)?)
}

/// 3.14+: as above, where the interpreter's published offsets say the frame
/// and its state are (`gen_object.gi_iframe`, `gi_frame_state`), the code
/// and offset read through the unstable C API that decodes 3.14's tagged
/// stack references.
#[cfg(tbc_published)]
unsafe fn frame_position(
    py: Python<'_>,
    obj: *mut ffi::PyObject,
) -> Option<(*mut ffi::PyCodeObject, std::os::raw::c_int)> {
    let gen = super::native::gen_offsets(py)?;
    let state = *((obj as *const u8).add(gen.frame_state) as *const i8);
    if !gen.states.live(state) {
        return None;
    }
    let iframe = (obj as *mut u8).add(gen.iframe) as *mut ffi::_PyInterpreterFrame;
    let code = inert::owned(py, ffi::PyUnstable_InterpreterFrame_GetCode(iframe))?;
    if ffi::PyCode_Check(code.as_ptr()) == 0 {
        return None;
    }
    // The frame holds its code: the address outlives our reference.
    let lasti = ffi::PyUnstable_InterpreterFrame_GetLasti(iframe);
    Some((code.as_ptr() as *mut ffi::PyCodeObject, lasti))
}

#[cfg(all(Py_3_11, not(tbc_iframe), not(tbc_published)))]
unsafe fn frame_position(
    _py: Python<'_>,
    _obj: *mut ffi::PyObject,
) -> Option<(*mut ffi::PyCodeObject, std::os::raw::c_int)> {
    None
}

/// The frame object a coroutine, generator or async generator (all three
/// begin with `_PyGenObject_HEAD`) already has, read from the struct; NULL
/// when there is none yet, when it has finished, or on versions whose layout
/// was not checked: the getter decides then.
///
/// The getter would also do this (after an `object.__getattr__` audit
/// event, which would run audit hooks) plus create a frame object when
/// there is none yet.
///
/// # Safety
/// `obj` must be an exact instance of `PyCoro_Type`, `PyGen_Type` or
/// `PyAsyncGen_Type`; the GIL is held.
#[cfg(tbc_iframe)]
unsafe fn existing_frame(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    // From COMPLETED on, the frame is going.
    let gen = iframe::generator(obj);
    if iframe::state(gen) == GenState::Done {
        return std::ptr::null_mut();
    }
    iframe::of_generator(gen).map_or(std::ptr::null_mut(), iframe::frame_object)
}

/// 3.9-3.10: the generator holds its frame in `gi_frame` (NULL once finished).
#[cfg(tbc_frame_prefix)]
unsafe fn existing_frame(obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    (*(obj as *const crate::capture::cpython::current::GenObject)).gi_frame as *mut ffi::PyObject
}

#[cfg(not(any(tbc_iframe, tbc_frame_prefix)))]
unsafe fn existing_frame(_obj: *mut ffi::PyObject) -> *mut ffi::PyObject {
    std::ptr::null_mut()
}
