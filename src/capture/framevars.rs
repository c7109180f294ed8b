//! A frame's fast variables, read without `PyFrame_FastToLocals`.
//!
//! Up to 3.12 the frame's `f_locals` getter and `PyFrame_GetLocals` copy the
//! fast slots into the frame's `locals()` dict. That copy replaces the
//! values the dict held, and a value the dict alone still referenced (a
//! local rebound or deleted since `locals()` last ran) is released right
//! there: its `__del__`, weakref callbacks, or a greenlet's `GreenletExit`
//! run inside the capture, and with them any other thread may take the GIL.
//! So the slots are read where the interpreter keeps them, per version:
//!
//! - **3.9, 3.10**: the public `PyFrameObject` (`cpython/frameobject.h`); only
//!   its prefix up to `f_valuestack` is mirrored, the slots are found from
//!   `f_valuestack`, and the layout is checked against `f_code` and
//!   `PyFrame_Type.tp_basicsize` before any slot is read.
//! - **3.11**: the frame object points at its `_PyInterpreterFrame`
//!   (`internal/pycore_frame.h`), whose `localsplus` array holds the slots.
//!   The layout is checked by the interpreter frame's `f_code` being the
//!   frame's code and its `frame_obj` pointing back at the frame object.
//! - **3.12, 3.13**: `PyFrame_GetVar` per name, which reads the slot in C
//!   (no dict, no proxy, no user code).
//!
//! Slot order: `co_varnames`, then the cell variables that are not also
//! plain variables (3.11: an argument that is a cell keeps one slot; 3.9 and
//! 3.10 give it a second, cell slot), then `co_freevars`. A cell slot holds a
//! cell once the frame has started; its content is the value.

use crate::capture::inert;
use pyo3::ffi;
use pyo3::prelude::*;

/// Which variables a code object has, in slot order.
pub struct CodeVars {
    /// Function code: variables in fast slots. Otherwise in a mapping.
    pub optimized: bool,
    /// One entry per slot: (text, the name's own str object for `PyFrame_GetVar`).
    pub names: Vec<(String, Py<PyAny>)>,
    /// Per slot: it may hold a cell whose content is the value (3.12+
    /// `PyFrame_GetVar` unwraps cells itself).
    #[cfg_attr(Py_3_12, allow(dead_code))]
    cell: Vec<bool>,
}

/// The frame layout was not the one this build expects: nothing was read.
pub struct LayoutMismatch;

impl CodeVars {
    /// # Safety
    /// `code` is a live code object; the GIL is held.
    pub unsafe fn of(py: Python<'_>, code: *mut ffi::PyCodeObject) -> CodeVars {
        let code_obj = Bound::from_borrowed_ptr(py, code as *mut ffi::PyObject);
        // `code` cannot be subclassed: these are the interpreter's own
        // member descriptors (3.9, 3.10) or getters (3.11+).
        let tuple = |name: &str| -> Vec<(String, Py<PyAny>)> {
            let Ok(t) = code_obj.getattr(name) else {
                inert::clear_error();
                return Vec::new();
            };
            if ffi::PyTuple_CheckExact(t.as_ptr()) == 0 {
                return Vec::new();
            }
            (0..ffi::PyTuple_GET_SIZE(t.as_ptr()))
                .filter_map(|i| {
                    let item = Bound::from_borrowed_ptr(py, ffi::PyTuple_GET_ITEM(t.as_ptr(), i));
                    inert::str_value(&item).map(|s| (s, item.unbind()))
                })
                .collect()
        };
        let flags = code_obj
            .getattr("co_flags")
            .ok()
            .and_then(|v| inert::int_value(&v))
            .unwrap_or(0);
        inert::clear_error();
        let varnames = tuple("co_varnames");
        let cellvars = tuple("co_cellvars");
        let freevars = tuple("co_freevars");
        let is_local_cell = |name: &str| cellvars.iter().any(|(c, _)| c == name);
        let mut cell: Vec<bool> = if cfg!(Py_3_11) {
            varnames.iter().map(|(n, _)| is_local_cell(n)).collect()
        } else {
            vec![false; varnames.len()]
        };
        let mut names = varnames;
        let own_cells: Vec<(String, Py<PyAny>)> = if cfg!(Py_3_11) {
            cellvars
                .into_iter()
                .filter(|(c, _)| !names.iter().any(|(n, _)| n == c))
                .collect()
        } else {
            cellvars
        };
        cell.extend(std::iter::repeat_n(true, own_cells.len() + freevars.len()));
        names.extend(own_cells);
        names.extend(freevars);
        CodeVars {
            optimized: flags & (ffi::CO_OPTIMIZED as u64) != 0,
            names,
            cell,
        }
    }

