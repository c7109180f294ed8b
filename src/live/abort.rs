//! A raw dump when the process is told to abort (SIGABRT).
//!
//! gunicorn's arbiter aborts a worker that missed its `--timeout` with
//! SIGABRT and kills it with SIGKILL about a second later. A worker stuck in
//! C code with the GIL held never runs a Python-level handler (nor gunicorn's
//! `worker_abort` hook), and faulthandler refuses to register SIGABRT for a
//! process that is meant to live on. So, faulthandler-style, this C-level
//! handler writes the stacks of every thread at once, from inside the
//! handler, without the GIL, and then hands the signal to the handler it
//! replaced: gunicorn's `handle_abort` through CPython's handler, or the
//! default action (the process then dies as it would have without us).
//!
//! Everything the handler does is async-signal-safe: no allocation, no lock.
//! The directory path is a C string made at install time; names and header
//! are formatted into stack buffers; the stacks are written by faulthandler's
//! handler for the dump signal (registered by `install()`, with its
//! descriptor pointed at our file for the moment). No retention clean-up
//! here: that reads a directory, which allocates; the next dump does it.

use super::dumpdir::{write_dump_file_name, FILE_MODE, SEQUENCE};
use super::handler::{current_action, set_action, Chained, FAULTHANDLER};
use super::signals::{dup_onto, NULL_FD, RAW_FD};
use libc::{c_char, c_int, c_void, siginfo_t};
use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use std::sync::Mutex;

/// The dump directory, a C string leaked at install (never freed: a handler
/// running on another thread may be reading it).
static DIRECTORY: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());
/// The signal faulthandler is registered on (the dump signal of `install()`):
/// its handler is called with this number to write the stacks.
static STACKS_SIGNUM: AtomicI32 = AtomicI32::new(0);
/// The process that wrote its abort dump: one per process, however many
/// SIGABRTs arrive.
static DUMPED_PID: AtomicI32 = AtomicI32::new(0);
/// Whether our handler is installed (by this process or its parent).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The handler we replaced: called after the dump.
static PREVIOUS: Chained = Chained::new();
/// The exact action we replaced, put back by [`uninstall`].
static PREVIOUS_ACTION: Mutex<Option<libc::sigaction>> = Mutex::new(None);

/// A fixed buffer `write!` can format into without allocating.
struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    fn new() -> Self {
        StackText {
            buf: [0; N],
            len: 0,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    /// NUL-terminated for a system call (truncated if it had to be).
    fn c_str(&mut self) -> *const c_char {
        let end = self.len.min(N - 1);
        self.buf[end] = 0;
        self.buf.as_ptr().cast()
    }
}

impl<const N: usize> std::fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = N.saturating_sub(1 + self.len);
        let take = s.len().min(room);
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

fn write_fd(fd: c_int, data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        // SAFETY: write is async-signal-safe; the buffer is ours.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        rest = &rest[n as usize..];
    }
}

