//! What a thread or greenlet waits for, in the words tasks already get
//! (`Event.wait`, `Queue.get`, `RLock.acquire (held by Thread "w")`,
//! `sleep (2.5 s left)`, `socket recv`): from its innermost frames, and for
//! a thread blocked in C, from the system call the OS says it is in.
//!
//! Pure: capture hands over frames, the locks a blocked thread's innermost
//! frame refers to ([`LockRef`]) and the `/proc` system-call line; the
//! wording and the wait edges are decided here, checked by `cargo test`.

use crate::model::{Frame, Stack, StackDetails, Text};
use std::collections::HashMap;

/// A lock a blocked thread's innermost frame refers to (a local, a global
/// its code names, an attribute of `self`).
#[derive(Debug, Clone, PartialEq)]
pub struct LockRef {
    /// How the frame names it (`registry_lock`, `self._lock`).
    pub name: String,
    /// The lock object's address: two frames may name one lock differently.
    pub addr: u64,
    pub kind: LockKind,
    /// The OS lock inside it, which a thread blocked on it waits on (0 when
    /// this interpreter keeps none the OS sees).
    pub os_lock: u64,
    /// For an `RLock`: the ident of the thread that holds it (0: free).
    pub owner: u64,
    /// Whether it was locked when read (a `Lock` records no more than this).
    pub held: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `threading.RLock` (C): records its owner.
    RLock,
    /// `threading.Lock`: records no owner.
    Lock,
}

impl LockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::RLock => "RLock",
            LockKind::Lock => "Lock",
        }
    }
}

/// What the OS says a thread is blocked in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Syscall {
    /// `futex`: a lock, a condition, or the GIL; `addr` is the word waited on.
    Futex {
        addr: u64,
    },
    /// A sleep (`clock_nanosleep`, `nanosleep`, `select` on no fds): seconds
    /// left, known only for `clock_nanosleep` to an absolute time.
    Sleep {
        left: Option<f64>,
    },
    Poll,
    Recv,
    Read,
    Accept,
    Connect,
    ChildWait,
    Other,
}

#[cfg(target_arch = "x86_64")]
mod nr {
    pub const FUTEX: &[u64] = &[202, 449];
    pub const SLEEP: &[u64] = &[230, 35];
    pub const POLL: &[u64] = &[232, 281, 441, 7, 271, 23, 270];
    pub const SELECT: &[u64] = &[23, 270];
    pub const RECV: &[u64] = &[45, 47, 299];
    pub const READ: &[u64] = &[0, 19];
    pub const ACCEPT: &[u64] = &[43, 288];
    pub const CONNECT: &[u64] = &[42];
    pub const CHILD: &[u64] = &[61, 247];
}