    /// The bound fast variables of `frame` as (slot, value), each name once
    /// (the first slot that has a value).
    ///
    /// # Safety
    /// `frame` is a live frame object whose code is `code`, described by
    /// `self`; the GIL is held.
    pub unsafe fn values<'py>(
        &self,
        py: Python<'py>,
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
    ) -> Result<Vec<(usize, Bound<'py, PyAny>)>, LayoutMismatch> {
        let mut out: Vec<(usize, Bound<'py, PyAny>)> = Vec::new();
        #[cfg(not(Py_3_12))]
        {
            let slots = layout::fast_slots(frame, code, self.names.len()).ok_or(LayoutMismatch)?;
            for (i, (name, _)) in self.names.iter().enumerate() {
                let mut value = *slots.add(i);
                if value.is_null() {
                    continue;
                }
                if self.cell[i] {
                    if ffi::PyCell_Check(value) != 0 {
                        value = ffi::PyCell_Get(value);
                        if value.is_null() {
                            inert::clear_error();
                            continue;
                        }
                        ffi::Py_DECREF(value); // the cell keeps it alive
                    } else if cfg!(not(Py_3_11)) {
                        // 3.9/3.10 cell and free slots hold nothing but cells
                        // (3.11: a frame not started yet holds the argument).
                        continue;
                    }
                }
                // 3.9/3.10: an argument that is also a cell has an empty
                // plain slot and its value in the cell slot, later.
                if out.iter().any(|(k, _)| self.names[*k].0 == *name) {
                    continue;
                }
                out.push((i, Bound::from_borrowed_ptr(py, value)));
            }
        }
        #[cfg(Py_3_12)]
        {
            let _ = code;
            for (i, (name, name_obj)) in self.names.iter().enumerate() {
                if out.iter().any(|(k, _)| self.names[*k].0 == *name) {
                    continue;
                }
                // NameError (unbound) is the common case, not a problem.
                match inert::owned(py, ffi::PyFrame_GetVar(frame, name_obj.as_ptr())) {
                    Some(value) => out.push((i, value)),
                    None => inert::clear_error(),
                }
            }
        }
        Ok(out)
    }

    /// The value in plain slot `slot` of `frame` (not a cell slot), for
    /// reading one variable of many frames of the same code.
    ///
    /// # Safety
    /// As for [`Self::values`]; `slot` is an index into `self.names`.
    pub unsafe fn value<'py>(
        &self,
        py: Python<'py>,
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
        slot: usize,
    ) -> Option<Bound<'py, PyAny>> {
        if self.cell.get(slot) != Some(&false) && cfg!(not(Py_3_12)) {
            return None;
        }
        #[cfg(not(Py_3_12))]
        {
            let slots = layout::fast_slots(frame, code, self.names.len())?;
            let value = *slots.add(slot);
            (!value.is_null()).then(|| Bound::from_borrowed_ptr(py, value))
        }
        #[cfg(Py_3_12)]
        {
            let _ = code;
            let value = inert::owned(py, ffi::PyFrame_GetVar(frame, self.names[slot].1.as_ptr()));
            if value.is_none() {
                inert::clear_error();
            }
            value
        }
    }
}

