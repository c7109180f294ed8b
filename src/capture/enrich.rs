//! What is added to a snapshot after capture, without the GIL: source lines
//! (read from disk, one read per file) and what the OS says each thread is
//! doing. Pure Rust, so `cargo test` checks it.

use crate::model::fasthash::FastMap;
use crate::model::{Frame, Frames, Snapshot, Stack, StackDetails, Text};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, TryLockError};
use std::time::SystemTime;

/// Fills `Frame::source` from the files on disk. Files that cannot be read
/// (frozen modules, `<string>`, deleted files, zip imports) leave it null.
pub fn fill_sources(snapshot: &Snapshot) {
    // Stacks share frame lists; each distinct list is filled once, in place
    // (see `model::Source`), and every stack holding it sees the lines.
    let mut lists: FastMap<usize, &Frames> = FastMap::default();
    let mut last = None;
    for list in all_frame_lists(snapshot) {
        // Stacks that share a list mostly come one after another.
        let key = list_key(list);
        if last != Some(key) {
            lists.entry(key).or_insert(list);
            last = Some(key);
        }
    }
    // Frames of one code object share one `Text` for their file name, so a
    // (name pointer, line) pair identifies a wanted line without hashing the
    // name: ten thousand tasks at one await are one lookup, not ten thousand.
    let mut wanted: FastMap<(usize, u32), Option<Text>> = FastMap::default();
    let mut names: FastMap<usize, Text> = FastMap::default();
    for frame in lists.values().flat_map(|l| l.iter()) {
        if let Some(n) = frame.lineno.filter(|&n| n > 0) {
            let ptr = frame.filename.as_ptr() as usize;
            if wanted.insert((ptr, n), None).is_none() && !names.contains_key(&ptr) {
                names.insert(ptr, frame.filename.clone());
            }
        }
    }
    // Each file's wanted lines, by name (two `Text`s may hold one name).
    let mut per_file: FastMap<&str, BTreeSet<u32>> = FastMap::default();
    for &(ptr, n) in wanted.keys() {
        per_file.entry(&names[&ptr]).or_default().insert(n);
    }
    // Tried, never waited for: this runs without the GIL, so another thread
    // may hold the cache while this one forks, and the child inherits it
    // locked for good. A dump that finds it busy reads the files itself.
    let mut shared = match SOURCE_CACHE.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    };
    let mut private = None;
    let cache = match shared.as_mut() {
        Some(guard) => &mut **guard,
        None => &mut private,
    };
    if cache
        .as_ref()
        .is_some_and(|files| files.len() > SOURCE_CACHE_FILES)
    {
        *cache = None;
    }
    let found: FastMap<&str, HashMap<u32, Option<Text>>> = per_file
        .into_iter()
        .filter_map(|(file, lines)| Some((file, lookup(cache, file, &lines)?)))
        .collect();
    drop(shared);
    for (&(ptr, n), slot) in wanted.iter_mut() {
        *slot = found
            .get(&*names[&ptr])
            .and_then(|lines| lines.get(&n)?.clone());
    }
    for list in lists.values() {
        for frame in list.iter() {
            let found = frame
                .lineno
                .and_then(|n| wanted.get(&(frame.filename.as_ptr() as usize, n)))
                .cloned()
                .flatten();
            if let Some(line) = found {
                frame.source.fill(line);
            }
        }
    }
}

/// Identifies a shared frame list by its allocation.
fn list_key(list: &Frames) -> usize {
    std::sync::Arc::as_ptr(list) as *const Frame as usize
}

fn all_frame_lists(snapshot: &Snapshot) -> impl Iterator<Item = &Frames> {
    snapshot.stacks.iter().flat_map(|s| {
        let spawn = match &s.details {
            StackDetails::Greenlet(d) => Some(&d.spawn_frames),
            _ => None,
        };
        std::iter::once(&s.frames).chain(spawn)
    })
}

