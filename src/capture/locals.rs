//! Frame locals (`collect(locals=True|"repr")`): read without running user
//! code and rendered to text by our own code.
//!
//! # Reading a frame's variables, per version
//!
//! Function frames ("optimized": their variables live in the frame's fast
//! slots, not in a dict) are read slot by slot where the interpreter keeps
//! them, never through `PyFrame_FastToLocals`/`PyFrame_GetLocals` (see
//! [`crate::capture::framevars`] for why and how, per version).
//!
//! Module and class bodies ("unoptimized": variables in a mapping):
//! - 3.9, 3.10: the `f_locals` field, read directly.
//! - 3.11, 3.12: `PyFrame_GetLocals`, only when the code has no fast
//!   variables at all. Otherwise it would store cells into the mapping with
//!   `PyObject_SetItem` (user code when the mapping comes from a metaclass
//!   `__prepare__`, an `Enum` class body for example), and on 3.12 merge the
//!   variables of inlined comprehensions with `PyDict_Merge`. So on 3.12 a
//!   module body with a top-level comprehension shows no locals.
//! - 3.13: `PyFrame_GetLocals` returns the mapping itself.
//!
//! In every case only a `dict` (or subclass, read with `PyDict_Next`) is
//! listed; other mappings are skipped. Module-level frames leave out dunder
//! names and the modules, classes and functions they define: those are
//! definitions, not state.
//!
//! # Rendering
//! Exact built-in values (str, bytes, int, float, complex, bool, None, and
//! list/tuple/dict/set/frozenset of them) are rendered here, with length,
//! depth and size limits; the scalar reprs used are the interpreter's own C
//! code for exact built-in types. Anything else is `<module.Class object at
//! 0x…>` from the type struct, or for `locals="repr"` its `repr()`, called
//! only after the capture (see [`resolve_reprs`]).

use crate::capture::framevars::{CodeVars, LayoutMismatch};
use crate::capture::{inert, LocalsMode};
use crate::model::{Locals, Snapshot};
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

/// Names redacted by default (case-insensitive substrings of a variable
/// name or a `str` dict key); `collect(redact=...)` and `tbcollect.REDACT` extend it.
pub const DEFAULT_REDACT: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "authorization",
    "cookie",
    "session",
];

/// What a redacted value is shown as.
pub const REDACTED: &str = "[redacted]";

/// The entry name that says a frame has more locals than were kept.
pub const MORE_LOCALS: &str = "…";

/// Variables kept per frame.
pub const MAX_LOCALS_PER_FRAME: usize = 40;
/// Characters of one `str`/`bytes` shown before it is cut.
pub const MAX_STR_CHARS: usize = 200;
/// Items of one container shown before "… N more".
pub const MAX_ITEMS: usize = 10;
/// Containers nested deeper than this are shown as `[…]`.
pub const MAX_DEPTH: usize = 3;
/// A rendered value (`out` holds one value) stops taking items past this many bytes.
pub const MAX_VALUE_CHARS: usize = 500;
/// And is cut at this many bytes whatever its shape (a long string of
/// escaped characters, an item that started just before the soft limit).
pub const MAX_VALUE_BYTES: usize = 1000;
/// Characters kept of one `repr()` result.
pub const MAX_REPR_CHARS: usize = 300;
/// `repr()` calls per capture (`locals="repr"`); later objects are shown by type.
pub const MAX_REPR_CALLS: usize = 500;
/// Bytes of locals (names and values) per capture; later frames get none.
pub const LOCALS_BUDGET: usize = 1_000_000;

// Marks where a deferred repr() result goes inside a rendered value. Neither
// byte can appear otherwise: str/bytes go through repr() (which escapes
// control characters) and names read from types are cleaned.
const REPR_START: char = '\u{1}';
const REPR_END: char = '\u{2}';

/// Objects whose `repr()` is called after the capture, in order of first use.
#[derive(Default)]
pub struct PendingReprs {
    objects: Vec<Py<PyAny>>,
}