#[cfg(target_arch = "aarch64")]
mod nr {
    pub const FUTEX: &[u64] = &[98, 449];
    pub const SLEEP: &[u64] = &[115, 101];
    pub const POLL: &[u64] = &[22, 441, 73, 72];
    pub const SELECT: &[u64] = &[72];
    pub const RECV: &[u64] = &[207, 212, 243];
    pub const READ: &[u64] = &[63, 65];
    pub const ACCEPT: &[u64] = &[202, 242];
    pub const CONNECT: &[u64] = &[203];
    pub const CHILD: &[u64] = &[260, 95];
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod nr {
    pub const FUTEX: &[u64] = &[];
    pub const SLEEP: &[u64] = &[];
    pub const POLL: &[u64] = &[];
    pub const SELECT: &[u64] = &[];
    pub const RECV: &[u64] = &[];
    pub const READ: &[u64] = &[];
    pub const ACCEPT: &[u64] = &[];
    pub const CONNECT: &[u64] = &[];
    pub const CHILD: &[u64] = &[];
}

/// Parses `/proc/<pid>/task/<tid>/syscall` (`202 0x7f.. 0x189 ...`);
/// `sleep_left` turns a `clock_nanosleep`'s (clock, flags, request pointer)
/// into seconds left. `None` for a running thread (`running`) or bad input.
pub fn parse_syscall(
    line: &str,
    sleep_left: impl Fn(u64, u64, u64) -> Option<f64>,
) -> Option<Syscall> {
    let mut parts = line.split_whitespace();
    let nr: u64 = parts.next()?.parse().ok()?;
    let args: Vec<u64> = parts
        .take(6)
        .filter_map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
        .collect();
    let arg = |i: usize| args.get(i).copied().unwrap_or(0);
    Some(if nr::FUTEX.contains(&nr) {
        Syscall::Futex { addr: arg(0) }
    } else if nr::SLEEP.contains(&nr) {
        // clock_nanosleep(clock, flags, request, remain); nanosleep(request, remain)
        let left = if nr == nr::SLEEP[0] {
            sleep_left(arg(0), arg(1), arg(2))
        } else {
            None
        };
        Syscall::Sleep { left }
    } else if nr::SELECT.contains(&nr) && (0..4).all(|i| arg(i) == 0) {
        // select(0, NULL, NULL, NULL, &timeout) watches nothing: it is how
        // time.sleep() sleeps before 3.11. Its timeout is the requested
        // duration until the call returns, not the time left, so no `left`.
        Syscall::Sleep { left: None }
    } else if nr::POLL.contains(&nr) {
        Syscall::Poll
    } else if nr::RECV.contains(&nr) {
        Syscall::Recv
    } else if nr::READ.contains(&nr) {
        Syscall::Read
    } else if nr::ACCEPT.contains(&nr) {
        Syscall::Accept
    } else if nr::CONNECT.contains(&nr) {
        Syscall::Connect
    } else if nr::CHILD.contains(&nr) {
        Syscall::ChildWait
    } else {
        Syscall::Other
    })
}

/// Library functions that name a wait, by file (path suffix) and qualified
/// name. A run of them is named by its outermost (`Queue.get` rather than
/// the `Condition.wait` it calls).
const WAIT_APIS: &[(&str, &str, &str)] = &[
    ("/threading.py", "Event.wait", "Event.wait"),
    ("/threading.py", "Condition.wait", "Condition.wait"),
    ("/threading.py", "Condition.wait_for", "Condition.wait"),
    ("/threading.py", "Semaphore.acquire", "Semaphore.acquire"),
    ("/threading.py", "Barrier.wait", "Barrier.wait"),
    ("/threading.py", "Thread.join", "Thread.join"),
    (
        "/threading.py",
        "Thread._wait_for_tstate_lock",
        "Thread.join",
    ),
    ("/threading.py", "_RLock.acquire", "RLock.acquire"),
    ("/queue.py", "Queue.get", "Queue.get"),
    ("/queue.py", "Queue.put", "Queue.put"),
    (
        "/concurrent/futures/_base.py",
        "Future.result",
        "Future.result",
    ),
    (
        "/concurrent/futures/_base.py",
        "Future.exception",
        "Future.result",
    ),
    (
        "/concurrent/futures/_base.py",
        "wait",
        "concurrent.futures.wait",
    ),
    (
        "/concurrent/futures/_base.py",
        "as_completed",
        "as_completed",
    ),
    (
        "/concurrent/futures/thread.py",
        "_worker",
        "executor idle (queue get)",
    ),
    ("/multiprocessing/pool.py", "ApplyResult.get", "Pool result"),
    ("/subprocess.py", "Popen.wait", "subprocess wait"),
    ("/subprocess.py", "Popen.communicate", "subprocess wait"),
    ("/selectors.py", "EpollSelector.select", "select/epoll"),
    ("/selectors.py", "PollSelector.select", "select/epoll"),
    ("/selectors.py", "SelectSelector.select", "select/epoll"),
    ("/selectors.py", "_PollLikeSelector.select", "select/epoll"),
    ("/socket.py", "socket.accept", "socket accept"),
    (
        "/socketserver.py",
        "BaseServer.serve_forever",
        "select/epoll",
    ),
    // gevent: what a greenlet is switched out in.
    ("/gevent/event.py", "Event.wait", "Event.wait"),
    ("/gevent/event.py", "AsyncResult.get", "AsyncResult.get"),
    ("/gevent/event.py", "AsyncResult.wait", "AsyncResult.get"),
    ("/gevent/queue.py", "Queue.get", "Queue.get"),
    ("/gevent/queue.py", "Queue.put", "Queue.put"),
    ("/gevent/queue.py", "Queue.peek", "Queue.get"),
    // gevent 24.10+: the queues' methods are `SimpleQueue`'s.
    ("/gevent/queue.py", "SimpleQueue.get", "Queue.get"),
    ("/gevent/queue.py", "SimpleQueue.put", "Queue.put"),
    ("/gevent/queue.py", "SimpleQueue.peek", "Queue.get"),
    ("/gevent/queue.py", "Channel.get", "Channel.get"),
    ("/gevent/queue.py", "Channel.put", "Channel.put"),
    (
        "/gevent/_semaphore.py",
        "Semaphore.acquire",
        "Semaphore.acquire",
    ),
    (
        "/gevent/_semaphore.py",
        "Semaphore.__enter__",
        "Semaphore.acquire",
    ),
    (
        "/gevent/lock.py",
        "_AtomicSemaphoreMixin.acquire",
        "Semaphore.acquire",
    ),
    (
        "/gevent/_hub_primitives.py",
        "wait_on_objects",
        "gevent.wait",
    ),
    (
        "/gevent/_hub_primitives.py",
        "_WaitIterator.__next__",
        "gevent.wait",
    ),
    ("/gevent/lock.py", "RLock.acquire", "RLock.acquire"),
    ("/gevent/lock.py", "RLock.__enter__", "RLock.acquire"),
    ("/gevent/greenlet.py", "joinall", "joinall"),
    ("/gevent/greenlet.py", "Greenlet.join", "Greenlet.join"),
    ("/gevent/greenlet.py", "Greenlet.get", "Greenlet.join"),
    ("/gevent/pool.py", "GroupMappingMixin.map", "joinall"),
    ("/gevent/pool.py", "Group.join", "joinall"),
    ("/gevent/hub.py", "sleep", "sleep"),
    ("/gevent/hub.py", "Hub.join", "hub join"),
    ("/gevent/hub.py", "Hub.run", "event loop"),
    ("/gevent/_socketcommon.py", "_wait", "socket wait"),
    ("/gevent/_socket3.py", "socket.recv", "socket recv"),
    ("/gevent/_socket3.py", "socket.recv_into", "socket recv"),
    ("/gevent/_socket3.py", "socket.recvfrom", "socket recv"),
    ("/gevent/_socket3.py", "socket.accept", "socket accept"),
    ("/gevent/_socket3.py", "socket.sendall", "socket send"),
    ("/gevent/_socket3.py", "socket.connect", "socket connect"),
    ("/gevent/_socketcommon.py", "socket.recv", "socket recv"),
    // gevent 21+: the methods are `SocketMixin`'s.
    (
        "/gevent/_socketcommon.py",
        "SocketMixin.recv",
        "socket recv",
    ),
    (
        "/gevent/_socketcommon.py",
        "SocketMixin.recv_into",
        "socket recv",
    ),
    (
        "/gevent/_socketcommon.py",
        "SocketMixin.recvfrom",
        "socket recv",
    ),
    (
        "/gevent/_socketcommon.py",
        "SocketMixin.recvfrom_into",
        "socket recv",
    ),
    (
        "/gevent/_socketcommon.py",
        "SocketMixin.send",
        "socket send",
    ),
    (
        "/gevent/_socketcommon.py",
        "SocketMixin.sendall",
        "socket send",
    ),
    (
        "/gevent/_socketcommon.py",
        "SocketMixin.connect",
        "socket connect",
    ),
    (
        "/gevent/_socketcommon.py",
        "socket.connect",
        "socket connect",
    ),
    ("/gevent/subprocess.py", "Popen.wait", "subprocess wait"),
    ("/gevent/os.py", "waitpid", "subprocess wait"),
    ("/gevent/select.py", "select", "select/epoll"),
    (
        "/gevent/selectors.py",
        "GeventSelector.select",
        "select/epoll",
    ),
];

fn api_of(frame: &Frame) -> Option<&'static str> {
    let file: &str = &frame.filename;
    let func: &str = &frame.function;
    // 3.9 and 3.10 code objects have no qualified name: `wait` stands for
    // `Event.wait` there; the file and the plain name must then agree.
    WAIT_APIS.iter().find_map(|(suffix, name, words)| {
        let plain = name.rsplit('.').next().unwrap_or(name);
        (file.ends_with(suffix) && (func == *name || (!func.contains('.') && func == plain)))
            .then_some(*words)
    })
}

