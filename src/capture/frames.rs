//! The shared frame walker: turns interpreter frames into model [`Frame`]s
//! through the C API, copying only file name, line and qualified name.

use crate::capture::locals::{LocalsReader, PendingReprs};
use crate::capture::{inert, LocalsMode};
use crate::model::fasthash::FastMap;
use crate::model::{Frame, Frames, Locals, Text};
use pyo3::ffi;
use pyo3::prelude::*;

#[derive(Clone)]
struct CodeInfo {
    filename: Text,
    function: Text,
}

/// Where a frame is: its code object (by address) and line. Frames with
/// equal keys are equal frames (locals aside), so a list of keys names a
/// frame list and identical stacks are built once.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameKey {
    /// Index of the code object's [`CodeInfo`] in [`FrameWalker::infos`].
    code: u32,
    line: Option<u32>,
}

impl FrameKey {
    /// The code object's index, the same for every frame of one code
    /// object in a capture: a key for facts about the code.
    pub fn code_index(self) -> usize {
        self.code as usize
    }
}

/// A frame list being built, one frame at a time; [`FrameWalker::finish`]
/// turns it into shared [`Frames`].
pub struct FrameList {
    keys: Vec<FrameKey>,
    /// The frames themselves, when they carry locals (no two are alike then).
    with_locals: Option<Vec<Frame>>,
}

impl FrameList {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Walks frame chains for one capture. Code objects are looked up once per
/// capture (keyed by address, which is stable while the GIL is held and the
/// frames keep their code alive); nothing survives the capture.
pub struct FrameWalker<'py> {
    py: Python<'py>,
    max_depth: usize,
    /// Names of each code object met, by index; `codes` maps addresses to it.
    infos: Vec<CodeInfo>,
    codes: FastMap<usize, u32>,
    /// File name texts by the address of the `str` they were read from.
    filenames: FastMap<usize, Text>,
    /// 3.11+: (code address, instruction offset) -> where that is.
    #[cfg(Py_3_11)]
    positions: FastMap<(usize, std::os::raw::c_int), FrameKey>,
    // 3.11+ code objects carry `co_qualname`; before, only `co_name` exists.
    has_qualname: bool,
    /// Set when the capture asked for locals: every frame the walker makes
    /// gets them, whichever backend asked for the frame.
    locals: Option<LocalsReader>,
    /// Every distinct frame list built in this capture, by its keys.
    lists: FastMap<Box<[FrameKey]>, Frames>,
    /// The key buffer of the last finished list, reused by the next one.
    spare_keys: Vec<FrameKey>,
    /// The two lists finished last: tasks and greenlets of one kind come in
    /// runs, and a run's lists are equal (a greenlet's stack and its spawn
    /// stack alternate), so most need no lookup in `lists`.
    last: [Option<(Vec<FrameKey>, Frames)>; 2],
    /// The entry of `last` the next new list replaces.
    older: usize,
    /// Whether [`Self::walk`] may read interpreter frames directly: `None`
    /// until the first walk of the capture was checked against the C API.
    #[cfg(tbc_iframe)]
    direct_walks: Option<bool>,
    /// Positions looked up lately, in front of `positions`: the frames of
    /// a run of alike tasks repeat the same few.
    #[cfg(Py_3_11)]
    recent: [((usize, std::os::raw::c_int), FrameKey); 8],
}

