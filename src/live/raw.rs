//! What the raw dump (made without the GIL, by the watcher thread) knows
//! beyond faulthandler's bare stacks: each thread's Python name and native
//! id, and which thread probably holds the GIL.
//!
//! The names come from a small table the dumper refreshes whenever it has
//! the GIL anyway (at `install()` and at every dump); the watcher only ever
//! `try_lock`s it, so a thread stuck while updating it cannot stop a raw
//! dump, which then goes out without names. Who holds the GIL is read from
//! `/proc/self/task`, sampled a few times: threads waiting for the GIL (or
//! for any lock) sleep in `futex`; the holder is running, or blocked in some
//! other system call.
//! CPython does not say which thread holds it in any form that can be read
//! without it on every version, so this is a probability and says so.

use std::fmt::Write as _;
use std::sync::Mutex;

/// A thread as `threading` knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadName {
    /// `threading.get_ident()`: what faulthandler prints as `Thread 0x...`.
    pub ident: u64,
    pub native_id: Option<u64>,
    pub name: String,
}

static NAMES: Mutex<Vec<ThreadName>> = Mutex::new(Vec::new());

/// Replaces the table (called with the GIL held, after a capture).
pub fn set_names(names: Vec<ThreadName>) {
    if let Ok(mut table) = NAMES.lock() {
        *table = names;
    }
}

/// The table, unless someone is updating it right now.
pub fn try_names() -> Option<Vec<ThreadName>> {
    NAMES.try_lock().ok().map(|t| t.clone())
}

/// A name as one safe line: control characters, quotes and backslashes escaped.
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars().take(200) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// faulthandler's output with each `Thread 0x...` / `Current thread 0x...`
/// header followed by the thread's name and native id, when known.
pub fn annotate(stacks: &str, names: &[ThreadName]) -> String {
    let mut out = String::with_capacity(stacks.len() + names.len() * 40);
    for line in stacks.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let ident = body
            .strip_prefix("Thread 0x")
            .or_else(|| body.strip_prefix("Current thread 0x"))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|hex| u64::from_str_radix(hex, 16).ok());
        match ident.and_then(|i| names.iter().find(|n| n.ident == i)) {
            Some(known) => {
                let head = body.strip_suffix(':').unwrap_or(body);
                let native = known
                    .native_id
                    .map(|n| format!(", native id {n}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "{head} [\"{}\"{native}]:", escape_name(&known.name));
            }
            None => out.push_str(line),
        }
    }
    out
}

/// What `/proc/self/task/<tid>` says about one thread.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub name: String,
    pub native_id: u64,
    /// The `State:` letter (R running, S sleeping, D disk wait, ...).
    pub state: char,
    /// The system call it is blocked in (None: running, or unknown).
    pub syscall: Option<i64>,
    /// Seen waiting in `futex` in any of the samples: a thread waiting for
    /// the GIL wakes every few milliseconds to ask for it again, so one
    /// look may catch it running.
    pub waits: bool,
}

#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(i64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (7, "poll"),
    (23, "select"),
    (35, "nanosleep"),
    (43, "accept"),
    (45, "recvfrom"),
    (47, "recvmsg"),
    (61, "wait4"),
    (202, "futex"),
    (230, "clock_nanosleep"),
    (232, "epoll_wait"),
    (270, "pselect6"),
    (271, "ppoll"),
    (281, "epoll_pwait"),
    (288, "accept4"),
];
#[cfg(target_arch = "aarch64")]
const SYSCALLS: &[(i64, &str)] = &[
    (63, "read"),
    (64, "write"),
    (72, "pselect6"),
    (73, "ppoll"),
    (98, "futex"),
    (101, "nanosleep"),
    (115, "clock_nanosleep"),
    (202, "accept"),
    (207, "recvfrom"),
    (212, "recvmsg"),
    (22, "epoll_pwait"),
    (242, "accept4"),
    (260, "wait4"),
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALLS: &[(i64, &str)] = &[];

fn syscall_name(number: i64) -> Option<&'static str> {
    SYSCALLS.iter().find(|(n, _)| *n == number).map(|(_, s)| *s)
}

fn is_futex(number: Option<i64>) -> bool {
    number.and_then(syscall_name) == Some("futex")
}

fn describe(task: &TaskState) -> String {
    let doing = if task.state == 'R' {
        "running".to_string()
    } else {
        match task.syscall {
            Some(n) => format!(
                "in {}",
                syscall_name(n).map_or_else(|| format!("system call {n}"), str::to_string)
            ),
            None => format!("state {}", task.state),
        }
    };
    format!(
        "\"{}\" (native id {}, {doing})",
        escape_name(&task.name),
        task.native_id
    )
}

