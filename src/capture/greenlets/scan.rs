//! Finding every greenlet: a walk over the garbage collector's objects that
//! costs one type-pointer comparison per object and touches nothing else.
//!
//! Each greenlet found is handed out with a reference of our own. Capture
//! runs no code while it holds the GIL, so borrowed pointers would do, but
//! only as long as that stays true of every call made on ten thousand
//! objects from several libraries: one that runs code (and so may let
//! another thread free a greenlet) must cost a stale answer, never a freed
//! object read. A greenlet without its C++ state (see
//! `GreenletApi::has_impl`) is left out: it is being built.

use super::api::GreenletApi;
use pyo3::ffi;
use pyo3::prelude::*;

/// What the walk makes of an object, by its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Other,
    Greenlet,
    /// A gevent primitive greenlets wait in (see `primitives`).
    Primitive,
}

/// Answers "is this type a greenlet type (or a primitive type)" from a
/// small direct-mapped cache: a heap holds few types, each many times, so
/// the subtype tests (MRO walks) run about once per type instead of once
/// per object.
pub(crate) struct TypeFilter {
    tp: *mut ffi::PyTypeObject,
    primitives: Vec<*mut ffi::PyTypeObject>,
    keys: [usize; Self::SLOTS],
    classes: [Class; Self::SLOTS],
}

impl TypeFilter {
    const SLOTS: usize = 256;

    pub fn new(tp: *mut ffi::PyTypeObject, primitives: &[*mut ffi::PyTypeObject]) -> Self {
        TypeFilter {
            tp,
            primitives: primitives.to_vec(),
            keys: [0; Self::SLOTS],
            classes: [Class::Other; Self::SLOTS],
        }
    }

    /// # Safety
    /// `obj` is a live object; the GIL is held.
    #[inline(always)]
    pub unsafe fn class(&mut self, obj: *mut ffi::PyObject) -> Class {
        let tp = ffi::Py_TYPE(obj);
        if tp == self.tp {
            return Class::Greenlet;
        }
        // Type objects are at least 16-byte aligned: skip the zero bits.
        let slot = ((tp as usize) >> 4) % Self::SLOTS;
        if self.keys[slot] != tp as usize {
            self.keys[slot] = tp as usize;
            self.classes[slot] = self.learn(tp);
        }
        self.classes[slot]
    }

    /// The class of a type the cache has not seen (an MRO walk or a few).
    ///
    /// # Safety
    /// `tp` is a live type; the GIL is held.
    #[cold]
    #[inline(never)]
    unsafe fn learn(&self, tp: *mut ffi::PyTypeObject) -> Class {
        if ffi::PyType_IsSubtype(tp, self.tp) != 0 {
            Class::Greenlet
        } else if self
            .primitives
            .iter()
            .any(|&p| ffi::PyType_IsSubtype(tp, p) != 0)
        {
            Class::Primitive
        } else {
            Class::Other
        }
    }
}

/// Addresses the walk found, in heap order.
#[derive(Default)]
struct Addresses {
    greenlets: Vec<usize>,
    primitives: Vec<usize>,
}

impl Addresses {
    /// # Safety
    /// `obj` is a live object; the GIL is held.
    #[inline(always)]
    unsafe fn visit(&mut self, filter: &mut TypeFilter, obj: *mut ffi::PyObject) {
        let class = filter.class(obj);
        if class != Class::Other {
            self.keep(class, obj);
        }
    }

    #[cold]
    #[inline(never)]
    fn keep(&mut self, class: Class, obj: *mut ffi::PyObject) {
        match class {
            Class::Greenlet => self.greenlets.push(obj as usize),
            _ => self.primitives.push(obj as usize),
        }
    }
}

/// What the walk hands out, each with a reference of our own.
pub struct Found<'py> {
    pub greenlets: Vec<Bound<'py, PyAny>>,
    /// Instances of `primitives` (gevent's waitable types), none without.
    pub primitives: Vec<Bound<'py, PyAny>>,
}

