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
//!    anyway: CPython's `_Py_DumpTracebackThreads` (faulthandler's own) reads
//!    every thread's stack without the GIL, into memory; [`raw`] names the
//!    threads and the probable GIL holder. Only where that function cannot be
//!    found does the watcher fall back to sending the signal to its own thread,
//!    where the handler calls faulthandler's handler, and only while the
//!    handler of that signal is still ours.
//!
//! The request channel ([`channel`]) is served by the same watcher: a request
//! is handed to the dumper like a signal's, and its dump (or a raw dump) goes
//! back over the connection. It outlives a replaced signal handler.

pub(crate) use super::handler::{
    current_action, handler_address, install_ours, is_default_or_ignore, set_action, FAULTHANDLER,
    FOREIGN, INSTALLED_PID, PYTHON, RAW_REQUEST, RAW_THREAD, WAKE_FD,
};
use crate::error::Error;
use crate::live::channel::{self, Conn, Listener};
use crate::live::dumpdir::{current_uid, DumpDir};
use crate::live::raw;
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
    /// A request from the channel, for the dumper.
    pub(crate) request: Option<Pending>,
    /// The dumper's answer: the request's id and the dump with its format
    /// (or why there is none).
    pub(crate) answer: Option<(u64, Answer)>,
    pub(crate) last_request_id: u64,
    /// When the dumper last took a signal's request: signal dumps are made
    /// at most once per [`SIGNAL_DUMP_INTERVAL`], and the signals received
    /// meanwhile are counted into the next one (a storm of signals must not
    /// fill the disk).
    pub(crate) last_signal_dump: Option<Instant>,
}

/// The dumper's answer to a channel request: (format, dump), or why none.
pub(crate) type Answer = Result<(String, Vec<u8>), String>;

/// A channel request handed to the dumper.
pub(crate) struct Pending {
    pub(crate) id: u64,
    /// None: the format of the process's dump files.
    pub(crate) format: Option<String>,
    /// The dumper has it (with the GIL): too late for a raw dump instead.
    pub(crate) taken: bool,
}

/// At most one dump on a signal per this interval.
pub(crate) const SIGNAL_DUMP_INTERVAL: Duration = Duration::from_secs(1);

impl State {
    /// When the next signal dump may be made.
    pub(crate) fn signal_dump_allowed_at(&self) -> Option<Instant> {
        self.last_signal_dump.map(|t| t + SIGNAL_DUMP_INTERVAL)
    }
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

/// The faults a thread raises on itself: left deliverable in tbcollect's own
/// threads, so that faulthandler still reports a crash there. (`abort()`
/// unblocks SIGABRT itself.)
const OWN_FAULTS: [libc::c_int; 4] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL];

fn set_signal_mask(how: libc::c_int, set: &libc::sigset_t) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value; pthread_sigmask fills `old`.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are valid sigset_t values of ours.
    unsafe { libc::pthread_sigmask(how, set, &mut old) };
    old
}

fn all_signals_but_faults() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value to fill.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain sigset manipulation on a local set.
    unsafe {
        libc::sigfillset(&mut set);
        for keep in OWN_FAULTS {
            libc::sigdelset(&mut set, keep);
        }
    }
    set
}

/// The watcher takes none of the application's signals, its own dump signal
/// included: a signal sent to the process that lands in a thread other than
/// the main one only sets CPython's flag, and a main thread blocked in a read
/// then never runs its Python handler. A thread that unblocks a signal takes
/// one already pending for the process, so the watcher is also started with
/// every signal blocked (see [`spawn_without_signals`]) and never unblocks
/// one but for its own raw-dump request ([`own_signal`]).
pub(crate) fn block_signals() {
    set_signal_mask(libc::SIG_SETMASK, &all_signals_but_faults());
}