/// The `GIL:` line of a raw dump, from the states of the named threads.
pub fn gil_line(tasks: &[TaskState]) -> String {
    if tasks.is_empty() {
        return "GIL: holder unknown (no thread states to read)".into();
    }
    if SYSCALLS.is_empty() {
        return "GIL: holder unknown (system calls not known on this architecture)".into();
    }
    let candidates: Vec<&TaskState> = tasks.iter().filter(|t| !t.waits).collect();
    match candidates.as_slice() {
        [] => "GIL: holder unknown (every thread waits on a lock)".into(),
        [one] => format!(
            "GIL: probably held by thread {} (every other thread waits on a lock)",
            describe(one)
        ),
        many => format!(
            "GIL: held by one of the threads not waiting on a lock: {}",
            many.iter()
                .map(|t| describe(t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn task_state(tid: u64) -> Option<(char, Option<i64>)> {
    let base = format!("/proc/self/task/{tid}");
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // `pid (comm) S ...`: comm may hold spaces and parentheses.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next())
        .unwrap_or('?');
    let syscall = std::fs::read_to_string(format!("{base}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse().ok()));
    Some((state, syscall))
}

/// How often, and how far apart, the threads' states are sampled.
const SAMPLES: u32 = 5;
const SAMPLE_GAP: std::time::Duration = std::time::Duration::from_millis(3);

/// Reads the state of each named thread of this process from `/proc`, a few
/// times, a few milliseconds apart.
pub fn task_states(names: &[ThreadName]) -> Vec<TaskState> {
    let mut out: Vec<TaskState> = Vec::new();
    for sample in 0..SAMPLES {
        if sample > 0 {
            std::thread::sleep(SAMPLE_GAP);
        }
        for known in names {
            let Some(tid) = known.native_id else {
                continue;
            };
            let Some((state, syscall)) = task_state(tid) else {
                continue; // the thread has ended
            };
            let waits = is_futex(syscall);
            match out.iter_mut().find(|t| t.native_id == tid) {
                Some(t) => {
                    t.waits |= waits;
                    if !t.waits {
                        (t.state, t.syscall) = (state, syscall);
                    }
                }
                None if sample == 0 => out.push(TaskState {
                    name: known.name.clone(),
                    native_id: tid,
                    state,
                    syscall,
                    waits,
                }),
                None => {}
            }
        }
    }
    out
}

/// The table of names and the GIL line, for the raw dump's header.
pub fn header(names: Option<&[ThreadName]>) -> String {
    let Some(names) = names else {
        return "threads: names not available (the table was being updated)\n".into();
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", gil_line(&task_states(names)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(ident: u64, native: u64, name: &str) -> ThreadName {
        ThreadName {
            ident,
            native_id: Some(native),
            name: name.into(),
        }
    }

    #[test]
    fn thread_headers_get_their_names() {
        let stacks = "Thread 0x00007f0000000010 (most recent call first):\n  File \"a.py\", line 1 in f\n\n\
                      Current thread 0x0000000000000020 (most recent call first):\n  File \"b.py\", line 2 in g\n\n\
                      Thread 0x0000000000000030 (most recent call first):\n  File \"c.py\", line 3 in h\n";
        let names = [
            name(0x7f0000000010, 11, "MainThread"),
            name(0x20, 22, "evil\n\x1b[2Jname\""),
        ];
        let out = annotate(stacks, &names);
        assert!(out.contains(
            "Thread 0x00007f0000000010 (most recent call first) [\"MainThread\", native id 11]:\n"
        ));
        assert!(out.contains(
            "Current thread 0x0000000000000020 (most recent call first) [\"evil\\u{a}\\u{1b}[2Jname\\\"\", native id 22]:\n"
        ));
        // A thread the table does not know stays as faulthandler wrote it.
        assert!(out.contains("Thread 0x0000000000000030 (most recent call first):\n"));
        assert!(!out.contains('\x1b'));
        assert_eq!(out.lines().count(), stacks.lines().count());
    }

    fn task(name: &str, state: char, call: Option<&str>) -> TaskState {
        TaskState {
            name: name.into(),
            native_id: 7,
            state,
            syscall: call.map(|c| SYSCALLS.iter().find(|(_, s)| *s == c).unwrap().0),
            waits: call == Some("futex"),
        }
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn the_one_thread_not_waiting_on_a_lock_probably_holds_the_gil() {
        let line = gil_line(&[
            task("MainThread", 'S', Some("read")),
            task("tbcollect-dumper", 'S', Some("futex")),
            task("worker", 'S', Some("futex")),
        ]);
        assert_eq!(
            line,
            "GIL: probably held by thread \"MainThread\" (native id 7, in read) (every other thread waits on a lock)"
        );
        let line = gil_line(&[
            task("MainThread", 'R', None),
            task("sleeper", 'S', Some("clock_nanosleep")),
        ]);
        assert!(line.starts_with("GIL: held by one of the threads not waiting on a lock: \"MainThread\" (native id 7, running), \"sleeper\""), "{line}");
        assert_eq!(
            gil_line(&[task("a", 'S', Some("futex"))]),
            "GIL: holder unknown (every thread waits on a lock)"
        );
        assert_eq!(
            gil_line(&[]),
            "GIL: holder unknown (no thread states to read)"
        );
    }

    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn this_process_threads_are_read_from_proc() {
        // SAFETY: no preconditions.
        let tid = unsafe { libc::gettid() } as u64;
        let states = task_states(&[name(1, tid, "me"), name(2, u64::MAX, "gone")]);
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].native_id, tid);
        assert_eq!(states[0].state, 'R'); // reading its own state, it runs
    }
}
