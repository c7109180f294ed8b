//! The locks a blocked thread's innermost frame refers to, and who holds
//! them, read from the lock objects' C structs: no method is called, so no
//! user code runs (a subclass's `_is_owned`, a proxy's `__getattr__`).
//!
//! The structs are each version's (`cpython::current::Lock`, `RLock`,
//! read through [`ThreadLock`]); the type's size is checked against them
//! before any field is read. Up to 3.12 each lock wraps an OS semaphore,
//! whose address a thread blocked on it waits on (the `futex` the OS
//! reports); from 3.13 on locks park threads elsewhere, and only a single
//! held lock is taken (see [`crate::capture::waits::waited_lock`]).

use crate::capture::cpython::{current, LockFields, ThreadLock};
use crate::capture::inert;
use crate::capture::waits::{LockKind, LockRef, ThreadWait};
use pyo3::ffi;
use pyo3::prelude::*;

/// The lock types of this interpreter, found once per capture.
pub struct LockTypes {
    rlock: *mut ffi::PyTypeObject,
    lock: Option<*mut ffi::PyTypeObject>,
    condition: Option<*mut ffi::PyTypeObject>,
}

impl LockTypes {
    /// `Err` says why lock holders cannot be read in this interpreter.
    pub fn new(py: Python<'_>) -> Result<LockTypes, String> {
        let thread = inert::imported_module(py, c"_thread").ok_or("_thread is not imported")?;
        let rlock = inert::module_attr(&thread, c"RLock")
            .and_then(|t| inert::as_type(&t))
            .ok_or("_thread.RLock is not a type")?;
        // SAFETY: a type object from the `_thread` module, which sys.modules holds.
        let size = unsafe { (*rlock).tp_basicsize } as usize;
        if size != std::mem::size_of::<current::RLock>() || cfg!(Py_GIL_DISABLED) {
            return Err(format!(
                "_thread.RLock is {size} bytes, not the layout this build reads"
            ));
        }
        let lock = inert::module_attr(&thread, c"LockType").and_then(|t| inert::as_type(&t));
        let condition = inert::imported_module(py, c"threading")
            .and_then(|m| inert::module_attr(&m, c"Condition"))
            .and_then(|t| inert::as_type(&t));
        Ok(LockTypes {
            rlock,
            lock,
            condition,
        })
    }

    /// `obj` as a lock named `name`, if it is one (a `Condition` stands for
    /// the lock it wraps).
    fn lock_of(&self, name: &str, obj: &Bound<'_, PyAny>, depth: u8) -> Option<LockRef> {
        let ptr = obj.as_ptr();
        // SAFETY: `obj` is a live object; only its type pointer is read.
        let tp = unsafe { ffi::Py_TYPE(ptr) };
        let fields = if tp == self.rlock {
            // SAFETY: the type is exactly `_thread.RLock`, whose size was
            // checked to be this version's `rlockobject`.
            Some((LockKind::RLock, unsafe {
                current::RLock::read(ptr as *const current::RLock)
            }))
        } else if Some(tp) == self.lock {
            // SAFETY: a `_thread.lock`; its fields are read only when the
            // type is at least this version's `lockobject`.
            let size = unsafe { (*tp).tp_basicsize } as usize;
            let fields = if size >= std::mem::size_of::<current::Lock>() {
                // SAFETY: as above, the size checked.
                unsafe { current::Lock::read(ptr as *const current::Lock) }
            } else {
                LockFields::default()
            };
            Some((LockKind::Lock, fields))
        } else {
            None
        };
        if let Some((kind, fields)) = fields {
            return Some(LockRef {
                name: name.to_string(),
                addr: ptr as u64,
                kind,
                os_lock: fields.os_lock,
                owner: fields.owner,
                held: fields.held,
            });
        }
        if depth == 0 && Some(tp) == self.condition {
            let inner = inert::instance_attr(obj, c"_lock")?;
            return self.lock_of(name, &inner, 1);
        }
        None
    }
}

