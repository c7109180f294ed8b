//! Reads of CPython's `_PyInterpreterFrame`s with the GIL (`tbc_iframe`:
//! 3.11-3.13): where a frame is (code, instruction offset) and the frame
//! below it, without a frame object. The layouts are the version's
//! (`cpython::current::InterpreterFrame`, behind
//! [`cpython::InterpreterFrame`]); this module holds what is the same on
//! every version that has them.
//!
//! Frame objects are what the C API walks (`PyFrame_GetBack`), and each one
//! is a separate object to fetch, reference-count and, on 3.11+, create on
//! first use. The interpreter frames they stand for lie in the thread's (or
//! greenlet's, or coroutine's) own memory, one line each. Every caller
//! checks what these reads give against the C API once per capture (see
//! `inert::CheckedRead`), so a layout this build does not expect costs the
//! shortcut, never a wrong stack.

pub use crate::capture::cpython::current::InterpreterFrame as Frame;
use crate::capture::cpython::current::{FrameObject, GenObject};
use crate::capture::cpython::{current, GenState, InterpreterFrame};
#[cfg(Py_3_12)]
use crate::capture::inert;
use pyo3::ffi;
use pyo3::prelude::*;
use std::os::raw::c_int;

/// The generator-like object `obj` is (all three kinds begin with
/// `_PyGenObject_HEAD`).
///
/// # Safety
/// `obj` is a live exact instance of `PyGen_Type`, `PyCoro_Type` or
/// `PyAsyncGen_Type`; the GIL is held while the reference lives.
pub unsafe fn generator<'a>(obj: *mut ffi::PyObject) -> &'a GenObject {
    // SAFETY: the caller's type check; the object outlives the reference.
    unsafe { &*(obj as *const GenObject) }
}

/// The state of a generator-like object.
pub fn state(gen: &GenObject) -> GenState {
    gen.state()
}

/// The interpreter frame a generator-like object embeds, or `None` where
/// the published layout disagrees with this build's.
pub fn of_generator(gen: &GenObject) -> Option<&Frame> {
    current::frames_agree().then_some(&gen.gi_iframe)
}

/// The frame object an interpreter frame already has, or null.
pub fn frame_object(iframe: &Frame) -> *mut ffi::PyObject {
    iframe.frame_obj()
}

/// (code, instruction offset in bytes) of an interpreter frame; `None` when
/// its code is no code object. 3.12 and 3.13 have
/// `PyUnstable_InterpreterFrame_GetCode` and `_GetLasti` for this; 3.11
/// has neither, so the offset is computed as they do: the instruction
/// pointer less the start of the code's bytecode
/// (`cpython::current::bytecode_start`).
///
/// # Safety
/// `iframe` is a live interpreter frame (of a suspended generator, or of a
/// thread or greenlet that is not running); the GIL is held.
pub unsafe fn position(py: Python<'_>, iframe: &Frame) -> Option<(*mut ffi::PyCodeObject, c_int)> {
    #[cfg(Py_3_12)]
    {
        let raw = iframe as *const Frame as *mut ffi::_PyInterpreterFrame;
        // SAFETY: `raw` is a live interpreter frame (the caller's promise).
        let code = inert::owned(py, unsafe { ffi::PyUnstable_InterpreterFrame_GetCode(raw) })?;
        // SAFETY: `code` is a live object.
        if unsafe { ffi::PyCode_Check(code.as_ptr()) } == 0 {
            return None;
        }
        // The frame holds its code: the address outlives our reference.
        // SAFETY: as above.
        let lasti = unsafe { ffi::PyUnstable_InterpreterFrame_GetLasti(raw) };
        Some((code.as_ptr() as *mut ffi::PyCodeObject, lasti))
    }
    #[cfg(not(Py_3_12))]
    {
        let _ = py;
        let code = iframe.executable();
        // SAFETY: a live frame holds a strong reference to its code.
        if code.is_null() || unsafe { ffi::PyCode_Check(code) } == 0 {
            return None;
        }
        // SAFETY: `code` is a code object, a variable-size object.
        let (start, units) = unsafe {
            (
                crate::capture::cpython::current::bytecode_start(code),
                (*(code as *mut ffi::PyVarObject)).ob_size as usize,
            )
        };
        let offset = iframe.instr() as isize - start as isize;
        // -2 (one code unit before the start) until the frame starts.
        if offset < -2 || offset >= (units * 2) as isize {
            return None;
        }
        Some((code as *mut ffi::PyCodeObject, offset as c_int))
    }
}

