//! Names of greenlets and of the callables they run, read without calling
//! any property, `__repr__` or `__getattr__`.

use super::api::{Gevent, GreenletApi};
use crate::capture::safe;
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::CStr;

extern "C" {
    // Public C API (classobject.h) that pyo3-ffi does not declare.
    static mut PyMethod_Type: ffi::PyTypeObject;
    fn PyMethod_Function(method: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// How deep `callable_name` follows wrappers (methods, partials).
const MAX_UNWRAP: usize = 4;

pub const MAIN_GREENLET_NAME: &str = "<main greenlet>";

/// The name a person knows a greenlet by:
/// - a gevent hub: its `name` if set, else `Hub`;
/// - a main greenlet: `<main greenlet>`;
/// - a gevent `Greenlet`: the `name` it was given (gevent stores an assigned
///   name in the instance `__dict__`; its default `Greenlet-N` is computed by a
///   property that allocates an ident, so it is only shown when gevent already
///   stored the ident in the instance dict, as pure-Python gevent does), else
///   its run function;
/// - a raw greenlet: its run function (given to the constructor, or a `run`
///   method of a subclass);
/// - else the function of its outermost frame, else `<type name>`.
pub fn greenlet_name<'py>(
    api: &GreenletApi<'py>,
    gevent: &Gevent<'py>,
    greenlet: &Bound<'py, PyAny>,
    is_main: bool,
    is_hub: bool,
    entry_function: Option<&str>,
) -> String {
    let dict = safe::instance_dict(greenlet);
    let from_dict = |name: &CStr| dict.as_ref().and_then(|d| safe::dict_get(d, name));
    let assigned = from_dict(c"name")
        .and_then(|n| safe::str_value(&n))
        .filter(|n| !n.is_empty());
    if is_hub {
        return assigned.unwrap_or_else(|| "Hub".to_string());
    }
    if is_main {
        return MAIN_GREENLET_NAME.to_string();
    }
    if gevent.is_greenlet(greenlet) {
        if let Some(name) = assigned {
            return name;
        }
        if let Some(ident) = from_dict(c"_ident").and_then(|i| safe::int_value(&i)) {
            return format!("Greenlet-{ident}");
        }
        if let Some(name) = from_dict(c"_run").and_then(|run| callable_name(&run, 0)) {
            return name;
        }
        // A subclass overriding `_run` (gevent's own `_run` is a placeholder).
        if let Some(name) = overridden_method(greenlet, c"_run", gevent.greenlet.as_ref()) {
            return name;
        }
    } else {
        // Not started: the constructor's `run` (greenlet's getter refuses once started).
        if let Some(name) = safe::builtin_attr(greenlet, api.tp, c"run")
            .and_then(|run| callable_name(&run, 0))
        {
            return name;
        }
        if let Some(name) = overridden_method(greenlet, c"run", None) {
            return name;
        }
    }
    if let Some(function) = entry_function {
        return function.to_string();
    }
    format!("<{}>", safe::type_name(greenlet))
}

/// The qualified name of `name` when the greenlet's class (not `base`)
/// defines it as a plain Python function.
fn overridden_method(
    greenlet: &Bound<'_, PyAny>,
    name: &CStr,
    base: Option<&Bound<'_, PyAny>>,
) -> Option<String> {
    let tp = unsafe { ffi::Py_TYPE(greenlet.as_ptr()) };
    let found = safe::type_lookup(greenlet.py(), tp, name)?;
    if unsafe { ffi::PyFunction_Check(found.as_ptr()) } == 0 {
        return None;
    }
    if let Some(base) = base {
        let inherited = safe::type_lookup(greenlet.py(), base.as_ptr() as *mut _, name);
        if inherited.is_some_and(|i| i.is(&found)) {
            return None;
        }
    }
    function_qualname(&found)
}

/// `__qualname__` of a callable, read from the interpreter's own structs:
/// Python functions, bound methods, builtin and Cython functions, and
/// `functools.partial` wrapping one of those. `None` for anything else.
pub fn callable_name(obj: &Bound<'_, PyAny>, depth: usize) -> Option<String> {
    if depth > MAX_UNWRAP {
        return None;
    }
    let py = obj.py();
    let ptr = obj.as_ptr();
    unsafe {
        if ffi::PyFunction_Check(ptr) != 0 {
            return function_qualname(obj);
        }
        if ffi::Py_TYPE(ptr) == &raw mut PyMethod_Type {
            let func = safe::borrowed(py, PyMethod_Function(ptr))?;
            return callable_name(&func, depth + 1);
        }
        if ffi::PyCFunction_CheckExact(ptr) != 0 {
            return Some(builtin_name(ptr));
        }
        if is_cython_function(obj) {
            // Cython's function type (its runtime's, never user code): the
            // `__qualname__` getter returns the string it stored.
            let tp = ffi::Py_TYPE(ptr);
            return safe::builtin_attr(obj, tp, c"__qualname__").and_then(|q| safe::str_value(&q));
        }
        if ffi::PyCFunction_Check(ptr) != 0 {
            return Some(builtin_name(ptr));
        }
        if let Some(partial) = partial_type(py) {
            if ffi::Py_TYPE(ptr) == partial.as_ptr() as *mut ffi::PyTypeObject {
                let func = safe::builtin_attr(obj, ffi::Py_TYPE(ptr), c"func")?;
                return callable_name(&func, depth + 1);
            }
        }
    }
    None
}

/// Cython's `cython_function_or_method` (and its fused variant), made by the
/// Cython runtime shared between compiled modules.
fn is_cython_function(obj: &Bound<'_, PyAny>) -> bool {
    let name = safe::type_name(obj);
    name == "cython_function_or_method" || name == "fused_cython_function"
}

fn function_qualname(func: &Bound<'_, PyAny>) -> Option<String> {
    let qualname =
        safe::builtin_attr(func, &raw mut ffi::PyFunction_Type, c"__qualname__")?;
    safe::str_value(&qualname)
}

/// `Type.method` (or `function` for module-level builtins) from the method
/// definition and the bound object's type struct.
///
/// # Safety
/// `ptr` must be a `PyCFunctionObject` (or subclass); the GIL is held.
unsafe fn builtin_name(ptr: *mut ffi::PyObject) -> String {
    let func = &*(ptr as *mut ffi::PyCFunctionObject);
    let name = if func.m_ml.is_null() || (*func.m_ml).ml_name.is_null() {
        "?".to_string()
    } else {
        CStr::from_ptr((*func.m_ml).ml_name)
            .to_string_lossy()
            .into_owned()
    };
    let owner = func.m_self;
    if owner.is_null() || ffi::PyModule_Check(owner) != 0 {
        return name;
    }
    let tp = if ffi::PyType_Check(owner) != 0 {
        owner as *mut ffi::PyTypeObject
    } else {
        ffi::Py_TYPE(owner)
    };
    let tp_name = CStr::from_ptr((*tp).tp_name).to_string_lossy();
    let short = tp_name.rsplit('.').next().unwrap_or(&tp_name);
    format!("{short}.{name}")
}

fn partial_type(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    let functools = safe::imported_module(py, c"functools")?;
    safe::module_attr(&functools, c"partial").filter(|t| unsafe { ffi::PyType_Check(t.as_ptr()) } != 0)
}
