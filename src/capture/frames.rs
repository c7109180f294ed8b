//! The shared frame walker: turns interpreter frames into model [`Frame`]s
//! through the C API, copying only file name, line and qualified name.

use crate::capture::safe;
use crate::fasthash::FastMap;
use crate::model::Frame;
use pyo3::ffi;
use pyo3::prelude::*;

#[derive(Clone)]
struct CodeInfo {
    filename: String,
    function: String,
}

/// Walks frame chains for one capture. Code objects are looked up once per
/// capture (keyed by address, which is stable while the GIL is held and the
/// frames keep their code alive); nothing survives the capture.
pub struct FrameWalker<'py> {
    py: Python<'py>,
    max_depth: usize,
    codes: FastMap<usize, CodeInfo>,
    // 3.11+ code objects carry `co_qualname`; before, only `co_name` exists.
    has_qualname: bool,
}

impl<'py> FrameWalker<'py> {
    pub fn new(py: Python<'py>, max_depth: usize) -> Self {
        FrameWalker {
            py,
            max_depth,
            codes: FastMap::default(),
            has_qualname: cfg!(Py_3_11),
        }
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
        let line = ffi::PyFrame_GetLineNumber(frame);
        let lineno = u32::try_from(line).ok();
        let code = ffi::PyFrame_GetCode(frame);
        let info = self.code_info(code);
        ffi::Py_DECREF(code as *mut ffi::PyObject);
        Frame::new(info.filename, lineno, info.function)
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
        let info = CodeInfo { filename, function };
        self.codes.insert(key, info.clone());
        info
    }
}
