//! Reads of CPython's `_PyInterpreterFrame` (`internal/pycore_frame.h`),
//! 3.11-3.13 with the GIL: where a frame is (code, instruction offset) and
//! the frame below it, without a frame object.
//!
//! Frame objects are what the C API walks (`PyFrame_GetBack`), and each one
//! is a separate object to fetch, reference-count and, on 3.11+, create on
//! first use. The interpreter frames they stand for lie in the thread's (or
//! greenlet's, or coroutine's) own memory, one line each. Every caller
//! checks what these reads give against the C API once per capture (see
//! `inert::CheckedRead`), so a layout this build does not expect costs the
//! shortcut, never a wrong stack.
//!
//! Layouts (pointers are words):
//! - 3.11: f_func, f_globals, f_builtins, f_locals, f_code, frame_obj,
//!   previous, prev_instr (no shim frames).
//! - 3.12, 3.13: f_code (3.13: f_executable), previous, f_funcobj, f_globals,
//!   f_builtins, f_locals, frame_obj, prev_instr (3.13: instr_ptr), then
//!   `int stacktop`, `uint16_t return_offset`, `char owner`.

#[cfg(Py_3_12)]
use crate::capture::inert;
use pyo3::ffi;
use pyo3::prelude::*;
use std::os::raw::c_int;

#[cfg(not(Py_3_12))]
const PREVIOUS: usize = 6;
#[cfg(Py_3_12)]
const PREVIOUS: usize = 1;

#[cfg(not(Py_3_12))]
const FRAME_OBJ: usize = 5;
#[cfg(Py_3_12)]
const FRAME_OBJ: usize = 6;

/// `f_frame`, the fourth word of a frame object (header, `f_back`, then
/// `f_frame`), points at the interpreter frame.
pub const F_FRAME_WORD: usize = 3;

/// The interpreter frame a generator, coroutine or async generator embeds
/// (all three begin with `_PyGenObject_HEAD`).
///
/// # Safety
/// `obj` is an exact instance of `PyGen_Type`, `PyCoro_Type` or
/// `PyAsyncGen_Type`.
pub unsafe fn of_generator(obj: *mut ffi::PyObject) -> *mut ffi::_PyInterpreterFrame {
    &raw mut (*(obj as *mut ffi::PyGenObject)).gi_iframe as *mut ffi::_PyInterpreterFrame
}

/// The frame object an interpreter frame already has (`frame_obj`), or null.
///
/// # Safety
/// As for [`position`].
pub unsafe fn frame_object(iframe: *mut ffi::_PyInterpreterFrame) -> *mut ffi::PyObject {
    *(iframe as *const *mut ffi::PyObject).add(FRAME_OBJ)
}

/// Byte offset of `owner` (3.12+), after the eight words, `stacktop` and
/// `return_offset`.
#[cfg(Py_3_12)]
const OWNER: usize = 8 * 8 + 4 + 2;

/// `FRAME_OWNED_BY_CSTACK` (3.12+): the shim frame an entry from C pushes,
/// which is no Python frame and which `PyFrame_GetBack` skips.
#[cfg(Py_3_12)]
const OWNED_BY_CSTACK: u8 = 3;

/// (code, instruction offset in bytes) of an interpreter frame; `None` when
/// its code is no code object. 3.12 and 3.13 have
/// `PyUnstable_InterpreterFrame_GetCode` and `_GetLasti` for this; 3.11
/// has neither, so the offset is computed as they do: `prev_instr` less the
/// start of the code's bytecode, which sits at `PyCode_Type.tp_basicsize`
/// (`offsetof(PyCodeObject, co_code_adaptive)`) in 3.11-3.13.
///
/// # Safety
/// `iframe` is a live interpreter frame (of a suspended generator, or of a
/// thread or greenlet that is not running); the GIL is held.
pub unsafe fn position(
    py: Python<'_>,
    iframe: *mut ffi::_PyInterpreterFrame,
) -> Option<(*mut ffi::PyCodeObject, c_int)> {
    #[cfg(Py_3_12)]
    {
        let code = inert::owned(py, ffi::PyUnstable_InterpreterFrame_GetCode(iframe))?;
        if ffi::PyCode_Check(code.as_ptr()) == 0 {
            return None;
        }
        // The frame holds its code: the address outlives our reference.
        let lasti = ffi::PyUnstable_InterpreterFrame_GetLasti(iframe);
        Some((code.as_ptr() as *mut ffi::PyCodeObject, lasti))
    }
    #[cfg(not(Py_3_12))]
    {
        let _ = py;
        let words = iframe as *const usize;
        let code = *words.add(4) as *mut ffi::PyObject;
        let prev_instr = *words.add(7);
        if code.is_null() || ffi::PyCode_Check(code) == 0 {
            return None;
        }
        let start = code as usize + (*std::ptr::addr_of!(ffi::PyCode_Type)).tp_basicsize as usize;
        let units = (*(code as *mut ffi::PyVarObject)).ob_size as usize;
        let offset = prev_instr as isize - start as isize;
        // -2 (one code unit before the start) until the frame starts.
        if offset < -2 || offset >= (units * 2) as isize {
            return None;
        }
        Some((code as *mut ffi::PyCodeObject, offset as c_int))
    }
}