impl PendingReprs {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Reads and renders the locals of the frames of one capture.
pub struct LocalsReader {
    mode: LocalsMode,
    /// Lower-case substrings; a name containing one is redacted.
    redact: Vec<String>,
    budget: usize,
    frames_over_budget: u64,
    reprs_refused: u64,
    layout_mismatch: bool,
    codes: HashMap<usize, Rc<CodeVars>>,
    types: HashMap<usize, String>,
    pending: PendingReprs,
    pending_index: HashMap<usize, usize>,
}

impl LocalsReader {
    pub fn new(mode: LocalsMode, redact: &[String]) -> Self {
        LocalsReader {
            mode,
            redact: redact.iter().map(|r| r.to_lowercase()).collect(),
            budget: LOCALS_BUDGET,
            frames_over_budget: 0,
            reprs_refused: 0,
            layout_mismatch: false,
            codes: HashMap::new(),
            types: HashMap::new(),
            pending: PendingReprs::default(),
            pending_index: HashMap::new(),
        }
    }

    /// Whether a value of this name is shown as [`REDACTED`].
    pub fn is_redacted(&self, name: &str) -> bool {
        let lower = name.to_lowercase();
        self.redact.iter().any(|r| lower.contains(r.as_str()))
    }

    /// What went wrong or was cut, for `Snapshot::errors`.
    pub fn take_errors(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.frames_over_budget > 0 {
            errors.push(format!(
                "locals: the budget of {LOCALS_BUDGET} bytes was used up; {} frames have no locals",
                std::mem::take(&mut self.frames_over_budget)
            ));
        }
        if self.reprs_refused > 0 {
            errors.push(format!(
                "locals: at most {MAX_REPR_CALLS} objects go through repr(); {} more are shown by type",
                std::mem::take(&mut self.reprs_refused)
            ));
        }
        if std::mem::take(&mut self.layout_mismatch) {
            errors.push(
                "locals: frame layout not as expected for this Python; function frames have no locals"
                    .into(),
            );
        }
        errors
    }

    /// The objects waiting for `repr()`; pass them to [`resolve_reprs`].
    pub fn take_pending(&mut self) -> PendingReprs {
        self.pending_index.clear();
        std::mem::take(&mut self.pending)
    }

    /// The rendered locals of `frame`, or `None` when there are none to show
    /// (or the budget is spent).
    ///
    /// # Safety
    /// `frame` is a valid frame object and `code` its code object; the GIL is
    /// held and no user code runs while the capture holds borrowed pointers.
    pub unsafe fn read(
        &mut self,
        py: Python<'_>,
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
    ) -> Option<Locals> {
        if self.mode == LocalsMode::Off {
            return None;
        }
        if self.budget == 0 {
            self.frames_over_budget += 1;
            return None;
        }
        let info = self.code_locals(py, code)?;
        let vars = if info.optimized {
            self.fast_locals(py, frame, code, &info)
        } else {
            mapping_locals(py, frame, &info)
        };
        inert::clear_error();
        let vars = vars?;
        let mut out = Vec::new();
        for (name, value) in vars {
            if !info.optimized && skip_in_namespace(&name, &value) {
                continue;
            }
            if out.len() == MAX_LOCALS_PER_FRAME {
                out.push((MORE_LOCALS.to_string(), "more locals not shown".to_string()));
                break;
            }
            let text = if self.is_redacted(&name) {
                REDACTED.to_string()
            } else {
                let mut text = String::new();
                self.render(py, value.as_ptr(), 0, &mut text);
                cut(text, MAX_VALUE_BYTES)
            };
            let cost = name.len() + text.len();
            out.push((name, text));
            if cost >= self.budget {
                self.budget = 0;
                break;
            }
            self.budget -= cost;
        }
        inert::clear_error();
        Some(Locals(out))
    }

    /// One value rendered as a local is, cut at `limit` bytes. Runs no code
    /// of the program in `LocalsMode::Safe` (other objects are named by
    /// their type). Redaction is the caller's (see [`Self::is_redacted`]).
    ///
    /// # Safety
    /// `obj` is a live object; the GIL is held.
    pub unsafe fn render_value(
        &mut self,
        py: Python<'_>,
        obj: *mut ffi::PyObject,
        limit: usize,
    ) -> String {
        let mut text = String::new();
        self.render(py, obj, 0, &mut text);
        inert::clear_error();
        cut(text, limit)
    }