/// The frame that called `iframe`, passing over 3.12+'s shim frames as
/// `PyFrame_GetBack` does; `None` at the bottom.
///
/// `PyFrame_GetBack` also passes over "incomplete" frames, which have not
/// run their first instruction. Such a frame has called nothing, so it can
/// only be the top of a stack, where every walk starts from a frame object
/// handed over by the interpreter: never one that is followed here.
///
/// # Safety
/// As for [`position`]; the frame returned lives as long.
pub unsafe fn previous<'a>(iframe: &Frame) -> Option<&'a Frame> {
    let mut prev = iframe.previous();
    // SAFETY: a live frame's `previous` is null or the live frame below it
    // on the same stack, which outlives the walk (nothing runs meanwhile).
    while let Some(frame) = unsafe { prev.as_ref() } {
        if !frame.is_shim() {
            return Some(frame);
        }
        prev = frame.previous();
    }
    None
}

/// The word `previous` of `iframe` as it is (a shim frame not passed
/// over), for a prefetch hint only.
///
/// # Safety
/// `iframe` is a live interpreter frame; the GIL is held.
pub unsafe fn previous_hint(iframe: *const Frame) -> *const u8 {
    // SAFETY: the caller's promise.
    unsafe { (*iframe).previous() as *const u8 }
}

/// The address of `f_frame` in a frame object, for a prefetch hint only.
pub fn f_frame_field(frame: *const ffi::PyObject) -> *const *const Frame {
    (frame as *const u8).wrapping_add(std::mem::offset_of!(FrameObject, f_frame))
        as *const *const Frame
}

/// The interpreter frame a frame object stands for while it runs: its
/// `f_frame`, or `None` for a frame object that outlived its frame (it
/// has `f_back` then and holds a copy of the data), or where the published
/// layout disagrees with this build's.
///
/// # Safety
/// `frame` is a live frame object; the GIL is held; the frame returned
/// lives as long as `frame` runs.
pub unsafe fn of_frame_object<'a>(frame: *mut ffi::PyFrameObject) -> Option<&'a Frame> {
    if !current::frames_agree() {
        return None;
    }
    // SAFETY: `frame` is a live frame object (the caller's promise).
    let frame = unsafe { &*(frame as *const FrameObject) };
    if !frame.f_back.is_null() {
        return None;
    }
    // SAFETY: a frame object without `f_back` points at its live frame.
    unsafe { frame.f_frame.as_ref() }
}

/// The top of an interpreter frame's value stack (what a frame suspended in
/// `await` / `yield from` awaits, as `_PyGen_yf` reads it); `None` when the
/// stack is empty or implausibly deep.
///
/// # Safety
/// `iframe` is the interpreter frame of a suspended generator-like object
/// (whose stack pointer was saved when it yielded); the GIL is held.
pub unsafe fn stack_top(iframe: &Frame) -> Option<*mut ffi::PyObject> {
    let depth = iframe.stack_depth();
    if !(1..=256).contains(&depth) {
        return None;
    }
    // SAFETY: a suspended frame's stack holds `depth` live entries past
    // `localsplus` (the bound is a guard against a layout gone wrong).
    let top = unsafe { *iframe.localsplus().add(depth as usize - 1) };
    (!top.is_null()).then_some(top)
}

/// Fast local `slot` of an interpreter frame (`localsplus[slot]`, in
/// `co_varnames` order for code without cells); `None` while unset.
///
/// # Safety
/// As for [`stack_top`]; `slot` is below the code's number of variables.
pub unsafe fn local(iframe: &Frame, slot: usize) -> Option<*mut ffi::PyObject> {
    // SAFETY: the caller's bound on `slot`.
    let value = unsafe { *iframe.localsplus().add(slot) };
    (!value.is_null()).then_some(value)
}