/// Every GC-tracked greenlet (instances of `greenlet.greenlet` and its
/// subclasses) that has its C++ state, and every instance of the types in
/// `primitives`.
pub fn find_greenlets<'py>(
    py: Python<'py>,
    api: &GreenletApi<'py>,
    primitives: &[*mut ffi::PyTypeObject],
) -> Result<Found<'py>, String> {
    let found = addresses(py, api, primitives)?;
    // Nothing ran between the walk and here, so every address is still live.
    let greenlets = found
        .greenlets
        .into_iter()
        .map(|p| p as *mut ffi::PyObject)
        // SAFETY: nothing ran since the walk found `p`, so it is a live greenlet.
        .filter(|&p| unsafe { api.has_impl(p) })
        // SAFETY: as above; the reference is borrowed and made our own (`Bound` increments it).
        .map(|p| unsafe { Bound::from_borrowed_ptr(py, p) })
        .collect();
    let primitives = found
        .primitives
        .into_iter()
        // SAFETY: nothing ran since the walk found `p`, so it is a live object.
        .map(|p| unsafe { Bound::from_borrowed_ptr(py, p as *mut ffi::PyObject) })
        .collect();
    Ok(Found {
        greenlets,
        primitives,
    })
}

/// How far ahead of the object at hand the heap walk asks for memory.
///
/// A generation list links objects mostly in the order they were made, and
/// pymalloc makes consecutive objects of one size in consecutive blocks of
/// a pool: the objects a walk reaches next usually lie just above the one
/// at hand (just below, walking backwards). Asking for the line this far
/// away overlaps those loads with the walk's chain of dependent ones: a
/// million extra objects walked 17.3 -> 13.1 ms (stride 0 against 4 KiB,
/// best of 15, cold caches). A prefetch never faults, whatever the address.
const PREFETCH_STRIDE: usize = 4096;

#[inline]
fn prefetch_ahead<T>(at: *const T) {
    let target = (at as *const u8).wrapping_add(PREFETCH_STRIDE);
    crate::capture::inert::prefetch(target as *const ffi::PyObject, 1);
}