/// Lines already read, per file, valid while the file's size and mtime stay
/// the same (as `linecache.checkcache` does). Only lines some dump needed are
/// kept, so the cache stays small however long the process lives.
struct CachedFile {
    identity: (u64, SystemTime),
    lines: HashMap<u32, Option<Text>>,
}

static SOURCE_CACHE: Mutex<Option<HashMap<String, CachedFile>>> = Mutex::new(None);
const SOURCE_CACHE_FILES: usize = 4096;

fn lookup(
    cache: &mut Option<HashMap<String, CachedFile>>,
    filename: &str,
    wanted: &BTreeSet<u32>,
) -> Option<HashMap<u32, Option<Text>>> {
    if filename.starts_with('<') {
        return None;
    }
    let meta = std::fs::metadata(filename).ok()?;
    let identity = (meta.len(), meta.modified().ok()?);
    let files = cache.get_or_insert_with(HashMap::new);
    let entry = files.get(filename).filter(|c| c.identity == identity);
    let complete = entry.is_some_and(|c| wanted.iter().all(|n| c.lines.contains_key(n)));
    if !complete {
        let mut lines = read_lines(filename, wanted)?;
        if let Some(old) = files.remove(filename).filter(|c| c.identity == identity) {
            lines.extend(old.lines);
        }
        files.insert(filename.to_string(), CachedFile { identity, lines });
    }
    let cached = &files.get(filename)?.lines;
    Some(
        wanted
            .iter()
            .map(|n| (*n, cached.get(n).cloned().flatten()))
            .collect(),
    )
}

/// The wanted lines of one file, stripped (`None` past its end); `None`
/// when it can't be read.
fn read_lines(filename: &str, wanted: &BTreeSet<u32>) -> Option<HashMap<u32, Option<Text>>> {
    let bytes = std::fs::read(filename).ok()?;
    let mut out: HashMap<u32, Option<Text>> = wanted.iter().map(|n| (*n, None)).collect();
    let last = *wanted.last()?;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate().take(last as usize) {
        let n = i as u32 + 1;
        if let Some(slot) = out.get_mut(&n) {
            // Python source is UTF-8 unless a coding cookie says otherwise;
            // such files are rare, and a lossy line beats no line in a dump.
            *slot = Some(Text::from(String::from_utf8_lossy(line).trim()));
        }
    }
    Some(out)
}

/// Replaces the placeholder state of each thread with what the OS says it is
/// doing (Linux `/proc/self/task/<tid>/stat`); the calling thread stays
/// `running`. Returns, per thread ident, the line of
/// `/proc/self/task/<tid>/syscall` (the system call it is blocked in) of
/// each other thread that is not running and for which `wants_syscall`
/// says it matters, read through kept files as the stat files are. Threads
/// that are not in this process are put in `gone` for the caller to remove
/// (see [`not_in_this_process`]).
pub fn fill_thread_states(
    stacks: &mut [Stack],
    wants_syscall: impl Fn(&Stack) -> bool,
    gone: &mut Vec<u64>,
) -> Vec<(u64, String)> {
    let mut syscalls = Vec::new();
    if stacks.is_empty() {
        return syscalls;
    }
    let mut files = StatFiles::take();
    for stack in stacks {
        let StackDetails::Thread(details) = &mut stack.details else {
            continue;
        };
        if details.current {
            // This runs on the calling thread (the GIL is released, the
            // thread is the same). threading's record of it is stale in a
            // forked child, where it names the parent's thread.
            if let Some(own) = own_native_id() {
                details.native_id = Some(own);
            }
            continue;
        }
        let Some(native) = details.native_id else {
            continue;
        };
        let state = files.state(native);
        match state {
            Some(state) => stack.state = state.into(),
            None if not_in_this_process(native) => gone.extend(stack.thread),
            None => {}
        }
        if let (Some(ident), Some("sleeping" | "disk-wait")) = (stack.thread, state) {
            if !wants_syscall(stack) {
                continue;
            }
            if let Some(line) = files.syscall(native) {
                syscalls.push((ident, line));
            }
        }
    }
    files.put_back(true);
    syscalls
}

