//! How long a greenlet in `gevent.sleep(seconds)` has left.
//!
//! `gevent.hub.sleep` (Python, also in gevent's compiled wheels) runs
//! `with loop.timer(seconds) as t: hub.wait(t)`, so the frame of `sleep`
//! holds the timer in its variable `t`. With gevent's default loop
//! (`libev-cext`) the timer is a `gevent.libev.corecext.timer`, whose C
//! getter `at` returns libev's `ev_timer.at`: the absolute time it fires, on
//! libev's monotonic clock (`CLOCK_MONOTONIC`). Other loops (libuv, the
//! cffi libev) keep the deadline in Python objects or not at all: their
//! sleeps stay a plain `sleep`.
//!
//! Nothing runs: the frame's slot is read in place (see `framevars`), and
//! `at` is the Cython property's C getter, looked up on the base type so a
//! subclass cannot put Python code in its place.

use crate::capture::framevars::CodeVars;
use crate::capture::inert::{self, BuiltinGetter};
use pyo3::ffi;
use pyo3::prelude::*;

/// Frames between a switched-out greenlet's innermost frame and `sleep`:
/// none with gevent's compiled modules, three with `GEVENT_PURE_PYTHON`
/// (`wait`, `Waiter.get`, `switch`).
const FRAMES_TO_SLEEP: usize = 4;

pub struct SleepTimers<'py> {
    at: Option<BuiltinGetter<'py>>,
    /// The code object of gevent's `sleep` and the slot of its `t`, once seen.
    sleep: Option<(Bound<'py, PyAny>, Option<usize>, CodeVars)>,
    /// Code objects seen not to be `sleep`'s (the few pure-Python frames inside it).
    not_sleep: Vec<Bound<'py, PyAny>>,
    now: Option<f64>,
}

impl<'py> SleepTimers<'py> {
    pub fn load(py: Python<'py>) -> Self {
        let at = inert::imported_module(py, c"gevent.libev.corecext")
            .and_then(|module| inert::module_attr(&module, c"timer"))
            .and_then(|timer| BuiltinGetter::new(&timer, c"at"));
        SleepTimers {
            at,
            sleep: None,
            not_sleep: Vec::new(),
            now: None,
        }
    }

    /// `sleep (N.N s left)` for a greenlet switched out in `gevent.sleep`,
    /// from its innermost frame object; `None` when it cannot be known.
    pub fn words(&mut self, innermost: &Bound<'py, PyAny>) -> Option<String> {
        self.at.as_ref()?;
        let (frame, code) = self.sleep_frame(innermost)?;
        let (_, slot, vars) = self.sleep.as_ref()?;
        // SAFETY: `frame` is a live frame object whose code is `code` (both checked and held by
        // `sleep_frame`), which `vars` describes; `slot` is one of its slots; the GIL is held.
        let timer = unsafe {
            vars.value(
                frame.py(),
                frame.as_ptr() as *mut ffi::PyFrameObject,
                code.as_ptr() as *mut ffi::PyCodeObject,
                (*slot)?,
            )?
        };
        let fires = inert::float_value(&self.at.as_ref()?.get(&timer)?)?;
        let now = *self.now.get_or_insert(crate::capture::monotonic_seconds()?);
        let left = fires - now;
        // A timer not started has `at` 0: nothing to say.
        (fires > 0.0 && left.is_finite()).then(|| {
            let mut words = String::with_capacity(24);
            words.push_str("sleep (");
            crate::capture::awaiting::push_seconds(&mut words, left);
            words.push_str(" left)");
            words
        })
    }

    /// The frame of gevent's `sleep` at or just outside `innermost`, and its code.
    fn sleep_frame(
        &mut self,
        innermost: &Bound<'py, PyAny>,
    ) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = innermost.py();
        let mut frame = innermost.clone();
        for _ in 0..=FRAMES_TO_SLEEP {
            // SAFETY: `frame` is alive and the GIL is held (a `Bound`); it is checked to be a
            // frame before the frame API is used, and every reference taken is owned.
            let back = unsafe {
                if ffi::PyFrame_Check(frame.as_ptr()) == 0 {
                    return None;
                }
                let f = frame.as_ptr() as *mut ffi::PyFrameObject;
                let code = inert::owned(py, ffi::PyFrame_GetCode(f) as *mut ffi::PyObject)?;
                if self.is_sleep(&code) {
                    return Some((frame, code));
                }
                inert::owned(py, ffi::PyFrame_GetBack(f) as *mut ffi::PyObject)
            };
            frame = back?;
        }
        None
    }

    fn is_sleep(&mut self, code: &Bound<'py, PyAny>) -> bool {
        if let Some((known, _, _)) = &self.sleep {
            return known.is(code);
        }
        if self.not_sleep.iter().any(|c| c.is(code)) {
            return false;
        }
        // `code` cannot be subclassed: these are the interpreter's own descriptors.
        let text = |name: &str| {
            let value = code.getattr(name).ok();
            inert::clear_error();
            value.as_ref().and_then(inert::str_value)
        };
        let is_sleep = text("co_name").as_deref() == Some("sleep")
            && text("co_filename")
                .is_some_and(|f| f.ends_with("/gevent/hub.py") || f.ends_with("\\gevent\\hub.py"));
        if is_sleep {
            // SAFETY: `code` is a live code object (a frame's), and the GIL is held.
            let vars = unsafe { CodeVars::of(code.py(), code.as_ptr() as *mut ffi::PyCodeObject) };
            let slot = vars.names.iter().position(|(name, _)| name == "t");
            self.sleep = Some((code.clone(), slot, vars));
        } else if self.not_sleep.len() < 16 {
            self.not_sleep.push(code.clone());
        }
        is_sleep
    }
}
