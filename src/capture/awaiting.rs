//! What a suspended asyncio task waits for, in words a person reads at a
//! glance: `sleep (wakes in 3599.8 s)`, `gather of 3`, `Task 'fetch'`.
//!
//! Capture gathers plain [`Facts`] (code names of the await chain, the kind
//! of future the task is blocked on, a timer deadline); this module turns
//! them into the `awaiting` text. It knows nothing of PyO3, so `cargo test`
//! checks every wording on literal facts.

use crate::model::Text;
use std::fmt::Write;

/// One coroutine (or generator, async generator) of a task's await chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    /// `__qualname__` of an asyncio coroutine (`Event.wait`, `sleep`); only
    /// asyncio's names are ever read, so capture leaves the others `None`
    /// (ten thousand links then cost no reference count between them).
    pub qualname: Option<crate::model::Text>,
    /// True when its code lives in the `asyncio` package.
    pub asyncio: bool,
}

impl Link {
    pub fn new(qualname: impl Into<crate::model::Text>, asyncio: bool) -> Self {
        Link {
            qualname: Some(qualname.into()),
            asyncio,
        }
    }

    /// A link whose name capture did not read.
    pub fn unnamed(asyncio: bool) -> Self {
        Link {
            qualname: None,
            asyncio,
        }
    }

    fn name(&self) -> &str {
        self.qualname.as_deref().unwrap_or_default()
    }
}

/// The future a task is blocked on (its `_fut_waiter`), classified.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Waiter {
    /// No future: the task yielded to the loop (`sleep(0)`), has not started,
    /// or awaits something that is not a future.
    #[default]
    Nothing,
    /// A future capture did not look into, because the API the task waits
    /// in (see [`needs_waiter`]) already says what it is.
    Unexamined,
    /// Another task.
    Task { name: String },
    /// The future `asyncio.gather()` returns.
    Gather { children: usize },
    /// A future chained to a `concurrent.futures.Future` (`to_thread`,
    /// `run_in_executor`); `thread` is the worker running it, when found.
    Executor { thread: Option<u64> },
    /// Any other future. `via` is the asyncio helper whose done-callbacks
    /// on other tasks resolve it (`shield`, `_wait`, `wait_for`, ...), and
    /// `tasks` the names of those tasks.
    Future {
        type_name: String,
        state: String,
        via: Option<String>,
        tasks: Vec<String>,
    },
    /// Not a future at all: described by its type name only.
    Other { type_name: String },
}

/// Everything capture learnt about one suspended task's wait.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    /// The await chain, outermost first. Only the links below its innermost
    /// user coroutine are read (see [`api`]), so capture keeps one user
    /// link for all the user code above them.
    pub links: Vec<Link>,
    pub waiter: Waiter,
    /// Type name of the innermost awaited object when it is neither a
    /// coroutine nor the waiter (an unknown awaitable).
    pub leaf: Option<String>,
    /// Seconds until the timer of what the task waits on fires: a sleep's,
    /// or (3.9-3.11) the one `wait_for` set on its waiter.
    pub deadline: Option<f64>,
    /// Seconds until the task's own timeout fires (`asyncio.timeout()`, and
    /// `wait_for` from 3.12, which is one): it cancels the wait, whatever
    /// the wait is. A sleep says when it wakes, unless the timeout fires
    /// first.
    pub timeout: Option<f64>,
    /// The coroutine a `wait_for` awaits in place (3.12+: no task of its
    /// own), by qualified name: what the task waits for, with a timeout.
    pub timed: Option<Text>,
    /// Children of the `TaskGroup` the task is the parent of.
    pub group_size: Option<usize>,
}

