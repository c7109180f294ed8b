//! Dump on signal, and the raw dump made without the GIL. `tbcollect/_live.py`
//! is the Python side; `bindings::live` the extension's face of it.
//!
//! How a signal becomes a dump:
//!
//! 1. [`handler`]: the C-level handler writes a byte to a self-pipe and
//!    chains to CPython's handler. It runs even while the main thread is stuck
//!    in C code holding the GIL, and never touches anything that can block.
//! 2. The watcher, a Rust thread that never takes the GIL, reads the pipe and
//!    marks a dump as requested (signals arriving before the dump starts
//!    coalesce into it), waking the dumper.
//! 3. The dumper, a Python thread blocked in [`LiveHandle::wait`] without the
//!    GIL, takes the request as soon as it has the GIL again and makes the full
//!    dump: outside the interrupted frame, so nothing the interrupted code
//!    holds can deadlock it.
//! 4. When the dumper has not taken the request within `raw_timeout` (some
//!    thread holds the GIL and does not let go), the watcher writes a raw dump
//!    anyway: it points faulthandler's descriptor at a new dump file and sends
//!    the signal to its own thread, where the handler calls faulthandler's
//!    handler, which reads every thread's stack without the GIL.

pub(crate) use super::handler::{
    current_action, handler_address, install_ours, is_default_or_ignore, set_action, FAULTHANDLER,
    FOREIGN, INSTALLED_PID, PYTHON, RAW_REQUEST, RAW_THREAD, WAKE_FD,
};
use crate::error::Error;
use crate::live::dumpdir::{current_uid, DumpDir};
use crate::model::iso8601_utc;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::io;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Descriptors that live as long as the process (one set per process: a forked
// child makes its own wake-up pipe). They are never closed while installed:
// a signal handler on another thread may be about to write to the pipe, and a
// closed-and-reused descriptor would get that byte.

/// Read end of the self-pipe (the write end is `handler::WAKE_FD`).
pub(crate) static WAKE_READ: AtomicI32 = AtomicI32::new(-1);
/// The pid the pipe was made in.
pub(crate) static PIPE_PID: AtomicI32 = AtomicI32::new(0);
/// faulthandler's descriptor: `/dev/null`, except while a raw dump is written.
pub(crate) static RAW_FD: AtomicI32 = AtomicI32::new(-1);
/// A descriptor of `/dev/null` to point `RAW_FD` back at.
pub(crate) static NULL_FD: AtomicI32 = AtomicI32::new(-1);
/// The beacon: an empty memfd named `tbcollect:<SIGNAL>:<directory>` while
/// our handler is the one installed, -1 otherwise.
pub(crate) static BEACON_FD: AtomicI32 = AtomicI32::new(-1);

/// How a beacon's name starts (it shows in `/proc/PID/fd/N` as
/// `/memfd:tbcollect:SIGQUIT:/path (deleted)`).
pub const BEACON_PREFIX: &str = "tbcollect:";
/// How often the watcher checks that our handler is still the installed one.
pub(crate) const HANDLER_CHECK: Duration = Duration::from_secs(1);

/// Advertises the installation to `tbcollect dump`, which reads it from
/// `/proc/PID/fd`: it tells a tbcollect handler from any other handler of the
/// signal (a gunicorn worker catches SIGQUIT to stop), and names a directory
/// the environment does not show. Linux only; elsewhere there is no beacon.
pub(crate) fn open_beacon(signal_name: &str, directory: &std::path::Path) {
    close_beacon();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut name = format!("{BEACON_PREFIX}{signal_name}:").into_bytes();
        name.extend_from_slice(directory.as_os_str().as_bytes());
        // The kernel limits memfd names to 249 bytes; a longer directory is
        // found through the environment or --directory instead.
        if name.len() > 249 {
            return;
        }
        let Ok(name) = std::ffi::CString::new(name) else {
            return;
        };
        // SAFETY: a valid C string; the descriptor is owned through BEACON_FD.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd >= 0 {
            BEACON_FD.store(fd, Ordering::Release);
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (signal_name, directory);
}

pub(crate) fn close_beacon() {
    let fd = BEACON_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        // SAFETY: our own descriptor, used by nothing else.
        unsafe { libc::close(fd) };
    }
}

/// Whether our handler is still the one installed for `signum`.
pub(crate) fn ours_installed(signum: libc::c_int) -> bool {
    current_action(signum)
        .map(|a| a.sa_sigaction == handler_address())
        .unwrap_or(false)
}

pub(crate) fn pid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

