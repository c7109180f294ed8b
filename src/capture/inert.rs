//! Inert reads: reads of Python objects that run no user code (no
//! property, no `__getattr__`, no `__repr__`, no metaclass hook).
//!
//! Capture looks at arbitrary heap objects (threads, greenlets, tasks and
//! whatever they await). A plain `getattr` can run a property, a
//! `__getattr__` or a metaclass hook; these helpers instead read instance
//! dictionaries and the descriptors of the interpreter's own types directly.
//! Every helper returns `None` on any failure and leaves no Python error set.
//!
//! Type pointers passed to these helpers are live type objects (the
//! interpreter's static types, or types their module keeps alive for the
//! whole capture). A helper that only compares such a pointer is safe to
//! call; one that follows it is `unsafe` and says so.

use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::CStr;
use std::os::raw::c_char;

/// `pyo3::intern!` made safe for a fork: a `str` made once per process
/// and kept. pyo3's own cell lets go of the GIL before it claims the cell
/// and takes it back to fill it; a fork in that moment (by the thread that
/// got the GIL) leaves the child a cell claimed by a thread it does not
/// have, and the child's first dump waits for it forever. This cell is
/// claimed and filled with the GIL held throughout, and `fork()` needs the
/// GIL, so a child never sees it half done.
macro_rules! interned {
    ($py:expr, $text:expr) => {{
        static CELL: std::sync::OnceLock<pyo3::Py<pyo3::types::PyString>> =
            std::sync::OnceLock::new();
        CELL.get_or_init(|| pyo3::types::PyString::intern($py, $text).unbind())
            .bind($py)
    }};
}
pub(crate) use interned;

extern "C" {
    // Exported by CPython 3.9-3.13 (cpython/object.h): an MRO walk over type
    // dictionaries that calls nothing; it returns a borrowed reference.
    fn _PyType_Lookup(tp: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// Clears a pending Python error, if any. Capture code calls it after every
/// C-API call that can fail, so no exception leaks back to the caller.
pub fn clear_error() {
    // SAFETY: the GIL is held (every caller is inside a capture); these two calls only look at and
    // clear the thread's error indicator.
    unsafe {
        if !ffi::PyErr_Occurred().is_null() {
            ffi::PyErr_Clear();
        }
    }
}

/// `Bound` from a new reference, or `None` (error cleared) for NULL.
///
/// # Safety
/// `ptr` must be NULL or a new (owned) reference.
pub unsafe fn owned<'py>(py: Python<'py>, ptr: *mut ffi::PyObject) -> Option<Bound<'py, PyAny>> {
    if ptr.is_null() {
        clear_error();
        None
    } else {
        Some(Bound::from_owned_ptr(py, ptr))
    }
}

/// `Bound` from a borrowed reference, or `None` for NULL.
///
/// # Safety
/// `ptr` must be NULL or a valid borrowed reference.
pub unsafe fn borrowed<'py>(py: Python<'py>, ptr: *mut ffi::PyObject) -> Option<Bound<'py, PyAny>> {
    if ptr.is_null() {
        clear_error();
        None
    } else {
        Some(Bound::from_borrowed_ptr(py, ptr))
    }
}

/// `dict[key]` for a `str` key, without raising and without running any
/// code of the program.
///
/// A hashed lookup compares the key with every entry of equal hash, calling
/// the entry's `__eq__`: anyone can put a key object with a planted hash and a
/// sleeping `__eq__` into `sys.modules` or a module's dict (issue 15 saw the
/// GIL let go 120 times a capture that way). So the hashed lookup is made
/// only when the dict itself says that all its keys are exact `str`s (the
/// keys' kind, 3.11+), whose comparison is the interpreter's own;
/// otherwise the dict is walked, comparing by identity or as exact `str`
/// ([`dict_get_named`]).
pub fn dict_get<'py>(dict: &Bound<'py, PyAny>, key: &CStr) -> Option<Bound<'py, PyAny>> {
    let py = dict.py();
    // SAFETY: `dict` is alive and the GIL is held (a `Bound`); it is checked to be a dict before
    // the dict API reads it.
    unsafe {
        if ffi::PyDict_Check(dict.as_ptr()) == 0 {
            return None;
        }
        if !str_keys_only(dict.as_ptr()) {
            return dict_get_named(dict, key);
        }
        let item = ffi::PyDict_GetItemString(dict.as_ptr(), key.as_ptr() as *const c_char);
        borrowed(py, item)
    }
}

/// Whether every key of the dict is an exact `str`: its keys object is not
/// of the general kind (`cpython::current::DictKeysHead`, 3.11+). A dict
/// given any other key, even once, is of the general kind for good. 3.9 and
/// 3.10 have no such field: there the answer is no, and dicts are walked.
///
/// # Safety
/// `dict` is a live dict (`PyDict_Check`); the GIL is held.
#[allow(unused_variables)]
unsafe fn str_keys_only(dict: *mut ffi::PyObject) -> bool {
    #[cfg(tbc_dict_kind)]
    {
        use crate::capture::cpython::current::{DictKeysHead, DICT_KEYS_GENERAL};
        // SAFETY: a live dict always has a keys object (never freed while the
        // dict holds it, and we hold the GIL), whose head is `DictKeysHead`.
        let keys = (*(dict as *mut ffi::PyDictObject)).ma_keys as *const DictKeysHead;
        !keys.is_null() && (*keys).dk_kind != DICT_KEYS_GENERAL
    }
    #[cfg(not(tbc_dict_kind))]
    {
        false
    }
}

