//! Live processes: the dump directory, dump-on-signal and the raw dump made
//! without the GIL. `tbcollect/_live.py` and `tbcollect/_dumpdir.py` are the
//! Python side.
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

mod handler;

use crate::dumpdir::{current_uid, DumpDir};
use crate::error::Error;
use crate::model::iso8601_utc;
use handler::{
    current_action, handler_address, install_ours, is_default_or_ignore, set_action, FAULTHANDLER,
    FOREIGN, INSTALLED_PID, PYTHON, RAW_REQUEST, RAW_THREAD, WAKE_FD,
};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::io;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Checks (and with `create`, first creates mode 0700) a dump directory:
/// not a symlink, owned by `owner` (default: this process's user), not
/// writable by group or others. Raises DumpDirectoryError.
#[pyfunction]
#[pyo3(signature = (path, *, create = false, owner = None))]
fn check_dump_directory(
    py: Python<'_>,
    path: PathBuf,
    create: bool,
    owner: Option<u32>,
) -> Result<(), Error> {
    let owner = owner.unwrap_or_else(current_uid);
    py.detach(|| DumpDir::open(&path, create, owner).map(|_| ()))
}

/// Writes `text` as a new dump file `tbcollect-<pid>-<time>-<seq>.<extension>`
/// in the (checked) directory; returns its path.
#[pyfunction]
#[pyo3(signature = (text, *, directory, extension))]
fn write_new_dump(
    py: Python<'_>,
    text: &str,
    directory: PathBuf,
    extension: &str,
) -> Result<PathBuf, Error> {
    if !matches!(extension, "txt" | "json") {
        return Err(Error::InvalidOption {
            name: "extension",
            reason: format!("must be \"txt\" or \"json\", got {extension:?}"),
        });
    }
    let data = text.as_bytes();
    py.detach(|| DumpDir::open(&directory, false, current_uid())?.write_new(extension, data))
}

// ---------------------------------------------------------------------------
// Descriptors that live as long as the process (one set per process: a forked
// child makes its own wake-up pipe). They are never closed while installed:
// a signal handler on another thread may be about to write to the pipe, and a
// closed-and-reused descriptor would get that byte.

/// Read end of the self-pipe (the write end is `handler::WAKE_FD`).
static WAKE_READ: AtomicI32 = AtomicI32::new(-1);
/// The pid the pipe was made in.
static PIPE_PID: AtomicI32 = AtomicI32::new(0);
/// faulthandler's descriptor: `/dev/null`, except while a raw dump is written.
static RAW_FD: AtomicI32 = AtomicI32::new(-1);
/// A descriptor of `/dev/null` to point `RAW_FD` back at.
static NULL_FD: AtomicI32 = AtomicI32::new(-1);
/// The beacon: an empty memfd named `tbcollect:<SIGNAL>:<directory>` while
/// our handler is the one installed, -1 otherwise.
static BEACON_FD: AtomicI32 = AtomicI32::new(-1);

/// How a beacon's name starts (it shows in `/proc/PID/fd/N` as
/// `/memfd:tbcollect:SIGQUIT:/path (deleted)`).
pub const BEACON_PREFIX: &str = "tbcollect:";
/// How often the watcher checks that our handler is still the installed one.
const HANDLER_CHECK: Duration = Duration::from_secs(1);

/// Advertises the installation to `tbcollect dump`, which reads it from
/// `/proc/PID/fd`: it tells a tbcollect handler from any other handler of the
/// signal (a gunicorn worker catches SIGQUIT to stop), and names a directory
/// the environment does not show. Linux only; elsewhere there is no beacon.
fn open_beacon(signal_name: &str, directory: &std::path::Path) {
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

fn close_beacon() {
    let fd = BEACON_FD.swap(-1, Ordering::AcqRel);
    if fd >= 0 {
        // SAFETY: our own descriptor, used by nothing else.
        unsafe { libc::close(fd) };
    }
}

/// Whether our handler is still the one installed for `signum`.
fn ours_installed(signum: libc::c_int) -> bool {
    current_action(signum)
        .map(|a| a.sa_sigaction == handler_address())
        .unwrap_or(false)
}

fn pid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::getpid() }
}