    unsafe fn code_locals(
        &mut self,
        py: Python<'_>,
        code: *mut ffi::PyCodeObject,
    ) -> Option<Rc<CodeVars>> {
        if let Some(info) = self.codes.get(&(code as usize)) {
            return Some(info.clone());
        }
        let info = Rc::new(CodeVars::of(py, code));
        self.codes.insert(code as usize, info.clone());
        Some(info)
    }

    /// The bound fast locals of a function frame, in slot order, each name once.
    unsafe fn fast_locals<'py>(
        &mut self,
        py: Python<'py>,
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
        info: &CodeVars,
    ) -> Option<Vec<(String, Bound<'py, PyAny>)>> {
        match info.values(py, frame, code) {
            Ok(values) => Some(
                values
                    .into_iter()
                    .map(|(i, value)| (info.names[i].0.clone(), value))
                    .collect(),
            ),
            Err(LayoutMismatch) => {
                self.layout_mismatch = true;
                None
            }
        }
    }

    /// Renders one value into `out`.
    unsafe fn render(
        &mut self,
        py: Python<'_>,
        obj: *mut ffi::PyObject,
        depth: usize,
        out: &mut String,
    ) {
        let tp = ffi::Py_TYPE(obj);
        if obj == ffi::Py_None() {
            out.push_str("None");
        } else if obj == ffi::Py_True() {
            out.push_str("True");
        } else if obj == ffi::Py_False() {
            out.push_str("False");
        } else if tp == &raw mut ffi::PyUnicode_Type {
            render_str(py, obj, out);
        } else if tp == &raw mut ffi::PyBytes_Type {
            render_bytes(py, obj, out);
        } else if tp == &raw mut ffi::PyLong_Type {
            render_int(py, obj, out);
        } else if tp == &raw mut ffi::PyFloat_Type || tp == &raw mut ffi::PyComplex_Type {
            push_repr(py, obj, out);
        } else if tp == &raw mut ffi::PyList_Type {
            self.render_sequence(py, obj, depth, ("[", "]"), out);
        } else if tp == &raw mut ffi::PyTuple_Type {
            self.render_sequence(py, obj, depth, ("(", ")"), out);
        } else if tp == &raw mut ffi::PyDict_Type {
            self.render_dict(py, obj, depth, out);
        } else if tp == &raw mut ffi::PySet_Type || tp == &raw mut ffi::PyFrozenSet_Type {
            self.render_set(py, obj, depth, tp == &raw mut ffi::PySet_Type, out);
        } else if self.mode == LocalsMode::Repr {
            self.defer_repr(py, obj, out);
        } else {
            self.placeholder(py, obj, out);
        }
    }

    unsafe fn render_sequence(
        &mut self,
        py: Python<'_>,
        obj: *mut ffi::PyObject,
        depth: usize,
        (open, close): (&str, &str),
        out: &mut String,
    ) {
        let is_list = open == "[";
        let len = if is_list {
            ffi::PyList_GET_SIZE(obj)
        } else {
            ffi::PyTuple_GET_SIZE(obj)
        } as usize;
        if depth >= MAX_DEPTH && len > 0 {
            out.push_str(open);
            out.push('…');
            out.push_str(close);
            return;
        }
        out.push_str(open);
        for i in 0..len {
            if i > 0 {
                out.push_str(", ");
            }
            if i == MAX_ITEMS || out.len() >= MAX_VALUE_CHARS {
                out.push_str(&format!("… {} more", len - i));
                break;
            }
            let item = if is_list {
                ffi::PyList_GET_ITEM(obj, i as ffi::Py_ssize_t)
            } else {
                ffi::PyTuple_GET_ITEM(obj, i as ffi::Py_ssize_t)
            };
            self.render(py, item, depth + 1, out);
        }
        if !is_list && len == 1 {
            out.push(',');
        }
        out.push_str(close);
    }