/// The instance `__dict__` of `obj`, through the generic getter: no
/// `__getattribute__`, no `__dict__` property, no `__getattr__`.
pub fn instance_dict<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); its type object lives as long
    // as it, and is only read (flags, dict offset) before the generic getter, which runs no user
    // code.
    unsafe {
        let tp = ffi::Py_TYPE(obj.as_ptr());
        // Types without an instance dict (slots, most builtins) would raise.
        if (*tp).tp_dictoffset == 0 && ((*tp).tp_flags & MANAGED_DICT_FLAG) == 0 {
            return None;
        }
        let dict = owned(
            obj.py(),
            ffi::PyObject_GenericGetDict(obj.as_ptr(), std::ptr::null_mut()),
        )?;
        (ffi::PyDict_Check(dict.as_ptr()) != 0).then_some(dict)
    }
}

// Py_TPFLAGS_MANAGED_DICT (3.12+, bit 4): the dict lives before the object
// and tp_dictoffset is -1 or 0. Before 3.12 the bit is unused by CPython.
const MANAGED_DICT_FLAG: std::os::raw::c_ulong = 1 << 4;

/// `obj.name` read from the instance `__dict__` only, by walking it (see
/// [`dict_get_scan`]): objects we do not control may hold foreign keys.
pub fn instance_attr<'py>(obj: &Bound<'py, PyAny>, name: &CStr) -> Option<Bound<'py, PyAny>> {
    dict_get_named(&instance_dict(obj)?, name)
}

/// [`dict_get_scan`] with the key given as a C string.
pub fn dict_get_named<'py>(dict: &Bound<'py, PyAny>, name: &CStr) -> Option<Bound<'py, PyAny>> {
    // Interned: the dicts' own keys mostly are, so the pointer test decides.
    // SAFETY: `name` is a NUL-terminated C string; the GIL is held.
    let key = unsafe { owned(dict.py(), ffi::PyUnicode_InternFromString(name.as_ptr()))? };
    dict_get_scan(dict, &key)
}

/// `obj.name` where `name` is a C-level descriptor (getset or member) that
/// `owner` or one of its bases defines. Subclass overrides, properties and
/// `__getattribute__` are bypassed: only the interpreter's own getter runs.
///
/// # Safety
/// `owner` points to a live type object (an interpreter type, or one read
/// from a module the caller holds); the GIL is held.
pub unsafe fn builtin_attr<'py>(
    obj: &Bound<'py, PyAny>,
    owner: *mut ffi::PyTypeObject,
    name: &CStr,
) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); `owner` is a live type object
    // (this function's contract), and its reference is only borrowed while `obj`'s type keeps it.
    unsafe {
        if ffi::PyType_IsSubtype(ffi::Py_TYPE(obj.as_ptr()), owner) == 0 {
            return None;
        }
        // `obj` is an instance of `owner`, which its type therefore keeps alive.
        let owner = Bound::from_borrowed_ptr(obj.py(), owner as *mut ffi::PyObject);
        BuiltinGetter::new(&owner, name)?.get(obj)
    }
}

/// [`builtin_attr`] with the descriptor looked up once, for reading the same
/// attribute of many objects in one capture.
pub struct BuiltinGetter<'py> {
    owner: Bound<'py, PyAny>,
    descr: Bound<'py, PyAny>,
    get: ffi::descrgetfunc,
    /// What the descriptor call would do, done without it (see [`Direct`]).
    direct: Direct,
}

/// Once an object is known to be an instance of the owner, a getset
/// descriptor only calls its C getter (what `getset_get` does after its type
/// check), and an object member (`__slots__`, `T_OBJECT`/`T_OBJECT_EX`) that
/// raises no audit event only reads its slot (what `member_get` and
/// `PyMember_GetOne` do, 3.9-3.13): ten thousand tasks skip the descriptor
/// machinery. Anything else goes through the descriptor.
enum Direct {
    None,
    Getset(ffi::getter, *mut std::os::raw::c_void),
    /// Slot offset, and whether an empty slot reads as absent (`T_OBJECT_EX`)
    /// rather than as `None` (`T_OBJECT`).
    Member(usize, bool),
}

impl Direct {
    /// # Safety
    /// `descr` is a live getset or member descriptor; it keeps its definition alive.
    unsafe fn of(descr: *mut ffi::PyObject) -> Direct {
        let descr_type = ffi::Py_TYPE(descr);
        if std::ptr::eq(descr_type, &raw mut ffi::PyGetSetDescr_Type) {
            let def = (*(descr as *mut ffi::PyGetSetDescrObject)).d_getset;
            return match (!def.is_null()).then(|| (*def).get).flatten() {
                Some(get) => Direct::Getset(get, (*def).closure),
                None => Direct::None,
            };
        }
        // pyo3 types `d_member` as a `PyGetSetDef` before 3.11; it is a
        // `PyMemberDef` in every version (the cast is a no-op from 3.11).
        #[allow(clippy::unnecessary_cast)]
        let def = (*(descr as *mut ffi::PyMemberDescrObject)).d_member as *mut ffi::PyMemberDef;
        if def.is_null() {
            return Direct::None;
        }
        // The member's own type (a base of the owner, or the owner).
        let member_owner = (*(descr as *mut ffi::PyDescrObject)).d_type;
        // T_OBJECT (6) and T_OBJECT_EX (16): a `PyObject *` slot.
        let type_code = (*def).type_code;
        // READ_RESTRICTED / Py_AUDIT_READ (2) raises an audit event;
        // Py_RELATIVE_OFFSET (8, 3.12+) is an offset from elsewhere.
        let plain = (*def).flags & (2 | 8) == 0;
        let offset = usize::try_from((*def).offset).unwrap_or(0);
        let size = std::mem::size_of::<*mut ffi::PyObject>();
        let inside = offset >= std::mem::size_of::<ffi::PyObject>()
            && offset + size <= usize::try_from((*member_owner).tp_basicsize).unwrap_or(0);
        if matches!(type_code, 6 | 16) && plain && inside {
            Direct::Member(offset, type_code == 16)
        } else {
            Direct::None
        }
    }
}

