//! The C-level signal handler and the little state it reads.
//!
//! A Python-level `signal.signal` handler runs only on the main thread,
//! between bytecodes: never while the main thread is stuck in C code holding
//! the GIL. This handler runs in whichever thread the kernel picks, at once,
//! and does only async-signal-safe work: it writes one byte to a self-pipe
//! (read by the watcher thread, which holds no GIL) and then calls the handler
//! it replaced (CPython's own, which wakes the Python-level handler and
//! asyncio's `set_wakeup_fd`). Everything it reads is an atomic, written
//! before the handler is installed.
//!
//! On request of the watcher (and only on the watcher's own thread) it calls
//! faulthandler's handler instead, which writes the raw stacks of every thread
//! to faulthandler's descriptor without the GIL.

use libc::{c_int, c_void, sighandler_t, siginfo_t};
use std::io;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

/// The pid that installed the handler; 0 when not installed. After a fork the
/// child's pid differs until it has its own installation, so the handler
/// never writes to the parent's pipe.
pub static INSTALLED_PID: AtomicI32 = AtomicI32::new(0);
/// The write end of the self-pipe, -1 when none.
pub static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// `pthread_self()` of the watcher thread, and whether it asked for a raw dump.
pub static RAW_THREAD: AtomicUsize = AtomicUsize::new(0);
pub static RAW_REQUEST: AtomicBool = AtomicBool::new(false);

/// A handler to call: its address and whether it takes `siginfo_t`.
pub struct Chained {
    address: AtomicUsize,
    siginfo: AtomicBool,
}

impl Chained {
    pub const fn new() -> Self {
        Chained {
            address: AtomicUsize::new(0),
            siginfo: AtomicBool::new(false),
        }
    }

    pub fn set(&self, action: &libc::sigaction) {
        self.siginfo
            .store(action.sa_flags & libc::SA_SIGINFO != 0, Ordering::Release);
        self.address.store(action.sa_sigaction, Ordering::Release);
    }

    pub fn clear(&self) {
        self.address.store(0, Ordering::Release);
    }

    /// Whether a handler to call is set (not SIG_DFL, SIG_IGN or cleared).
    pub fn is_set(&self) -> bool {
        !is_default_or_ignore(self.address.load(Ordering::Acquire))
    }

    /// Whether the handler is SIG_DFL (also when cleared).
    pub fn is_default(&self) -> bool {
        self.address.load(Ordering::Acquire) == libc::SIG_DFL
    }

    /// Calls the handler unless it is SIG_DFL or SIG_IGN: a default action
    /// (SIGQUIT's is to dump core) must never run because we chained.
    pub fn call(&self, signum: c_int, info: *mut siginfo_t, context: *mut c_void) {
        let address = self.address.load(Ordering::Acquire);
        if is_default_or_ignore(address) {
            return;
        }
        // SAFETY: the address was read from sigaction() as a handler of the
        // kind the SA_SIGINFO flag says.
        unsafe {
            if self.siginfo.load(Ordering::Acquire) {
                let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                    std::mem::transmute(address);
                f(signum, info, context);
            } else {
                let f: extern "C" fn(c_int) = std::mem::transmute(address);
                f(signum);
            }
        }
    }
}

/// CPython's handler that `signal.signal` installed (wakes the Python-level
/// handler and the wakeup fd), when there is a Python-level handler to pass
/// the signal on to.
pub static PYTHON: Chained = Chained::new();
/// A C-level handler someone else had installed before us (not through the
/// signal module), called too so it keeps working.
pub static FOREIGN: Chained = Chained::new();
/// faulthandler's handler for the signal, registered without chaining.
pub static FAULTHANDLER: Chained = Chained::new();

pub fn is_default_or_ignore(address: usize) -> bool {
    address == libc::SIG_DFL || address == libc::SIG_IGN
}

#[cfg(any(target_os = "linux", target_os = "android"))]
unsafe fn errno_location() -> *mut c_int {
    libc::__errno_location()
}
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
unsafe fn errno_location() -> *mut c_int {
    libc::__error()
}

extern "C" fn on_signal(signum: c_int, info: *mut siginfo_t, context: *mut c_void) {
    // SAFETY: errno is thread-local; it is restored so the interrupted code
    // never sees it change.
    let saved_errno = unsafe { *errno_location() };
    // SAFETY: getpid is async-signal-safe.
    let ours = INSTALLED_PID.load(Ordering::Acquire) == unsafe { libc::getpid() };
    if ours
        && RAW_REQUEST.load(Ordering::Acquire)
        // SAFETY: pthread_self is async-signal-safe.
        && RAW_THREAD.load(Ordering::Acquire) == unsafe { libc::pthread_self() } as usize
        && RAW_REQUEST.swap(false, Ordering::AcqRel)
    {
        FAULTHANDLER.call(signum, info, context);
    } else {
        if ours {
            let fd = WAKE_FD.load(Ordering::Acquire);
            if fd >= 0 {
                // Non-blocking: when the pipe is full a wake-up is already
                // pending, which is exactly how signals coalesce.
                // SAFETY: write is async-signal-safe; one byte from the stack.
                unsafe { libc::write(fd, b"S".as_ptr().cast(), 1) };
            }
        }
        PYTHON.call(signum, info, context);
        FOREIGN.call(signum, info, context);
    }
    // SAFETY: as above.
    unsafe { *errno_location() = saved_errno };
}

/// The address of our handler, to recognise it in `sigaction()` results.
pub fn handler_address() -> usize {
    on_signal as *const () as usize
}

/// The current action of `signum`.
pub fn current_action(signum: c_int) -> io::Result<libc::sigaction> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`.
    if unsafe { libc::sigaction(signum, std::ptr::null(), old.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigaction filled it in.
    Ok(unsafe { old.assume_init() })
}

pub fn set_action(signum: c_int, action: &libc::sigaction) -> io::Result<()> {
    // SAFETY: a fully initialised action.
    if unsafe { libc::sigaction(signum, action, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts our handler in place, with the mask and the restart/alternate-stack
/// flags of the handler it chains to, so interrupted system calls behave as
/// they did before.
pub fn install_ours(signum: c_int, like: &libc::sigaction) -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value (no handler, empty mask).
    let mut action: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
    action.sa_sigaction = handler_address() as sighandler_t;
    action.sa_mask = like.sa_mask;
    action.sa_flags = libc::SA_SIGINFO | (like.sa_flags & (libc::SA_RESTART | libc::SA_ONSTACK));
    set_action(signum, &action)
}
