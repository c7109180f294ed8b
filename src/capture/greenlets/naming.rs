//! Names of greenlets and of the callables they run, read without calling
//! any property, `__repr__` or `__getattr__`.

use super::api::{read, Gevent, GreenletApi};
use crate::capture::inert::{self, BuiltinGetter};
use crate::model::fasthash::FastMap as HashMap;
use crate::model::Text;
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

/// Names greenlets; remembers what it read during one capture (thousands of
/// greenlets usually share a handful of run functions).
pub struct Namer<'py> {
    py: Python<'py>,
    function_qualname: Option<BuiltinGetter<'py>>,
    partial: Option<Bound<'py, PyAny>>,
    partial_func: Option<BuiltinGetter<'py>>,
    /// Getters of `__qualname__` per Cython function type.
    cython_qualname: HashMap<usize, Option<BuiltinGetter<'py>>>,
    /// Callable address -> name. The callables stay alive: greenlets hold them.
    callables: HashMap<usize, Option<Text>>,
    /// (type address, method name) -> name of a subclass's override.
    overrides: HashMap<(usize, &'static CStr), Option<Text>>,
}

impl<'py> Namer<'py> {
    pub fn new(py: Python<'py>) -> Self {
        let partial = inert::imported_module(py, c"functools")
            .and_then(|m| inert::module_attr(&m, c"partial"))
            // SAFETY: `t` is alive and the GIL is held (a `Bound`).
            .filter(|t| unsafe { ffi::PyType_Check(t.as_ptr()) } != 0);
        Namer {
            py,
            function_qualname: BuiltinGetter::new(
                // SAFETY: a static type of the interpreter.
                &unsafe { Bound::from_borrowed_ptr(py, (&raw mut ffi::PyFunction_Type).cast()) },
                c"__qualname__",
            ),
            partial_func: partial
                .as_ref()
                .and_then(|p| BuiltinGetter::new(p, c"func")),
            partial,
            cython_qualname: HashMap::default(),
            callables: HashMap::default(),
            overrides: HashMap::default(),
        }
    }

    /// The name a person knows a greenlet by:
    /// - a gevent hub: its `name` if set, else `Hub`;
    /// - a main greenlet: `<main greenlet>`;
    /// - a gevent `Greenlet`: the `name` it was given (gevent stores an
    ///   assigned name in the instance `__dict__`; the default `Greenlet-N`
    ///   comes from a property that allocates an ident, so it is shown only
    ///   when the ident is already in the instance dict, as in pure-Python
    ///   gevent), else its run function;
    /// - a raw greenlet: its run function (given to the constructor, or a
    ///   `run` method of a subclass);
    /// - else the function of its outermost frame, else `<type name>`.
    pub fn greenlet_name(
        &mut self,
        api: &GreenletApi<'py>,
        gevent: &Gevent<'py>,
        greenlet: &Bound<'py, PyAny>,
        is_main: bool,
        is_hub: bool,
        entry_function: Option<&str>,
    ) -> Text {
        let py = self.py;
        let keys = [
            inert::interned!(py, "name").as_any(),
            inert::interned!(py, "_ident").as_any(),
            inert::interned!(py, "_run").as_any(),
        ];
        let [name, ident, run] = match inert::instance_dict(greenlet) {
            Some(dict) => inert::dict_get_scan_many(&dict, keys),
            None => [None, None, None],
        };
        let assigned = name
            .and_then(|n| inert::str_value(&n))
            .filter(|n| !n.is_empty());
        if is_hub {
            return assigned.unwrap_or_else(|| "Hub".to_string()).into();
        }
        if is_main {
            return MAIN_GREENLET_NAME.into();
        }
        if gevent.is_greenlet(greenlet) {
            if let Some(name) = assigned {
                return name.into();
            }
            if let Some(ident) = ident.and_then(|i| inert::int_value(&i)) {
                return format!("Greenlet-{ident}").into();
            }
            if let Some(name) = run.and_then(|run| self.callable_name(&run)) {
                return name;
            }
            // A subclass overriding `_run` (gevent's own `_run` is a placeholder).
            if let Some(name) = self.overridden_method(greenlet, c"_run", gevent.greenlet.as_ref())
            {
                return name;
            }
        } else {
            // Not started: the constructor's `run` (greenlet's getter refuses once started).
            if let Some(name) = read(&api.run, greenlet).and_then(|run| self.callable_name(&run)) {
                return name;
            }
            if let Some(name) = self.overridden_method(greenlet, c"run", None) {
                return name;
            }
        }
        if let Some(function) = entry_function {
            return function.into();
        }
        format!("<{}>", inert::type_name(greenlet)).into()
    }