/// The wait the innermost frames name: the outermost known API of the
/// innermost run of library frames.
pub fn api(frames: &[Frame]) -> Option<&'static str> {
    let mut found = None;
    for (depth, frame) in frames.iter().rev().enumerate() {
        if !crate::model::analysis::is_library_file(&frame.filename) {
            break;
        }
        match api_of(frame) {
            // A pool worker is idle only when its loop is the innermost
            // frame (blocked in the C queue); above a job it is busy.
            Some(words) if words.starts_with("executor idle") && depth > 0 => {}
            Some(words) => found = Some(words),
            None => {}
        }
    }
    found
}

/// `sleep (2.5 s left)`, `Event.wait`, ... for a thread; `None` when nothing
/// says what it waits for (it may be running).
/// Whether what a blocked thread waits on depends on its system call: not
/// when its innermost library frames already say (see [`api`]), for both
/// the lock it may wait on and its `awaiting` are then read from them.
pub fn needs_syscall(stack: &Stack) -> bool {
    api(&stack.frames).is_none()
}

pub fn thread_awaiting(frames: &[Frame], syscall: Option<Syscall>) -> Option<String> {
    if let Some(words) = api(frames) {
        return Some(words.to_string());
    }
    Some(match syscall? {
        Syscall::Sleep { left: Some(left) } => format!("sleep ({:.1} s left)", left.max(0.0)),
        Syscall::Sleep { left: None } => "sleep".into(),
        Syscall::Poll => "select/epoll".into(),
        Syscall::Recv => "socket recv".into(),
        Syscall::Read => "read".into(),
        Syscall::Accept => "socket accept".into(),
        Syscall::Connect => "socket connect".into(),
        Syscall::ChildWait => "subprocess wait".into(),
        // A futex is a lock only when a lock the frame refers to matches it
        // (see `resolve_locks`); it may be the GIL.
        Syscall::Futex { .. } | Syscall::Other => return None,
    })
}

