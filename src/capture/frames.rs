//! The shared frame walker: turns interpreter frames into model [`Frame`]s
//! through the C API, copying only file name, line and qualified name.

use crate::capture::locals::{LocalsReader, PendingReprs};
use crate::capture::{safe, LocalsMode};
use crate::fasthash::FastMap;
use crate::model::{Frame, Text};
use pyo3::ffi;
use pyo3::prelude::*;

#[derive(Clone)]
struct CodeInfo {
    filename: Text,
    function: Text,
}

/// Walks frame chains for one capture. Code objects are looked up once per
/// capture (keyed by address, which is stable while the GIL is held and the
/// frames keep their code alive); nothing survives the capture.
pub struct FrameWalker<'py> {
    py: Python<'py>,
    max_depth: usize,
    codes: FastMap<usize, CodeInfo>,
    #[cfg(Py_3_11)]
    lines: FastMap<(usize, std::os::raw::c_int), Option<u32>>,
    // 3.11+ code objects carry `co_qualname`; before, only `co_name` exists.
    has_qualname: bool,
    /// Set when the capture asked for locals: every frame the walker makes
    /// gets them, whichever backend asked for the frame.
    locals: Option<LocalsReader>,
}

impl<'py> FrameWalker<'py> {
    pub fn new(py: Python<'py>, max_depth: usize) -> Self {
        FrameWalker {
            py,
            max_depth,
            codes: FastMap::default(),
            #[cfg(Py_3_11)]
            lines: FastMap::default(),
            has_qualname: cfg!(Py_3_11),
            locals: None,
        }
    }

    /// Makes every frame carry its local variables (`mode` other than `Off`),
    /// names containing one of `redact` shown as `[redacted]`.
    pub fn with_locals(mut self, mode: LocalsMode, redact: &[String]) -> Self {
        self.locals = (mode != LocalsMode::Off).then(|| LocalsReader::new(mode, redact));
        self
    }

    /// Problems met reading locals, for the snapshot's `errors`.
    pub fn take_errors(&mut self) -> Vec<String> {
        self.locals
            .as_mut()
            .map(LocalsReader::take_errors)
            .unwrap_or_default()
    }

    /// Objects whose `repr()` is due after the capture (`locals="repr"`).
    pub fn take_pending_reprs(&mut self) -> PendingReprs {
        self.locals
            .as_mut()
            .map(LocalsReader::take_pending)
            .unwrap_or_default()
    }

    /// The stack ending at `top` (a borrowed frame), outermost first, with the
    /// number of outermost frames dropped by the depth limit.
    ///
    /// # Safety
    /// `top` must be a valid frame object; the GIL is held (`self.py`).
    pub unsafe fn walk(&mut self, top: *mut ffi::PyFrameObject) -> (Vec<Frame>, u64) {
        let mut frames = Vec::new();
        let mut omitted: u64 = 0;
        ffi::Py_INCREF(top as *mut ffi::PyObject);
        let mut frame = top;
        while !frame.is_null() {
            if frames.len() < self.max_depth {
                frames.push(self.frame(frame));
            } else {
                omitted += 1;
            }
            // New reference (3.9+); materializes the caller's frame object on 3.11+.
            let back = ffi::PyFrame_GetBack(frame);
            ffi::Py_DECREF(frame as *mut ffi::PyObject);
            frame = back;
        }
        safe::clear_error();
        frames.reverse();
        (frames, omitted)
    }

    /// One frame (borrowed), as the model has it.
    ///
    /// # Safety
    /// `frame` must be a valid frame object; the GIL is held.
    pub unsafe fn frame(&mut self, frame: *mut ffi::PyFrameObject) -> Frame {
        let code = ffi::PyFrame_GetCode(frame);
        let lineno = self.line_number(frame, code);
        let info = self.code_info(code);
        let mut out = Frame::new(info.filename, lineno, info.function);
        if let Some(reader) = self.locals.as_mut() {
            out.locals = reader.read(self.py, frame, code);
        }
        ffi::Py_DECREF(code as *mut ffi::PyObject);
        out
    }

    /// Frame from a `Bound` frame object, or `None` when it is not a frame.
    pub fn frame_of(&mut self, obj: &Bound<'py, PyAny>) -> Option<Frame> {
        unsafe {
            if ffi::PyFrame_Check(obj.as_ptr()) == 0 {
                return None;
            }
            Some(self.frame(obj.as_ptr() as *mut ffi::PyFrameObject))
        }
    }

    /// Walk from a `Bound` frame object, or `None` when it is not a frame.
    pub fn walk_from(&mut self, obj: &Bound<'py, PyAny>) -> Option<(Vec<Frame>, u64)> {
        unsafe {
            if ffi::PyFrame_Check(obj.as_ptr()) == 0 {
                return None;
            }
            Some(self.walk(obj.as_ptr() as *mut ffi::PyFrameObject))
        }
    }

    /// A frame from a code object and a line (records like gevent's spawning
    /// stacks keep those instead of frames); `None` when `code` is no code object.
    pub fn code_frame(&mut self, code: &Bound<'py, PyAny>, lineno: Option<u32>) -> Option<Frame> {
        unsafe {
            if ffi::PyCode_Check(code.as_ptr()) == 0 {
                return None;
            }
            let info = self.code_info(code.as_ptr() as *mut ffi::PyCodeObject);
            Some(Frame::new(info.filename, lineno, info.function))
        }
    }

    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// 3.11+ computes a frame's line by scanning its code's location table;
    /// frames suspended at the same instruction (ten thousand tasks in one
    /// `await`) share the answer, cached by (code, instruction offset).
    #[cfg(Py_3_11)]
    unsafe fn line_number(
        &mut self,
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
    ) -> Option<u32> {
        let lasti = ffi::PyFrame_GetLasti(frame);
        *self
            .lines
            .entry((code as usize, lasti))
            .or_insert_with(|| u32::try_from(ffi::PyFrame_GetLineNumber(frame)).ok())
    }

    #[cfg(not(Py_3_11))]
    unsafe fn line_number(
        &mut self,
        frame: *mut ffi::PyFrameObject,
        _code: *mut ffi::PyCodeObject,
    ) -> Option<u32> {
        u32::try_from(ffi::PyFrame_GetLineNumber(frame)).ok()
    }

    unsafe fn code_info(&mut self, code: *mut ffi::PyCodeObject) -> CodeInfo {
        let key = code as usize;
        if let Some(info) = self.codes.get(&key) {
            return info.clone();
        }
        let py = self.py;
        let code = Bound::from_borrowed_ptr(py, code as *mut ffi::PyObject);
        // Code objects are of the exact builtin `code` type (it cannot be
        // subclassed), so these reads are plain member descriptors.
        let read = |name: &Bound<'py, pyo3::types::PyString>| -> Option<String> {
            code.getattr(name).ok().and_then(|v| safe::str_value(&v))
        };
        let filename =
            read(pyo3::intern!(py, "co_filename")).unwrap_or_else(|| "<unknown>".to_string());
        let function = if self.has_qualname {
            read(pyo3::intern!(py, "co_qualname"))
        } else {
            None
        }
        .or_else(|| read(pyo3::intern!(py, "co_name")))
        .unwrap_or_else(|| "<unknown>".to_string());
        safe::clear_error();
        let info = CodeInfo {
            filename: Text::from(filename),
            function: Text::from(function),
        };
        self.codes.insert(key, info.clone());
        info
    }
}