/// Spawns a thread that starts with every signal but [`OWN_FAULTS`] blocked:
/// a new thread otherwise starts with its creator's mask, unblocked as it
/// first runs, and may take a signal pending for the process at that moment
/// (under load that is well after the spawn returns).
pub(crate) fn spawn_without_signals<T: Send + 'static>(
    builder: std::thread::Builder,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    let previous = set_signal_mask(libc::SIG_BLOCK, &all_signals_but_faults());
    let spawned = builder.spawn(f);
    set_signal_mask(libc::SIG_SETMASK, &previous);
    spawned
}

/// Runs `f` with `signum` deliverable to this (the watcher's) thread: a
/// signal it sent itself is delivered as the mask opens, before `f` returns
/// from the unblocking call.
fn own_signal<T>(signum: libc::c_int, f: impl FnOnce() -> T) -> T {
    // SAFETY: an all-zero sigset_t is a valid value to fill.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain sigset manipulation on a local set.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signum);
    }
    let result = f();
    set_signal_mask(libc::SIG_UNBLOCK, &set);
    set_signal_mask(libc::SIG_BLOCK, &set);
    result
}

pub(crate) fn report(message: &str) {
    // Straight to the descriptor: sys.stderr's lock may be held by the very
    // thread that is stuck.
    let line = format!("tbcollect: {message}\n");
    // SAFETY: writes our buffer to fd 2.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// `signal_live`: whether our handler is (about to be) installed; the
/// watcher then checks every [`HANDLER_CHECK`] that it still is.
pub(crate) fn watch(
    config: Arc<Config>,
    shared: Arc<Shared>,
    channel: Option<Arc<Listener>>,
    mut signal_live: bool,
) {
    block_signals();
    // SAFETY: no preconditions.
    RAW_THREAD.store(unsafe { libc::pthread_self() } as usize, Ordering::Release);
    let read_fd = WAKE_READ.load(Ordering::Acquire);
    let mut checked = Instant::now();
    let mut last_request: Option<Instant> = None;
    loop {
        // Code that calls signal.signal() (a server setting up its own
        // handlers) silently replaces ours: then stop advertising the
        // signal, so that nothing sends this process a signal that now
        // means something else. The channel goes on.
        if signal_live && checked.elapsed() >= HANDLER_CHECK {
            checked = Instant::now();
            if !ours_installed(config.signum) {
                signal_live = false;
                close_beacon();
                report(&format!(
                    "the {} handler was replaced (by a signal.signal() call?): \
                     no more dumps on {} in process {}{}",
                    config.signal_name,
                    config.signal_name,
                    std::process::id(),
                    if channel.is_some() {
                        "; `tbcollect dump` still asks for them through its channel"
                    } else {
                        ""
                    }
                ));
                if channel.is_none() {
                    return;
                }
            }
        }
        let timeout_ms: libc::c_int = {
            let st = shared.lock();
            if st.shutdown {
                return;
            }
            let check = if signal_live {
                HANDLER_CHECK.saturating_sub(checked.elapsed())
            } else {
                // Only the channel and a shutdown can wake us now.
                Duration::from_secs(3600)
            };
            let wait = match (st.raw_since, config.raw_timeout) {
                (Some(since), Some(limit)) => {
                    check.min((since + limit).saturating_duration_since(Instant::now()))
                }
                _ => check,
            };
            // Round up so the deadline has passed when poll returns.
            wait.as_millis().min(i32::MAX as u128) as libc::c_int + 1
        };
        let mut pfds = [
            libc::pollfd {
                fd: read_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: channel.as_ref().map_or(-1, |c| c.raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds (a negative fd is ignored by poll).
        unsafe { libc::poll(pfds.as_mut_ptr(), 2, timeout_ms) };
        let signals = drain_pipe(read_fd);
        let mut st = shared.lock();
        if st.shutdown {
            return;
        }
        if signals > 0 {
            st.signals += signals;
            let now = Instant::now();
            st.pending_since.get_or_insert(now);
            // Waiting out the rate limit is not being stuck: the raw dump's
            // clock starts when the dump may be made.
            let from = st.signal_dump_allowed_at().map_or(now, |at| at.max(now));
            st.raw_since.get_or_insert(from);
            shared.wake.notify_all();
        }
        let due = match (st.raw_since, config.raw_timeout) {
            (Some(since), Some(limit)) if Instant::now() >= since + limit => Some(since.elapsed()),
            _ => None,
        };
        if let Some(waited) = due {
            st.raw_since = None;
            drop(st);
            if let Err(e) = write_raw_dump(&config, waited) {
                report(&format!("raw dump failed: {e}"));
            }
        } else {
            drop(st);
        }
        if let Some(channel) = &channel {
            if pfds[1].revents != 0 {
                match channel.accept() {
                    Ok(Some(conn)) => serve(conn, &config, &shared, &mut last_request),
                    Ok(None) => {}
                    Err(e) => {
                        report(&format!("the request channel failed, closing it: {e}"));
                        channel.close();
                        CHANNEL_BEACON.close();
                    }
                }
            }
        }
    }
}

/// The channel's advertisement (see [`channel::Beacon`]).
pub(crate) static CHANNEL_BEACON: channel::Beacon = channel::Beacon::new();

enum Outcome {
    Full(String, Vec<u8>),
    Failed(String),
    Raw(Duration),
    TimedOut(bool),
    Shutdown,
}

/// Answers one connection: checks the peer, reads its request, hands it to
/// the dumper and sends back the dump, or a raw dump when the dumper cannot
/// get the GIL within the raw timeout.
fn serve(conn: Conn, config: &Config, shared: &Shared, last: &mut Option<Instant>) {
    let own_uid = current_uid();
    let peer = match conn.peer() {
        Ok(peer) => peer,
        Err(e) => {
            let _ = conn.send_err("denied", &format!("cannot tell who is asking: {e}"));
            return;
        }
    };
    if !channel::peer_allowed(peer.uid, own_uid) {
        let _ = conn.send_err(
            "denied",
            &format!(
                "uid {} may not ask process {} (uid {own_uid}) for a dump: only its user and root may",
                peer.uid,
                std::process::id()
            ),
        );
        return;
    }
    let mut conn = conn;
    let request = match conn.read_request() {
        Ok(request) => request,
        Err(message) => {
            let _ = conn.send_err("usage", &message);
            return;
        }
    };
    if let Some(at) = *last {
        // One request a second; an uninstall() meanwhile ends the wait.
        let next = at + channel::MIN_INTERVAL;
        let mut st = shared.lock();
        while !st.shutdown && Instant::now() < next {
            let wait = next.saturating_duration_since(Instant::now());
            st = shared
                .wake
                .wait_timeout(st, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    let started = Instant::now();
    *last = Some(started);
    let deadline = started + request.timeout;
    let raw_deadline = config.raw_timeout.map(|limit| started + limit);
    let id = {
        let mut st = shared.lock();
        if st.shutdown {
            drop(st);
            let _ = conn.send_err("gone", "the handler is being uninstalled");
            return;
        }
        st.last_request_id += 1;
        let id = st.last_request_id;
        st.request = Some(Pending {
            id,
            format: request.format.clone(),
            taken: false,
        });
        st.answer = None;
        id
    };
    shared.wake.notify_all();
    let outcome = {
        let mut st = shared.lock();
        loop {
            if st.answer.as_ref().is_some_and(|(a, _)| *a == id) {
                let (_, result) = st.answer.take().expect("checked above");
                break match result {
                    Ok((format, data)) => Outcome::Full(format, data),
                    Err(message) => Outcome::Failed(message),
                };
            }
            if st.shutdown {
                st.request = None;
                break Outcome::Shutdown;
            }
            let now = Instant::now();
            let taken = st.request.as_ref().is_some_and(|r| r.id == id && r.taken);
            if !taken && raw_deadline.is_some_and(|d| now >= d) {
                st.request = None;
                break Outcome::Raw(now - started);
            }
            if now >= deadline {
                st.request = None;
                break Outcome::TimedOut(taken);
            }
            let until = match raw_deadline {
                Some(d) if !taken => d.min(deadline),
                _ => deadline,
            };
            st = shared
                .wake
                .wait_timeout(st, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    };
    let _ = match outcome {
        Outcome::Full(format, data) => conn.send_ok(&format, "full", &data),
        Outcome::Failed(message) => conn.send_err("failed", &message),
        Outcome::Raw(waited) => {
            let reason = format!(
                "request over the channel; the full dump did not start within {:.1} s",
                waited.as_secs_f64()
            );
            conn.send_ok("text", "raw", &raw_dump(config, &reason))
        }
        Outcome::TimedOut(true) => conn.send_err(
            "timeout",
            &format!(
                "the dump did not finish within {:.1} s",
                request.timeout.as_secs_f64()
            ),
        ),
        Outcome::TimedOut(false) => conn.send_err(
            "timeout",
            &format!(
                "the dump did not start within {:.1} s and raw dumps are off (raw_timeout=None): \
                 some thread holds the GIL",
                request.timeout.as_secs_f64()
            ),
        ),
        Outcome::Shutdown => conn.send_err("gone", "the handler is being uninstalled"),
    };
}

/// `_Py_DumpTracebackThreads`, the function faulthandler calls: written to
/// run without the GIL (from a signal handler or faulthandler's watchdog
/// thread), exported by every CPython this builds for.
type DumpThreads = unsafe extern "C" fn(
    libc::c_int,
    *mut std::ffi::c_void,
    *mut std::ffi::c_void,
) -> *const libc::c_char;

fn dump_threads_function() -> Option<DumpThreads> {
    // SAFETY: looks a symbol up by a valid C string name.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"_Py_DumpTracebackThreads".as_ptr()) };
    if address.is_null() {
        None
    } else {
        // SAFETY: the symbol has this signature on CPython 3.9-3.15.
        Some(unsafe { std::mem::transmute::<*mut std::ffi::c_void, DumpThreads>(address) })
    }
}

/// An unnamed file in memory, removed when closed.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn anonymous_file() -> io::Result<std::fs::File> {
    use std::os::unix::io::FromRawFd;
    // SAFETY: a valid C string; the descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(c"tbcollect-raw".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just made.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Without memfd: a new file in the temporary directory, unlinked at once.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn anonymous_file() -> io::Result<std::fs::File> {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        ".tbcollect-raw-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Every thread's Python stack, read without the GIL: through
/// `_Py_DumpTracebackThreads` (no signal involved), else through
/// faulthandler's handler of our own signal, sent to this thread, and only
/// while the handler of that signal is still ours.
fn stacks_without_gil(config: &Config) -> Result<String, String> {
    use std::io::{Read, Seek};
    use std::os::unix::io::AsRawFd;
    let mut file = anonymous_file().map_err(|e| format!("no memory file: {e}"))?;
    let mut note = String::new();
    if let Some(dump_threads) = dump_threads_function() {
        // SAFETY: a valid descriptor; null interpreter and thread state ask
        // the function to find them itself, as its documentation advises.
        let error =
            unsafe { dump_threads(file.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
        if !error.is_null() {
            // SAFETY: a static C string from CPython.
            let message = unsafe { std::ffi::CStr::from_ptr(error) };
            note = format!("(CPython: {})\n", message.to_string_lossy());
        }
    } else if FAULTHANDLER.is_set() && ours_installed(config.signum) {
        let raw_fd = RAW_FD.load(Ordering::Acquire);
        let null_fd = NULL_FD.load(Ordering::Acquire);
        dup_onto(file.as_raw_fd(), raw_fd).map_err(|e| e.to_string())?;
        RAW_REQUEST.store(true, Ordering::Release);
        // A signal sent to the calling thread is delivered as the mask opens,
        // before `own_signal` returns, so faulthandler has written everything by then.
        own_signal(config.signum, || {
            // SAFETY: signalling our own thread.
            unsafe { libc::pthread_kill(libc::pthread_self(), config.signum) }
        });
        let delivered = !RAW_REQUEST.swap(false, Ordering::AcqRel);
        dup_onto(null_fd, raw_fd).map_err(|e| e.to_string())?;
        if !delivered {
            note = "(faulthandler did not run: the signal was not delivered)\n".into();
        }
    } else {
        return Err("this interpreter offers no way to read the stacks without the GIL".into());
    }
    file.rewind().map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(16 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    text.push_str(&note);
    Ok(text)
}

/// A raw dump: a header, the GIL's probable holder, faulthandler's stacks of
/// every thread (read without the GIL) with their names, a footer.
pub(crate) fn raw_dump(config: &Config, reason: &str) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    let names = raw::try_names();
    let mut out = format!(
        "tbcollect: pid {} at {}, raw dump\n\
         reason: {reason}\n\
         \n\
         Some thread holds the GIL and does not let go (stuck in C code?), so these\n\
         are the Python stacks of every thread as faulthandler reads them without\n\
         the GIL (most recent call first). The full dump follows if the GIL is\n\
         released.\n\n",
        std::process::id(),
        iso8601_utc(now),
    );
    out.push_str(&raw::header(names.as_deref()));
    out.push('\n');
    match stacks_without_gil(config) {
        Ok(stacks) => out.push_str(&raw::annotate(&stacks, names.as_deref().unwrap_or(&[]))),
        Err(message) => out.push_str(&format!("(no stacks: {message})\n")),
    }
    out.push_str("\nend of raw dump\n");
    out.into_bytes()
}

/// Writes a raw dump file (see [`raw_dump`]), linked into place whole like
/// every dump.
pub(crate) fn write_raw_dump(config: &Config, waited: Duration) -> Result<PathBuf, Error> {
    let reason = format!(
        "signal {}; the full dump did not start within {:.1} s",
        config.signal_name,
        waited.as_secs_f64()
    );
    let data = raw_dump(config, &reason);
    DumpDir::open(&config.directory, true, current_uid())?.write_new("txt", &data)
}

// ---------------------------------------------------------------------------
// Installation.

pub(crate) struct Installation {
    pub(crate) config: Arc<Config>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) watcher: Option<JoinHandle<()>>,
    /// The request channel (None where it could not be opened).
    pub(crate) channel: Option<Arc<Listener>>,
    /// The exact C-level action before install(), put back by uninstall().
    pub(crate) original: libc::sigaction,
    /// `signal.getsignal()` before install().
    pub(crate) original_py: Py<PyAny>,
    /// The process the watcher runs in: a child forked without Python's
    /// at-fork hooks (from C, as uWSGI does) holds its parent's installation.
    pub(crate) pid: i32,
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
    channel: &Option<Arc<Listener>>,
    signal_live: bool,
) -> PyResult<JoinHandle<()>> {
    let (config, shared, channel) = (config.clone(), shared.clone(), channel.clone());
    spawn_without_signals(
        std::thread::Builder::new().name("tbcollect-watch".into()),
        move || watch(config, shared, channel, signal_live),
    )
    .map_err(|e| os_error("cannot start the watcher thread", e))
}

/// Opens the channel of this process and advertises it; None (and one line
/// on stderr) when it cannot be opened: dumps on the signal still work.
pub(crate) fn open_channel() -> Option<Arc<Listener>> {
    match Listener::bind(std::process::id()) {
        Ok(listener) => {
            CHANNEL_BEACON.open(listener.name());
            Some(Arc::new(listener))
        }
        Err(e) => {
            report(&format!(
                "no request channel in process {} ({e}): `tbcollect dump` cannot ask it for dumps",
                std::process::id()
            ));
            None
        }
    }
}

/// Stops advertising and closes the channel.
pub(crate) fn close_channel(channel: &Option<Arc<Listener>>) {
    CHANNEL_BEACON.close();
    if let Some(listener) = channel {
        listener.close();
    }
}

/// Refreshes the raw dump's table of thread names (the GIL is held).
pub(crate) fn note_thread_names(py: Python<'_>) {
    let names = crate::capture::threads::names(py)
        .into_iter()
        .map(|(ident, native_id, name)| raw::ThreadName {
            ident,
            native_id,
            name,
        })
        .collect();
    raw::set_names(names);
}
