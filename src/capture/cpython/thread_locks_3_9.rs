//! `_thread.lock` and `_thread.RLock` as CPython 3.9 to 3.12 lay them out
//! (`lockobject`, `rlockobject` in `Modules/_threadmodule.c`): the same in
//! each of those versions, so their files include this one
//! (`#[path] mod thread_locks`) rather than four copies. Each lock wraps an
//! OS semaphore, whose futex word a thread blocked on it waits on.

use pyo3::ffi;
use std::os::raw::{c_char, c_ulong, c_void};

/// `lockobject` (`Modules/_threadmodule.c`): the OS lock, the weakref
/// list, and the `locked` flag the lock's methods keep.
#[repr(C)]
pub struct Lock {
    ob_base: ffi::PyObject,
    lock_lock: *mut c_void,
    in_weakreflist: *mut ffi::PyObject,
    locked: c_char,
}

/// `rlockobject`: the OS lock, the owner's ident, the recursion count.
#[repr(C)]
pub struct RLock {
    ob_base: ffi::PyObject,
    rlock_lock: *mut c_void,
    rlock_owner: c_ulong,
    rlock_count: c_ulong,
    in_weakreflist: *mut ffi::PyObject,
}

impl super::super::ThreadLock for Lock {
    unsafe fn read(this: *const Self) -> super::super::LockFields {
        let os_lock = std::ptr::addr_of!((*this).lock_lock).read_volatile();
        super::super::LockFields {
            os_lock: os_lock as u64,
            owner: 0,
            held: std::ptr::addr_of!((*this).locked).read_volatile() != 0,
        }
    }
}

impl super::super::ThreadLock for RLock {
    unsafe fn read(this: *const Self) -> super::super::LockFields {
        let os_lock = std::ptr::addr_of!((*this).rlock_lock).read_volatile();
        // `c_ulong` is 32 bits on some platforms.
        #[allow(clippy::unnecessary_cast)]
        let owner = std::ptr::addr_of!((*this).rlock_owner).read_volatile() as u64;
        super::super::LockFields {
            os_lock: os_lock as u64,
            owner,
            held: owner != 0,
        }
    }
}