/// Whether the thread with OS id `native_id` is not one of this process's.
/// A child forked straight from C (uWSGI's workers, unless uWSGI runs with
/// `--py-call-osafterfork`) keeps its parent's thread states, since
/// `PyOS_AfterFork_Child` never ran there: `sys._current_frames()` lists
/// threads the child does not have (a 3.14 child dumped its parent's
/// dumper beside its own). A thread that ended since it was listed is gone
/// too. Asked only when its `stat` could not be read, so it costs a live
/// thread nothing.
fn not_in_this_process(native_id: u64) -> bool {
    cfg!(target_os = "linux")
        && std::fs::metadata(format!("/proc/self/task/{native_id}"))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// The calling thread's OS thread id (Linux): `gettid()`, the id
/// `threading.get_native_id()` and `/proc/self/task` give.
pub fn own_native_id() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments and cannot fail.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        u64::try_from(tid).ok()
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// The scheduler state of one of this process's threads, by native id.
pub fn os_thread_state(native_id: u64) -> Option<&'static str> {
    let mut files = StatFiles::take();
    let state = files.state(native_id);
    files.put_back(false);
    state
}

/// Each thread's `/proc/self/task/<tid>/stat`, kept open from one dump to
/// the next and read with `pread` at offset 0: a dump then makes one system
/// call per thread instead of three (open, read, close), and the kernel
/// resolves no path. Files of threads a dump did not ask for are closed
/// (their thread has ended); a file whose read fails is reopened once (a
/// thread id reused by a new thread). Every read must begin with `<tid> (`,
/// so a descriptor the program closed and reused for a file of its own is
/// noticed, dropped and reopened, never taken for the thread's state. The
/// files belong to the process that opened them: a forked child starts
/// afresh. At most [`StatFiles::MAX_OPEN`] are kept, so that a process with
/// thousands of threads is not left short of descriptors.
#[derive(Default)]
struct StatFiles {
    #[cfg(target_os = "linux")]
    pid: u32,
    #[cfg(target_os = "linux")]
    dir: Option<std::os::fd::OwnedFd>,
    #[cfg(target_os = "linux")]
    open: FastMap<u64, std::os::fd::OwnedFd>,
    /// Each thread's `syscall` file, kept the same way.
    #[cfg(target_os = "linux")]
    syscall_open: FastMap<u64, std::os::fd::OwnedFd>,
    /// Thread ids asked for since the last `put_back`.
    #[cfg(target_os = "linux")]
    asked: Vec<u64>,
}

static STAT_FILES: Mutex<Option<StatFiles>> = Mutex::new(None);

impl StatFiles {
    #[cfg(target_os = "linux")]
    const MAX_OPEN: usize = 512;

    /// The files kept by the last dump, or none if another dump holds them
    /// right now (or they belong to the parent of a forked child).
    fn take() -> Self {
        let kept = match STAT_FILES.try_lock() {
            Ok(mut slot) => slot.take(),
            Err(TryLockError::Poisoned(e)) => e.into_inner().take(),
            Err(TryLockError::WouldBlock) => None,
        };
        #[cfg(target_os = "linux")]
        {
            let pid = std::process::id();
            match kept {
                Some(files) if files.pid == pid => files,
                _ => StatFiles {
                    pid,
                    ..Default::default()
                },
            }
        }
        #[cfg(not(target_os = "linux"))]
        kept.unwrap_or_default()
    }

    /// Keeps the files for the next dump; with `prune` (a dump of every
    /// thread), only those of the threads asked for.
    fn put_back(self, prune: bool) {
        #[cfg(target_os = "linux")]
        let kept = {
            let mut kept = self;
            let asked: crate::model::fasthash::FastSet<u64> = kept.asked.drain(..).collect();
            if prune {
                kept.open.retain(|tid, _| asked.contains(tid));
                kept.syscall_open.retain(|tid, _| asked.contains(tid));
            }
            kept
        };
        #[cfg(not(target_os = "linux"))]
        let kept = {
            let _ = prune;
            self
        };
        if let Ok(mut slot) = STAT_FILES.try_lock() {
            *slot = Some(kept);
        }
    }