/// How the next heap scan will list objects: `"generation lists"` (read in
/// place), `"PyUnstable_GC_VisitObjects"` or `"gc.get_objects"`. For tests
/// that the layout proof holds on every supported version, where a miss
/// would only show as a slower scan.
pub fn source(py: Python<'_>) -> &'static str {
    crate::capture::fastpaths::refresh();
    #[cfg(tbc_gc_lists)]
    // SAFETY: the GIL is held (`py`).
    if crate::capture::fastpaths::on() && unsafe { gc_lists::heads(py) }.is_some() {
        return "generation lists";
    }
    let _ = py;
    FALLBACK
}

/// A read-only walk of the GC's generation lists when their layout is
/// proven (`gc_lists`: 3.9-3.13 with the GIL), else what the
/// interpreter offers to walk them.
fn addresses(
    py: Python<'_>,
    api: &GreenletApi<'_>,
    primitives: &[*mut ffi::PyTypeObject],
) -> Result<Addresses, String> {
    #[cfg(tbc_gc_lists)]
    if let Some(heads) = crate::capture::fastpaths::on()
        // SAFETY: the GIL is held (`py`).
        .then(|| unsafe { gc_lists::heads(py) })
        .flatten()
    {
        // SAFETY: `heads` come from `gc_lists::heads` just now, and nothing ran since.
        return Ok(unsafe { gc_lists::walk(&heads, api, primitives) });
    }
    fallback(py, api, primitives)
}

/// 3.12+: `PyUnstable_GC_VisitObjects` walks the GC lists without building a
/// list of every object (no allocation, no reference to drop afterwards),
/// but with a reference-count write to each object and one chain of loads.
#[cfg(Py_3_12)]
const FALLBACK: &str = "PyUnstable_GC_VisitObjects";

#[cfg(Py_3_12)]
fn fallback(
    _py: Python<'_>,
    api: &GreenletApi<'_>,
    primitives: &[*mut ffi::PyTypeObject],
) -> Result<Addresses, String> {
    use std::os::raw::{c_int, c_void};

    type Visit = unsafe extern "C" fn(*mut ffi::PyObject, *mut c_void) -> c_int;
    extern "C" {
        fn PyUnstable_GC_VisitObjects(callback: Visit, arg: *mut c_void);
    }
    struct State {
        filter: TypeFilter,
        found: Addresses,
    }
    // Must not allocate Python objects, run code or unwind: pointer checks only.
    unsafe extern "C" fn visit(obj: *mut ffi::PyObject, arg: *mut c_void) -> c_int {
        let state = &mut *(arg as *mut State);
        prefetch_ahead(obj);
        state.found.visit(&mut state.filter, obj);
        1 // continue
    }
    let mut state = State {
        filter: TypeFilter::new(api.tp, primitives),
        found: Addresses::default(),
    };
    // SAFETY: the GIL is held; `visit` runs no code and does not unwind,
    // and `state` outlives the call, which is the only user of the pointer.
    unsafe { PyUnstable_GC_VisitObjects(visit, &mut state as *mut State as *mut c_void) };
    Ok(state.found)
}

/// 3.9-3.11: the builtin `gc.get_objects()` (checked to be the C function
/// of the `gc` module, so no replacement of it runs), then a pointer filter.
#[cfg(not(Py_3_12))]
const FALLBACK: &str = "gc.get_objects";

#[cfg(not(Py_3_12))]
fn fallback(
    py: Python<'_>,
    api: &GreenletApi<'_>,
    primitives: &[*mut ffi::PyTypeObject],
) -> Result<Addresses, String> {
    use crate::capture::inert;

    let func =
        gc_builtin(py, c"get_objects").ok_or("gc.get_objects is not the builtin; no greenlets")?;
    // SAFETY: `func` is the `gc` module's own C function (checked by `gc_builtin`); the list it
    // returns is read by index within its size while it is held.
    unsafe {
        let objects = inert::owned(py, ffi::PyObject_CallNoArgs(func.as_ptr()))
            .ok_or("gc.get_objects() failed; no greenlets")?;
        if ffi::PyList_CheckExact(objects.as_ptr()) == 0 {
            return Err("gc.get_objects() returned no list; no greenlets".into());
        }
        let list = objects.as_ptr();
        let n = ffi::PyList_GET_SIZE(list);
        let mut found = Addresses::default();
        let mut filter = TypeFilter::new(api.tp, primitives);
        for i in 0..n {
            found.visit(&mut filter, ffi::PyList_GET_ITEM(list, i));
        }
        // The list goes here; each object keeps the references it had before
        // `get_objects` (nothing ran in between), so none is freed by this.
        drop(objects);
        Ok(found)
    }
}

/// `gc.<name>` if it is the `gc` module's own C function.
#[cfg(tbc_gc_lists)]
fn gc_builtin<'py>(py: Python<'py>, name: &std::ffi::CStr) -> Option<Bound<'py, PyAny>> {
    use crate::capture::inert;

    let gc = inert::imported_module(py, c"gc")?;
    let func = inert::module_attr(&gc, name)?;
    // SAFETY: `func` is alive and the GIL is held (a `Bound`); its `m_self` is read only once it is
    // checked to be a builtin function.
    let is_builtin = unsafe {
        ffi::PyCFunction_CheckExact(func.as_ptr()) != 0
            && (*(func.as_ptr() as *mut ffi::PyCFunctionObject)).m_self == gc.as_ptr()
    };
    is_builtin.then_some(func)
}

/// The collector's own lists, read in place (3.9-3.13, not free-threaded).
///
/// `gc.get_objects()` builds a list holding a new reference to every tracked
/// object: with a million objects that is a million reference-count writes
/// and a 9 MB list, for the handful of greenlets among them (3.12's
/// `PyUnstable_GC_VisitObjects` writes each reference count twice and
/// walks one chain of loads). The lists it walks are reachable without
/// internals: a freshly tracked object is linked last into generation 0,
/// so its `_gc_next` is that generation's list head,
/// and CPython 3.9-3.13 keep the three heads in one array of
/// `struct gc_generation` (`cpython::current::Generation`).
/// The layout is used only once proven: the probe is the head's last
/// element, each head's neighbours link back to it, and each generation's
/// `threshold` equals what `gc.get_threshold()` reports. Otherwise the
/// caller falls back (see `fallback`). The walk only reads: the GC is
/// paused and nothing runs that could relink objects meanwhile.
#[cfg(tbc_gc_lists)]
mod gc_lists {
    use super::{prefetch_ahead, Addresses, GreenletApi, TypeFilter};
    use crate::capture::cpython::current::{
        GcHead, Generation, GC_NEXT_MASK as NEXT_MASK, GC_PREV_MASK as PREV_MASK, GENERATIONS,
    };
    use crate::capture::inert;
    use pyo3::ffi;
    use pyo3::prelude::*;
    use std::os::raw::c_int;

