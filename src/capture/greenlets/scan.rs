//! Finding every greenlet: a walk over the garbage collector's objects that
//! costs one type-pointer comparison per object and touches nothing else.
//!
//! Every reference handed out here is one more on an object the heap already
//! references (the GC is paused and no other code runs while we hold the
//! GIL), so dropping it can never free a greenlet — which would throw
//! `GreenletExit` into it.

use super::api::GreenletApi;
use pyo3::prelude::*;

/// Every GC-tracked greenlet (instances of `greenlet.greenlet` and its subclasses).
pub fn find_greenlets<'py>(
    py: Python<'py>,
    api: &GreenletApi<'py>,
) -> Result<Vec<Bound<'py, PyAny>>, String> {
    let found = addresses(py, api)?;
    // Nothing ran between the walk and here, so every address is still live.
    Ok(found
        .into_iter()
        .map(|p| unsafe { Bound::from_borrowed_ptr(py, p as *mut pyo3::ffi::PyObject) })
        .collect())
}

/// 3.12+: `PyUnstable_GC_VisitObjects` walks the GC lists without building a
/// list of every object (no allocation, no reference to drop afterwards).
#[cfg(Py_3_12)]
fn addresses(_py: Python<'_>, api: &GreenletApi<'_>) -> Result<Vec<usize>, String> {
    use pyo3::ffi;
    use std::os::raw::{c_int, c_void};

    type Visit = unsafe extern "C" fn(*mut ffi::PyObject, *mut c_void) -> c_int;
    extern "C" {
        fn PyUnstable_GC_VisitObjects(callback: Visit, arg: *mut c_void);
    }
    struct State {
        tp: *mut ffi::PyTypeObject,
        found: Vec<usize>,
    }
    // Must not allocate Python objects, run code or unwind: pointer checks only.
    unsafe extern "C" fn visit(obj: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
        let state = &mut *(arg as *mut State);
        let tp = ffi::Py_TYPE(obj);
        if tp == state.tp || ffi::PyType_IsSubtype(tp, state.tp) != 0 {
            state.found.push(obj as usize);
        }
        1 // continue
    }
    let mut state = State {
        tp: api.tp,
        found: Vec::new(),
    };
    unsafe { PyUnstable_GC_VisitObjects(visit, &mut state as *mut State as *mut c_void) };
    Ok(state.found)
}

/// 3.9-3.11: the builtin `gc.get_objects()` (checked to be the C function of
/// the `gc` module, so no replacement of it runs), then a pointer filter.
#[cfg(not(Py_3_12))]
fn addresses(py: Python<'_>, api: &GreenletApi<'_>) -> Result<Vec<usize>, String> {
    use crate::capture::safe;
    use pyo3::ffi;

    let gc = safe::imported_module(py, c"gc").ok_or("the gc module is not imported; no greenlets")?;
    let func = safe::module_attr(&gc, c"get_objects")
        .ok_or("gc.get_objects is missing; no greenlets")?;
    unsafe {
        let is_builtin = ffi::PyCFunction_CheckExact(func.as_ptr()) != 0
            && (*(func.as_ptr() as *mut ffi::PyCFunctionObject)).m_self == gc.as_ptr();
        if !is_builtin {
            return Err("gc.get_objects is not the builtin; no greenlets".into());
        }
        let objects = safe::owned(py, ffi::PyObject_CallNoArgs(func.as_ptr()))
            .ok_or("gc.get_objects() failed; no greenlets")?;
        if ffi::PyList_CheckExact(objects.as_ptr()) == 0 {
            return Err("gc.get_objects() returned no list; no greenlets".into());
        }
        let list = objects.as_ptr();
        let n = ffi::PyList_GET_SIZE(list);
        let mut found = Vec::new();
        for i in 0..n {
            let obj = ffi::PyList_GET_ITEM(list, i);
            if api.is_greenlet_ptr(obj) {
                found.push(obj as usize);
            }
        }
        // The list goes here; each object keeps the references it had before
        // `get_objects` (nothing ran in between), so none is freed by this.
        drop(objects);
        Ok(found)
    }
}
