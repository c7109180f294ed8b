//! Labels (`tbcollect.label(var)`): the registered `contextvars.ContextVar`s
//! set in each task's, greenlet's and thread's own context, the way Go's
//! goroutine labels name what a goroutine serves.
//!
//! Where each kind keeps its context:
//! - a task: the C `_asyncio.Task`'s `task_context`, through its own
//!   `get_context()` (3.12+) or at the per-version offset (3.9-3.11, see
//!   `cpython::current::TASK_CONTEXT`); a pure-Python task's `_context`;
//! - a greenlet: greenlet's own `gr_context` getter, looked up on the base
//!   type (a subclass cannot override it); a greenlet running in another
//!   thread keeps its context in that thread's state;
//! - a thread: `PyThreadState.context` (`cpython::current::THREAD_STATE_CONTEXT`),
//!   checked against the calling thread's own once per capture.
//!
//! A variable is looked up with `Context.get`, the type's C method: the
//! context's variables are a HAMT keyed by the `ContextVar` objects, which
//! compare by identity and hash to a value fixed at their creation, so no
//! code of the program runs. Values are rendered like locals in
//! `LocalsMode::Safe` (never through `repr()`), redacted by the variable's
//! name, and cut at [`MAX_LABEL_BYTES`].

use crate::capture::cpython::{self, ContextObject};
use crate::capture::inert::{self, BuiltinMethod};
use crate::capture::locals::{LocalsReader, REDACTED};
use crate::capture::LocalsMode;
use crate::model::Text;
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes of one rendered label value before it is cut.
pub const MAX_LABEL_BYTES: usize = 200;
/// Variables that can be registered at once: each costs a lookup per stack.
pub const MAX_LABELS: usize = 16;

/// The registered variables, in registration order: (name, variable).
static REGISTERED: Mutex<Vec<(String, Py<PyAny>)>> = Mutex::new(Vec::new());

fn registered() -> std::sync::MutexGuard<'static, Vec<(String, Py<PyAny>)>> {
    REGISTERED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers `var` (an exact `contextvars.ContextVar`); registering one
/// again changes nothing. `Err` says why it cannot be.
pub fn register(var: &Bound<'_, PyAny>) -> Result<(), String> {
    // SAFETY: `var` is alive and the GIL is held (a `Bound`); only its type is compared.
    if unsafe { ffi::PyContextVar_CheckExact(var.as_ptr()) } == 0 {
        return Err(format!(
            "labels are contextvars.ContextVar objects, not {}",
            inert::type_name(var)
        ));
    }
    // `ContextVar` cannot be subclassed and `name` is its C member: no code runs.
    let name = var
        .getattr("name")
        .ok()
        .and_then(|n| n.extract::<String>().ok())
        .ok_or("the ContextVar has no str name")?;
    let mut vars = registered();
    if vars.iter().any(|(_, v)| v.as_ptr() == var.as_ptr()) {
        return Ok(());
    }
    if vars.len() >= MAX_LABELS {
        return Err(format!(
            "at most {MAX_LABELS} labels can be registered (unlabel() some first)"
        ));
    }
    vars.push((name, var.clone().unbind()));
    Ok(())
}

