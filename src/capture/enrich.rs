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
/// doing (Linux `/proc/self/task/<tid>/stat`); the calling thread stays `running`.
pub fn fill_thread_states(stacks: &mut [Stack]) {
    if stacks.is_empty() {
        return;
    }
    let tasks = TaskDir::open();
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
        if let Some(state) = details.native_id.and_then(|id| tasks.state(id)) {
            stack.state = state.into();
        }
    }
}

/// The calling thread's OS thread id (Linux), from `/proc/thread-self`.
pub fn own_native_id() -> Option<u64> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// The scheduler state of one of this process's threads, by native id.
pub fn os_thread_state(native_id: u64) -> Option<&'static str> {
    TaskDir::open().state(native_id)
}

/// `/proc/self/task`, opened once per dump: each thread's `stat` is then
/// opened relative to it (`openat`), which spares the kernel resolving the
/// whole path once per thread; the reads are a third of a thread dump.
struct TaskDir {
    #[cfg(target_os = "linux")]
    fd: Option<std::os::fd::OwnedFd>,
}

impl TaskDir {
    fn open() -> Self {
        #[cfg(target_os = "linux")]
        {
            let fd = std::fs::File::open("/proc/self/task")
                .ok()
                .map(std::os::fd::OwnedFd::from);
            TaskDir { fd }
        }
        #[cfg(not(target_os = "linux"))]
        TaskDir {}
    }

    #[cfg(target_os = "linux")]
    fn state(&self, native_id: u64) -> Option<&'static str> {
        use std::os::fd::AsRawFd;
        let dir = self.fd.as_ref()?;
        let path = std::ffi::CString::new(format!("{native_id}/stat")).ok()?;
        let mut buf = [0u8; 1024];
        // SAFETY: plain system calls on a descriptor we own and a buffer we
        // hold; the file descriptor opened here is closed before returning.
        let len = unsafe {
            let fd = libc::openat(
                dir.as_raw_fd(),
                path.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return None;
            }
            let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
            libc::close(fd);
            usize::try_from(n).ok()?
        };
        parse_state(&buf[..len])
    }

    #[cfg(not(target_os = "linux"))]
    fn state(&self, _native_id: u64) -> Option<&'static str> {
        None
    }
}

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