impl<'py> BuiltinGetter<'py> {
    /// `None` unless type `owner` (or a base) defines `name` as a getset or
    /// member descriptor.
    pub fn new(owner: &Bound<'py, PyAny>, name: &CStr) -> Option<Self> {
        // SAFETY: `owner` is alive and the GIL is held (a `Bound`); it is checked to be a type
        // before its MRO is looked up.
        unsafe {
            if ffi::PyType_Check(owner.as_ptr()) == 0 {
                return None;
            }
            let descr = type_lookup(owner.py(), owner.as_ptr() as *mut ffi::PyTypeObject, name)?;
            let descr_type = ffi::Py_TYPE(descr.as_ptr());
            let is_c_descriptor = std::ptr::eq(descr_type, &raw mut ffi::PyGetSetDescr_Type)
                || std::ptr::eq(descr_type, &raw mut ffi::PyMemberDescr_Type);
            if !is_c_descriptor {
                return None;
            }
            let get = (*descr_type).tp_descr_get?;
            let direct = Direct::of(descr.as_ptr());
            Some(BuiltinGetter {
                owner: owner.clone(),
                descr,
                get,
                direct,
            })
        }
    }

    /// The attribute of `obj`, or `None` when `obj` is not an `owner` or the getter fails.
    pub fn get(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); `self` holds the owner type
        // and the descriptor, so both outlive this call; the descriptor's C getter runs only on an
        // instance of its owner.
        unsafe {
            let tp = ffi::Py_TYPE(obj.as_ptr());
            let owner = self.owner.as_ptr() as *mut ffi::PyTypeObject;
            if tp != owner && ffi::PyType_IsSubtype(tp, owner) == 0 {
                return None;
            }
            self.get_unchecked(obj)
        }
    }

    /// [`Self::get`] for an object already known to be an `owner`: skips
    /// the MRO walk, which for instances of a subclass runs on every read.
    ///
    /// # Safety
    /// `obj` must be an instance of `owner` or of a subclass of it.
    pub unsafe fn get_unchecked(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        let py = obj.py();
        match self.direct {
            Direct::Getset(get, closure) => owned(py, get(obj.as_ptr(), closure)),
            Direct::Member(offset, absent_when_empty) => {
                let slot = (obj.as_ptr() as *const u8).add(offset) as *const *mut ffi::PyObject;
                match (*slot).is_null() {
                    false => borrowed(py, *slot),
                    true if absent_when_empty => None,
                    true => borrowed(py, ffi::Py_None()),
                }
            }
            Direct::None => {
                let tp = ffi::Py_TYPE(obj.as_ptr()) as *mut ffi::PyObject;
                owned(py, (self.get)(self.descr.as_ptr(), obj.as_ptr(), tp))
            }
        }
    }
}

/// A read of an interpreter or extension struct standing in for the C getter
/// it mirrors. The first read of a capture is compared with the getter; if
/// they disagree, the getter answers for the rest of the capture. One per
/// mirrored layout, made afresh for each capture.
#[derive(Default)]
pub struct CheckedRead(std::cell::Cell<Option<bool>>);

impl CheckedRead {
    /// `direct`'s answer once trusted, else `getter`'s. `direct` answering
    /// `None` (nothing to read in place) also leaves it to `getter`; `same`
    /// decides whether the two answers agree.
    pub fn read<T>(
        &self,
        direct: impl FnOnce() -> Option<T>,
        getter: impl Fn() -> Option<T>,
        same: impl FnOnce(&T, &Option<T>) -> bool,
    ) -> Option<T> {
        if self.0.get() == Some(false) || !crate::capture::fastpaths::on() {
            return getter();
        }
        let Some(value) = direct() else {
            return getter();
        };
        if self.0.get().is_none() {
            let agrees = same(&value, &getter());
            self.0.set(Some(agrees));
            if !agrees {
                return getter();
            }
        }
        Some(value)
    }
}

/// `dict[key]` found by walking the entries and comparing only exact `str`
/// keys, in C: unlike a hashed lookup it never calls the `__eq__` of a
/// foreign key that happens to share the hash. For small dicts (instance
/// `__dict__`s of objects we do not control).
pub fn dict_get_scan<'py>(
    dict: &Bound<'py, PyAny>,
    key: &Bound<'py, PyAny>,
) -> Option<Bound<'py, PyAny>> {
    let [value] = dict_get_scan_many(dict, [key]);
    value
}

