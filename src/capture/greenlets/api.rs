//! Handles on greenlet and gevent, found without importing anything.
//!
//! greenlet's state bits (main, started, active) come from its own C API (the
//! `greenlet._C_API` capsule): pure reads of the greenlet struct. The Python
//! `dead` getter is not used because it frees the stack of a greenlet whose
//! thread has exited, which can run finalizers in the middle of a capture.

use crate::capture::inert::{self, BuiltinGetter};
use pyo3::ffi;
use pyo3::prelude::*;
use std::cell::Cell;
use std::ffi::CStr;
use std::os::raw::c_void;

use crate::capture::cpython::greenlet::{
    self as layout, GetParent, GreenletObject, Predicate, CAPSULE_ACTIVE, CAPSULE_GET_PARENT,
    CAPSULE_MAIN, CAPSULE_SLOTS, CAPSULE_STARTED, CAPSULE_TYPE,
};

/// The oldest greenlet whose C API and getters this backend was written against.
const MIN_GREENLET_MAJOR: u32 = 3;

/// greenlet's type and the C functions of its `_C_API` capsule.
pub struct GreenletApi<'py> {
    /// Keeps `tp` alive for the capture.
    _type_obj: Bound<'py, PyAny>,
    pub tp: *mut ffi::PyTypeObject,
    /// greenlet's C getters, looked up once on the base type (subclass
    /// overrides of these names are never called).
    pub gr_frame: Option<BuiltinGetter<'py>>,
    pub gr_context: Option<BuiltinGetter<'py>>,
    pub stack_saved: Option<BuiltinGetter<'py>>,
    pub run: Option<BuiltinGetter<'py>>,
    main: Predicate,
    started: Predicate,
    active: Predicate,
    get_parent: GetParent,
}

/// The three state bits greenlet keeps for every greenlet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    pub main: bool,
    pub started: bool,
    pub active: bool,
}