/// The fast variable `name` of a function frame (`None` for other frames,
/// an unbound name, or a layout this build does not know).
pub fn frame_var<'py>(frame: &Bound<'py, PyAny>, name: &str) -> Option<Bound<'py, PyAny>> {
    frame_values(frame)
        .into_iter()
        .find_map(|(n, value)| (n == name).then_some(value))
}

/// The bound fast variables of a function frame, as (name, value).
pub fn frame_values<'py>(frame: &Bound<'py, PyAny>) -> Vec<(String, Bound<'py, PyAny>)> {
    let py = frame.py();
    // SAFETY: `frame` is alive and the GIL is held (a `Bound`) and checked to be a frame object;
    // its code is held (`code`) while its variables are read.
    unsafe {
        if ffi::PyFrame_Check(frame.as_ptr()) == 0 {
            return Vec::new();
        }
        let f = frame.as_ptr() as *mut ffi::PyFrameObject;
        let Some(code) = inert::owned(py, ffi::PyFrame_GetCode(f) as *mut ffi::PyObject) else {
            return Vec::new();
        };
        let code = code.as_ptr() as *mut ffi::PyCodeObject;
        let vars = CodeVars::of(py, code);
        if !vars.optimized {
            return Vec::new();
        }
        match vars.values(py, f, code) {
            Ok(values) => values
                .into_iter()
                .map(|(i, v)| (vars.names[i].0.clone(), v))
                .collect(),
            Err(LayoutMismatch) => Vec::new(),
        }
    }
}

#[cfg(tbc_frame_prefix)]
pub mod layout {
    //! The fast slots of a 3.9/3.10 frame object (`cpython::current::FrameObject`).
    use crate::capture::cpython::current::FrameObject;
    use pyo3::ffi;

    /// The frame's namespace mapping (borrowed; NULL for most function frames).
    ///
    /// # Safety
    /// `frame` is a live frame object; the GIL is held.
    pub unsafe fn f_locals(frame: *mut ffi::PyFrameObject) -> *mut ffi::PyObject {
        (*(frame as *const FrameObject)).f_locals
    }

    /// The first of the `n` fast slots of `frame`, after checking that the
    /// struct is laid out as expected: `f_code` is the frame's code and the
    /// slots start where the trailing `f_localsplus` array does.
    ///
    /// # Safety
    /// `frame` is a live frame object and `code` a code object; the GIL is held.
    pub unsafe fn fast_slots(
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
        n: usize,
    ) -> Option<*mut *mut ffi::PyObject> {
        let prefix = &*(frame as *const FrameObject);
        if prefix.f_code != code || prefix.f_valuestack.is_null() {
            return None;
        }
        let slots = prefix.f_valuestack.sub(n);
        let expected = crate::capture::cpython::current::localsplus(frame);
        (slots as usize == expected && n <= (*frame.cast::<ffi::PyVarObject>()).ob_size as usize)
            .then_some(slots)
    }
}

#[cfg(all(Py_3_11, not(Py_3_12)))]
mod layout {
    //! The fast slots of a 3.11 frame, in the interpreter frame it stands
    //! for (`cpython::current::{FrameObject, InterpreterFrame}`).
    use crate::capture::cpython::current::FrameObject;
    use crate::capture::cpython::InterpreterFrame;
    use pyo3::ffi;

    /// The first fast slot of `frame`, once its interpreter frame is shown
    /// to be laid out as expected (`n` is unused: 3.11 keeps no slot count
    /// that could be checked without the private code struct).
    ///
    /// # Safety
    /// `frame` is a live frame object and `code` a code object; the GIL is held.
    pub unsafe fn fast_slots(
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
        _n: usize,
    ) -> Option<*mut *mut ffi::PyObject> {
        let iframe = (*(frame as *const FrameObject)).f_frame.as_ref()?;
        if iframe.frame_obj() != frame as *mut ffi::PyObject
            || iframe.executable() != code as *mut ffi::PyObject
        {
            return None;
        }
        Some(iframe.localsplus() as *mut *mut ffi::PyObject)
    }
}