/// [`dict_get_scan`] for several keys in one walk.
pub fn dict_get_scan_many<'py, const N: usize>(
    dict: &Bound<'py, PyAny>,
    keys: [&Bound<'py, PyAny>; N],
) -> [Option<Bound<'py, PyAny>>; N] {
    let py = dict.py();
    let mut out: [Option<Bound<'py, PyAny>>; N] = std::array::from_fn(|_| None);
    // SAFETY: `dict` is alive and the GIL is held (a `Bound`); only an exact dict is walked, with
    // `PyDict_Next` (no user code), and each key compared only when it is an exact `str`.
    unsafe {
        if ffi::PyDict_Check(dict.as_ptr()) == 0
            || keys
                .iter()
                .any(|k| ffi::PyUnicode_CheckExact(k.as_ptr()) == 0)
        {
            return out;
        }
        // A `str` caches its hash: comparing hashes first skips most compares.
        // Asked for only once a key is not matched by pointer (rare).
        let mut hashes: Option<[ffi::Py_hash_t; N]> = None;
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        let mut v: *mut ffi::PyObject = std::ptr::null_mut();
        while ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut k, &mut v) != 0 {
            // Attribute names are interned, so the pointer test nearly always decides.
            if let Some(i) = keys.iter().position(|key| k == key.as_ptr()) {
                if out[i].is_none() {
                    out[i] = borrowed(py, v);
                }
                continue;
            }
            if ffi::PyUnicode_CheckExact(k) == 0 {
                continue;
            }
            let hash = ffi::PyObject_Hash(k);
            let hashes = hashes.get_or_insert_with(|| keys.map(|k| ffi::PyObject_Hash(k.as_ptr())));
            for (i, key) in keys.iter().enumerate() {
                let same = hash == hashes[i] && ffi::PyUnicode_Compare(k, key.as_ptr()) == 0;
                if same && out[i].is_none() {
                    out[i] = borrowed(py, v);
                }
            }
        }
        clear_error();
    }
    out
}

/// `name` looked up along the MRO of `tp` (what `type.name` finds before
/// descriptors run), without calling anything: no metaclass hook, no getter.
///
/// # Safety
/// `tp` must be a live type object; the GIL is held.
pub unsafe fn type_lookup<'py>(
    py: Python<'py>,
    tp: *mut ffi::PyTypeObject,
    name: &CStr,
) -> Option<Bound<'py, PyAny>> {
    let key = owned(py, ffi::PyUnicode_FromString(name.as_ptr()))?;
    borrowed(py, _PyType_Lookup(tp, key.as_ptr()))
}

/// [`str_value`] as a shared [`Text`](crate::model::Text), in one allocation.
pub fn str_text(obj: &Bound<'_, PyAny>) -> Option<crate::model::Text> {
    match str_ref(obj) {
        Some(text) => Some(text.into()),
        None => str_value(obj).map(Into::into),
    }
}

/// A Python `str` as Rust text; lone surrogates are replaced, never raised.
pub fn str_value(obj: &Bound<'_, PyAny>) -> Option<String> {
    if let Some(text) = str_ref(obj) {
        return Some(text.to_owned());
    }
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); the str API is used only once
    // it is checked to be a str.
    unsafe {
        if ffi::PyUnicode_Check(obj.as_ptr()) == 0 {
            return None;
        }
        // Lone surrogates cannot be UTF-8 encoded: replace them.
        let bytes = owned(
            obj.py(),
            ffi::PyUnicode_AsEncodedString(obj.as_ptr(), c"utf-8".as_ptr(), c"replace".as_ptr()),
        )?;
        let ptr = ffi::PyBytes_AsString(bytes.as_ptr());
        if ptr.is_null() {
            clear_error();
            return None;
        }
        Some(CStr::from_ptr(ptr).to_string_lossy().into_owned())
    }
}

/// A `str`'s text borrowed from the object's own UTF-8 cache, without a
/// copy; `None` for other types and for text that is not valid UTF-8
/// (lone surrogates), where [`str_value`] replaces instead.
pub fn str_ref<'a>(obj: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); the returned slice borrows the
    // str's own UTF-8 buffer, which lives as long as `obj` (the lifetime ties them).
    unsafe {
        if ffi::PyUnicode_Check(obj.as_ptr()) == 0 {
            return None;
        }
        let mut size: ffi::Py_ssize_t = 0;
        let data = ffi::PyUnicode_AsUTF8AndSize(obj.as_ptr(), &mut size);
        if data.is_null() {
            clear_error();
            return None;
        }
        // The buffer lives as long as the str object, which `obj` keeps alive.
        let bytes = std::slice::from_raw_parts(data as *const u8, size as usize);
        // An ASCII `str` (the call above readied a legacy one, so the flag is
        // set) needs no UTF-8 check: ten thousand task names skip it.
        #[cfg(not(Py_3_14))]
        if ffi::PyUnicode_IS_ASCII(obj.as_ptr()) != 0 {
            return Some(std::str::from_utf8_unchecked(bytes));
        }
        std::str::from_utf8(bytes).ok()
    }
}

/// An exact `int` (or `bool`) as `u64`; other types are not asked.
pub fn int_value(obj: &Bound<'_, PyAny>) -> Option<u64> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); the int API is used only once
    // it is checked to be an int.
    unsafe {
        if ffi::PyLong_Check(obj.as_ptr()) == 0 {
            return None;
        }
        let v = ffi::PyLong_AsUnsignedLongLongMask(obj.as_ptr());
        if v == u64::MAX && !ffi::PyErr_Occurred().is_null() {
            clear_error();
            return None;
        }
        Some(v)
    }
}