    unsafe fn render_dict(
        &mut self,
        py: Python<'_>,
        obj: *mut ffi::PyObject,
        depth: usize,
        out: &mut String,
    ) {
        let len = ffi::PyDict_Size(obj) as usize;
        if depth >= MAX_DEPTH && len > 0 {
            out.push_str("{…}");
            return;
        }
        out.push('{');
        let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
        let mut i = 0;
        while ffi::PyDict_Next(obj, &mut pos, &mut key, &mut value) != 0 {
            if i > 0 {
                out.push_str(", ");
            }
            if i == MAX_ITEMS || out.len() >= MAX_VALUE_CHARS {
                out.push_str(&format!("… {} more", len.saturating_sub(i)));
                break;
            }
            self.render(py, key, depth + 1, out);
            out.push_str(": ");
            let redacted = ffi::PyUnicode_CheckExact(key) != 0
                && inert::str_value(&Bound::from_borrowed_ptr(py, key))
                    .is_some_and(|k| self.is_redacted(&k));
            if redacted {
                out.push_str(REDACTED);
            } else {
                self.render(py, value, depth + 1, out);
            }
            i += 1;
        }
        out.push('}');
    }

    unsafe fn render_set(
        &mut self,
        py: Python<'_>,
        obj: *mut ffi::PyObject,
        depth: usize,
        mutable: bool,
        out: &mut String,
    ) {
        let len = ffi::PySet_Size(obj) as usize;
        let (open, close) = if mutable {
            ("{", "}")
        } else {
            ("frozenset({", "})")
        };
        if len == 0 {
            out.push_str(if mutable { "set()" } else { "frozenset()" });
            return;
        }
        if depth >= MAX_DEPTH {
            out.push_str(open);
            out.push('…');
            out.push_str(close);
            return;
        }
        // The exact set iterator walks the table in C; nothing is hashed or compared.
        let Some(iter) = inert::owned(py, ffi::PyObject_GetIter(obj)) else {
            out.push_str(open);
            out.push('…');
            out.push_str(close);
            return;
        };
        out.push_str(open);
        let mut i = 0;
        loop {
            let item = ffi::PyIter_Next(iter.as_ptr());
            if item.is_null() {
                inert::clear_error();
                break;
            }
            let item = Bound::from_owned_ptr(py, item);
            if i > 0 {
                out.push_str(", ");
            }
            if i == MAX_ITEMS || out.len() >= MAX_VALUE_CHARS {
                out.push_str(&format!("… {} more", len.saturating_sub(i)));
                break;
            }
            self.render(py, item.as_ptr(), depth + 1, out);
            i += 1;
        }
        out.push_str(close);
    }

    /// `<module.Class object at 0x…>`, or Python's own form for classes,
    /// modules and functions, all from C-level fields.
    unsafe fn placeholder(&mut self, py: Python<'_>, obj: *mut ffi::PyObject, out: &mut String) {
        let bound = Bound::from_borrowed_ptr(py, obj);
        if ffi::PyType_Check(obj) != 0 {
            let name = self.type_name(py, obj as *mut ffi::PyTypeObject);
            out.push_str(&format!("<class '{name}'>"));
        } else if ffi::PyModule_Check(obj) != 0 {
            let name = inert::owned(py, ffi::PyModule_GetNameObject(obj))
                .and_then(|n| inert::str_value(&n))
                .map(|n| clean_name(&n))
                .unwrap_or_else(|| "?".into());
            out.push_str(&format!("<module '{name}'>"));
        } else if ffi::Py_TYPE(obj) == &raw mut ffi::PyFunction_Type {
            let name = inert::builtin_attr(&bound, &raw mut ffi::PyFunction_Type, c"__qualname__")
                .and_then(|n| inert::str_value(&n))
                .map(|n| clean_name(&n))
                .unwrap_or_else(|| "?".into());
            out.push_str(&format!("<function {name} at {:#x}>", obj as usize));
        } else {
            let name = self.type_name(py, ffi::Py_TYPE(obj));
            out.push_str(&format!("<{name} object at {:#x}>", obj as usize));
        }
    }