    /// The qualified name of `name` when the greenlet's class (not `base`)
    /// defines it as a plain Python function.
    fn overridden_method(
        &mut self,
        greenlet: &Bound<'py, PyAny>,
        name: &'static CStr,
        base: Option<&Bound<'py, PyAny>>,
    ) -> Option<Text> {
        // SAFETY: `greenlet` is alive and the GIL is held (a `Bound`); its type is used as an
        // address and a live type.
        let tp = unsafe { ffi::Py_TYPE(greenlet.as_ptr()) };
        let key = (tp as usize, name);
        if let Some(known) = self.overrides.get(&key) {
            return known.clone();
        }
        // SAFETY: the types of live greenlets, and gevent's Greenlet class we hold.
        let found = unsafe { inert::type_lookup(self.py, tp, name) }
            .filter(|f| unsafe { ffi::PyFunction_Check(f.as_ptr()) } != 0)
            .filter(|f| {
                !base
                    // SAFETY: `tp` is the live type of `greenlet`, `f` a live object, and `base` a
                    // type object held by gevent's module.
                    .and_then(|b| unsafe {
                        inert::type_lookup(self.py, b.as_ptr() as *mut _, name)
                    })
                    .is_some_and(|inherited| inherited.is(f))
            })
            .and_then(|f| self.function_qualname(&f))
            .map(Text::from);
        self.overrides.insert(key, found.clone());
        found
    }

    /// `__qualname__` of a callable, read from the interpreter's own structs:
    /// Python functions, bound methods, builtin and Cython functions, and
    /// `functools.partial` wrapping one of those. `None` for anything else.
    /// Cached per callable: the greenlets of one function share its text.
    pub fn callable_name(&mut self, obj: &Bound<'py, PyAny>) -> Option<Text> {
        let key = obj.as_ptr() as usize;
        if let Some(known) = self.callables.get(&key) {
            return known.clone();
        }
        let name: Option<Text> = self.unwrap_name(obj, 0).map(Into::into);
        self.callables.insert(key, name.clone());
        name
    }

    fn unwrap_name(&mut self, obj: &Bound<'py, PyAny>, depth: usize) -> Option<String> {
        if depth > MAX_UNWRAP {
            return None;
        }
        let py = self.py;
        let ptr = obj.as_ptr();
        // SAFETY: `obj` is alive and the GIL is held (a `Bound`); each C accessor below is called
        // only once its type is checked.
        unsafe {
            if ffi::PyFunction_Check(ptr) != 0 {
                return self.function_qualname(obj);
            }
            if ffi::Py_TYPE(ptr) == &raw mut PyMethod_Type {
                let func = inert::borrowed(py, PyMethod_Function(ptr))?;
                return self.unwrap_name(&func, depth + 1);
            }
            if is_cython_function(obj) {
                // Cython's function type (its runtime's, never user code): the
                // `__qualname__` getter returns the string it stored.
                let tp = ffi::Py_TYPE(ptr);
                let getter = self.cython_qualname.entry(tp as usize).or_insert_with(|| {
                    BuiltinGetter::new(&Bound::from_borrowed_ptr(py, tp.cast()), c"__qualname__")
                });
                return read(getter, obj).and_then(|q| inert::str_value(&q));
            }
            if ffi::PyCFunction_Check(ptr) != 0 {
                return Some(builtin_name(ptr));
            }
            let is_partial = self
                .partial
                .as_ref()
                .is_some_and(|p| ffi::Py_TYPE(ptr) == p.as_ptr() as *mut ffi::PyTypeObject);
            if is_partial {
                let func = read(&self.partial_func, obj)?;
                return self.unwrap_name(&func, depth + 1);
            }
        }
        None
    }

    fn function_qualname(&self, func: &Bound<'py, PyAny>) -> Option<String> {
        inert::str_value(&read(&self.function_qualname, func)?)
    }
}

/// Cython's `cython_function_or_method` (and its fused variant), made by the
/// Cython runtime shared between compiled modules.
fn is_cython_function(obj: &Bound<'_, PyAny>) -> bool {
    let name = inert::type_name(obj);
    name == "cython_function_or_method" || name == "fused_cython_function"
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