    pub struct Heads([*const GcHead; GENERATIONS]);

    unsafe fn next(g: *const GcHead) -> *const GcHead {
        ((*g).next & NEXT_MASK) as *const GcHead
    }

    unsafe fn prev(g: *const GcHead) -> *const GcHead {
        ((*g).prev & PREV_MASK) as *const GcHead
    }

    /// The heads of the three generation lists, or `None` unless every check holds.
    ///
    /// # Safety
    /// The GIL is held.
    pub unsafe fn heads(py: Python<'_>) -> Option<Heads> {
        let thresholds = thresholds(py)?;
        let probe = inert::owned(py, ffi::PyList_New(0))?;
        if ffi::PyObject_GC_IsTracked(probe.as_ptr()) == 0 {
            return None;
        }
        let probe_head = (probe.as_ptr() as *const GcHead).sub(1);
        let first = next(probe_head) as *const Generation;
        if first.is_null() || prev(first as *const GcHead) != probe_head {
            return None;
        }
        // The thresholds first: they lie inside the GC state whatever the
        // layout, while following a link from a misplaced head would not.
        if (0..GENERATIONS).any(|i| (*first.add(i)).threshold != thresholds[i]) {
            return None;
        }
        let mut heads = [std::ptr::null(); GENERATIONS];
        for (i, head) in heads.iter_mut().enumerate() {
            let g = first.add(i) as *const GcHead;
            let linked = next(g) == g && prev(g) == g // empty
                || prev(next(g)) == g && next(prev(g)) == g;
            if !linked {
                return None;
            }
            *head = g;
        }
        Some(Heads(heads))
    }

    /// `gc.get_threshold()` from the builtin.
    unsafe fn thresholds(py: Python<'_>) -> Option<[c_int; GENERATIONS]> {
        let func = super::gc_builtin(py, c"get_threshold")?;
        let value = inert::owned(py, ffi::PyObject_CallNoArgs(func.as_ptr()))?;
        if ffi::PyTuple_CheckExact(value.as_ptr()) == 0
            || ffi::PyTuple_GET_SIZE(value.as_ptr()) != GENERATIONS as isize
        {
            return None;
        }
        let mut out = [0; GENERATIONS];
        for (i, slot) in out.iter_mut().enumerate() {
            let item = ffi::PyTuple_GET_ITEM(value.as_ptr(), i as isize);
            let n = ffi::PyLong_AsLong(item);
            if n == -1 && !ffi::PyErr_Occurred().is_null() {
                inert::clear_error();
                return None;
            }
            *slot = c_int::try_from(n).ok()?;
        }
        Some(out)
    }

    /// Addresses of the greenlets and primitives on the lists, in list order.
    ///
    /// # Safety
    /// `heads` come from [`heads`] in this same capture; the GIL is held
    /// and nothing has run since that could relink an object.
    pub unsafe fn walk(
        heads: &Heads,
        api: &GreenletApi<'_>,
        primitives: &[*mut ffi::PyTypeObject],
    ) -> Addresses {
        // A guard against a list that loops short of its head, as a real
        // one cannot: no heap holds this many objects.
        const MAX_NODES: usize = 1 << 40;
        let mut filter = TypeFilter::new(api.tp, primitives);
        let mut found = Addresses::default();
        for &head in &heads.0 {
            let mut node = next(head);
            let mut steps = 0;
            while !node.is_null() && node != head && steps < MAX_NODES {
                prefetch_ahead(node);
                found.visit(&mut filter, node.add(1) as *mut ffi::PyObject);
                node = next(node);
                steps += 1;
            }
        }
        found
    }
}
