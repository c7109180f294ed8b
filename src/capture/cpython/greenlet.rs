//! Layouts of greenlet's and gevent's objects, the same on every CPython
//! version this crate builds for: greenlet's `PyGreenlet` and the pointer
//! array of its `_C_API` capsule (`greenlet.h`), gevent's `_Frame` record
//! and the Cython fields gevent's `Greenlet` adds to greenlet's struct.
//! Each is used only once the type itself is shown to match (the `*_known`
//! checks below take a live type object).

use pyo3::ffi;
use std::os::raw::{c_int, c_void};

/// Indices into the capsule's pointer array (stable since greenlet 1.0).
pub const CAPSULE_TYPE: usize = 0;
pub const CAPSULE_MAIN: usize = 8;
pub const CAPSULE_STARTED: usize = 9;
pub const CAPSULE_ACTIVE: usize = 10;
pub const CAPSULE_GET_PARENT: usize = 11;
pub const CAPSULE_SLOTS: usize = 12;

/// `PyGreenlet_MAIN`, `_STARTED`, `_ACTIVE` of the capsule.
pub type Predicate = unsafe extern "C" fn(*mut ffi::PyObject) -> c_int;
/// `PyGreenlet_GetParent` of the capsule (a new reference or NULL).
pub type GetParent = unsafe extern "C" fn(*mut ffi::PyObject) -> *mut ffi::PyObject;

/// `PyGreenlet` (unchanged since greenlet 2.0).
#[repr(C)]
pub struct GreenletObject {
    ob_base: ffi::PyObject,
    weakreflist: *mut ffi::PyObject,
    dict: *mut ffi::PyObject,
    /// The C++ state, which every C API function of greenlet dereferences.
    pub pimpl: *mut c_void,
}

/// Proof that `tp` lays out its instances as [`GreenletObject`]: the size
/// and the two offsets the type itself reports.
pub fn greenlet_layout_known(tp: &ffi::PyTypeObject) -> bool {
    tp.tp_basicsize == std::mem::size_of::<GreenletObject>() as isize
        && tp.tp_weaklistoffset == std::mem::offset_of!(GreenletObject, weakreflist) as isize
        && tp.tp_dictoffset == std::mem::offset_of!(GreenletObject, dict) as isize
}

/// gevent's `_Frame` (`cdef readonly CodeType f_code; cdef readonly int
/// f_lineno; cdef readonly _Frame f_back`, unchanged since gevent 1.3).
#[repr(C)]
pub struct FrameRecord {
    ob_base: ffi::PyObject,
    pub f_code: *mut ffi::PyObject,
    pub f_lineno: c_int,
    pub f_back: *mut ffi::PyObject,
}

/// Whether `tp` is a static type of exactly [`FrameRecord`]'s size, with
/// no instance dict or weak references, deriving from `object` alone.
pub fn frame_record_layout_known(tp: &ffi::PyTypeObject) -> bool {
    tp.tp_flags & ffi::Py_TPFLAGS_HEAPTYPE == 0
        && tp.tp_basicsize == std::mem::size_of::<FrameRecord>() as isize
        && tp.tp_dictoffset == 0
        && tp.tp_weaklistoffset == 0
        && std::ptr::eq(tp.tp_base, &raw const ffi::PyBaseObject_Type)
}

/// The byte range of the fields a Cython class `tp` adds to greenlet's
/// struct, when it is a static type deriving directly from `greenlet` whose
/// added part is whole pointers. `None` for pure-Python gevent (fields in
/// `__dict__`) or any other shape.
pub fn cython_fields(
    tp: &ffi::PyTypeObject,
    greenlet: &ffi::PyTypeObject,
) -> Option<(usize, usize)> {
    let word = std::mem::size_of::<usize>();
    let start = usize::try_from(greenlet.tp_basicsize).ok()?;
    let end = usize::try_from(tp.tp_basicsize).ok()?;
    let is_static = tp.tp_flags & ffi::Py_TPFLAGS_HEAPTYPE == 0;
    let plain = tp.tp_dictoffset <= 0 || tp.tp_dictoffset as usize <= start;
    let weak = tp.tp_weaklistoffset <= 0 || tp.tp_weaklistoffset as usize <= start;
    (is_static
        && plain
        && weak
        && std::ptr::eq(tp.tp_base, greenlet)
        && end > start
        && (end - start) % word == 0)
        .then_some((start, end))
}