    /// `module.Qualname` of a type, through `type`'s own getters (metaclass
    /// properties and `__getattribute__` are bypassed); builtins unprefixed.
    unsafe fn type_name(&mut self, py: Python<'_>, tp: *mut ffi::PyTypeObject) -> String {
        if let Some(name) = self.types.get(&(tp as usize)) {
            return name.clone();
        }
        let tp_obj = Bound::from_borrowed_ptr(py, tp as *mut ffi::PyObject);
        let read = |attr: &std::ffi::CStr| {
            inert::builtin_attr(&tp_obj, &raw mut ffi::PyType_Type, attr)
                .and_then(|v| inert::str_value(&v))
                .map(|v| clean_name(&v))
        };
        let qualname = read(c"__qualname__").unwrap_or_else(|| inert::type_name(&tp_obj));
        let name = match read(c"__module__") {
            Some(module) if module != "builtins" => format!("{module}.{qualname}"),
            _ => qualname,
        };
        inert::clear_error();
        self.types.insert(tp as usize, name.clone());
        name
    }

    unsafe fn defer_repr(&mut self, py: Python<'_>, obj: *mut ffi::PyObject, out: &mut String) {
        let index = match self.pending_index.get(&(obj as usize)) {
            Some(&i) => i,
            None if self.pending.objects.len() < MAX_REPR_CALLS => {
                let i = self.pending.objects.len();
                // A strong reference: the object must still exist when repr()
                // runs after the capture, even if the program drops it.
                self.pending
                    .objects
                    .push(Bound::from_borrowed_ptr(py, obj).unbind());
                self.pending_index.insert(obj as usize, i);
                i
            }
            None => {
                self.reprs_refused += 1;
                return self.placeholder(py, obj, out);
            }
        };
        out.push(REPR_START);
        out.push_str(&index.to_string());
        out.push(REPR_END);
    }
}

/// In module and class bodies: leave out what the namespace defines rather than holds.
fn skip_in_namespace(name: &str, value: &Bound<'_, PyAny>) -> bool {
    if name.starts_with("__") && name.ends_with("__") {
        return true;
    }
    let obj = value.as_ptr();
    // SAFETY: `obj` is held by `value` (a `Bound`); only its type is read.
    unsafe {
        ffi::PyModule_Check(obj) != 0
            || ffi::PyType_Check(obj) != 0
            || ffi::Py_TYPE(obj) == &raw mut ffi::PyFunction_Type
            || ffi::PyCFunction_Check(obj) != 0
    }
}

/// (name, value) of a dict with str keys, read in C.
unsafe fn dict_items<'py>(dict: &Bound<'py, PyAny>) -> Option<Vec<(String, Bound<'py, PyAny>)>> {
    if ffi::PyDict_Check(dict.as_ptr()) == 0 {
        return None;
    }
    let py = dict.py();
    let mut out = Vec::new();
    let (mut pos, mut key, mut value) = (0, std::ptr::null_mut(), std::ptr::null_mut());
    while ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut key, &mut value) != 0 {
        let key = Bound::from_borrowed_ptr(py, key);
        if let Some(name) = inert::str_value(&key) {
            out.push((name, Bound::from_borrowed_ptr(py, value)));
        }
    }
    Some(out)
}

/// The variables of a module or class body (see the module docs per version).
#[allow(unused_variables)]
unsafe fn mapping_locals<'py>(
    py: Python<'py>,
    frame: *mut ffi::PyFrameObject,
    info: &CodeVars,
) -> Option<Vec<(String, Bound<'py, PyAny>)>> {
    #[cfg(tbc_frame_prefix)]
    {
        let mapping = inert::borrowed(py, crate::capture::framevars::layout::f_locals(frame))?;
        dict_items(&mapping)
    }
    #[cfg(all(Py_3_11, not(Py_3_13)))]
    {
        // FastToLocals would store cells and free variables (and, on 3.12,
        // merge inlined-comprehension variables) through the mapping's own
        // methods: only code without fast variables is read.
        if !info.names.is_empty() {
            return None;
        }
        let mapping = inert::owned(py, ffi::PyFrame_GetLocals(frame))?;
        dict_items(&mapping)
    }
    #[cfg(Py_3_13)]
    {
        let mapping = inert::owned(py, ffi::PyFrame_GetLocals(frame))?;
        dict_items(&mapping)
    }
}