impl<'py> GreenletApi<'py> {
    /// `Ok(None)` when greenlet was never imported: then no greenlet can exist.
    pub fn load(py: Python<'py>) -> Result<Option<Self>, String> {
        let Some(module) = inert::imported_module(py, c"greenlet") else {
            return Ok(None);
        };
        let version = inert::module_attr(&module, c"__version__")
            .and_then(|v| inert::str_value(&v))
            .unwrap_or_default();
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok());
        if !matches!(major, Some(m) if m >= MIN_GREENLET_MAJOR) {
            return Err(format!(
                "greenlet {version:?} is not supported (3.x needed); no greenlets"
            ));
        }
        let type_obj = inert::module_attr(&module, c"greenlet")
            // SAFETY: `t` is alive and the GIL is held (a `Bound`).
            .filter(|t| unsafe { ffi::PyType_Check(t.as_ptr()) } != 0)
            .ok_or("greenlet.greenlet is not a type; no greenlets")?;
        let capsule = inert::module_attr(&module, c"_C_API")
            // SAFETY: `c` is alive and the GIL is held (a `Bound`).
            .filter(|c| unsafe { ffi::PyCapsule_CheckExact(c.as_ptr()) } != 0)
            .ok_or("greenlet._C_API is missing; no greenlets")?;
        // SAFETY: `capsule` is an exact capsule (checked) held for the call; its pointer is
        // greenlet's C API array of `CAPSULE_SLOTS` entries when its type slot is greenlet's own
        // type (checked before any other slot is used), and the function slots have the signatures
        // greenlet.h gives them.
        unsafe {
            let slots = ffi::PyCapsule_GetPointer(capsule.as_ptr(), c"greenlet._C_API".as_ptr())
                as *const *mut c_void;
            if slots.is_null() {
                inert::clear_error();
                return Err("greenlet._C_API is not greenlet's capsule; no greenlets".into());
            }
            let slots = std::slice::from_raw_parts(slots, CAPSULE_SLOTS);
            // The type in slot 0 must be the module's: proof the layout is the one we know.
            if slots[CAPSULE_TYPE] != type_obj.as_ptr() as *mut c_void {
                return Err(
                    "greenlet's C API does not match greenlet.greenlet; no greenlets".into(),
                );
            }
            let wanted = [
                CAPSULE_MAIN,
                CAPSULE_STARTED,
                CAPSULE_ACTIVE,
                CAPSULE_GET_PARENT,
            ];
            if wanted.iter().any(|&i| slots[i].is_null()) {
                return Err("greenlet's C API is incomplete; no greenlets".into());
            }
            let tp = type_obj.as_ptr() as *mut ffi::PyTypeObject;
            if !layout::greenlet_layout_known(&*tp) {
                return Err(
                    "greenlet.greenlet's object layout is not the one known; no greenlets".into(),
                );
            }
            Ok(Some(GreenletApi {
                tp,
                gr_frame: BuiltinGetter::new(&type_obj, c"gr_frame"),
                gr_context: BuiltinGetter::new(&type_obj, c"gr_context"),
                stack_saved: BuiltinGetter::new(&type_obj, c"_stack_saved"),
                run: BuiltinGetter::new(&type_obj, c"run"),
                _type_obj: type_obj,
                main: std::mem::transmute::<*mut c_void, Predicate>(slots[CAPSULE_MAIN]),
                started: std::mem::transmute::<*mut c_void, Predicate>(slots[CAPSULE_STARTED]),
                active: std::mem::transmute::<*mut c_void, Predicate>(slots[CAPSULE_ACTIVE]),
                get_parent: std::mem::transmute::<*mut c_void, GetParent>(
                    slots[CAPSULE_GET_PARENT],
                ),
            }))
        }
    }

    /// A pointer comparison (and an MRO walk for subclasses); runs no code.
    ///
    /// # Safety
    /// `obj` must be a live object; the GIL is held.
    #[inline]
    pub unsafe fn is_greenlet_ptr(&self, obj: *mut ffi::PyObject) -> bool {
        let tp = ffi::Py_TYPE(obj);
        tp == self.tp || ffi::PyType_IsSubtype(tp, self.tp) != 0
    }

    pub fn is_greenlet(&self, obj: &Bound<'py, PyAny>) -> bool {
        // SAFETY: `obj` is alive and the GIL is held (a `Bound`).
        unsafe { self.is_greenlet_ptr(obj.as_ptr()) }
    }

    /// Whether the greenlet has its C++ state (`pimpl`), which every C API
    /// function and getter of greenlet dereferences unchecked. A greenlet
    /// object is tracked by the GC from its allocation on, and greenlet's
    /// `tp_new` can run code (it kills greenlets queued for deletion in the
    /// thread) before it sets `pimpl`: another thread may then find one
    /// without it in the heap.
    ///
    /// # Safety
    /// `obj` is a live instance of greenlet's type (checked by [`layout::greenlet_layout_known`]).
    #[inline]
    pub unsafe fn has_impl(&self, obj: *mut ffi::PyObject) -> bool {
        !(*(obj as *const GreenletObject)).pimpl.is_null()
    }

    /// The state bits of a greenlet whose parent was read already: a main
    /// greenlet never has one (greenlet's `MainGreenlet::parent` is always
    /// NULL), so only a parentless greenlet is asked whether it is main.
    pub fn flags(&self, greenlet: &Bound<'py, PyAny>, has_parent: bool) -> Flags {
        let read = |f: Predicate| {
            // SAFETY: `greenlet` is alive and the GIL is held (a `Bound`) and a greenlet with its
            // C++ state (the caller's greenlets come from `find_greenlets`, which checks it);
            // greenlet's predicates only read it.
            let v = unsafe { f(greenlet.as_ptr()) };
            if v < 0 {
                inert::clear_error();
            }
            v > 0
        };
        Flags {
            main: !has_parent && read(self.main),
            started: read(self.started),
            active: read(self.active),
        }
    }

    /// Whether `greenlet` is the one running in the calling thread, asked
    /// of greenlet's `gr_context` getter: for a greenlet running (active,
    /// with no saved frame) it answers only in the greenlet's own thread and
    /// raises `ValueError` in any other. (`getcurrent()` is not used: it
    /// first kills greenlets queued for deletion in this thread, which runs
    /// their code.) Creates the thread's greenlet state if it has none.
    pub fn runs_here(&self, greenlet: &Bound<'py, PyAny>) -> bool {
        read(&self.gr_context, greenlet).is_some()
    }

    pub fn parent(&self, greenlet: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
        // May return NULL with no exception set (a main greenlet has no parent).
        // SAFETY: as for `flags`; `get_parent` returns a new reference or NULL.
        unsafe { inert::owned(greenlet.py(), (self.get_parent)(greenlet.as_ptr())) }
    }
}

/// Which of gevent's classes a type derives from.
#[derive(Debug, Clone, Copy, Default)]
struct Kind {
    greenlet: bool,
    hub: bool,
}