    #[cfg(target_os = "linux")]
    fn state(&mut self, native_id: u64) -> Option<&'static str> {
        self.asked.push(native_id);
        let mut buf = [0u8; 1024];
        let n = self.read_kept(native_id, c"stat", &mut buf, |bytes| {
            read_is_stat(bytes, native_id)
        })?;
        parse_state(&buf[..n])
    }

    /// The line of thread `native_id`'s `syscall` file.
    #[cfg(target_os = "linux")]
    fn syscall(&mut self, native_id: u64) -> Option<String> {
        let mut buf = [0u8; 256];
        let n = self.read_kept(native_id, c"syscall", &mut buf, read_is_syscall)?;
        String::from_utf8(buf[..n].to_vec()).ok()
    }

    /// The descriptors kept for file `name` (`stat`, `syscall`).
    #[cfg(target_os = "linux")]
    fn kept(&mut self, name: &std::ffi::CStr) -> &mut FastMap<u64, std::os::fd::OwnedFd> {
        if name == c"stat" {
            &mut self.open
        } else {
            &mut self.syscall_open
        }
    }

    /// Reads thread `native_id`'s file `name` (`stat`, `syscall`) into
    /// `buf` from its start, through the descriptor kept for it; a failed
    /// read, or one `valid` refuses (a descriptor the program closed and
    /// reused), drops it and opens the file anew. The byte count read.
    #[cfg(target_os = "linux")]
    fn read_kept(
        &mut self,
        native_id: u64,
        name: &std::ffi::CStr,
        buf: &mut [u8],
        valid: impl Fn(&[u8]) -> bool,
    ) -> Option<usize> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let read = |fd: &OwnedFd, buf: &mut [u8]| {
            // SAFETY: pread into a buffer we hold, no longer than the buffer.
            let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            usize::try_from(n).ok().filter(|&n| valid(&buf[..n]))
        };
        let kept = self.kept(name);
        if let Some(fd) = kept.get(&native_id) {
            if let Some(n) = read(fd, buf) {
                return Some(n);
            }
            kept.remove(&native_id);
        }
        if self.dir.is_none() {
            self.dir = std::fs::File::open("/proc/self/task")
                .ok()
                .map(OwnedFd::from);
        }
        let dir = self.dir.as_ref()?;
        let path = std::ffi::CString::new(format!("{native_id}/{}", name.to_str().ok()?)).ok()?;
        // SAFETY: openat on a directory descriptor we own, with a NUL-ended
        // path; the new descriptor is owned by the `OwnedFd` made from it.
        let fd = unsafe {
            let raw = libc::openat(
                dir.as_raw_fd(),
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if raw < 0 {
                return None;
            }
            OwnedFd::from_raw_fd(raw)
        };
        let n = read(&fd, buf);
        let kept = self.kept(name);
        if n.is_some() && kept.len() < Self::MAX_OPEN {
            kept.insert(native_id, fd);
        }
        n
    }

    #[cfg(not(target_os = "linux"))]
    fn state(&mut self, _native_id: u64) -> Option<&'static str> {
        None
    }

    #[cfg(not(target_os = "linux"))]
    fn syscall(&mut self, _native_id: u64) -> Option<String> {
        None
    }
}

/// Whether `bytes` is thread `tid`'s stat line (`<tid> (<comm>) <state> ...`).
#[cfg(target_os = "linux")]
fn read_is_stat(bytes: &[u8], tid: u64) -> bool {
    let prefix = format!("{tid} (");
    bytes.starts_with(prefix.as_bytes())
}