impl Facts {
    /// Seconds until the first timer that ends the wait fires.
    fn ends(&self) -> Option<f64> {
        match (self.deadline, self.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A deadline and a timeout as [`printed`] gives them.
type Printed = (Option<u64>, Option<u64>);

/// A deadline as the tenths of a second it prints as: `Some(None)` for no
/// deadline, `None` when that needs the exact formatter.
fn printed(deadline: Option<f64>) -> Option<Option<u64>> {
    match deadline {
        None => Some(None),
        Some(d) => tenths(d).map(Some),
    }
}

/// The API a chain is suspended in: the outermost coroutine of the
/// innermost run of asyncio-package coroutines (`Condition.wait` rather
/// than the `Lock.acquire` it calls; `wait` rather than `_wait`).
fn api(links: &[Link]) -> Option<&str> {
    let innermost_user = links.iter().rposition(|l| !l.asyncio);
    let run = &links[innermost_user.map_or(0, |i| i + 1)..];
    // `async with lock:` enters through `_ContextManagerMixin.__aenter__`;
    // the primitive's own method below it says more.
    let skip = run
        .iter()
        .take(run.len().saturating_sub(1))
        .take_while(|l| l.name().ends_with(".__aenter__"))
        .count();
    run.get(skip).map(Link::name)
}

/// True when the description of a chain depends on what kind of future the
/// task is blocked on; false inside the primitives that name themselves
/// (`sleep`, `Event.wait`, `Queue.get`, ...), whose future need not be read.
pub fn needs_waiter(links: &[Link]) -> bool {
    matches!(
        api(links),
        None | Some("wait_for" | "wait" | "_wait" | "to_thread")
    )
}

#[cfg(test)]
fn seconds(deadline: f64) -> String {
    let mut out = String::with_capacity(16);
    push_seconds(&mut out, deadline);
    out
}

/// Appends `{:.1} s` of `deadline` (never negative). Ten thousand sleeping
/// tasks each get one: tenths are written from an integer when the value is
/// far from a rounding tie, which is what `{:.1}` would print; near a tie
/// (or for odd values) the exact formatter decides.
pub(crate) fn push_seconds(out: &mut String, deadline: f64) {
    match tenths(deadline) {
        Some(t) => {
            // Digits by hand, right to left: `write!` costs more than the rest
            // of `describe_into`.
            let mut buf = [0u8; 24];
            let mut start = buf.len() - 4;
            buf[start..].copy_from_slice(&[b'.', b'0' + (t % 10) as u8, b' ', b's']);
            let mut whole = t / 10;
            loop {
                start -= 1;
                buf[start] = b'0' + (whole % 10) as u8;
                whole /= 10;
                if whole == 0 {
                    break;
                }
            }
            // Only ASCII digits, '.', ' ' and 's' were written: no UTF-8 check needed.
            // SAFETY: only ASCII digits, '.', ' ' and 's' were written to `buf[start..]`, which is
            // valid UTF-8.
            out.push_str(unsafe { std::str::from_utf8_unchecked(&buf[start..]) });
        }
        None => {
            let _ = write!(out, "{:.1} s", deadline.max(0.0));
        }
    }
}

/// `deadline` in tenths of a second as `{:.1}` rounds it, when that is
/// certain without the exact formatter: positive, below a million seconds,
/// and not within a millionth of a rounding tie.
fn tenths(deadline: f64) -> Option<u64> {
    let x = deadline.max(0.0);
    let tenths = x * 10.0;
    // Integer truncation is `floor` here (0 < x < 1e6), without a libm call.
    let whole_tenths = tenths as u64;
    let fraction = tenths - whole_tenths as f64;
    (x > 0.0 && x < 1e6 && (fraction - 0.5).abs() > 1e-6)
        .then(|| whole_tenths + u64::from(fraction > 0.5))
}

/// Appends ` (times out in N s)`.
fn push_times_out(out: &mut String, deadline: f64) {
    out.push_str(" (times out in ");
    push_seconds(out, deadline);
    out.push(')');
}

fn push_executor(out: &mut String, thread: Option<u64>) {
    out.push_str("to_thread / run_in_executor");
    if let Some(ident) = thread {
        let _ = write!(out, " (thread:{ident})");
    }
}

fn push_quoted_task(out: &mut String, name: &str) {
    let _ = write!(out, "Task '{name}'");
}

/// Appends the waiter alone, for chains that are not inside a known asyncio
/// API; `false` (nothing written) when it says nothing.
fn push_waiter(out: &mut String, waiter: &Waiter) -> bool {
    match waiter {
        Waiter::Nothing | Waiter::Unexamined => return false,
        Waiter::Task { name } => push_quoted_task(out, name),
        Waiter::Gather { children } => {
            let _ = write!(out, "gather of {children}");
        }
        Waiter::Executor { thread } => push_executor(out, *thread),
        Waiter::Future {
            type_name,
            state,
            via,
            tasks,
        } => match (via.as_deref(), tasks.as_slice()) {
            (Some("shield"), [one]) => {
                out.push_str("shield of ");
                push_quoted_task(out, one);
            }
            (Some("wait_for" | "_release_waiter"), [one]) => {
                out.push_str("wait_for ");
                push_quoted_task(out, one);
            }
            (Some("_wait" | "wait"), many) if !many.is_empty() => {
                let _ = write!(out, "wait on {}", many.len());
            }
            _ => {
                let _ = write!(out, "{type_name} {}", state.to_lowercase());
            }
        },
        Waiter::Other { type_name } => out.push_str(type_name),
    }
    true
}

#[cfg(test)]
fn describe(facts: &Facts) -> Option<String> {
    let mut out = String::new();
    describe_into(facts, &mut out).then_some(out)
}

/// The `awaiting` texts of one capture. Tasks listed one after another
/// mostly wait alike (ten thousand in one `sleep`): facts that say what the
/// previous task's said get its text without writing it again, and a text
/// equal to the previous one is that one, shared.
#[derive(Default)]
pub struct Texts {
    buffer: String,
    last: Option<Text>,
    /// The facts `last` was written from, when they can be compared: the
    /// deadline and timeout as the tenths they print as (`None` inside: none).
    seen: Option<(Facts, Printed)>,
}

impl Texts {
    /// The text of `facts` (see [`describe_into`]).
    pub fn describe(&mut self, facts: &Facts) -> Option<Text> {
        let deadline = printed(facts.deadline).zip(printed(facts.timeout));
        if let (Some(deadline), Some((seen, seen_deadline))) = (deadline, &self.seen) {
            let alike = *seen_deadline == deadline
                && seen.links == facts.links
                && seen.waiter == facts.waiter
                && seen.leaf == facts.leaf
                && seen.timed == facts.timed
                && seen.group_size == facts.group_size;
            if alike {
                return self.last.clone();
            }
        }
        let text = if !describe_into(facts, &mut self.buffer) {
            None
        } else {
            match &self.last {
                Some(last) if last.as_str() == self.buffer => Some(last.clone()),
                _ => Some(Text::from(self.buffer.as_str())),
            }
        };
        self.last = text.clone();
        match (deadline, &mut self.seen) {
            (None, _) => self.seen = None,
            // The previous facts' buffers take the new ones: no allocation
            // while tasks keep to a few shapes.
            (Some(deadline), Some((seen, seen_deadline))) => {
                seen.links.clone_from(&facts.links);
                seen.waiter.clone_from(&facts.waiter);
                seen.leaf.clone_from(&facts.leaf);
                seen.group_size = facts.group_size;
                seen.timed.clone_from(&facts.timed);
                seen.deadline = facts.deadline;
                seen.timeout = facts.timeout;
                *seen_deadline = deadline;
            }
            (Some(deadline), None) => self.seen = Some((facts.clone(), deadline)),
        }
        text
    }
}

/// Writes the `awaiting` text of a suspended task into `out` (cleared
/// first, so that ten thousand tasks are described in one buffer); `false`
/// when it waits for nothing (ready to run, or not started).
pub fn describe_into(facts: &Facts, out: &mut String) -> bool {
    out.clear();
    if let Some(name) = &facts.timed {
        // `wait_for(coro(), t)` from 3.12: the task awaits `coro` itself, and
        // whatever `coro` waits on inside, the timeout ends it.
        out.push_str("wait_for ");
        out.push_str(name);
        if let Some(d) = facts.ends() {
            push_times_out(out, d);
        }
        return true;
    }
    match api(&facts.links) {
        Some("sleep" | "__sleep0") => match (facts.deadline, &facts.waiter) {
            (_, Waiter::Nothing) => out.push_str("sleep(0)"),
            // An `asyncio.timeout()` around it that fires first ends it.
            (d, _) if facts.timeout.is_some_and(|t| d.is_none_or(|d| t < d)) => {
                out.push_str("sleep");
                push_times_out(out, facts.timeout.unwrap_or_default());
            }
            (Some(d), _) => {
                out.push_str("sleep (wakes in ");
                push_seconds(out, d);
                out.push(')');
            }
            (None, _) => out.push_str("sleep"),
        },
        Some("wait_for") => {
            out.push_str("wait_for");
            let one = match &facts.waiter {
                Waiter::Task { name } => Some(name),
                Waiter::Future { tasks, .. } if tasks.len() == 1 => Some(&tasks[0]),
                _ => None,
            };
            if let Some(name) = one {
                out.push(' ');
                push_quoted_task(out, name);
            }
            if let Some(d) = facts.ends() {
                push_times_out(out, d);
            }
        }
        Some("wait" | "_wait") => match &facts.waiter {
            Waiter::Future { tasks, .. } if !tasks.is_empty() => {
                let _ = write!(out, "wait on {}", tasks.len());
            }
            _ => out.push_str("wait"),
        },
        Some("TaskGroup.__aexit__" | "TaskGroup._aexit") => match facts.group_size {
            Some(n) => {
                let _ = write!(out, "TaskGroup of {n}");
            }
            None => out.push_str("TaskGroup"),
        },
        Some("to_thread") => match &facts.waiter {
            Waiter::Executor { thread } => push_executor(out, *thread),
            _ => push_executor(out, None),
        },
        // Event.wait, Lock.acquire, Queue.get, Condition.wait, StreamReader.read, ...
        Some(other) => {
            out.push_str(other);
            if let Some(d) = facts.ends() {
                push_times_out(out, d);
            }
        }
        None => {
            if !push_waiter(out, &facts.waiter) {
                match &facts.leaf {
                    Some(leaf) => out.push_str(leaf),
                    None => return false,
                }
            }
            if let Some(d) = facts.ends() {
                push_times_out(out, d);
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Link {
        Link::new(name, false)
    }

    fn aio(name: &str) -> Link {
        Link::new(name, true)
    }

    fn future(via: Option<&str>, tasks: &[&str]) -> Waiter {
        Waiter::Future {
            type_name: "Future".into(),
            state: "PENDING".into(),
            via: via.map(str::to_string),
            tasks: tasks.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn text(links: Vec<Link>, waiter: Waiter, deadline: Option<f64>) -> Option<String> {
        describe(&Facts {
            links,
            waiter,
            deadline,
            ..Facts::default()
        })
    }

    #[test]
    fn seconds_match_the_exact_formatter() {
        let mut values = vec![
            0.0,
            -0.0,
            -1.0,
            0.05,
            0.15,
            0.25,
            0.35,
            0.04999,
            0.95,
            9.95,
            99.95,
            3599.84,
            3599.85,
            3599.849999,
            1e6,
            1e7 + 0.05,
            123456.789,
            f64::NAN,
            f64::INFINITY,
            f64::MIN_POSITIVE,
            1e-300,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            // xorshift: spread over [0, 10^6), many near ties of a tenth.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x % 10_000_000_000) as f64 / 10_000.0;
            values.push(v);
            values.push((v * 10.0).floor() / 10.0 + 0.05);
        }
        for v in values {
            assert_eq!(seconds(v), format!("{:.1} s", v.max(0.0)), "{v:e}");
        }
    }

    #[test]
    fn sleeps() {
        let chain = vec![user("main"), user("worker"), aio("sleep")];
        assert_eq!(
            text(chain.clone(), future(None, &[]), Some(3599.84)).as_deref(),
            Some("sleep (wakes in 3599.8 s)")
        );
        // uvloop keeps its timers out of reach: no deadline.
        assert_eq!(
            text(chain, future(None, &[]), None).as_deref(),
            Some("sleep")
        );
        assert_eq!(
            text(
                vec![user("main"), aio("sleep"), aio("__sleep0")],
                Waiter::Nothing,
                None
            )
            .as_deref(),
            Some("sleep(0)")
        );
        // A deadline already passed reads as zero, never negative.
        assert_eq!(
            text(vec![aio("sleep")], future(None, &[]), Some(-0.25)).as_deref(),
            Some("sleep (wakes in 0.0 s)")
        );
    }

    #[test]
    fn synchronization_primitives_use_the_outermost_api_frame() {
        for (chain, expected) in [
            (vec![user("consumer"), aio("Queue.get")], "Queue.get"),
            (vec![user("waiter"), aio("Event.wait")], "Event.wait"),
            (
                vec![user("w"), aio("Condition.wait"), aio("Lock.acquire")],
                "Condition.wait",
            ),
            (vec![user("locker"), aio("Lock.acquire")], "Lock.acquire"),
            (
                vec![
                    user("locker"),
                    aio("_ContextManagerMixin.__aenter__"),
                    aio("Lock.acquire"),
                ],
                "Lock.acquire",
            ),
        ] {
            assert_eq!(
                text(chain, future(None, &[]), None).as_deref(),
                Some(expected)
            );
        }
    }

    #[test]
    fn tasks_gathers_groups_and_executors() {
        let waiting_on = |w| text(vec![user("main")], w, None);
        assert_eq!(
            waiting_on(Waiter::Task {
                name: "child".into()
            })
            .as_deref(),
            Some("Task 'child'")
        );
        assert_eq!(
            waiting_on(Waiter::Gather { children: 3 }).as_deref(),
            Some("gather of 3")
        );
        assert_eq!(
            waiting_on(Waiter::Executor { thread: Some(77) }).as_deref(),
            Some("to_thread / run_in_executor (thread:77)")
        );
        assert_eq!(
            waiting_on(future(Some("shield"), &["inner"])).as_deref(),
            Some("shield of Task 'inner'")
        );
        assert_eq!(
            waiting_on(future(None, &[])).as_deref(),
            Some("Future pending")
        );
        assert_eq!(
            waiting_on(Waiter::Other {
                type_name: "Deferred".into()
            })
            .as_deref(),
            Some("Deferred")
        );
        assert_eq!(
            describe(&Facts {
                links: vec![user("main"), aio("TaskGroup.__aexit__")],
                waiter: future(None, &[]),
                group_size: Some(2),
                ..Facts::default()
            })
            .as_deref(),
            Some("TaskGroup of 2")
        );
        assert_eq!(
            text(
                vec![user("main"), aio("to_thread")],
                Waiter::Executor { thread: None },
                None
            )
            .as_deref(),
            Some("to_thread / run_in_executor")
        );
    }

    #[test]
    fn wait_for_and_wait() {
        // 3.12+: wait_for awaits the inner task itself.
        assert_eq!(
            text(
                vec![user("main"), aio("wait_for")],
                Waiter::Task {
                    name: "slow".into()
                },
                Some(4.04)
            )
            .as_deref(),
            Some("wait_for Task 'slow' (times out in 4.0 s)")
        );
        // 3.9-3.11: it awaits a private future the inner task releases.
        assert_eq!(
            text(
                vec![user("main"), aio("wait_for")],
                future(Some("_release_waiter"), &["slow"]),
                None
            )
            .as_deref(),
            Some("wait_for Task 'slow'")
        );
        assert_eq!(
            text(
                vec![user("main"), aio("wait"), aio("_wait")],
                future(Some("_wait"), &["a", "b", "c"]),
                None
            )
            .as_deref(),
            Some("wait on 3")
        );
    }

    #[test]
    fn a_timeout_is_no_sleep() {
        // wait_for(user_coro(), 5) from 3.12, user_coro sleeping for an hour:
        // the task waits for user_coro, which the timeout ends first.
        let timed = Facts {
            links: vec![Link::unnamed(false), aio("sleep")],
            waiter: Waiter::Unexamined,
            deadline: Some(3599.8),
            timeout: Some(4.2),
            timed: Some("user_coro".into()),
            ..Facts::default()
        };
        assert_eq!(
            describe(&timed).as_deref(),
            Some("wait_for user_coro (times out in 4.2 s)")
        );
        // Whatever it waits on inside.
        let inside_event = Facts {
            links: vec![Link::unnamed(false), aio("Event.wait")],
            deadline: None,
            ..timed.clone()
        };
        assert_eq!(
            describe(&inside_event).as_deref(),
            Some("wait_for user_coro (times out in 4.2 s)")
        );
        // An asyncio.timeout() around a sleep: the timeout ends it first,
        // and the text says so (never the timeout's time as a wake time).
        let sleeping = Facts {
            timed: None,
            ..timed.clone()
        };
        assert_eq!(
            describe(&sleeping).as_deref(),
            Some("sleep (times out in 4.2 s)")
        );
        // A timeout later than the sleep's wake time ends nothing.
        let wakes_first = Facts {
            deadline: Some(2.0),
            ..sleeping.clone()
        };
        assert_eq!(
            describe(&wakes_first).as_deref(),
            Some("sleep (wakes in 2.0 s)")
        );
        // Around anything else, the timeout ends the wait.
        let event = Facts {
            links: vec![user("main"), aio("Event.wait")],
            waiter: Waiter::Unexamined,
            timeout: Some(4.2),
            ..Facts::default()
        };
        assert_eq!(
            describe(&event).as_deref(),
            Some("Event.wait (times out in 4.2 s)")
        );
        // A description reused for the next task only when its timeout prints alike.
        let mut texts = Texts::default();
        assert_eq!(
            texts.describe(&event).as_deref(),
            Some("Event.wait (times out in 4.2 s)")
        );
        let later = Facts {
            timeout: Some(9.0),
            ..event.clone()
        };
        assert_eq!(
            texts.describe(&later).as_deref(),
            Some("Event.wait (times out in 9.0 s)")
        );
        let other_call = Facts {
            timed: Some("other".into()),
            ..timed.clone()
        };
        assert_eq!(
            texts.describe(&timed).as_deref(),
            Some("wait_for user_coro (times out in 4.2 s)")
        );
        assert_eq!(
            texts.describe(&other_call).as_deref(),
            Some("wait_for other (times out in 4.2 s)")
        );
    }

    #[test]
    fn only_some_apis_need_the_waiter() {
        assert!(needs_waiter(&[user("main")]));
        assert!(needs_waiter(&[user("main"), aio("wait_for")]));
        assert!(needs_waiter(&[user("main"), aio("to_thread")]));
        assert!(!needs_waiter(&[user("main"), aio("sleep")]));
        assert!(!needs_waiter(&[user("main"), aio("Event.wait")]));
        assert_eq!(
            text(vec![user("w"), aio("Queue.get")], Waiter::Unexamined, None).as_deref(),
            Some("Queue.get")
        );
        assert_eq!(
            text(vec![user("w"), aio("sleep")], Waiter::Unexamined, Some(2.0)).as_deref(),
            Some("sleep (wakes in 2.0 s)")
        );
    }

    #[test]
    fn nothing_to_wait_for() {
        assert_eq!(text(vec![user("main")], Waiter::Nothing, None), None);
        assert_eq!(
            describe(&Facts {
                links: vec![user("main")],
                leaf: Some("Deferred".into()),
                ..Facts::default()
            })
            .as_deref(),
            Some("Deferred")
        );
    }

    fn sleeping(deadline: Option<f64>) -> Facts {
        Facts {
            links: vec![user("main"), aio("sleep")],
            waiter: Waiter::Unexamined,
            deadline,
            ..Facts::default()
        }
    }

    #[test]
    fn texts_of_alike_tasks_are_one_shared_text() {
        let mut texts = Texts::default();
        let first = texts.describe(&sleeping(Some(3599.81))).unwrap();
        assert_eq!(first, "sleep (wakes in 3599.8 s)");
        for d in [3599.8, 3599.77, 3599.849] {
            let again = texts.describe(&sleeping(Some(d))).unwrap();
            // Longer than an inline text: shared means the same allocation.
            assert_eq!(again.as_str().as_ptr(), first.as_str().as_ptr());
        }
        assert_eq!(
            texts.describe(&sleeping(Some(3599.86))).as_deref(),
            Some("sleep (wakes in 3599.9 s)")
        );
    }

    #[test]
    fn texts_follow_every_change_of_facts() {
        let mut texts = Texts::default();
        let nothing = Facts {
            links: vec![user("main")],
            ..Facts::default()
        };
        let waiting_on_task = |name: &str| Facts {
            links: vec![user("main")],
            waiter: Waiter::Task { name: name.into() },
            ..Facts::default()
        };
        let sequence = [
            sleeping(Some(10.0)),
            sleeping(Some(10.04)),
            sleeping(None),
            nothing.clone(),
            nothing,
            waiting_on_task("a"),
            waiting_on_task("b"),
            // Near a rounding tie the exact formatter decides, every time.
            sleeping(Some(0.25)),
            sleeping(Some(0.25)),
            sleeping(Some(-1.0)),
            sleeping(Some(10.0)),
        ];
        for facts in &sequence {
            assert_eq!(texts.describe(facts).as_deref(), describe(facts).as_deref());
        }
    }
}