/// gevent's types and the getters of their Cython fields, when gevent is imported.
#[derive(Default)]
pub struct Gevent<'py> {
    /// `gevent.Greenlet` (a Cython class, or Python with `GEVENT_PURE_PYTHON`).
    pub greenlet: Option<Bound<'py, PyAny>>,
    /// `gevent.hub.Hub`.
    pub hub: Option<Bound<'py, PyAny>>,
    /// `gevent.greenlet._Frame`: one entry of a spawning stack.
    pub frame: Option<Bound<'py, PyAny>>,
    /// Cython fields of `Greenlet` (absent in pure-Python gevent, which
    /// keeps them in the instance `__dict__`).
    pub spawning_greenlet: Option<BuiltinGetter<'py>>,
    pub spawning_stack: Option<BuiltinGetter<'py>>,
    /// Fields of `_Frame` (Cython fields, or `__slots__` members).
    pub f_code: Option<BuiltinGetter<'py>>,
    pub f_lineno: Option<BuiltinGetter<'py>>,
    pub f_back: Option<BuiltinGetter<'py>>,
    /// `_Frame` is laid out as [`layout::FrameRecord`] (checked on the type), and
    /// reading it so checked against its getters.
    frame_layout: bool,
    frame_reads: inert::CheckedRead,
    /// Byte range of `Greenlet`'s Cython part (its vtable pointer, then
    /// only object fields), past greenlet's own struct; see `fields_ready`.
    fields: Option<(usize, usize)>,
    /// Offset of `spawning_stack` in that range, learnt from the first
    /// greenlet that has one (see `learn_spawning_stack`): for prefetches only.
    spawning_stack_at: Cell<Option<usize>>,
    /// Offset of the links list in that range, learnt from the first greenlet
    /// whose fields hold exactly one (see `link_fields`).
    links_at: Cell<Option<usize>>,
    /// The last type asked about and its answer: ten thousand greenlets
    /// usually share one or two types, so the MRO walks run once per run of
    /// a type rather than once per greenlet and question.
    last_kind: Cell<(usize, Kind)>,
}