/// The frame that called `iframe`, passing over 3.12+'s shim frames as
/// `PyFrame_GetBack` does; null at the bottom.
///
/// `PyFrame_GetBack` also passes over "incomplete" frames, which have not
/// run their first instruction. Such a frame has called nothing, so it can
/// only be the top of a stack, where every walk starts from a frame object
/// handed over by the interpreter: never one that is followed here.
///
/// # Safety
/// As for [`position`].
pub unsafe fn previous(iframe: *mut ffi::_PyInterpreterFrame) -> *mut ffi::_PyInterpreterFrame {
    #[cfg_attr(not(Py_3_12), allow(unused_mut))]
    let mut prev = *(iframe as *const *mut ffi::_PyInterpreterFrame).add(PREVIOUS);
    #[cfg(Py_3_12)]
    while !prev.is_null() && *(prev as *const u8).add(OWNER) == OWNED_BY_CSTACK {
        prev = *(prev as *const *mut ffi::_PyInterpreterFrame).add(PREVIOUS);
    }
    prev
}

/// The word `previous` of `iframe` as it is (a shim frame not passed
/// over), for a prefetch hint only.
///
/// # Safety
/// As for [`position`].
pub unsafe fn previous_hint(iframe: *const u8) -> *const u8 {
    *(iframe as *const *const u8).add(PREVIOUS)
}

/// The interpreter frame a frame object stands for while it runs: its
/// `f_frame` (header, `f_back`, then `f_frame`, in 3.11-3.13), or `None`
/// for a frame object that outlived its frame (it has `f_back` then and
/// holds a copy of the data).
///
/// # Safety
/// `frame` is a live frame object; the GIL is held.
pub unsafe fn of_frame_object(
    frame: *mut ffi::PyFrameObject,
) -> Option<*mut ffi::_PyInterpreterFrame> {
    let words = frame as *const *mut ffi::PyObject;
    if !(*words.add(F_FRAME_WORD - 1)).is_null() {
        return None;
    }
    let iframe = *(words.add(F_FRAME_WORD) as *const *mut ffi::_PyInterpreterFrame);
    (!iframe.is_null()).then_some(iframe)
}

/// The top of an interpreter frame's value stack (what a frame suspended in
/// `await` / `yield from` awaits, as `_PyGen_yf` reads it); `None` when the
/// stack is empty or implausibly deep.
///
/// # Safety
/// `iframe` is the interpreter frame of a suspended generator-like object
/// (whose stack pointer was saved when it yielded); the GIL is held.
pub unsafe fn stack_top(iframe: *mut ffi::_PyInterpreterFrame) -> Option<*mut ffi::PyObject> {
    // `stacktop` follows the eight words; `localsplus` follows it (after
    // two small fields), and `stacktop` counts from there.
    let words = iframe as *const *mut ffi::PyObject;
    let stacktop = *(words.add(8) as *const c_int);
    if !(1..=256).contains(&stacktop) {
        return None;
    }
    let top = *words.add(9 + stacktop as usize - 1);
    (!top.is_null()).then_some(top)
}

/// Fast local `slot` of an interpreter frame (`localsplus[slot]`, in
/// `co_varnames` order for code without cells); `None` while unset.
///
/// # Safety
/// As for [`stack_top`]; `slot` is below the code's number of variables.
pub unsafe fn local(
    iframe: *mut ffi::_PyInterpreterFrame,
    slot: usize,
) -> Option<*mut ffi::PyObject> {
    let value = *(iframe as *const *mut ffi::PyObject).add(9 + slot);
    (!value.is_null()).then_some(value)
}