/// Whether `bytes` is a `syscall` file's one line: `running`, or a number
/// (the system call, `-1` for none) and then hex words (its six arguments,
/// the stack and instruction pointers; or only the two pointers).
#[cfg(target_os = "linux")]
fn read_is_syscall(bytes: &[u8]) -> bool {
    let Some(line) = bytes.strip_suffix(b"\n") else {
        return false;
    };
    if line == b"running" {
        return true;
    }
    let mut words = line.split(|&b| b == b' ');
    let number = words.next().unwrap_or_default();
    let digits = number.strip_prefix(b"-").unwrap_or(number);
    let hex =
        |w: &[u8]| w.len() > 2 && w.starts_with(b"0x") && w[2..].iter().all(u8::is_ascii_hexdigit);
    let rest = words.try_fold(0usize, |count, w| hex(w).then_some(count + 1));
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) && matches!(rest, Some(2 | 8))
}

#[cfg(target_os = "linux")]
fn parse_state(stat: &[u8]) -> Option<&'static str> {
    // The state letter follows the command name, which is in parentheses and
    // may itself contain spaces or parentheses: take the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let letter = *stat.get(close + 2)?;
    Some(match letter {
        b'R' => "running",
        b'S' | b'I' => "sleeping",
        b'D' => "disk-wait",
        b'T' | b't' => "stopped",
        b'Z' | b'X' => "exited",
        _ => "unknown",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ThreadDetails;

    #[test]
    fn own_thread_state_is_read_from_proc() {
        if let Some(tid) = own_native_id() {
            assert_eq!(os_thread_state(tid), Some("running"));
        }
        assert_eq!(os_thread_state(u64::MAX), None);
    }

    /// A thread that waits in a channel's `recv` (a futex wait) until told
    /// to stop: its OS thread id, the sender that stops it, its handle.
    #[cfg(target_os = "linux")]
    fn sleeper_thread() -> (
        u64,
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
    ) {
        use std::sync::mpsc;
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            tx.send(own_native_id().unwrap()).unwrap();
            stop_rx.recv().unwrap();
        });
        (rx.recv().unwrap(), stop_tx, sleeper)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn syscall_lines_are_told_from_other_reads() {
        assert!(read_is_syscall(b"running\n"));
        assert!(read_is_syscall(
            b"202 0x7f3c 0x80 0x0 0x0 0x0 0x0 0x7ffd10 0x7f3c99\n"
        ));
        assert!(read_is_syscall(b"-1 0x7ffd10 0x7f3c99\n"));
        assert!(!read_is_syscall(
            b"202 0x7f3c 0x80 0x0 0x0 0x0 0x0 0x7ffd10 0x7f3c99"
        ));
        assert!(!read_is_syscall(b"4242 (python3) S 1 4242\n"));
        assert!(!read_is_syscall(b"202 0x7f3c\n"));
        assert!(!read_is_syscall(b"\n"));
        assert!(!read_is_syscall(b"x 0x1 0x2\n"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_blocked_threads_syscall_file_stays_open() {
        let (tid, stop_tx, sleeper) = sleeper_thread();
        let mut files = StatFiles {
            pid: std::process::id(),
            ..Default::default()
        };
        // Until it is asleep in `recv`, the thread may still be running.
        let mut line = files.syscall(tid);
        for _ in 0..500 {
            if line.as_deref().is_some_and(|l| l != "running\n") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            line = files.syscall(tid);
        }
        let line = line.expect("the thread's syscall file reads");
        let blocked = crate::capture::waits::parse_syscall(&line, |_, _, _| None);
        assert!(
            matches!(blocked, Some(crate::capture::waits::Syscall::Futex { .. })),
            "{line:?}"
        );
        let kept = files
            .syscall_open
            .get(&tid)
            .map(std::os::fd::AsRawFd::as_raw_fd);
        assert!(kept.is_some());
        assert_eq!(files.syscall(tid), Some(line));
        assert_eq!(
            files
                .syscall_open
                .get(&tid)
                .map(std::os::fd::AsRawFd::as_raw_fd),
            kept
        );
        assert_eq!(files.syscall(u64::MAX), None);
        assert!(!files.syscall_open.contains_key(&u64::MAX));
        stop_tx.send(()).unwrap();
        sleeper.join().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_files_stay_open_for_live_threads_and_close_for_ended_ones() {
        let (tid, stop_tx, sleeper) = sleeper_thread();
        let mut files = StatFiles {
            pid: std::process::id(),
            ..Default::default()
        };
        // Read twice through one kept file (it may not be asleep in recv yet).
        let alive = |s: Option<&str>| matches!(s, Some("sleeping" | "running"));
        assert!(alive(files.state(tid)));
        let kept = files.open.get(&tid).map(std::os::fd::AsRawFd::as_raw_fd);
        assert!(kept.is_some());
        assert!(alive(files.state(tid)));
        assert_eq!(
            files.open.get(&tid).map(std::os::fd::AsRawFd::as_raw_fd),
            kept
        );
        // A thread id that is no thread of ours opens nothing.
        assert_eq!(files.state(u64::MAX), None);
        assert!(!files.open.contains_key(&u64::MAX));
        let kept = files.open.get(&tid).unwrap().try_clone().unwrap();
        stop_tx.send(()).unwrap();
        sleeper.join().unwrap();
        // Ended: the kept file reads nothing (even if a new thread has the
        // id by now), so `state` drops it and opens the id afresh. `join`
        // returns when the thread clears its id, before the kernel has
        // finished its exit: until then it reads as running (or any state
        // the exit passes through), so the file is read again until the
        // task is released (a loaded machine can take a while; 60 s guards
        // against a hang).
        let kept = std::fs::File::from(kept);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut after = stat_state(&kept, tid);
        while matches!(after, Some(state) if state != "exited")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
            after = stat_state(&kept, tid);
        }
        assert!(matches!(after, None | Some("exited")), "{after:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_read_that_is_not_the_threads_stat_line_is_refused() {
        let tid = own_native_id().unwrap();
        let own = std::fs::File::open(format!("/proc/self/task/{tid}/stat")).unwrap();
        assert_eq!(stat_state(&own, tid), Some("running"));
        // The same descriptor taken for another thread's: refused.
        assert_eq!(stat_state(&own, tid + 1), None);
        // A descriptor that is not a stat file at all.
        let status = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(stat_state(&status, tid), None);
    }

    /// What [`StatFiles::state`] makes of a read of `file` from its start:
    /// the state, if the bytes are thread `tid`'s stat line.
    #[cfg(target_os = "linux")]
    fn stat_state(file: &std::fs::File, tid: u64) -> Option<&'static str> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 1024];
        let n = file.read_at(&mut buf, 0).ok()?;
        let stat = &buf[..n];
        read_is_stat(stat, tid).then(|| parse_state(stat)).flatten()
    }

    #[test]
    fn sources_come_from_disk_once_per_file() {
        let dir = std::env::temp_dir().join(format!("tbcollect-enrich-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mod.py");
        std::fs::write(&file, "def f():\n    return 1   \n").unwrap();
        let name = file.to_str().unwrap();
        let mut snap = Snapshot::new(1, "3.11", "t");
        snap.stacks.push(Stack {
            facts: Default::default(),
            id: "thread:1".into(),
            name: "t".into(),
            thread: Some(1),
            state: "unknown".into(),
            frames: vec![
                Frame::new(name, Some(2), "f"),
                Frame::new(name, Some(99), "f"),
                Frame::new("<frozen importlib._bootstrap>", Some(1), "g"),
                Frame::new(name, None, "f"),
            ]
            .into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails::default()),
        });
        fill_sources(&snap);
        let sources: Vec<_> = snap.stacks[0]
            .frames
            .iter()
            .map(|f| f.source.get().cloned())
            .collect();
        assert_eq!(
            sources,
            vec![Some(Text::from("return 1")), None, None, None]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