/// An exact `bool`.
pub fn bool_value(obj: &Bound<'_, PyAny>) -> Option<bool> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); only compared with the two bool
    // singletons.
    unsafe {
        if ffi::PyBool_Check(obj.as_ptr()) == 0 {
            return None;
        }
        Some(obj.as_ptr() == ffi::Py_True())
    }
}

/// The module object `sys.modules[name]` if it has been imported; never imports.
pub fn imported_module<'py>(py: Python<'py>, name: &CStr) -> Option<Bound<'py, PyAny>> {
    // SAFETY: the GIL is held (`py`); `sys.modules` is borrowed from the interpreter and read with
    // `dict_get`.
    unsafe {
        let modules = borrowed(py, ffi::PyImport_GetModuleDict())?;
        let module = dict_get(&modules, name)?;
        (ffi::PyModule_Check(module.as_ptr()) != 0).then_some(module)
    }
}

/// `module.name` read from the module's namespace dict.
pub fn module_attr<'py>(module: &Bound<'py, PyAny>, name: &CStr) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `module` is alive and the GIL is held (a `Bound`); its dict is read only once it is
    // checked to be a module.
    unsafe {
        if ffi::PyModule_Check(module.as_ptr()) == 0 {
            return None;
        }
        let dict = borrowed(module.py(), ffi::PyModule_GetDict(module.as_ptr()))?;
        dict_get(&dict, name)
    }
}

/// The object's type name (`tp_name`, after the last dot), read from the type struct.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); its type, and the type's NUL-
    // terminated `tp_name`, live as long as it.
    unsafe {
        let tp = ffi::Py_TYPE(obj.as_ptr());
        let name = CStr::from_ptr((*tp).tp_name).to_string_lossy();
        name.rsplit('.').next().unwrap_or(&name).to_string()
    }
}

/// `id(obj)` as the address string ids use (`0x7f...`).
pub fn address(obj: &Bound<'_, PyAny>) -> String {
    format!("{:#x}", obj.as_ptr() as usize)
}

// ---------------------------------------------------------------------------
// Helpers the asyncio backend needs (issue #3). Each reads only through the
// interpreter's own C code: getset/member descriptors, `tp_traverse`, and
// the C API of exact builtin types.

extern "C" {
    // `types.MethodType`; not in pyo3-ffi. PyAPI_DATA/PyAPI_FUNC in 3.9-3.13.
    static mut PyMethod_Type: ffi::PyTypeObject;
    fn PyMethod_Function(method: *mut ffi::PyObject) -> *mut ffi::PyObject;
    fn PyMethod_Self(method: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// [`BuiltinGetter`] for a type given by pointer, reading Python `None` as
/// absent: the asyncio backend's fields are mostly optional references.
pub struct BuiltinAttr<'py>(BuiltinGetter<'py>);

impl<'py> BuiltinAttr<'py> {
    /// `None` when `owner` has no C descriptor called `name`. `owner` must be
    /// a live type object; the getter keeps a reference to it from then on.
    pub fn resolve(py: Python<'py>, owner: *mut ffi::PyTypeObject, name: &CStr) -> Option<Self> {
        // SAFETY: `owner` is a live type object (this function's contract); the getter takes a
        // reference of its own.
        let owner = unsafe { borrowed(py, owner as *mut ffi::PyObject)? };
        BuiltinGetter::new(&owner, name).map(BuiltinAttr)
    }

    /// The attribute of `obj` (an instance of the owner or a subclass), or
    /// `None` for other objects, unset slots and Python `None`.
    pub fn get(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        not_none(self.0.get(obj)?)
    }

    /// [`Self::get`] without the subtype check, whose MRO walk runs on
    /// every read of a subclass instance.
    ///
    /// # Safety
    /// `obj` is an instance of the owner or of a subclass of it.
    pub unsafe fn get_unchecked(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        not_none(self.0.get_unchecked(obj)?)
    }
}

/// A no-argument C method (`METH_NOARGS`) of one of the interpreter's
/// types, called through the owner's own method descriptor so that a
/// subclass override never runs. Only for methods that read a field (the C
/// task's `get_name`, `cancelling`), where the type offers no getset.
pub struct BuiltinMethod<'py> {
    descr: Bound<'py, PyAny>,
    owner: *mut ffi::PyTypeObject,
}

impl<'py> BuiltinMethod<'py> {
    /// # Safety
    /// `owner` points to a live type object that outlives the capture.
    pub unsafe fn resolve(
        py: Python<'py>,
        owner: *mut ffi::PyTypeObject,
        name: &CStr,
    ) -> Option<Self> {
        // SAFETY: `owner` is a live type object (this function's contract); the descriptor found is
        // borrowed from its dict and then held by `self`.
        unsafe {
            let key = owned(py, ffi::PyUnicode_FromString(name.as_ptr()))?;
            let descr = borrowed(py, _PyType_Lookup(owner, key.as_ptr()))?;
            let is_method = std::ptr::eq(
                ffi::Py_TYPE(descr.as_ptr()),
                &raw mut ffi::PyMethodDescr_Type,
            );
            is_method.then_some(BuiltinMethod { descr, owner })
        }
    }