fn open_dev_null() -> io::Result<RawFd> {
    // SAFETY: a valid C string; the descriptor is kept for the process.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

/// Makes the pipe (once per process) and faulthandler's descriptors (once).
fn ensure_descriptors() -> io::Result<()> {
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
fn drain_pipe(fd: RawFd) -> u64 {
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

fn wake_watcher() {
    let fd = WAKE_FD.load(Ordering::Acquire);
    if fd >= 0 {
        // SAFETY: one byte to our own pipe.
        unsafe { libc::write(fd, b"Q".as_ptr().cast(), 1) };
    }
}

/// Points `target` at the file `source` refers to, keeping close-on-exec.
fn dup_onto(source: RawFd, target: RawFd) -> io::Result<()> {
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
struct State {
    /// When the signal that asked for the next dump arrived (None: no dump
    /// asked for, or the dumper has taken the request).
    pending_since: Option<Instant>,
    /// Signals received since the dumper last took a request.
    signals: u64,
    /// The first signal no raw dump has answered yet, while the request is
    /// pending: a later signal to a process that is still stuck gets a new
    /// raw dump (an operator asking again), a storm gets one.
    raw_since: Option<Instant>,
    shutdown: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is plain data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Config {
    signum: libc::c_int,
    signal_name: String,
    directory: PathBuf,
    raw_timeout: Option<Duration>,
}

/// The dumper thread's end: waits for the next request without the GIL.
#[pyclass(name = "LiveHandle", module = "tbcollect", frozen)]
pub struct LiveHandle {
    shared: Arc<Shared>,
}

#[pymethods]
impl LiveHandle {
    /// Blocks (without the GIL) until a dump is asked for; returns how many
    /// signals asked for it, or None once uninstalled (and no dump pending). The request counts as
    /// taken only when this returns, i.e. with the GIL in hand: until then the
    /// watcher may still write a raw dump.
    fn wait(&self, py: Python<'_>) -> Option<u64> {
        py.detach(|| {
            let mut st = self.shared.lock();
            while st.pending_since.is_none() && !st.shutdown {
                st = self.shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        });
        let mut st = self.shared.lock();
        // A dump asked for before uninstall() is still made.
        st.pending_since.take()?;
        st.raw_since = None;
        Some(std::mem::take(&mut st.signals).max(1))
    }
}

// ---------------------------------------------------------------------------
// The watcher thread.

fn block_signals_except(signum: libc::c_int) {
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

fn report(message: &str) {
    // Straight to the descriptor: sys.stderr's lock may be held by the very
    // thread that is stuck.
    let line = format!("tbcollect: {message}\n");
    // SAFETY: writes our buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

fn watch(config: Arc<Config>, shared: Arc<Shared>) {
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
fn write_raw_dump(config: &Config, waited: Duration) -> Result<PathBuf, Error> {
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

struct Installation {
    config: Arc<Config>,
    shared: Arc<Shared>,
    watcher: Option<JoinHandle<()>>,
    /// The exact C-level action before install(), put back by uninstall().
    original: libc::sigaction,
    /// `signal.getsignal()` before install().
    original_py: Py<PyAny>,
    /// The Python-level handler install() gave `signal.signal`.
    handler: Py<PyAny>,
}

// SAFETY: `sigaction` holds plain data (a handler address, a mask, flags);
// the Python objects are only touched with the GIL held.
unsafe impl Send for Installation {}

/// The installation of this process. Locked only with the GIL held, never
/// across a wait or a call into Python, so it is free whenever a thread
/// holding the GIL forks.
static CURRENT: Mutex<Option<Installation>> = Mutex::new(None);

fn current() -> MutexGuard<'static, Option<Installation>> {
    CURRENT.lock().unwrap_or_else(|e| e.into_inner())
}

fn os_error(what: &str, e: io::Error) -> PyErr {
    PyRuntimeError::new_err(format!("tbcollect: {what}: {e}"))
}

fn start_watcher(config: &Arc<Config>, shared: &Arc<Shared>) -> PyResult<JoinHandle<()>> {
    let (config, shared) = (config.clone(), shared.clone());
    std::thread::Builder::new()
        .name("tbcollect-watch".into())
        .spawn(move || watch(config, shared))
        .map_err(|e| os_error("cannot start the watcher thread", e))
}

/// Installs the C-level handler for `signum` (after `signal.signal(signum,
/// handler)` and, with a raw timeout, faulthandler's registration under it)
/// and starts the watcher. Returns the dumper's handle.
#[pyfunction]
#[pyo3(signature = (signum, handler, *, directory, signal_name, raw_timeout = None, chain_python = true))]
fn live_install(
    py: Python<'_>,
    signum: i32,
    handler: Bound<'_, PyAny>,
    directory: PathBuf,
    signal_name: String,
    raw_timeout: Option<f64>,
    chain_python: bool,
) -> PyResult<LiveHandle> {
    // Not held across the calls below: signal.signal() runs pending Python
    // signal handlers, which may call back into tbcollect.
    if current().is_some() {
        return Err(PyRuntimeError::new_err("tbcollect: already installed"));
    }
    ensure_descriptors().map_err(|e| os_error("cannot create the wake-up pipe", e))?;
    drain_pipe(WAKE_READ.load(Ordering::Acquire));
    let signal = py.import("signal")?;
    let faulthandler = py.import("faulthandler")?;

    // faulthandler keeps one registration per signal: ours replaces any other.
    faulthandler.call_method1("unregister", (signum,))?;
    let original = current_action(signum).map_err(|e| os_error("sigaction", e))?;
    let original_py = signal.call_method1("getsignal", (signum,))?.unbind();
    signal.call_method1("signal", (signum, &handler))?;
    let python = current_action(signum).map_err(|e| os_error("sigaction", e))?;

    let rollback = |py: Python<'_>| {
        let _ = faulthandler.call_method1("unregister", (signum,));
        if !original_py.is_none(py) {
            let _ = signal.call_method1("signal", (signum, original_py.bind(py)));
        }
        let _ = set_action(signum, &original);
    };
    if raw_timeout.is_some() {
        let kwargs = PyDict::new(py);
        kwargs.set_item("file", RAW_FD.load(Ordering::Acquire))?;
        kwargs.set_item("all_threads", true)?;
        kwargs.set_item("chain", false)?;
        if let Err(e) = faulthandler.call_method("register", (signum,), Some(&kwargs)) {
            rollback(py);
            return Err(e);
        }
        match current_action(signum) {
            Ok(action) => FAULTHANDLER.set(&action),
            Err(e) => {
                rollback(py);
                return Err(os_error("sigaction", e));
            }
        }
    } else {
        FAULTHANDLER.clear();
    }
    // Without a Python-level handler to pass the signal on to, CPython's
    // handler would only make the main thread run a handler that does nothing.
    if chain_python {
        PYTHON.set(&python);
    } else {
        PYTHON.clear();
    }
    if is_default_or_ignore(original.sa_sigaction)
        || original.sa_sigaction == python.sa_sigaction
        || original.sa_sigaction == handler_address()
    {
        FOREIGN.clear();
    } else {
        FOREIGN.set(&original);
    }

    let config = Arc::new(Config {
        signum,
        signal_name,
        directory,
        raw_timeout: raw_timeout.map(Duration::from_secs_f64),
    });
    let shared = Arc::new(Shared::default());
    let watcher = match start_watcher(&config, &shared) {
        Ok(w) => w,
        Err(e) => {
            rollback(py);
            return Err(e);
        }
    };
    INSTALLED_PID.store(pid(), Ordering::Release);
    if let Err(e) = install_ours(signum, &python) {
        INSTALLED_PID.store(0, Ordering::Release);
        shared.lock().shutdown = true;
        wake_watcher();
        let _ = watcher.join();
        rollback(py);
        return Err(os_error("sigaction", e));
    }
    open_beacon(&config.signal_name, &config.directory);
    *current() = Some(Installation {
        config,
        shared: shared.clone(),
        watcher: Some(watcher),
        original,
        original_py,
        handler: handler.unbind(),
    });
    Ok(LiveHandle { shared })
}

/// Removes the handler, putting back what was there before (unless someone
/// replaced ours since: then theirs stays), and stops the watcher. Returns
/// False when nothing was installed.
#[pyfunction]
fn live_uninstall(py: Python<'_>) -> PyResult<bool> {
    let Some(mut inst) = current().take() else {
        return Ok(false);
    };
    let signum = inst.config.signum;
    INSTALLED_PID.store(0, Ordering::Release);
    let now = current_action(signum).map_err(|e| os_error("sigaction", e))?;
    let ours_on_top = now.sa_sigaction == handler_address();
    let signal = py.import("signal")?;
    if inst.config.raw_timeout.is_some() {
        py.import("faulthandler")?
            .call_method1("unregister", (signum,))?;
    }
    if ours_on_top {
        let still_ours = signal
            .call_method1("getsignal", (signum,))?
            .is(inst.handler.bind(py));
        if still_ours && !inst.original_py.is_none(py) {
            signal.call_method1("signal", (signum, inst.original_py.bind(py)))?;
        }
        set_action(signum, &inst.original).map_err(|e| os_error("sigaction", e))?;
    } else {
        // faulthandler.unregister() put back what it found under it; the
        // handler that replaced ours is the one to keep.
        set_action(signum, &now).map_err(|e| os_error("sigaction", e))?;
    }
    PYTHON.clear();
    FOREIGN.clear();
    FAULTHANDLER.clear();
    close_beacon();
    {
        // Signals already received but not yet seen by the watcher still get
        // their dump (the handler writes no more: INSTALLED_PID is 0).
        let signals = drain_pipe(WAKE_READ.load(Ordering::Acquire));
        let mut st = inst.shared.lock();
        if signals > 0 {
            st.signals += signals;
            st.pending_since.get_or_insert_with(Instant::now);
            // No raw dump now: the watcher is stopping.
        }
        st.shutdown = true;
    }
    inst.shared.wake.notify_all();
    wake_watcher();
    if let Some(watcher) = inst.watcher.take() {
        py.detach(|| {
            let _ = watcher.join();
        });
    }
    Ok(true)
}

/// In a forked child: the parent's watcher and dumper do not exist here. Give
/// the child its own pipe and watcher (when our handler is still the one
/// installed) and return the handle for its new dumper, else None.
#[pyfunction]
fn live_after_fork_child(_py: Python<'_>) -> PyResult<Option<LiveHandle>> {
    let mut guard = current();
    let Some(inst) = guard.as_mut() else {
        return Ok(None);
    };
    // The parent's thread is gone; its handle must not be joined or dropped
    // through pthread calls about a thread this process never had.
    std::mem::forget(inst.watcher.take());
    // The parent may have been in the middle of a raw dump.
    RAW_REQUEST.store(false, Ordering::Release);
    let _ = dup_onto(
        NULL_FD.load(Ordering::Acquire),
        RAW_FD.load(Ordering::Acquire),
    );
    if !ours_installed(inst.config.signum) {
        // Someone replaced the handler in the parent: nothing to carry over.
        close_beacon();
        *guard = None;
        return Ok(None);
    }
    ensure_descriptors().map_err(|e| os_error("cannot create the wake-up pipe", e))?;
    // The parent's state may have been locked by a thread that is gone.
    let shared = Arc::new(Shared::default());
    std::mem::forget(std::mem::replace(&mut inst.shared, shared.clone()));
    inst.watcher = Some(start_watcher(&inst.config, &shared)?);
    INSTALLED_PID.store(pid(), Ordering::Release);
    Ok(Some(LiveHandle { shared }))
}

/// Whether this process has a dump handler installed and still in place
/// (other code may have replaced it with `signal.signal`).
#[pyfunction]
fn live_active() -> bool {
    let Some(signum) = current().as_ref().map(|inst| inst.config.signum) else {
        return false;
    };
    INSTALLED_PID.load(Ordering::Acquire) == pid() && ours_installed(signum)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BEACON_PREFIX", BEACON_PREFIX)?;
    m.add_class::<LiveHandle>()?;
    m.add_function(wrap_pyfunction!(live_active, m)?)?;
    m.add_function(wrap_pyfunction!(check_dump_directory, m)?)?;
    m.add_function(wrap_pyfunction!(write_new_dump, m)?)?;
    m.add_function(wrap_pyfunction!(live_install, m)?)?;
    m.add_function(wrap_pyfunction!(live_uninstall, m)?)?;
    m.add_function(wrap_pyfunction!(live_after_fork_child, m)?)?;
    Ok(())
}