/// Clean text from an interpreter name field: no control characters (they
/// would be taken for repr markers), at most 120 characters.
fn clean_name(name: &str) -> String {
    name.chars()
        .take(120)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

unsafe fn push_repr(py: Python<'_>, obj: *mut ffi::PyObject, out: &mut String) {
    match inert::owned(py, ffi::PyObject_Repr(obj)).and_then(|r| inert::str_value(&r)) {
        Some(text) => out.push_str(&text),
        None => out.push_str("<?>"),
    }
}

unsafe fn render_str(py: Python<'_>, obj: *mut ffi::PyObject, out: &mut String) {
    let len = ffi::PyUnicode_GetLength(obj).max(0) as usize;
    if len <= MAX_STR_CHARS {
        return push_repr(py, obj, out);
    }
    match inert::owned(
        py,
        ffi::PyUnicode_Substring(obj, 0, MAX_STR_CHARS as ffi::Py_ssize_t),
    ) {
        Some(head) => {
            push_repr(py, head.as_ptr(), out);
            out.push_str(&format!("… ({len} chars)"));
        }
        None => out.push_str(&format!("<str of {len} chars>")),
    }
}

unsafe fn render_bytes(py: Python<'_>, obj: *mut ffi::PyObject, out: &mut String) {
    let len = ffi::PyBytes_Size(obj).max(0) as usize;
    if len <= MAX_STR_CHARS {
        return push_repr(py, obj, out);
    }
    let data = ffi::PyBytes_AsString(obj);
    match inert::owned(
        py,
        ffi::PyBytes_FromStringAndSize(data, MAX_STR_CHARS as ffi::Py_ssize_t),
    ) {
        Some(head) => {
            push_repr(py, head.as_ptr(), out);
            out.push_str(&format!("… ({len} bytes)"));
        }
        None => out.push_str(&format!("<bytes of {len} bytes>")),
    }
}

unsafe fn render_int(py: Python<'_>, obj: *mut ffi::PyObject, out: &mut String) {
    let mut overflow = 0;
    let v = ffi::PyLong_AsLongLongAndOverflow(obj, &mut overflow);
    if overflow == 0 && (v != -1 || ffi::PyErr_Occurred().is_null()) {
        out.push_str(&v.to_string());
        return;
    }
    inert::clear_error();
    // Decimal conversion is quadratic in the digits (and refused past 4300
    // on 3.11+): only ints up to float range (309 digits) are written out.
    let as_float = ffi::PyLong_AsDouble(obj);
    if as_float == -1.0 && !ffi::PyErr_Occurred().is_null() {
        inert::clear_error();
        out.push_str("<int of more than 308 digits>");
        return;
    }
    match inert::owned(py, ffi::PyObject_Str(obj)).and_then(|s| inert::str_value(&s)) {
        Some(text) => out.push_str(&text),
        None => out.push_str("<int>"),
    }
}

/// Calls `repr()` on the objects the capture set aside and writes the results
/// into the snapshot's locals. Runs after the capture, with the garbage
/// collector back on: this is user code (`locals="repr"` only), each call
/// guarded (an exception becomes `<repr failed: ExcType>`) and its result cut
/// to [`MAX_REPR_CHARS`]. Only objects still referenced by a kept frame are asked.
pub fn resolve_reprs(py: Python<'_>, snapshot: &mut Snapshot, pending: PendingReprs) {
    if pending.is_empty() {
        return;
    }
    let values = || {
        snapshot
            .stacks
            .iter()
            .flat_map(|s| s.frames.iter())
            .filter_map(|f| f.locals.as_ref())
            .flat_map(|l| l.0.iter().map(|(_, v)| v))
    };
    let mut used = BTreeSet::new();
    for value in values() {
        for (index, _) in markers(value) {
            used.insert(index);
        }
    }
    let mut results: HashMap<usize, String> = HashMap::new();
    for index in used {
        if let Some(obj) = pending.objects.get(index) {
            results.insert(index, guarded_repr(obj.bind(py)));
        }
    }
    drop(pending);
    for stack in &mut snapshot.stacks {
        // Frames with locals are never shared between stacks, so this
        // mutates in place rather than copying.
        for frame in std::sync::Arc::make_mut(&mut stack.frames) {
            let Some(locals) = frame.locals.as_mut() else {
                continue;
            };
            for (_, value) in &mut locals.0 {
                if value.contains(REPR_START) {
                    *value = substitute(value, &results);
                }
            }
        }
    }
}

fn guarded_repr(obj: &Bound<'_, PyAny>) -> String {
    let py = obj.py();
    // SAFETY: `obj` is alive and the GIL is held (a `Bound`). This is the one place user code runs
    // (`locals="repr"`), after the capture, with no reference to interpreter internals held.
    let result = unsafe { ffi::PyObject_Repr(obj.as_ptr()) };
    if result.is_null() {
        let name = PyErr::take(py)
            .map(|e| inert::type_name(e.value(py).as_any()))
            .unwrap_or_else(|| "unknown error".into());
        return format!("<repr failed: {name}>");
    }
    // SAFETY: `result` is the new, non-NULL reference `PyObject_Repr` returned.
    let result = unsafe { Bound::from_owned_ptr(py, result) };
    // SAFETY: `result` is a str (what `PyObject_Repr` returns), held.
    let len = unsafe { ffi::PyUnicode_GetLength(result.as_ptr()) }.max(0) as usize;
    let text = if len > MAX_REPR_CHARS {
        // SAFETY: as above; the substring is within the length just read.
        let head = unsafe {
            inert::owned(
                py,
                ffi::PyUnicode_Substring(result.as_ptr(), 0, MAX_REPR_CHARS as ffi::Py_ssize_t),
            )
        };
        head.and_then(|h| inert::str_value(&h))
            .map(|h| format!("{h}… ({len} chars)"))
    } else {
        inert::str_value(&result)
    };
    inert::clear_error();
    // A repr is user text: keep it on one line and free of markers.
    text.map(|t| {
        t.replace(['\n', '\r'], " ")
            .replace([REPR_START, REPR_END], "?")
    })
    .unwrap_or_else(|| "<repr failed: not text>".into())
}

/// (index, byte range) of every repr marker in `value`.
fn markers(value: &str) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(start) = value[rest..].find(REPR_START).map(|i| i + rest) {
        let Some(end) = value[start..].find(REPR_END).map(|i| i + start) else {
            break;
        };
        if let Ok(index) = value[start + 1..end].parse() {
            out.push((index, start..end + REPR_END.len_utf8()));
        }
        rest = end;
    }
    out
}