impl<'py> Gevent<'py> {
    pub fn load(py: Python<'py>, api: &GreenletApi<'py>) -> Self {
        let type_in = |module: &CStr, name: &CStr| {
            let module = inert::imported_module(py, module)?;
            inert::module_attr(&module, name)
                // SAFETY: `t` is alive and the GIL is held (a `Bound`).
                .filter(|t| unsafe { ffi::PyType_Check(t.as_ptr()) } != 0)
        };
        let greenlet = type_in(c"gevent.greenlet", c"Greenlet");
        let frame = type_in(c"gevent.greenlet", c"_Frame");
        let getter = |tp: &Option<Bound<'py, PyAny>>, name: &CStr| {
            tp.as_ref().and_then(|tp| BuiltinGetter::new(tp, name))
        };
        let fields = greenlet
            .as_ref()
            // SAFETY: `tp` was checked to be a type, and `api.tp` is greenlet's type, held by
            // `api`.
            .and_then(|tp| unsafe { layout::cython_fields(&*type_ptr(tp), &*api.tp) });
        let frame_layout = frame
            .as_ref()
            // SAFETY: `tp` was checked to be a type.
            .is_some_and(|tp| unsafe { layout::frame_record_layout_known(&*type_ptr(tp)) });
        // Without the field range no instance can be proven built, so
        // the Cython getters are not used at all.
        let field_getter = |name: &CStr| fields.and_then(|_| getter(&greenlet, name));
        Gevent {
            spawning_greenlet: field_getter(c"spawning_greenlet"),
            spawning_stack: field_getter(c"spawning_stack"),
            fields,
            spawning_stack_at: Cell::new(None),
            links_at: Cell::new(None),
            frame_layout,
            frame_reads: inert::CheckedRead::default(),
            f_code: getter(&frame, c"f_code"),
            f_lineno: getter(&frame, c"f_lineno"),
            f_back: getter(&frame, c"f_back"),
            greenlet,
            hub: type_in(c"gevent.hub", c"Hub"),
            frame,
            last_kind: Cell::default(),
        }
    }

    /// One record of a spawning stack (an instance of `_Frame`): its code,
    /// line and older record (`None` at the end). Read from the struct once
    /// trusted (ten thousand greenlets carry five records each, and the line
    /// getter makes an int each time); through the getters otherwise.
    pub fn frame_record(
        &self,
        entry: &Bound<'py, PyAny>,
    ) -> (
        Option<Bound<'py, PyAny>>,
        Option<u32>,
        Option<Bound<'py, PyAny>>,
    ) {
        type Record<'py> = (
            Option<Bound<'py, PyAny>>,
            Option<u32>,
            Option<Bound<'py, PyAny>>,
        );
        let getters = || -> Option<Record<'py>> {
            let lineno = read(&self.f_lineno, entry)
                .and_then(|n| inert::int_value(&n))
                .and_then(|n| u32::try_from(n).ok());
            let back = read(&self.f_back, entry).filter(|b| !b.is_none());
            Some((read(&self.f_code, entry), lineno, back))
        };
        // SAFETY: `entry` is a `_Frame` (the caller checked), laid out as
        // `FrameRecord` (checked on the type); its object fields are never
        // NULL once built (Cython fills them with None first).
        let direct = || -> Option<Record<'py>> {
            if !self.frame_layout {
                return None;
            }
            // SAFETY: `entry` is a `_Frame` (the caller checked), laid out as `FrameRecord`
            // (checked on the type); its object fields are never NULL once built (Cython fills them
            // with None first), and they live as long as `entry`.
            unsafe {
                let record = &*(entry.as_ptr() as *const layout::FrameRecord);
                let code = inert::borrowed(entry.py(), record.f_code)
                    .filter(|c| ffi::PyCode_Check(c.as_ptr()) != 0);
                let back = inert::borrowed(entry.py(), record.f_back).filter(|b| !b.is_none());
                Some((code, u32::try_from(record.f_lineno).ok(), back))
            }
        };
        let same = |a: &Option<Bound<'py, PyAny>>, b: &Option<Bound<'py, PyAny>>| match (a, b) {
            (Some(a), Some(b)) => a.is(b),
            (None, None) => true,
            _ => false,
        };
        self.frame_reads
            .read(direct, getters, |d, got| {
                got.as_ref()
                    .is_some_and(|g| same(&d.0, &g.0) && d.1 == g.1 && same(&d.2, &g.2))
            })
            .unwrap_or_default()
    }

    /// Whether the Cython fields of a gevent `Greenlet` are all set, so its
    /// Cython getters (which `Py_INCREF` the field unchecked) can be called.
    /// Cython fills them with `None` right after greenlet's `tp_new` returns
    /// and clears them to NULL in its `tp_dealloc`, and a greenlet whose
    /// deallocation is put off (greenlet queues a greenlet released in a
    /// thread not its own, and keeps it tracked) stays in the heap that way.
    ///
    /// # Safety
    /// `obj` is a live instance of `gevent.Greenlet` (or a subclass).
    pub unsafe fn fields_ready(&self, obj: &Bound<'py, PyAny>) -> bool {
        self.fields.is_some() && self.field_slots(obj).all(|(_, value)| !value.is_null())
    }

    /// (offset, value) of each of `obj`'s Cython fields (none without the
    /// field range).
    ///
    /// # Safety
    /// `obj` is a live instance of `gevent.Greenlet` (or a subclass).
    unsafe fn field_slots<'a>(
        &self,
        obj: &'a Bound<'py, PyAny>,
    ) -> impl Iterator<Item = (usize, *mut ffi::PyObject)> + 'a {
        let (start, end) = self.fields.unwrap_or((0, 0));
        let base = obj.as_ptr() as *const u8;
        (start..end)
            .step_by(std::mem::size_of::<usize>())
            .map(move |at| (at, *(base.add(at) as *const *mut ffi::PyObject)))
    }

    /// The objects in `obj`'s Cython fields that `is_links` accepts (gevent
    /// keeps a greenlet's links in one exact `list`, a `deque` before 20),
    /// once its fields are all set. The field found alone for one greenlet is
    /// read first for the next, so the others' objects are not touched:
    /// ten thousand greenlets' fields point at some 150,000 objects.
    ///
    /// # Safety
    /// `obj` is a live instance of `gevent.Greenlet` (or a subclass);
    /// `is_links` looks at a live object's type only.
    pub unsafe fn link_fields(
        &self,
        obj: &Bound<'py, PyAny>,
        is_links: impl Fn(*mut ffi::PyObject) -> bool,
    ) -> Vec<Bound<'py, PyAny>> {
        if !self.fields_ready(obj) {
            return Vec::new();
        }
        if let Some(at) = self
            .links_at
            .get()
            .filter(|_| crate::capture::fastpaths::on())
        {
            let value = *((obj.as_ptr() as *const u8).add(at) as *const *mut ffi::PyObject);
            if is_links(value) {
                return vec![Bound::from_borrowed_ptr(obj.py(), value)];
            }
        }
        // The range opens with Cython's vtable pointer, which is no object.
        let found: Vec<(usize, *mut ffi::PyObject)> = self
            .field_slots(obj)
            .skip(1)
            .filter(|&(_, value)| is_links(value))
            .collect();
        if let [(at, _)] = found[..] {
            self.links_at.set(Some(at));
        }
        found
            .into_iter()
            .map(|(_, value)| Bound::from_borrowed_ptr(obj.py(), value))
            .collect()
    }

    /// Remembers where in `obj`'s Cython fields the `spawning_stack` its
    /// getter returned (`record`) lies, if at exactly one place.
    ///
    /// # Safety
    /// `obj` is a live instance of `gevent.Greenlet` whose fields are set.
    pub unsafe fn learn_spawning_stack(&self, obj: &Bound<'py, PyAny>, record: &Bound<'py, PyAny>) {
        if self.spawning_stack_at.get().is_some() || record.is_none() {
            return;
        }
        let mut places = self
            .field_slots(obj)
            .filter(|&(_, value)| value == record.as_ptr());
        if let (Some((at, _)), None) = (places.next(), places.next()) {
            self.spawning_stack_at.set(Some(at));
        }
    }

    /// The first of two prefetch stages for a greenlet's spawn record: the
    /// Cython fields of `obj` (any object: only a hint is given).
    pub fn prefetch_fields(&self, obj: *mut ffi::PyObject) {
        if let Some((start, end)) = self.fields {
            let lines = (end - start).div_ceil(64) + 1;
            inert::prefetch((obj as *const u8).wrapping_add(start), lines);
        }
    }

    /// The second stage: the records of `obj`'s spawning stack, made one
    /// after another when it was spawned, so mostly in consecutive blocks.
    ///
    /// # Safety
    /// `obj` is a live object; the GIL is held.
    pub unsafe fn prefetch_spawning_stack(&self, obj: &Bound<'py, PyAny>) {
        let Some(at) = self.spawning_stack_at.get() else {
            return;
        };
        if self.is_greenlet(obj) {
            let record = *((obj.as_ptr() as *const u8).add(at) as *const *const u8);
            inert::prefetch(record, 4);
        }
    }

    fn kind(&self, obj: &Bound<'py, PyAny>) -> Kind {
        // SAFETY: `obj` is alive and the GIL is held (a `Bound`); its type is only read as an
        // address.
        let tp = unsafe { ffi::Py_TYPE(obj.as_ptr()) } as usize;
        let (last, kind) = self.last_kind.get();
        if last == tp {
            return kind;
        }
        let kind = Kind {
            greenlet: instance_of(obj, self.greenlet.as_ref()),
            hub: instance_of(obj, self.hub.as_ref()),
        };
        self.last_kind.set((tp, kind));
        kind
    }

    /// Whether `Greenlet` is gevent's Cython class (its fields known), not
    /// pure-Python gevent's (fields in `__dict__`).
    pub fn compiled(&self) -> bool {
        self.fields.is_some()
    }

    pub fn is_greenlet(&self, obj: &Bound<'py, PyAny>) -> bool {
        self.kind(obj).greenlet
    }

    pub fn is_hub(&self, obj: &Bound<'py, PyAny>) -> bool {
        self.kind(obj).hub
    }
}

/// The type object `tp` (checked to be a type by the caller) is.
fn type_ptr(tp: &Bound<'_, PyAny>) -> *const ffi::PyTypeObject {
    tp.as_ptr() as *const ffi::PyTypeObject
}

/// Reads an optional getter.
pub fn read<'py>(
    getter: &Option<BuiltinGetter<'py>>,
    obj: &Bound<'py, PyAny>,
) -> Option<Bound<'py, PyAny>> {
    getter.as_ref()?.get(obj)
}

/// `isinstance` by `tp_mro` pointers only (no `__instancecheck__`, no `__class__`).
pub fn instance_of(obj: &Bound<'_, PyAny>, tp: Option<&Bound<'_, PyAny>>) -> bool {
    // SAFETY: `obj` is alive and the GIL is held (a `Bound`), and so is `tp`, checked to be a type
    // when it was loaded.
    tp.is_some_and(|tp| unsafe {
        ffi::PyType_IsSubtype(
            ffi::Py_TYPE(obj.as_ptr()),
            tp.as_ptr() as *mut ffi::PyTypeObject,
        ) != 0
    })
}