    pub fn call0(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); `self` holds the method
        // descriptor, which keeps its owner type alive; the C method is called only on an instance
        // of that owner.
        unsafe {
            let tp = ffi::Py_TYPE(obj.as_ptr());
            if tp != self.owner && ffi::PyType_IsSubtype(tp, self.owner) == 0 {
                return None;
            }
            owned(
                obj.py(),
                ffi::PyObject_CallOneArg(self.descr.as_ptr(), obj.as_ptr()),
            )
        }
    }
}

impl<'py> BuiltinMethod<'py> {
    /// The method called on `obj` with `args`, for C methods that only read
    /// (`Context.get`); `None` for other objects and when it raises.
    pub fn call(
        &self,
        obj: &Bound<'py, PyAny>,
        args: &[&Bound<'py, PyAny>],
    ) -> Option<Bound<'py, PyAny>> {
        // On the stack: called once per stack and label.
        const MAX_ARGS: usize = 4;
        if args.len() > MAX_ARGS {
            return None;
        }
        let mut argv = [std::ptr::null_mut::<ffi::PyObject>(); MAX_ARGS + 1];
        argv[0] = obj.as_ptr();
        for (slot, arg) in argv[1..].iter_mut().zip(args) {
            *slot = arg.as_ptr();
        }
        let argc = args.len() + 1;
        // SAFETY: `obj` and `args` are alive and the GIL is held (they are `Bound`s); `self`
        // holds the method descriptor, which keeps its owner type alive; the C method is called
        // only on an instance of that owner, as the descriptor's own call checks too.
        unsafe {
            let tp = ffi::Py_TYPE(obj.as_ptr());
            if tp != self.owner && ffi::PyType_IsSubtype(tp, self.owner) == 0 {
                return None;
            }
            let call = ffi::PyObject_Vectorcall(
                self.descr.as_ptr(),
                argv.as_ptr(),
                argc,
                std::ptr::null_mut(),
            );
            owned(obj.py(), call)
        }
    }
}

impl<'py> BuiltinMethod<'py> {
    /// [`BuiltinMethod::call0`], calling a `METH_NOARGS` method's C function
    /// itself once `obj` is known to be an instance of the owner: what the
    /// method descriptor's vectorcall does after checking its arguments.
    /// Other calling conventions go through `call0`.
    pub fn call0_direct(&self, obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); `self` holds the
        // descriptor, which keeps its `PyMethodDef` alive; the C function is called only when it is
        // a `METH_NOARGS` method and `obj` an instance of its owner, as the descriptor's own call
        // would.
        unsafe {
            // The descriptor (held by `self`) keeps its definition alive.
            let def = (*(self.descr.as_ptr() as *mut ffi::PyMethodDescrObject)).d_method;
            if def.is_null() || (*def).ml_flags & !ffi::METH_COEXIST != ffi::METH_NOARGS {
                return self.call0(obj);
            }
            let tp = ffi::Py_TYPE(obj.as_ptr());
            if tp != self.owner && ffi::PyType_IsSubtype(tp, self.owner) == 0 {
                return None;
            }
            let meth = (*def).ml_meth.PyCFunction;
            owned(obj.py(), meth(obj.as_ptr(), std::ptr::null_mut()))
        }
    }
}

/// `None` for Python's `None`.
pub fn not_none(obj: Bound<'_, PyAny>) -> Option<Bound<'_, PyAny>> {
    (!obj.is_none()).then_some(obj)
}

/// True when `obj` is an instance of `tp` or of a subclass (a C-level MRO
/// check: no `__instancecheck__`, no `__class__` property).
/// `tp` is only compared by address (as `PyType_IsSubtype` does), never
/// followed.
pub fn is_instance(obj: &Bound<'_, PyAny>, tp: *mut ffi::PyTypeObject) -> bool {
    let target = tp as usize;
    // SAFETY: `obj` is alive (a `Bound`), so is its type; `type_is_subtype`
    // follows only that type's MRO or base chain.
    unsafe { type_is_subtype(ffi::Py_TYPE(obj.as_ptr()), target) }
}

/// `PyType_IsSubtype(tp, target)` with `target` an address: `tp`'s MRO
/// tuple, or its `tp_base` chain while it has none (a type being readied).
///
/// # Safety
/// `tp` is a live type object; the GIL is held.
unsafe fn type_is_subtype(tp: *mut ffi::PyTypeObject, target: usize) -> bool {
    if tp as usize == target {
        return true;
    }
    let mro = (*tp).tp_mro;
    if !mro.is_null() && ffi::PyTuple_Check(mro) != 0 {
        return (0..ffi::PyTuple_GET_SIZE(mro))
            .any(|i| ffi::PyTuple_GET_ITEM(mro, i) as usize == target);
    }
    let mut base = (*tp).tp_base;
    while !base.is_null() {
        if base as usize == target {
            return true;
        }
        base = (*base).tp_base;
    }
    false
}

/// `obj` as a type object taken from a module namespace, if it is one.
pub fn as_type(obj: &Bound<'_, PyAny>) -> Option<*mut ffi::PyTypeObject> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); only its type is checked.
    unsafe {
        (ffi::PyType_Check(obj.as_ptr()) != 0).then(|| obj.as_ptr() as *mut ffi::PyTypeObject)
    }
}

/// True when the object's type is a static (non-heap) type named `name`:
/// the interpreter's own helper types that no module exports, such as
/// `async_generator_asend`.
pub fn is_static_type_named(obj: &Bound<'_, PyAny>, name: &CStr) -> bool {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); its type and the type's NUL-
    // terminated `tp_name` live as long as it.
    unsafe {
        let tp = ffi::Py_TYPE(obj.as_ptr());
        ((*tp).tp_flags & ffi::Py_TPFLAGS_HEAPTYPE) == 0 && CStr::from_ptr((*tp).tp_name) == name
    }
}

/// The objects `obj` holds references to, as its type's `tp_traverse`
/// reports them (what `gc.get_referents` returns). Used for the helper
/// objects of the interpreter's own types that expose no attributes.
pub fn referents<'py>(obj: &Bound<'py, PyAny>) -> Vec<Bound<'py, PyAny>> {
    unsafe extern "C" fn visit(
        object: *mut ffi::PyObject,
        arg: *mut std::os::raw::c_void,
    ) -> std::os::raw::c_int {
        let found = &mut *(arg as *mut Vec<*mut ffi::PyObject>);
        found.push(object);
        0
    }
    let mut found: Vec<*mut ffi::PyObject> = Vec::new();
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); its type's `tp_traverse` is a C
    // function of that type, called only for a GC type, with a visitor that records addresses and
    // runs no code.
    unsafe {
        let tp = ffi::Py_TYPE(obj.as_ptr());
        if let Some(traverse) = (*tp).tp_traverse {
            if ffi::PyType_IS_GC(tp) != 0 {
                traverse(
                    obj.as_ptr(),
                    visit,
                    &mut found as *mut Vec<*mut ffi::PyObject> as *mut std::os::raw::c_void,
                );
            }
        }
        found
            .into_iter()
            .filter(|p| !p.is_null())
            .map(|p| Bound::from_borrowed_ptr(obj.py(), p))
            .collect()
    }
}