fn now_micros() -> i64 {
    // SystemTime::now is clock_gettime: async-signal-safe, no allocation.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Who sent the signal, for the reason line.
fn sender(info: *const siginfo_t) -> (c_int, i32) {
    if info.is_null() {
        return (0, 0);
    }
    // SAFETY: the kernel filled in the siginfo of this signal.
    unsafe { ((*info).si_code, (*info).si_pid()) }
}

/// Writes the abort dump; returns the file name (in the directory) on success.
/// Async-signal-safe.
fn write_dump(info: *const siginfo_t, name: &mut StackText<128>) -> bool {
    let directory = DIRECTORY.load(Ordering::Acquire);
    if directory.is_null() {
        return false;
    }
    // SAFETY: a NUL-terminated path that is never freed.
    let dirfd = unsafe {
        libc::open(
            directory,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if dirfd < 0 {
        return false;
    }
    let written = write_in(dirfd, info, name);
    // SAFETY: our own descriptor.
    unsafe { libc::close(dirfd) };
    written
}

fn write_in(dirfd: c_int, info: *const siginfo_t, name: &mut StackText<128>) -> bool {
    // The same rules as `DumpDir::open`: ours, and nobody else may write it.
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: a valid descriptor; `st` is filled on success.
    if unsafe { libc::fstat(dirfd, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    // SAFETY: geteuid cannot fail.
    if st.st_uid != unsafe { libc::geteuid() } || st.st_mode & 0o022 != 0 {
        return false;
    }
    // SAFETY: getpid is async-signal-safe.
    let pid = unsafe { libc::getpid() };
    let mut temp = StackText::<64>::new();
    let _ = write!(temp, ".tbcollect-{pid}-abort.tmp");
    let temp_name = temp.c_str();
    // A temporary left by an earlier abort of a process with this pid.
    // SAFETY: valid descriptor and NUL-terminated name.
    unsafe { libc::unlinkat(dirfd, temp_name, 0) };
    // SAFETY: as above; the file is created new, mode 0600.
    let fd = unsafe {
        libc::openat(
            dirfd,
            temp_name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            FILE_MODE as libc::c_uint,
        )
    };
    if fd < 0 {
        return false;
    }
    let now = now_micros();
    let mut header = StackText::<1024>::new();
    let _ = write!(header, "tbcollect: pid {pid} at ");
    let _ = write_iso8601(&mut header, now);
    let _ = header.write_str(", raw dump\n");
    let (code, from) = sender(info);
    let _ = if code == SI_USER && from > 0 && from != pid {
        writeln!(
            header,
            "reason: SIGABRT sent by process {from}: the process is being aborted \
             (a gunicorn arbiter does this to a worker that missed its --timeout)"
        )
    } else {
        header.write_str(
            "reason: SIGABRT raised in this process: abort() was called \
             (a failed assertion in C code?)\n",
        )
    };
    let _ = header.write_str(
        "\nWritten from the SIGABRT handler without the GIL, so these are the Python\n\
         stacks of every thread as faulthandler reads them (most recent call first).\n\
         \"Current thread\" is the thread the signal interrupted. If the process\n\
         survives the signal, a full dump may follow.\n\n",
    );
    write_fd(fd, header.bytes());
    let stacks = STACKS_SIGNUM.load(Ordering::Acquire);
    let (raw, null) = (
        RAW_FD.load(Ordering::Acquire),
        NULL_FD.load(Ordering::Acquire),
    );
    if stacks > 0 && FAULTHANDLER.is_set() && raw >= 0 && null >= 0 && dup_onto(fd, raw).is_ok() {
        // faulthandler's handler is a plain function reading a table indexed
        // by signal number; called here it writes the stacks to `raw`.
        FAULTHANDLER.call(stacks, std::ptr::null_mut(), std::ptr::null_mut());
        let _ = dup_onto(null, raw);
    } else {
        write_fd(
            fd,
            b"(no stacks: tbcollect.install() was called with raw_timeout=None)\n",
        );
    }
    write_fd(fd, b"\nend of raw dump\n");
    // SAFETY: our own descriptor.
    unsafe {
        libc::fsync(fd);
        libc::close(fd);
    }
    for _ in 0..100 {
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        name.len = 0;
        if write_dump_file_name(name, pid as u32, now, seq, "txt").is_err() {
            break;
        }
        let final_name = name.c_str();
        // SAFETY: valid descriptor and names; linkat never replaces a file.
        if unsafe { libc::linkat(dirfd, temp_name, dirfd, final_name, 0) } == 0 {
            // SAFETY: as above.
            unsafe { libc::unlinkat(dirfd, temp_name, 0) };
            return true;
        }
        let errno = io::Error::last_os_error().raw_os_error();
        if errno == Some(libc::EEXIST) {
            continue;
        }
        // No hard links on this filesystem: rename (the name is unique).
        // SAFETY: as above.
        return unsafe { libc::renameat(dirfd, temp_name, dirfd, final_name) } == 0;
    }
    // SAFETY: as above.
    unsafe { libc::unlinkat(dirfd, temp_name, 0) };
    false
}

/// `si_code` of a signal sent with `kill()` (the libc crate has no name
/// for it on Apple platforms).
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
const SI_USER: c_int = libc::SI_USER;
#[cfg(any(target_os = "macos", target_os = "ios"))]
const SI_USER: c_int = 0x10001;

fn write_iso8601(out: &mut impl std::fmt::Write, unix_micros: i64) -> std::fmt::Result {
    let secs = unix_micros.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::model::civil_from_days(days);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        unix_micros.rem_euclid(1_000_000)
    )
}

extern "C" fn on_abort(signum: c_int, info: *mut siginfo_t, context: *mut c_void) {
    let saved_errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: getpid is async-signal-safe.
    let pid = unsafe { libc::getpid() };
    if DUMPED_PID.swap(pid, Ordering::AcqRel) != pid {
        let mut name = StackText::<128>::new();
        if write_dump(info, &mut name) {
            let mut line = StackText::<256>::new();
            let _ = write!(
                line,
                "tbcollect: SIGABRT: raw dump of process {pid} written to "
            );
            write_fd(2, line.bytes());
            let directory = DIRECTORY.load(Ordering::Acquire);
            // SAFETY: a NUL-terminated path that is never freed.
            let dir = unsafe { std::ffi::CStr::from_ptr(directory) };
            write_fd(2, dir.to_bytes());
            write_fd(2, b"/");
            write_fd(2, name.bytes());
            write_fd(2, b"\n");
        } else {
            write_fd(
                2,
                b"tbcollect: SIGABRT: the raw dump could not be written\n",
            );
        }
    }
    // Hand over to what was there before us.
    if PREVIOUS.is_default() {
        // Exactly what would have happened without us: the default action
        // (terminate, with a core dump where enabled). The signal is blocked
        // while this handler runs, so it is delivered as we return.
        // SAFETY: a zeroed action is SIG_DFL with an empty mask.
        let default: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
        let _ = set_action(signum, &default);
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(signum) };
    } else {
        PREVIOUS.call(signum, info, context);
    }
    // SAFETY: errno is thread-local; restored so the interrupted code never
    // sees it change.
    unsafe { set_errno(saved_errno) };
}

#[cfg(any(target_os = "linux", target_os = "android"))]
unsafe fn set_errno(value: c_int) {
    *libc::__errno_location() = value;
}
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
unsafe fn set_errno(value: c_int) {
    *libc::__error() = value;
}

fn handler_address() -> usize {
    on_abort as *const () as usize
}

/// Puts the SIGABRT handler in place (or, when it already is, points it at
/// the new directory and stacks signal). `stacks_signum` is the signal
/// faulthandler is registered on by `install()`.
pub fn install(directory: &Path, stacks_signum: c_int) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(directory.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the directory"))?;
    let mut previous_action = PREVIOUS_ACTION.lock().unwrap_or_else(|e| e.into_inner());
    let now = current_action(libc::SIGABRT)?;
    // The old string is leaked on purpose: see DIRECTORY.
    DIRECTORY.store(path.into_raw(), Ordering::Release);
    STACKS_SIGNUM.store(stacks_signum, Ordering::Release);
    if now.sa_sigaction == handler_address() {
        return Ok(());
    }
    PREVIOUS.set(&now);
    let mut action: libc::sigaction = {
        // SAFETY: a zeroed sigaction is a valid start.
        unsafe { MaybeUninit::zeroed().assume_init() }
    };
    action.sa_sigaction = handler_address() as libc::sighandler_t;
    // SAFETY: plain sigset manipulation on our own action.
    unsafe { libc::sigfillset(&mut action.sa_mask) };
    action.sa_flags = libc::SA_SIGINFO | (now.sa_flags & (libc::SA_RESTART | libc::SA_ONSTACK));
    set_action(libc::SIGABRT, &action)?;
    *previous_action = Some(now);
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// Puts back the handler [`install`] replaced, unless other code has
/// replaced ours since. Returns False when ours was not installed.
pub fn uninstall() -> io::Result<bool> {
    let mut previous_action = PREVIOUS_ACTION.lock().unwrap_or_else(|e| e.into_inner());
    let Some(previous) = previous_action.take() else {
        return Ok(false);
    };
    INSTALLED.store(false, Ordering::Release);
    if current_action(libc::SIGABRT)?.sa_sigaction == handler_address() {
        set_action(libc::SIGABRT, &previous)?;
    }
    Ok(true)
}

/// Whether our SIGABRT handler is the one installed.
pub fn active() -> bool {
    INSTALLED.load(Ordering::Acquire)
        && current_action(libc::SIGABRT).is_ok_and(|a| a.sa_sigaction == handler_address())
}