/// Forgets `vars`, or every registered variable when `vars` is empty.
/// Returns how many were registered before.
pub fn unregister(vars: &[Bound<'_, PyAny>]) -> usize {
    let mut registered = registered();
    let before = registered.len();
    if vars.is_empty() {
        registered.clear();
    } else {
        registered.retain(|(_, v)| !vars.iter().any(|u| u.as_ptr() == v.as_ptr()));
    }
    before
}

/// The names of the registered variables, in registration order.
pub fn registered_names() -> Vec<String> {
    registered().iter().map(|(n, _)| n.clone()).collect()
}

/// A stack's labels: name -> rendered value, in registration order.
pub type Labels = Vec<(Text, Text)>;

/// Reads the labels of one capture; made only when some are registered.
pub struct LabelReader<'py> {
    py: Python<'py>,
    /// (name, variable, whether its values are redacted).
    vars: Vec<(Text, Bound<'py, PyAny>, bool)>,
    /// `Context.get`, the C method of the (final) `Context` type.
    get: BuiltinMethod<'py>,
    /// What `get` returns for a variable not set: an object nobody else has.
    missing: Bound<'py, PyAny>,
    values: LocalsReader,
    /// The last context's variables (a HAMT, shared by copies of a context
    /// until one is changed: tasks that set no label share their parent's),
    /// the context that holds them, and its labels.
    last: Option<(usize, Bound<'py, PyAny>, Labels)>,
    /// Each thread's context, read once, when a thread or a greenlet running
    /// in one is first asked for.
    threads: Option<HashMap<u64, Bound<'py, PyAny>>>,
    pub errors: Vec<String>,
}

impl<'py> LabelReader<'py> {
    /// `None` when no label is registered: then nothing is read.
    pub fn new(py: Python<'py>, redact: &[String]) -> Option<Self> {
        let values = LocalsReader::new(LocalsMode::Safe, redact);
        let vars: Vec<(Text, Bound<'py, PyAny>, bool)> = registered()
            .iter()
            .map(|(name, var)| {
                let redacted = values.is_redacted(name);
                (Text::from(name.as_str()), var.bind(py).clone(), redacted)
            })
            .collect();
        if vars.is_empty() {
            return None;
        }
        // SAFETY: `PyContext_Type` is a static type of the interpreter; the
        // empty list is a new reference.
        let (get, missing) = unsafe {
            (
                BuiltinMethod::resolve(py, &raw mut ffi::PyContext_Type, c"get"),
                inert::owned(py, ffi::PyList_New(0)),
            )
        };
        let (Some(get), Some(missing)) = (get, missing) else {
            inert::clear_error();
            return None;
        };
        Some(LabelReader {
            py,
            vars,
            get,
            missing,
            values,
            last: None,
            threads: None,
            errors: Vec::new(),
        })
    }

    /// The registered variables set in `context` (an exact
    /// `contextvars.Context`; anything else has none), name -> rendered value.
    pub fn of_context(&mut self, context: Option<&Bound<'py, PyAny>>) -> Labels {
        let Some(context) = context else {
            return Vec::new();
        };
        // SAFETY: `context` is alive and the GIL is held (a `Bound`); its
        // fields are read only once it is known to be an exact `PyContext`,
        // whose layout `ContextObject` mirrors.
        let key = unsafe {
            if ffi::PyContext_CheckExact(context.as_ptr()) == 0 {
                return Vec::new();
            }
            (*(context.as_ptr() as *const ContextObject)).ctx_vars as usize
        };
        if let Some((last, _, labels)) = &self.last {
            if *last == key {
                return labels.clone();
            }
        }
        let mut labels = Vec::new();
        for (name, var, redacted) in &self.vars {
            let Some(value) = self.get.call(context, &[var, &self.missing]) else {
                continue;
            };
            if value.as_ptr() == self.missing.as_ptr() {
                continue;
            }
            let text = if *redacted {
                REDACTED.to_string()
            } else {
                // SAFETY: `value` is alive and the GIL is held (a `Bound`).
                unsafe {
                    self.values
                        .render_value(self.py, value.as_ptr(), MAX_LABEL_BYTES)
                }
            };
            labels.push((name.clone(), Text::from(text)));
        }
        self.last = Some((key, context.clone(), labels.clone()));
        labels
    }

    /// The labels of the context thread `ident` runs in; `states` as
    /// [`crate::capture::threads::thread_states`] gives them.
    pub fn of_thread(&mut self, states: &[(u64, *mut ffi::PyThreadState)], ident: u64) -> Labels {
        if self.threads.is_none() {
            let contexts = thread_contexts(self.py, states).unwrap_or_else(|why| {
                self.errors
                    .push(format!("labels: threads' not read: {why}"));
                HashMap::new()
            });
            self.threads = Some(contexts);
        }
        let context = self.threads.as_ref().and_then(|t| t.get(&ident)).cloned();
        self.of_context(context.as_ref())
    }
}

/// Each Python thread's context by ident (threads that never used one have
/// none); `states` as [`crate::capture::threads::thread_states`] gives them.
fn thread_contexts<'py>(
    py: Python<'py>,
    states: &[(u64, *mut ffi::PyThreadState)],
) -> Result<HashMap<u64, Bound<'py, PyAny>>, String> {
    let offset = cpython::current::THREAD_STATE_CONTEXT;
    let mut out = HashMap::new();
    // SAFETY: the GIL is held (`py`), so no thread state is freed while they
    // are read; the field at `offset` is followed only after the calling
    // thread's own was found to hold its context there, and then only when
    // it is an exact `PyContext` (a thread state holds a strong reference to
    // its context).
    unsafe {
        let own = ffi::PyThreadState_Get();
        // Makes the calling thread's context if it had none yet, as any
        // `ContextVar.get()` in it would.
        let copy = inert::owned(py, ffi::PyContext_CopyCurrent())
            .ok_or("the calling thread's context cannot be copied")?;
        let context_of = |ts: *mut ffi::PyThreadState| {
            *((ts as *const u8).add(offset) as *const *mut ffi::PyObject)
        };
        let own_context = context_of(own);
        let agrees = !own_context.is_null()
            && ffi::PyContext_CheckExact(own_context) != 0
            && (*(own_context as *const ContextObject)).ctx_vars
                == (*(copy.as_ptr() as *const ContextObject)).ctx_vars;
        if !agrees {
            return Err("the thread state's layout is not the one known for this Python".into());
        }
        for &(ident, ts) in states {
            let context = context_of(ts);
            if !context.is_null() && ffi::PyContext_CheckExact(context) != 0 {
                if let Some(context) = inert::borrowed(py, context) {
                    out.insert(ident, context);
                }
            }
        }
    }
    Ok(out)
}