pub(crate) fn open_dev_null() -> io::Result<RawFd> {
    // SAFETY: a valid C string; the descriptor is kept for the process.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

/// Makes the pipe (once per process) and faulthandler's descriptors (once).
pub(crate) fn ensure_descriptors() -> io::Result<()> {
    if NULL_FD.load(Ordering::Acquire) < 0 {
        let null = open_dev_null()?;
        let raw = open_dev_null()?;
        NULL_FD.store(null, Ordering::Release);
        RAW_FD.store(raw, Ordering::Release);
    }
    if PIPE_PID.load(Ordering::Acquire) != pid() {
        let mut fds = [-1; 2];
        // SAFETY: fds has room for two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        for fd in fds {
            // SAFETY: descriptors we just made.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
            }
        }
        let old_read = WAKE_READ.swap(fds[0], Ordering::AcqRel);
        let old_write = WAKE_FD.swap(fds[1], Ordering::AcqRel);
        // Only reached in a forked child (or the first time): the parent's
        // pipe is not ours to read, and the handler here does not write to
        // it (its pid check fails until the child is installed).
        for fd in [old_read, old_write] {
            if fd >= 0 {
                // SAFETY: descriptors inherited from the parent, unused here.
                unsafe { libc::close(fd) };
            }
        }
        PIPE_PID.store(pid(), Ordering::Release);
    }
    Ok(())
}

/// Empties the pipe; returns how many signal bytes it held.
pub(crate) fn drain_pipe(fd: RawFd) -> u64 {
    let mut signals = 0;
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: reads into our buffer from our non-blocking pipe.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            signals += buf[..n as usize].iter().filter(|b| **b == b'S').count() as u64;
        } else if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        } else {
            return signals;
        }
    }
}

pub(crate) fn wake_watcher() {
    let fd = WAKE_FD.load(Ordering::Acquire);
    if fd >= 0 {
        // SAFETY: one byte to our own pipe.
        unsafe { libc::write(fd, b"Q".as_ptr().cast(), 1) };
    }
}