impl<'py> FrameWalker<'py> {
    pub fn new(py: Python<'py>, max_depth: usize) -> Self {
        FrameWalker {
            py,
            max_depth,
            infos: Vec::new(),
            codes: FastMap::default(),
            filenames: FastMap::default(),
            #[cfg(Py_3_11)]
            positions: FastMap::default(),
            has_qualname: cfg!(Py_3_11),
            locals: None,
            lists: FastMap::default(),
            spare_keys: Vec::new(),
            last: [None, None],
            #[cfg(tbc_iframe)]
            direct_walks: None,
            older: 0,
            // Code address 0 is no code object's: these slots match nothing.
            #[cfg(Py_3_11)]
            recent: [(
                (0, 0),
                FrameKey {
                    code: 0,
                    line: None,
                },
            ); 8],
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
    pub unsafe fn walk(&mut self, top: *mut ffi::PyFrameObject) -> (Frames, u64) {
        #[cfg(tbc_iframe)]
        if self.locals.is_none()
            && self.direct_walks != Some(false)
            && crate::capture::fastpaths::on()
        {
            if let Some(direct) = self.walk_interpreter_frames(top) {
                if self.direct_walks.is_some() {
                    return direct;
                }
                // The first walk of a capture is checked against the C API.
                let by_objects = self.walk_frame_objects(top);
                let agrees = by_objects.1 == direct.1 && *by_objects.0 == *direct.0;
                self.direct_walks = Some(agrees);
                return by_objects;
            }
        }
        self.walk_frame_objects(top)
    }

    /// [`Self::walk`] through the interpreter frames the frame objects
    /// stand for (see [`crate::capture::iframe`]): one line of memory per
    /// frame, no frame object made, fetched or counted. `None` when `top`
    /// or a frame below it is not as expected: the C API walks it then.
    ///
    /// # Safety
    /// As for [`Self::walk`].
    #[cfg(tbc_iframe)]
    unsafe fn walk_interpreter_frames(
        &mut self,
        top: *mut ffi::PyFrameObject,
    ) -> Option<(Frames, u64)> {
        use crate::capture::iframe;
        // A guard against a chain that loops, as a real one cannot.
        const MAX_FRAMES: usize = 1 << 20;
        let mut frame = Some(iframe::of_frame_object(top)?);
        let mut list = self.list();
        let mut omitted: u64 = 0;
        let mut seen = 0;
        while let Some(at) = frame {
            seen += 1;
            let Some((code, lasti)) = iframe::position(self.py, at).filter(|_| seen < MAX_FRAMES)
            else {
                self.recycle(list);
                return None;
            };
            if list.len() < self.max_depth {
                self.push_position(&mut list, code, lasti);
            } else {
                omitted += 1;
            }
            frame = iframe::previous(at);
        }
        let (frames, _) = self.finish(list, true);
        Some((frames, omitted))
    }

    /// A list given up on: its key buffer serves the next one.
    #[cfg(tbc_iframe)]
    fn recycle(&mut self, list: FrameList) {
        let mut keys = list.keys;
        keys.clear();
        self.spare_keys = keys;
    }

    /// [`Self::walk`] through `PyFrame_GetBack`.
    ///
    /// # Safety
    /// As for [`Self::walk`].
    unsafe fn walk_frame_objects(&mut self, top: *mut ffi::PyFrameObject) -> (Frames, u64) {
        let mut list = self.list();
        let mut omitted: u64 = 0;
        ffi::Py_INCREF(top as *mut ffi::PyObject);
        let mut frame = top;
        while !frame.is_null() {
            if list.len() < self.max_depth {
                self.push(&mut list, frame);
            } else {
                omitted += 1;
            }
            // New reference (3.9+); materializes the caller's frame object on 3.11+.
            let back = ffi::PyFrame_GetBack(frame);
            ffi::Py_DECREF(frame as *mut ffi::PyObject);
            frame = back;
        }
        inert::clear_error();
        let (frames, _) = self.finish(list, true);
        (frames, omitted)
    }

    /// An empty frame list to [`push`](Self::push) frames onto.
    pub fn list(&mut self) -> FrameList {
        FrameList {
            keys: std::mem::take(&mut self.spare_keys),
            with_locals: self.locals.is_some().then(Vec::new),
        }
    }

    /// Adds `frame` (borrowed) to `list`; returns where it is.
    ///
    /// # Safety
    /// `frame` must be a valid frame object; the GIL is held.
    pub unsafe fn push(
        &mut self,
        list: &mut FrameList,
        frame: *mut ffi::PyFrameObject,
    ) -> FrameKey {
        let code = ffi::PyFrame_GetCode(frame);
        let key = self.locate(frame, code);
        let locals = match (&list.with_locals, self.locals.as_mut()) {
            (Some(_), Some(reader)) => reader.read(self.py, frame, code),
            _ => None,
        };
        self.record(list, key, locals);
        ffi::Py_DECREF(code as *mut ffi::PyObject);
        key
    }

    /// Appends `key` (and, in a list that carries locals, its frame) to `list`.
    fn record(&self, list: &mut FrameList, key: FrameKey, locals: Option<Locals>) {
        if let Some(frames) = list.with_locals.as_mut() {
            let mut out = self.model_frame(key);
            out.locals = locals;
            frames.push(out);
        }
        list.keys.push(key);
    }

    /// Whether frames carry locals: those are read from frame objects only.
    pub fn wants_locals(&self) -> bool {
        self.locals.is_some()
    }

    /// Adds a frame given as the code it runs and its instruction offset in
    /// bytes (what `PyFrame_GetLasti` answers; negative before it starts):
    /// a coroutine's interpreter frame, read without a frame object.
    ///
    /// # Safety
    /// `code` is a live code object; the GIL is held.
    #[cfg(Py_3_11)]
    pub unsafe fn push_position(
        &mut self,
        list: &mut FrameList,
        code: *mut ffi::PyCodeObject,
        lasti: std::os::raw::c_int,
    ) -> FrameKey {
        let key = self.position(code, lasti, || ffi::PyCode_Addr2Line(code, lasti.max(-1)));
        self.record(list, key, None);
        key
    }

    /// The file name of the frame at `key`.
    pub fn filename(&self, key: FrameKey) -> &str {
        &self.infos[key.code as usize].filename
    }

    fn model_frame(&self, key: FrameKey) -> Frame {
        let info = &self.infos[key.code as usize];
        Frame::new(info.filename.clone(), key.line, info.function.clone())
    }

    /// Adds a frame given as a code object and a line (records like gevent's
    /// spawning stacks keep those instead of frames); `false` when `code` is
    /// no code object.
    pub fn push_code(
        &mut self,
        list: &mut FrameList,
        code: &Bound<'py, PyAny>,
        line: Option<u32>,
    ) -> bool {
        // SAFETY: `code` is alive and the GIL is held (a `Bound`); it is checked to be a code
        // object before it is used as one.
        unsafe {
            if ffi::PyCode_Check(code.as_ptr()) == 0 {
                return false;
            }
            let key = FrameKey {
                code: self.code_index(code.as_ptr() as *mut ffi::PyCodeObject),
                line,
            };
            if let Some(frames) = list.with_locals.as_mut() {
                frames.push(self.model_frame(key));
            }
            list.keys.push(key);
        }
        true
    }

    /// The frames of `list`, outermost first (`innermost_first` says how they
    /// were pushed), the innermost `max_depth` kept, with how many were
    /// dropped. Lists equal to one built before in this capture are shared.
    pub fn finish(&mut self, mut list: FrameList, innermost_first: bool) -> (Frames, u64) {
        let omitted = list.keys.len().saturating_sub(self.max_depth);
        if let Some(mut frames) = list.with_locals.take() {
            if innermost_first {
                frames.truncate(self.max_depth);
                frames.reverse();
            } else {
                frames.drain(..omitted);
            }
            return (frames.into(), omitted as u64);
        }
        let mut keys = list.keys;
        if innermost_first {
            keys.truncate(self.max_depth);
            keys.reverse();
        } else {
            keys.drain(..omitted);
        }
        let repeated = self.last.iter().flatten().find(|(k, _)| *k == keys);
        if let Some((_, frames)) = repeated {
            let frames = frames.clone();
            keys.clear();
            self.spare_keys = keys;
            return (frames, omitted as u64);
        }
        let frames = match self.lists.get(keys.as_slice()) {
            Some(frames) => frames.clone(),
            None => {
                let frames: Frames = keys.iter().map(|&key| self.model_frame(key)).collect();
                self.lists.insert(keys.as_slice().into(), frames.clone());
                frames
            }
        };
        // The keys stay as the last list's; the buffer they replace serves the next.
        let replaced = self.last[self.older].replace((keys, frames.clone()));
        self.older = 1 - self.older;
        if let Some((mut spare, _)) = replaced {
            spare.clear();
            self.spare_keys = spare;
        }
        (frames, omitted as u64)
    }

    /// One frame (borrowed), as the model has it.
    ///
    /// # Safety
    /// `frame` must be a valid frame object; the GIL is held.
    pub unsafe fn frame(&mut self, frame: *mut ffi::PyFrameObject) -> Frame {
        let code = ffi::PyFrame_GetCode(frame);
        let key = self.locate(frame, code);
        let mut out = self.model_frame(key);
        if let Some(reader) = self.locals.as_mut() {
            out.locals = reader.read(self.py, frame, code);
        }
        ffi::Py_DECREF(code as *mut ffi::PyObject);
        out
    }

    /// Frame from a `Bound` frame object, or `None` when it is not a frame.
    pub fn frame_of(&mut self, obj: &Bound<'py, PyAny>) -> Option<Frame> {
        // SAFETY: `obj` is alive and the GIL is held (a `Bound`) and checked to be a frame object
        // before it is read as one.
        unsafe {
            if ffi::PyFrame_Check(obj.as_ptr()) == 0 {
                return None;
            }
            Some(self.frame(obj.as_ptr() as *mut ffi::PyFrameObject))
        }
    }

    /// Walk from a `Bound` frame object, or `None` when it is not a frame.
    pub fn walk_from(&mut self, obj: &Bound<'py, PyAny>) -> Option<(Frames, u64)> {
        // SAFETY: `obj` is alive and the GIL is held (a `Bound`) and checked to be a frame object
        // before it is walked.
        unsafe {
            if ffi::PyFrame_Check(obj.as_ptr()) == 0 {
                return None;
            }
            Some(self.walk(obj.as_ptr() as *mut ffi::PyFrameObject))
        }
    }

    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Where `frame` (running `code`) is. 3.11+ computes a frame's line by
    /// scanning its code's location table; frames suspended at the same
    /// instruction (ten thousand tasks in one `await`) share the answer,
    /// cached by (code, instruction offset).
    #[cfg(Py_3_11)]
    unsafe fn locate(
        &mut self,
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
    ) -> FrameKey {
        self.position(code, ffi::PyFrame_GetLasti(frame), || {
            ffi::PyFrame_GetLineNumber(frame)
        })
    }

    /// The key of (code, instruction offset), its line asked of `line` the
    /// first time (offsets before the start are one key, -1).
    #[cfg(Py_3_11)]
    unsafe fn position(
        &mut self,
        code: *mut ffi::PyCodeObject,
        lasti: std::os::raw::c_int,
        line: impl FnOnce() -> std::os::raw::c_int,
    ) -> FrameKey {
        let at = (code as usize, lasti.max(-1));
        let slot = ((at.0 >> 4) ^ at.1 as usize) % self.recent.len();
        if self.recent[slot].0 == at {
            return self.recent[slot].1;
        }
        let key = match self.positions.get(&at) {
            Some(&key) => key,
            None => {
                let key = FrameKey {
                    code: self.code_index(code),
                    line: u32::try_from(line()).ok(),
                };
                self.positions.insert(at, key);
                key
            }
        };
        self.recent[slot] = (at, key);
        key
    }

    #[cfg(not(Py_3_11))]
    unsafe fn locate(
        &mut self,
        frame: *mut ffi::PyFrameObject,
        code: *mut ffi::PyCodeObject,
    ) -> FrameKey {
        FrameKey {
            code: self.code_index(code),
            line: u32::try_from(ffi::PyFrame_GetLineNumber(frame)).ok(),
        }
    }

    /// The index of `code`'s names in `infos`, read on first sight.
    unsafe fn code_index(&mut self, code: *mut ffi::PyCodeObject) -> u32 {
        if let Some(&index) = self.codes.get(&(code as usize)) {
            return index;
        }
        let info = self.read_code_info(code);
        let index = u32::try_from(self.infos.len()).expect("fewer than 2^32 code objects");
        self.infos.push(info);
        self.codes.insert(code as usize, index);
        index
    }

    unsafe fn read_code_info(&mut self, code: *mut ffi::PyCodeObject) -> CodeInfo {
        let py = self.py;
        let code = Bound::from_borrowed_ptr(py, code as *mut ffi::PyObject);
        // Code objects are of the exact builtin `code` type (it cannot be
        // subclassed), so these reads are plain member descriptors.
        let read = |name: &Bound<'py, pyo3::types::PyString>| -> Option<String> {
            code.getattr(name).ok().and_then(|v| inert::str_value(&v))
        };
        // The code objects of one module share their file name object: they
        // share one `Text` too, so later passes compare it by address.
        let filename_obj = code.getattr(inert::interned!(py, "co_filename")).ok();
        let filename_addr = filename_obj.as_ref().map_or(0, |f| f.as_ptr() as usize);
        let filename = match self.filenames.get(&filename_addr) {
            Some(text) if filename_addr != 0 => text.clone(),
            _ => {
                let text: Text = filename_obj
                    .and_then(|v| inert::str_value(&v))
                    .unwrap_or_else(|| "<unknown>".to_string())
                    .into();
                if filename_addr != 0 {
                    self.filenames.insert(filename_addr, text.clone());
                }
                text
            }
        };
        let function = if self.has_qualname {
            read(inert::interned!(py, "co_qualname"))
        } else {
            None
        }
        .or_else(|| read(inert::interned!(py, "co_name")))
        .unwrap_or_else(|| "<unknown>".to_string());
        inert::clear_error();
        CodeInfo {
            filename,
            function: Text::from(function),
        }
    }
}