/// The locks the innermost frame `top` of a blocked thread refers to: its
/// fast locals, the attributes of its `self`, and the globals its code names.
pub fn locks_of_frame(types: &LockTypes, top: &Bound<'_, PyAny>) -> Vec<LockRef> {
    let py = top.py();
    let mut out: Vec<LockRef> = Vec::new();
    let push = |lock: Option<LockRef>, out: &mut Vec<LockRef>| {
        if let Some(lock) = lock {
            if !out.iter().any(|l| l.addr == lock.addr) {
                out.push(lock);
            }
        }
    };
    for (name, value) in crate::capture::framevars::frame_values(top) {
        push(types.lock_of(&name, &value, 0), &mut out);
        if name == "self" {
            if let Some(dict) = inert::instance_dict(&value) {
                for (key, attr) in dict_items(&dict) {
                    push(types.lock_of(&format!("self.{key}"), &attr, 0), &mut out);
                }
            }
        }
    }
    // SAFETY: `top` is a frame (checked); its code and globals are read
    // through the C API, which runs no Python code.
    unsafe {
        if ffi::PyFrame_Check(top.as_ptr()) == 0 {
            return out;
        }
        let f = top.as_ptr() as *mut ffi::PyFrameObject;
        let Some(code) = inert::owned(py, ffi::PyFrame_GetCode(f) as *mut ffi::PyObject) else {
            return out;
        };
        let Some(globals) = frame_globals(top) else {
            return out;
        };
        let Ok(names) = code.getattr("co_names") else {
            inert::clear_error();
            return out;
        };
        let Some(names) = inert::sequence_items(&names) else {
            return out;
        };
        for name in names {
            let Some(text) = inert::str_value(&name) else {
                continue;
            };
            if let Some(value) = inert::dict_get_scan(&globals, &name) {
                push(types.lock_of(&text, &value, 0), &mut out);
            }
        }
    }
    out
}

/// `frame.f_globals`: the frame type cannot be subclassed, so this is its
/// own C getter.
fn frame_globals<'py>(frame: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    match frame.getattr("f_globals") {
        Ok(g) => Some(g),
        Err(_) => {
            inert::clear_error();
            None
        }
    }
}

/// The `str`-keyed entries of a dict, walked in C.
fn dict_items<'py>(dict: &Bound<'py, PyAny>) -> Vec<(String, Bound<'py, PyAny>)> {
    let py = dict.py();
    let mut out = Vec::new();
    // SAFETY: `dict` is checked to be a dict; entries are borrowed and
    // turned into owned references before the next step.
    unsafe {
        if ffi::PyDict_Check(dict.as_ptr()) == 0 {
            return out;
        }
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        let mut v: *mut ffi::PyObject = std::ptr::null_mut();
        while ffi::PyDict_Next(dict.as_ptr(), &mut pos, &mut k, &mut v) != 0 {
            let key = Bound::from_borrowed_ptr(py, k);
            if let Some(name) = inert::str_value(&key) {
                out.push((name, Bound::from_borrowed_ptr(py, v)));
            }
        }
    }
    out
}

/// Parses the system call each blocked thread is in (`syscalls`: thread
/// ident and its `/proc/self/task/<tid>/syscall` line, read by
/// [`crate::capture::enrich::fill_thread_states`]) into `waits`.
#[cfg(not(target_os = "linux"))]
pub fn read_syscalls(_syscalls: &[(u64, String)], _waits: &mut Vec<ThreadWait>) {}

/// Parses the system call each blocked thread is in (`syscalls`: thread
/// ident and its `/proc/self/task/<tid>/syscall` line, read by
/// [`crate::capture::enrich::fill_thread_states`]) into `waits`.
#[cfg(target_os = "linux")]
pub fn read_syscalls(syscalls: &[(u64, String)], waits: &mut Vec<ThreadWait>) {
    for (ident, line) in syscalls {
        let ident = *ident;
        let syscall = crate::capture::waits::parse_syscall(line, sleep_left);
        match waits.iter_mut().find(|w| w.ident == ident) {
            Some(w) => w.syscall = syscall,
            None => waits.push(ThreadWait {
                ident,
                locks: Vec::new(),
                syscall,
            }),
        }
    }
}

#[cfg(target_os = "linux")]
/// Seconds left of a `clock_nanosleep(clock, TIMER_ABSTIME, request, _)`:
/// the request is read from the sleeping thread's stack with
/// `process_vm_readv`, which fails cleanly if the memory is gone.
fn sleep_left(clock: u64, flags: u64, request: u64) -> Option<f64> {
    const TIMER_ABSTIME: u64 = 1;
    if flags & TIMER_ABSTIME == 0 || request == 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let local = libc::iovec {
        iov_base: &mut ts as *mut libc::timespec as *mut libc::c_void,
        iov_len: std::mem::size_of::<libc::timespec>(),
    };
    let remote = libc::iovec {
        iov_base: request as *mut libc::c_void,
        iov_len: std::mem::size_of::<libc::timespec>(),
    };
    // SAFETY: reads our own process's memory into `ts`; an address that is
    // no longer mapped makes the call fail, it does not fault.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n != std::mem::size_of::<libc::timespec>() as isize {
        return None;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into.
    if unsafe { libc::clock_gettime(clock as libc::clockid_t, &mut now) } != 0 {
        return None;
    }
    let secs = |t: &libc::timespec| t.tv_sec as f64 + t.tv_nsec as f64 / 1e9;
    let left = secs(&ts) - secs(&now);
    // A value from a stack that moved on is no deadline: discard the absurd.
    (-1.0..1e7).contains(&left).then_some(left.max(0.0))
}