/// Points `target` at the file `source` refers to, keeping close-on-exec.
pub(crate) fn dup_onto(source: RawFd, target: RawFd) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
    // SAFETY: both are open descriptors.
    let r = unsafe { libc::dup3(source, target, libc::O_CLOEXEC) };
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
    // SAFETY: both are open descriptors.
    let r = unsafe {
        let r = libc::dup2(source, target);
        if r >= 0 {
            libc::fcntl(target, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        r
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The request state shared by the watcher and the dumper.

#[derive(Default)]
pub(crate) struct State {
    /// When the signal that asked for the next dump arrived (None: no dump
    /// asked for, or the dumper has taken the request).
    pub(crate) pending_since: Option<Instant>,
    /// Signals received since the dumper last took a request.
    pub(crate) signals: u64,
    /// The first signal no raw dump has answered yet, while the request is
    /// pending: a later signal to a process that is still stuck gets a new
    /// raw dump (an operator asking again), a storm gets one.
    pub(crate) raw_since: Option<Instant>,
    pub(crate) shutdown: bool,
}

#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) wake: Condvar,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is plain data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Config {
    pub(crate) signum: libc::c_int,
    pub(crate) signal_name: String,
    pub(crate) directory: PathBuf,
    pub(crate) raw_timeout: Option<Duration>,
}

// ---------------------------------------------------------------------------
// The watcher thread.

pub(crate) fn block_signals_except(signum: libc::c_int) {
    // The watcher must receive its own raw-dump signal; every other signal
    // is for the application's threads, except the ones a fault in this
    // thread raises, which faulthandler should still report.
    // SAFETY: plain sigset manipulation on a local set.
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed().assume_init();
        libc::sigfillset(&mut set);
        for keep in [
            signum,
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGABRT,
        ] {
            libc::sigdelset(&mut set, keep);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

pub(crate) fn report(message: &str) {
    // Straight to the descriptor: sys.stderr's lock may be held by the very
    // thread that is stuck.
    let line = format!("tbcollect: {message}\n");
    // SAFETY: writes our buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

pub(crate) fn watch(config: Arc<Config>, shared: Arc<Shared>) {
    block_signals_except(config.signum);
    // SAFETY: no preconditions.
    RAW_THREAD.store(unsafe { libc::pthread_self() } as usize, Ordering::Release);
    let read_fd = WAKE_READ.load(Ordering::Acquire);
    let mut checked = Instant::now();
    loop {
        // Code that calls signal.signal() (a server setting up its own
        // handlers) silently replaces ours: then stop advertising, so that
        // `tbcollect dump` does not send this process a signal that now means
        // something else.
        if checked.elapsed() >= HANDLER_CHECK {
            checked = Instant::now();
            if !ours_installed(config.signum) {
                close_beacon();
                report(&format!(
                    "the {} handler was replaced (by a signal.signal() call?): \
                     no more dumps on {} in process {}",
                    config.signal_name,
                    config.signal_name,
                    std::process::id()
                ));
                return;
            }
        }
        let timeout_ms: libc::c_int = {
            let st = shared.lock();
            if st.shutdown {
                return;
            }
            let check = HANDLER_CHECK.saturating_sub(checked.elapsed());
            let wait = match (st.raw_since, config.raw_timeout) {
                (Some(since), Some(limit)) => check.min(limit.saturating_sub(since.elapsed())),
                _ => check,
            };
            // Round up so the deadline has passed when poll returns.
            wait.as_millis().min(i32::MAX as u128) as libc::c_int + 1
        };
        let mut pfd = libc::pollfd {
            fd: read_fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        let signals = drain_pipe(read_fd);
        let mut st = shared.lock();
        if st.shutdown {
            return;
        }
        if signals > 0 {
            st.signals += signals;
            let now = Instant::now();
            st.pending_since.get_or_insert(now);
            st.raw_since.get_or_insert(now);
            shared.wake.notify_all();
        }
        let due = match (st.raw_since, config.raw_timeout) {
            (Some(since), Some(limit)) if since.elapsed() >= limit => Some(since.elapsed()),
            _ => None,
        };
        if let Some(waited) = due {
            st.raw_since = None;
            drop(st);
            if let Err(e) = write_raw_dump(&config, waited) {
                report(&format!("raw dump failed: {e}"));
            }
        }
    }
}

/// Writes a raw dump: a header, faulthandler's stacks of every thread (read
/// without the GIL), a footer; linked into place whole like every dump.
pub(crate) fn write_raw_dump(config: &Config, waited: Duration) -> Result<PathBuf, Error> {
    let dir = DumpDir::open(&config.directory, true, current_uid())?;
    let mut temp = dir.create_temp()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    temp.write_all(
        format!(
            "tbcollect: pid {} at {}, raw dump\n\
             reason: signal {}; the full dump did not start within {:.1} s\n\
             \n\
             Some thread holds the GIL and does not let go (stuck in C code?), so these\n\
             are the Python stacks of every thread as faulthandler reads them without\n\
             the GIL (most recent call first). The full dump follows if the GIL is\n\
             released.\n\n",
            std::process::id(),
            iso8601_utc(now),
            config.signal_name,
            waited.as_secs_f64(),
        )
        .as_bytes(),
    )?;
    let raw_fd = RAW_FD.load(Ordering::Acquire);
    let null_fd = NULL_FD.load(Ordering::Acquire);
    let fail = |e: io::Error| Error::Write {
        path: config.directory.clone(),
        source: e,
    };
    dup_onto(temp.raw_fd(), raw_fd).map_err(fail)?;
    RAW_REQUEST.store(true, Ordering::Release);
    // A signal sent to the calling thread is delivered before pthread_kill
    // returns, so faulthandler has written everything by then.
    // SAFETY: signalling our own thread, which has the signal unblocked.
    unsafe { libc::pthread_kill(libc::pthread_self(), config.signum) };
    let delivered = !RAW_REQUEST.swap(false, Ordering::AcqRel);
    dup_onto(null_fd, raw_fd).map_err(fail)?;
    if !delivered {
        temp.write_all(b"(faulthandler did not run: the signal was not delivered)\n")?;
    }
    temp.write_all(b"\nend of raw dump\n")?;
    temp.publish("txt")
}

// ---------------------------------------------------------------------------
// Installation.

pub(crate) struct Installation {
    pub(crate) config: Arc<Config>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) watcher: Option<JoinHandle<()>>,
    /// The exact C-level action before install(), put back by uninstall().
    pub(crate) original: libc::sigaction,
    /// `signal.getsignal()` before install().
    pub(crate) original_py: Py<PyAny>,
    /// The Python-level handler install() gave `signal.signal`.
    pub(crate) handler: Py<PyAny>,
}

// SAFETY: `sigaction` holds plain data (a handler address, a mask, flags);
// the Python objects are only touched with the GIL held.
unsafe impl Send for Installation {}

/// The installation of this process. Locked only with the GIL held, never
/// across a wait or a call into Python, so it is free whenever a thread
/// holding the GIL forks.
pub(crate) static CURRENT: Mutex<Option<Installation>> = Mutex::new(None);

pub(crate) fn current() -> MutexGuard<'static, Option<Installation>> {
    CURRENT.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn os_error(what: &str, e: io::Error) -> PyErr {
    PyRuntimeError::new_err(format!("tbcollect: {what}: {e}"))
}

pub(crate) fn start_watcher(
    config: &Arc<Config>,
    shared: &Arc<Shared>,
) -> PyResult<JoinHandle<()>> {
    let (config, shared) = (config.clone(), shared.clone());
    std::thread::Builder::new()
        .name("tbcollect-watch".into())
        .spawn(move || watch(config, shared))
        .map_err(|e| os_error("cannot start the watcher thread", e))
}