/// The referent of a weak reference, if it is still alive.
pub fn weakref_target<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); the weakref API is used only
    // once it is checked to be a weak reference.
    unsafe {
        if ffi::PyWeakref_CheckRef(obj.as_ptr()) == 0 {
            return None;
        }
        let mut target: *mut ffi::PyObject = std::ptr::null_mut();
        if ffi::compat::PyWeakref_GetRef(obj.as_ptr(), &mut target) < 0 {
            clear_error();
            return None;
        }
        owned(obj.py(), target)
    }
}

/// The (key, value) pairs of a `dict` (or subclass), walked in C with
/// `PyDict_Next`: no `__iter__`, no `__eq__`, no code of the program runs.
pub fn dict_entries<'py>(
    dict: &Bound<'py, PyAny>,
) -> Option<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
    // SAFETY: `dict` is alive and the GIL is held (it is a `Bound`); it is
    // checked to be a dict and walked with `PyDict_Next`, which runs no code;
    // each borrowed pair is made an owned reference before the next step.
    unsafe {
        if ffi::PyDict_Check(dict.as_ptr()) == 0 {
            return None;
        }
        let mut entries = Vec::new();
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key: *mut ffi::PyObject = std::ptr::null_mut();
        let mut value: *mut ffi::PyObject = std::ptr::null_mut();
        while ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut key, &mut value) != 0 {
            entries.push((
                Bound::from_borrowed_ptr(dict.py(), key),
                Bound::from_borrowed_ptr(dict.py(), value),
            ));
        }
        Some(entries)
    }
}

/// The members of a `set`/`frozenset` (or subclass: the C iterator is used
/// either way, never `__iter__`).
pub fn set_items<'py>(obj: &Bound<'py, PyAny>) -> Option<Vec<Bound<'py, PyAny>>> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); the set API
    // (`_PySet_NextEntry`, no `__iter__`) is used only on a set or frozenset.
    unsafe {
        if ffi::PyAnySet_Check(obj.as_ptr()) == 0 {
            return None;
        }
        let mut items = Vec::with_capacity(ffi::PySet_Size(obj.as_ptr()).max(0) as usize);
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key: *mut ffi::PyObject = std::ptr::null_mut();
        let mut hash: ffi::Py_hash_t = 0;
        while _PySet_NextEntry(obj.as_ptr(), &mut pos, &mut key, &mut hash) != 0 {
            items.push(Bound::from_borrowed_ptr(obj.py(), key));
        }
        clear_error();
        Some(items)
    }
}

extern "C" {
    // Exported by CPython 3.9-3.13; walks the hash table and calls nothing
    // (no `__iter__`, no `__hash__`), unlike a generic iterator.
    fn _PySet_NextEntry(
        set: *mut ffi::PyObject,
        pos: *mut ffi::Py_ssize_t,
        key: *mut *mut ffi::PyObject,
        hash: *mut ffi::Py_hash_t,
    ) -> std::os::raw::c_int;
}