/// Which of `locks` a thread blocked on futex word `addr` waits on: the one
/// whose OS lock is that word. Where the interpreter keeps no OS lock per
/// lock (`os_lock == 0`, the parking lot of 3.13+), the one lock held (an
/// `RLock` by another thread, a `Lock` by anyone), if there is exactly one.
pub fn waited_lock(locks: &[LockRef], addr: u64, own_ident: u64) -> Option<&LockRef> {
    // The futex word of a glibc semaphore or mutex is at its start, or a
    // few words in.
    let exact = locks
        .iter()
        .find(|l| l.os_lock != 0 && addr >= l.os_lock && addr < l.os_lock + 32);
    if exact.is_some() {
        return exact;
    }
    let mut unknown = locks
        .iter()
        .filter(|l| l.os_lock == 0 && l.held)
        .filter(|l| l.kind == LockKind::Lock || l.owner != own_ident);
    match (unknown.next(), unknown.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

/// A thread blocked in `.result()` on a future a task feeds
/// (`run_coroutine_threadsafe`) is listed in that task's `awaited_by`: its
/// `awaiting` names the task, and it waits for it.
pub fn link_threads_to_tasks(stacks: &mut [Stack]) {
    let mut edges: Vec<(String, Text)> = Vec::new();
    for stack in stacks.iter() {
        if let StackDetails::Task(d) = &stack.details {
            for waiter in d.awaited_by.iter().filter(|w| w.starts_with("thread:")) {
                edges.push((waiter.clone(), stack.name.clone()));
            }
        }
    }
    if edges.is_empty() {
        return;
    }
    for stack in stacks.iter_mut() {
        for (waiter, name) in &edges {
            if &*stack.id == waiter.as_str() {
                let what = stack.facts.awaiting.as_deref().unwrap_or("Future.result");
                stack.facts.awaiting = Some(format!("{what} (Task {name:?})").into());
            }
        }
    }
}

/// `registry_lock <0x7f3a...>`: the name the waiting frame gives it, and
/// its address, which is the same whatever each frame calls it.
fn lock_words(lock: &LockRef) -> String {
    format!("{} <{:#x}>", lock.name, lock.addr)
}

/// What capture learnt about one blocked thread.
#[derive(Debug, Clone, Default)]
pub struct ThreadWait {
    pub ident: u64,
    pub locks: Vec<LockRef>,
    pub syscall: Option<Syscall>,
}

/// Fills `awaiting`, `waiting_for` and the holders' `holds` of the thread
/// stacks in `stacks`.
pub fn resolve_threads(stacks: &mut [Stack], waits: &[ThreadWait]) {
    let by_ident: HashMap<u64, &ThreadWait> = waits.iter().map(|w| (w.ident, w)).collect();
    let index: HashMap<u64, usize> = stacks
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((s.thread?, i)))
        .filter(|(_, i)| matches!(stacks[*i].details, StackDetails::Thread(_)))
        .collect();
    let names: Vec<Text> = stacks.iter().map(|s| s.name.clone()).collect();
    let mut holds: Vec<(usize, String)> = Vec::new();
    for stack in stacks.iter_mut() {
        let StackDetails::Thread(d) = &stack.details else {
            continue;
        };
        if d.current {
            continue;
        }
        let Some(ident) = stack.thread else { continue };
        let wait = by_ident.get(&ident);
        let syscall = wait.and_then(|w| w.syscall);
        let lock = match (syscall, wait) {
            (Some(Syscall::Futex { addr }), Some(w)) if api(&stack.frames).is_none() => {
                waited_lock(&w.locks, addr, ident)
            }
            _ => None,
        };
        match lock {
            Some(lock) => {
                let holder = (lock.owner != 0 && lock.owner != ident)
                    .then(|| index.get(&lock.owner).copied())
                    .flatten();
                let mut text = format!("{}.acquire {}", lock.kind.as_str(), lock_words(lock));
                match (lock.kind, holder) {
                    (_, Some(h)) => {
                        text.push_str(&format!(" (held by Thread {:?})", names[h]));
                        holds.push((h, format!("{} {}", lock.kind.as_str(), lock_words(lock))));
                        stack.facts.waiting_for = vec![format!("thread:{}", lock.owner).into()];
                    }
                    (LockKind::Lock, None) => {
                        text.push_str(" (threading.Lock records no holder)");
                    }
                    (LockKind::RLock, None) => {}
                }
                stack.facts.awaiting = Some(text.into());
            }
            None => {
                stack.facts.awaiting = thread_awaiting(&stack.frames, syscall).map(Text::from);
            }
        }
    }
    for (h, lock) in holds {
        let list = &mut stacks[h].facts.holds;
        if !list.iter().any(|l| *l == lock) {
            list.push(lock.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StackFacts, ThreadDetails};

    fn frames(list: &[(&str, &str)]) -> Vec<Frame> {
        list.iter()
            .map(|(f, n)| Frame::new(*f, Some(1), *n))
            .collect()
    }

    const T: &str = "/usr/lib/python3.11/threading.py";

    #[test]
    fn the_outermost_api_of_the_innermost_library_run_names_the_wait() {
        let q = frames(&[
            ("/srv/app.py", "worker"),
            ("/usr/lib/python3.11/queue.py", "Queue.get"),
            (T, "Condition.wait"),
        ]);
        assert_eq!(api(&q), Some("Queue.get"));
        let e = frames(&[
            ("/srv/app.py", "main"),
            (T, "Event.wait"),
            (T, "Condition.wait"),
        ]);
        assert_eq!(thread_awaiting(&e, None).as_deref(), Some("Event.wait"));
        // 3.10 names functions without their class.
        let old = frames(&[("/srv/app.py", "main"), (T, "wait")]);
        assert!(api(&old).is_some());
        // An idle pool worker, and one running a job in the library.
        let w = "/usr/lib/python3.11/concurrent/futures/thread.py";
        let idle = frames(&[(T, "Thread.run"), (w, "_worker")]);
        assert_eq!(api(&idle), Some("executor idle (queue get)"));
        let busy = frames(&[(T, "Thread.run"), (w, "_worker"), (w, "_WorkItem.run")]);
        assert_eq!(api(&busy), None);
        // User code below the library: the library wait is not the innermost.
        let user = frames(&[(T, "Thread.run"), ("/srv/app.py", "spin")]);
        assert_eq!(api(&user), None);
    }

    #[test]
    fn gevent_21_and_24_method_names_name_their_waits() {
        let g = "/srv/venv/lib/python3.11/site-packages/gevent";
        let at = |file: &str, func: &str| {
            let path = format!("{g}/{file}");
            api(&frames(&[
                ("/srv/app.py", "handle"),
                (&path, func),
                (&format!("{g}/_hub_primitives.py"), "_primitive_wait"),
            ]))
        };
        assert_eq!(
            at("_socketcommon.py", "SocketMixin.recv"),
            Some("socket recv")
        );
        assert_eq!(at("queue.py", "SimpleQueue.get"), Some("Queue.get"));
        assert_eq!(at("queue.py", "SimpleQueue.put"), Some("Queue.put"));
        assert_eq!(
            at("_semaphore.py", "Semaphore.acquire"),
            Some("Semaphore.acquire")
        );
    }

    #[test]
    fn system_calls_name_waits_in_c() {
        let sleep = |_c: u64, flags: u64, _p: u64| (flags == 1).then_some(2.46);
        let user = frames(&[("/srv/app.py", "main")]);
        let nr = nr::SLEEP[0];
        let line = format!("{nr} 0x1 0x1 0x7f00 0x0 0x0 0x0 0x7f 0x7f");
        let sc = parse_syscall(&line, sleep);
        assert_eq!(
            thread_awaiting(&user, sc).as_deref(),
            Some("sleep (2.5 s left)")
        );
        let recv = format!("{} 0x3 0x7f 0xa 0x0 0x0 0x0 0x7f 0x7f", nr::RECV[0]);
        assert_eq!(
            thread_awaiting(&user, parse_syscall(&recv, sleep)).as_deref(),
            Some("socket recv")
        );
        assert_eq!(parse_syscall("running", sleep), None);
        for &nr in nr::SELECT {
            // select/pselect6 on no fds: a sleep (time.sleep() before 3.11).
            let nap = format!("{nr} 0x0 0x0 0x0 0x0 0x7ffd1c2a9e40 0x0 0x7ffd 0x7f");
            assert_eq!(
                parse_syscall(&nap, sleep),
                Some(Syscall::Sleep { left: None })
            );
            assert_eq!(
                thread_awaiting(&user, parse_syscall(&nap, sleep)).as_deref(),
                Some("sleep")
            );
            // The same call on a real fd set waits for I/O.
            let io = format!("{nr} 0x5 0x7ffd1c2a9e00 0x0 0x0 0x7ffd1c2a9e40 0x0 0x7ffd 0x7f");
            assert_eq!(parse_syscall(&io, sleep), Some(Syscall::Poll));
        }
        let futex = format!("{} 0x5597b94cba80 0x189 0x0", nr::FUTEX[0]);
        assert_eq!(
            parse_syscall(&futex, sleep),
            Some(Syscall::Futex {
                addr: 0x5597b94cba80
            })
        );
        // A futex alone says nothing: it may be the GIL.
        assert_eq!(
            thread_awaiting(&user, Some(Syscall::Futex { addr: 1 })),
            None
        );
    }

    fn thread(ident: u64, name: &str) -> Stack {
        Stack {
            id: format!("thread:{ident}").into(),
            name: name.into(),
            thread: Some(ident),
            state: "sleeping".into(),
            frames: frames(&[("/srv/app.py", "work")]).into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails::default()),
            facts: StackFacts::default(),
        }
    }

    fn rlock(name: &str, os_lock: u64, owner: u64) -> LockRef {
        LockRef {
            name: name.into(),
            addr: os_lock + 1,
            kind: LockKind::RLock,
            os_lock,
            owner,
            held: owner != 0,
        }
    }

    #[test]
    fn a_waiter_names_the_holder_and_the_holder_lists_the_lock() {
        let mut stacks = vec![thread(1, "holder"), thread(2, "waiter"), thread(3, "idle")];
        let waits = vec![
            ThreadWait {
                ident: 2,
                locks: vec![rlock("other", 0x9000, 0), rlock("registry_lock", 0x5000, 1)],
                syscall: Some(Syscall::Futex { addr: 0x5000 }),
            },
            ThreadWait {
                ident: 3,
                locks: vec![rlock("registry_lock", 0x5000, 1)],
                // Not on the lock's futex: the GIL, say.
                syscall: Some(Syscall::Futex { addr: 0x1234 }),
            },
        ];
        resolve_threads(&mut stacks, &waits);
        assert_eq!(
            stacks[1].facts.awaiting.as_deref(),
            Some("RLock.acquire registry_lock <0x5001> (held by Thread \"holder\")")
        );
        assert_eq!(stacks[1].facts.waiting_for, vec!["thread:1"]);
        assert_eq!(stacks[0].facts.holds, vec!["RLock registry_lock <0x5001>"]);
        assert_eq!(stacks[2].facts.awaiting, None);
        assert!(stacks[2].facts.waiting_for.is_empty());
    }

    #[test]
    fn a_plain_lock_says_it_records_no_holder() {
        let mut stacks = vec![thread(2, "waiter")];
        let waits = vec![ThreadWait {
            ident: 2,
            locks: vec![LockRef {
                name: "lock".into(),
                addr: 0xabc,
                kind: LockKind::Lock,
                os_lock: 0x5000,
                owner: 0,
                held: true,
            }],
            syscall: Some(Syscall::Futex { addr: 0x5000 }),
        }];
        resolve_threads(&mut stacks, &waits);
        assert_eq!(
            stacks[0].facts.awaiting.as_deref(),
            Some("Lock.acquire lock <0xabc> (threading.Lock records no holder)")
        );
        assert!(stacks[0].facts.waiting_for.is_empty());
    }

    #[test]
    fn without_os_locks_only_a_single_held_rlock_is_taken() {
        let one = [rlock("a", 0, 7)];
        assert_eq!(waited_lock(&one, 1, 2).map(|l| l.name.as_str()), Some("a"));
        let two = [rlock("a", 0, 7), rlock("b", 0, 8)];
        assert_eq!(waited_lock(&two, 1, 2), None);
        // Held by the thread itself: re-entry never blocks.
        assert_eq!(waited_lock(&[rlock("a", 0, 2)], 1, 2), None);
    }

    #[test]
    fn without_os_locks_a_single_held_plain_lock_is_taken() {
        let lock = |name: &str, held: bool| LockRef {
            name: name.into(),
            addr: 0xabc,
            kind: LockKind::Lock,
            os_lock: 0,
            owner: 0,
            held,
        };
        let one = [lock("a", true), lock("free", false)];
        assert_eq!(waited_lock(&one, 1, 2).map(|l| l.name.as_str()), Some("a"));
        assert_eq!(waited_lock(&[lock("a", false)], 1, 2), None);
        assert_eq!(
            waited_lock(&[lock("a", true), rlock("b", 0, 7)], 1, 2),
            None
        );
    }
}