fn substitute(value: &str, results: &HashMap<usize, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    for (index, range) in markers(value) {
        out.push_str(&value[last..range.start]);
        out.push_str(results.get(&index).map_or("<repr skipped>", String::as_str));
        last = range.end;
    }
    out.push_str(&value[last..]);
    // A container of several reprs: the whole value is cut to the bound too.
    cut(out, MAX_VALUE_BYTES + MAX_REPR_CHARS)
}

/// `text` cut to at most `limit` bytes (plus `…`) on a character boundary,
/// never inside a repr marker.
fn cut(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let head = &text[..end];
    if let Some(open) = head.rfind(REPR_START) {
        if head[open..].find(REPR_END).is_none() {
            end = open;
        }
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_on_boundaries_and_never_inside_a_marker() {
        assert_eq!(cut("abc".into(), 3), "abc");
        assert_eq!(cut("abcdef".into(), 3), "abc…");
        assert_eq!(cut("aé".into(), 2), "a…");
        let marked = format!("[1, {REPR_START}12{REPR_END}]");
        assert_eq!(cut(marked.clone(), 6), "[1, …");
        assert_eq!(
            cut(marked.clone(), 8),
            format!("[1, {REPR_START}12{REPR_END}…")
        );
    }

    #[test]
    fn markers_are_found_and_replaced() {
        let value = format!("[1, {REPR_START}0{REPR_END}, {REPR_START}12{REPR_END}]");
        assert_eq!(
            markers(&value).iter().map(|m| m.0).collect::<Vec<_>>(),
            [0, 12]
        );
        let results = HashMap::from([(0, "<A>".to_string())]);
        assert_eq!(substitute(&value, &results), "[1, <A>, <repr skipped>]");
    }
}