/// The items of a `list` or `tuple` (or subclass), read from the C array.
pub fn sequence_items<'py>(obj: &Bound<'py, PyAny>) -> Option<Vec<Bound<'py, PyAny>>> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); list and tuple items are read
    // by index within the size the object reports, each taken as a new reference before anything
    // else runs.
    unsafe {
        let p = obj.as_ptr();
        if ffi::PyList_Check(p) != 0 {
            let n = ffi::PyList_Size(p);
            return Some(
                (0..n)
                    .filter_map(|i| borrowed(obj.py(), ffi::PyList_GetItem(p, i)))
                    .collect(),
            );
        }
        if ffi::PyTuple_Check(p) != 0 {
            let n = ffi::PyTuple_Size(p);
            return Some(
                (0..n)
                    .filter_map(|i| borrowed(obj.py(), ffi::PyTuple_GetItem(p, i)))
                    .collect(),
            );
        }
        None
    }
}

/// The first item of a `list` or `tuple` (or subclass), without copying
/// the rest as [`sequence_items`] does.
pub fn first_item<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); the first item is read only
    // when the size is at least one.
    unsafe {
        let p = obj.as_ptr();
        let item = if ffi::PyList_Check(p) != 0 {
            if ffi::PyList_Size(p) < 1 {
                return None;
            }
            ffi::PyList_GetItem(p, 0)
        } else if ffi::PyTuple_Check(p) != 0 {
            if ffi::PyTuple_Size(p) < 1 {
                return None;
            }
            ffi::PyTuple_GetItem(p, 0)
        } else {
            return None;
        };
        borrowed(obj.py(), item)
    }
}

/// Number of items of a `set`, `list`, `tuple` or `dict` (C size field).
pub fn container_len(obj: &Bound<'_, PyAny>) -> Option<usize> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); each size function is called
    // only on its own type.
    unsafe {
        let p = obj.as_ptr();
        let n = if ffi::PyAnySet_Check(p) != 0 {
            ffi::PySet_Size(p)
        } else if ffi::PyList_Check(p) != 0 {
            ffi::PyList_Size(p)
        } else if ffi::PyTuple_Check(p) != 0 {
            ffi::PyTuple_Size(p)
        } else if ffi::PyDict_Check(p) != 0 {
            ffi::PyDict_Size(p)
        } else {
            return None;
        };
        clear_error();
        usize::try_from(n).ok()
    }
}

/// `(function, self)` of a bound method (`types.MethodType` exactly).
pub fn bound_method_parts<'py>(
    obj: &Bound<'py, PyAny>,
) -> Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); `PyMethod_Function` and
    // `PyMethod_Self` are called only on an exact bound method.
    unsafe {
        if ffi::Py_TYPE(obj.as_ptr()) != &raw mut PyMethod_Type {
            return None;
        }
        let func = borrowed(obj.py(), PyMethod_Function(obj.as_ptr()))?;
        let this = borrowed(obj.py(), PyMethod_Self(obj.as_ptr()))?;
        Some((func, this))
    }
}

/// `__self__` of a builtin function or method (`PyCFunction` and subclasses).
pub fn cfunction_self<'py>(obj: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); `PyCFunction_GetSelf` is called
    // only on a builtin function or method.
    unsafe {
        if ffi::PyCFunction_Check(obj.as_ptr()) == 0 {
            return None;
        }
        borrowed(obj.py(), ffi::PyCFunction_GetSelf(obj.as_ptr()))
    }
}

/// The contents of the closure cells of a plain Python function.
pub fn closure_values<'py>(obj: &Bound<'py, PyAny>) -> Vec<Bound<'py, PyAny>> {
    let mut out = Vec::new();
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); the closure tuple and its cells
    // are read only from a plain function, by index within the tuple's size.
    unsafe {
        if ffi::PyFunction_Check(obj.as_ptr()) == 0 {
            return out;
        }
        let Some(cells) = borrowed(obj.py(), ffi::PyFunction_GetClosure(obj.as_ptr())) else {
            return out;
        };
        for cell in sequence_items(&cells).unwrap_or_default() {
            if ffi::PyCell_Check(cell.as_ptr()) != 0 {
                if let Some(value) = owned(obj.py(), ffi::PyCell_Get(cell.as_ptr())) {
                    out.push(value);
                }
            }
        }
    }
    out
}

/// Asks the CPU to start loading the first `lines` cache lines at `obj`:
/// a hint for a loop that will read it a few iterations later. Never
/// faults and changes nothing, whatever `obj` points at.
#[inline]
pub fn prefetch<T>(obj: *const T, lines: usize) {
    if !crate::capture::fastpaths::on() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for line in 0..lines {
            _mm_prefetch::<_MM_HINT_T0>((obj as *const i8).wrapping_add(line * 64));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (obj, lines);
}

/// `__qualname__` of a plain Python function, from its C getset.
pub fn function_qualname(obj: &Bound<'_, PyAny>) -> Option<String> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); only a plain function is read.
    unsafe {
        if ffi::PyFunction_Check(obj.as_ptr()) == 0 {
            return None;
        }
    }
    // SAFETY: `PyFunction_Type` is a static type of the interpreter.
    let value = unsafe { builtin_attr(obj, &raw mut ffi::PyFunction_Type, c"__qualname__") }?;
    str_value(&value)
}

/// An exact `float` (or `int`) as `f64`.
pub fn float_value(obj: &Bound<'_, PyAny>) -> Option<f64> {
    // SAFETY: `obj` is alive and the GIL is held (it is a `Bound`); each number API is called only
    // on its own type.
    unsafe {
        if ffi::PyFloat_Check(obj.as_ptr()) != 0 {
            return Some(ffi::PyFloat_AsDouble(obj.as_ptr()));
        }
    }
    int_value(obj).map(|v| v as f64)
}
