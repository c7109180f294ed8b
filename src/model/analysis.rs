//! What is wrong with a snapshot, found from its stacks alone: cycles of
//! stacks waiting for one another (deadlocks), pile-ups behind a lock's
//! holder, stacks unchanged since earlier dumps, the largest groups of
//! stacks in one place, counts by kind and state. Pure data in, pure data
//! out: the text renderer prints it at the top, the JSON carries it as
//! `diagnosis`, and `cargo test` checks it on literal snapshots.

use super::fasthash::FastMap;
use super::{Frame, Snapshot, Stack, StackDetails, StackKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many of the largest groups the diagnosis lists.
const GROUPS_SHOWN: usize = 5;
/// How many member ids a finding or group carries (the count says the rest).
const IDS_KEPT: usize = 20;

/// The facts a person reads first, in the order they read them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// What is wrong, most urgent first: deadlocks, then stacks waiting for
    /// a lock's holder, then stacks unchanged since earlier dumps.
    pub findings: Vec<Finding>,
    /// Stacks by kind, then by state (tbcollect's own left out).
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// The largest groups of two or more stacks in one place, largest first.
    pub groups: Vec<Group>,
    /// tbcollect's own stacks, left out of everything above.
    #[serde(default)]
    pub own: usize,
}

/// One thing that is wrong, in words and as the stacks it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// `deadlock`, `lock_wait` or `unchanged`.
    pub kind: String,
    /// The finding in plain words.
    pub text: String,
    /// Ids of the stacks it is about (a deadlock's cycle in order; the
    /// holder first, then up to twenty waiters, for a lock wait).
    pub stacks: Vec<String>,
}

/// Stacks of one kind in the same place, waiting for the same kind of thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub kind: StackKind,
    pub count: usize,
    /// The innermost user function, then the innermost function (`handle →
    /// recv`); one name when they are the same frame.
    #[serde(rename = "where")]
    pub place: String,
    /// What they wait for, without the numbers that differ (`sleep`).
    pub awaiting: Option<String>,
    /// The first member ids.
    pub stacks: Vec<String>,
}

/// True for a file of the standard library or an installed package: a
/// frame there is not the user's line.
pub fn is_library_file(filename: &str) -> bool {
    // `<frozen runpy>` is the interpreter's; `<string>` and `<stdin>` are
    // the user's own code.
    filename.starts_with("<frozen")
        || filename.contains("/lib/python")
        || filename.contains("/lib64/python")
        || filename.contains("site-packages")
        || filename.contains("dist-packages")
        || filename.contains("\\Lib\\")
        || is_console_script(filename)
}

/// A package's command as pip writes it (`.venv/bin/gunicorn`, a file
/// without a suffix in a `bin` directory whose `<module>` only calls the
/// package's `main`): the server's, not the user's line, so a gunicorn,
/// uvicorn or Celery main thread idling in its loop does not read as user
/// code.
fn is_console_script(filename: &str) -> bool {
    match filename.rsplit_once('/') {
        Some((dir, name)) => (dir.ends_with("/bin") || dir == "bin") && !name.contains('.'),
        None => false,
    }
}

/// The innermost frame outside the standard library and site-packages.
pub fn user_frame(frames: &[Frame]) -> Option<&Frame> {
    frames.iter().rev().find(|f| !is_library_file(&f.filename))
}

/// [`user_frame`]'s index and [`split_timing`]'s cut, remembered for the
/// last frame list and text asked about: stacks listed one after another
/// share both, so ten thousand tasks pay for one. Only valid while the
/// lists and texts it saw are borrowed (one render), as their addresses key it.
#[derive(Default)]
pub struct Memo {
    frames: Option<(usize, usize, Option<usize>)>,
    timing: Option<(usize, usize, usize)>,
}

impl Memo {
    pub fn user_frame<'a>(&mut self, frames: &'a [Frame]) -> Option<&'a Frame> {
        let key = (frames.as_ptr() as usize, frames.len());
        let index = match self.frames {
            Some((p, n, index)) if (p, n) == key => index,
            _ => {
                let index = frames.iter().rposition(|f| !is_library_file(&f.filename));
                self.frames = Some((key.0, key.1, index));
                index
            }
        };
        index.map(|i| &frames[i])
    }

    /// [`split_timing`]'s first part.
    pub fn timing_free<'a>(&mut self, awaiting: &'a str) -> &'a str {
        let key = (awaiting.as_ptr() as usize, awaiting.len());
        let cut = match self.timing {
            Some((p, n, cut)) if (p, n) == key => cut,
            _ => {
                let cut = split_timing(awaiting).0.len();
                self.timing = Some((key.0, key.1, cut));
                cut
            }
        };
        &awaiting[..cut]
    }
}

/// An `awaiting` text without its varying parts: `sleep (wakes in 3.0 s)`
/// and `sleep (wakes in 3.2 s)` are both `sleep`.
pub fn awaiting_kind(awaiting: &str) -> &str {
    awaiting.split(" (").next().unwrap_or(awaiting)
}

/// An `awaiting` text split into what it waits for and the seconds of its
/// timing part (`sleep (wakes in 56.3 s)` -> (`sleep`, 56.3)), so waits
/// that differ only in time are one wait.
pub fn split_timing(awaiting: &str) -> (&str, Option<f64>) {
    for (open, close) in [
        (" (wakes in ", " s)"),
        (" (times out in ", " s)"),
        (" (", " s left)"),
    ] {
        if let Some(at) = awaiting.rfind(open) {
            let rest = &awaiting[at + open.len()..];
            if let Some(number) = rest.strip_suffix(close) {
                if let Ok(secs) = number.parse::<f64>() {
                    return (&awaiting[..at], Some(secs));
                }
            }
        }
    }
    (awaiting, None)
}

/// Fills `snapshot.deadlocks` and `snapshot.diagnosis`.
pub fn analyze(snapshot: &mut Snapshot) {
    snapshot.deadlocks = deadlocks(snapshot);
    snapshot.diagnosis = Some(diagnose(snapshot, &snapshot.deadlocks));
}

/// Every edge "a waits for b": `waiting_for`, and tasks' `awaited_by` turned round.
fn edges(snapshot: &Snapshot) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for stack in &snapshot.stacks {
        for target in &stack.facts.waiting_for {
            out.push((&*stack.id, &**target));
        }
        if let StackDetails::Task(d) = &stack.details {
            for waiter in &d.awaited_by {
                out.push((waiter.as_str(), &*stack.id));
            }
        }
    }
    out
}

/// Each cycle of the "waits for" graph once, as stack ids in the order each
/// waits for the next, starting at the member captured first.
pub fn deadlocks(snapshot: &Snapshot) -> Vec<Vec<String>> {
    let edges = edges(snapshot);
    if edges.is_empty() {
        return Vec::new();
    }
    let order: FastMap<&str, usize> = snapshot
        .stacks
        .iter()
        .enumerate()
        .map(|(i, s)| (&*s.id, i))
        .collect();
    // Only edges between stacks of this snapshot count: an awaiter that is
    // not a stack here (a foreign future) ends no cycle.
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); snapshot.stacks.len()];
    for (from, to) in edges {
        if let (Some(&a), Some(&b)) = (order.get(from), order.get(to)) {
            if !next[a].contains(&b) {
                next[a].push(b);
            }
        }
    }
    let sccs = strongly_connected(&next);
    let mut cycles = Vec::new();
    for scc in sccs {
        let single = scc.len() == 1;
        if single && !next[scc[0]].contains(&scc[0]) {
            continue;
        }
        let start = *scc.iter().min().expect("a component is never empty");
        let inside = |i: usize| scc.contains(&i);
        // Follow edges inside the component until a member repeats: the
        // repeated part is one cycle.
        let mut path = vec![start];
        let mut at = start;
        while let Some(&step) = next[at].iter().filter(|&&n| inside(n)).min() {
            if let Some(pos) = path.iter().position(|&p| p == step) {
                path.drain(..pos);
                break;
            }
            path.push(step);
            at = step;
        }
        let first = path
            .iter()
            .enumerate()
            .min_by_key(|(_, &i)| i)
            .map_or(0, |(k, _)| k);
        path.rotate_left(first);
        cycles.push(
            path.into_iter()
                .map(|i| snapshot.stacks[i].id.to_string())
                .collect(),
        );
    }
    cycles.sort();
    cycles
}

/// Tarjan's strongly connected components, without recursion (ten thousand
/// tasks awaiting one another in a chain must not exhaust the stack).
fn strongly_connected(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = next.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if index[root] != UNSEEN || next[root].is_empty() {
            continue;
        }
        // (node, position in its edge list)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = counter;
        low[root] = counter;
        counter += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (node, ref mut pos)) = work.last_mut() {
            if let Some(&succ) = next[node].get(*pos) {
                *pos += 1;
                if index[succ] == UNSEEN {
                    index[succ] = counter;
                    low[succ] = counter;
                    counter += 1;
                    stack.push(succ);
                    on_stack[succ] = true;
                    work.push((succ, 0));
                } else if on_stack[succ] {
                    low[node] = low[node].min(index[succ]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                out.push(component);
            }
        }
    }
    out
}

/// `Thread "worker-3"`, or the id of a stack this snapshot does not have.
pub fn describe(snapshot: &Snapshot, by_id: &FastMap<&str, &Stack>, id: &str) -> String {
    let _ = snapshot;
    match by_id.get(id) {
        Some(s) => {
            let title = match s.kind() {
                StackKind::Thread => "Thread",
                StackKind::Greenlet => "Greenlet",
                StackKind::Task => "Task",
            };
            format!("{title} {:?}", s.name)
        }
        None => id.to_string(),
    }
}

/// The findings, counts and groups of a snapshot whose cycles are `cycles`.
pub fn diagnose(snapshot: &Snapshot, cycles: &[Vec<String>]) -> Diagnosis {
    let mut diagnosis = Diagnosis::default();
    let mut by_id: FastMap<&str, &Stack> = FastMap::default();
    // The index is needed only when something refers to another stack.
    let refers = cycles.is_empty()
        && snapshot
            .stacks
            .iter()
            .all(|s| s.facts.waiting_for.is_empty());
    if !refers {
        by_id = snapshot.stacks.iter().map(|s| (&*s.id, s)).collect();
    }
    for cycle in cycles {
        let mut text = String::from("Deadlock: ");
        for (i, id) in cycle.iter().enumerate() {
            match i {
                0 => {}
                1 => text.push_str(" waits for "),
                _ => text.push_str(", which waits for "),
            }
            text.push_str(&describe(snapshot, &by_id, id));
            let waits = by_id
                .get(id.as_str())
                .and_then(|s| s.facts.awaiting.as_deref())
                .map(awaiting_kind);
            if let Some(waits) = waits {
                text.push_str(&format!(" ({waits})"));
            }
        }
        let back = if cycle.len() == 1 {
            " waits for "
        } else {
            ", which waits for "
        };
        text.push_str(back);
        text.push_str(&describe(snapshot, &by_id, &cycle[0]));
        diagnosis.findings.push(Finding {
            kind: "deadlock".into(),
            text,
            stacks: cycle.clone(),
        });
    }
    let in_cycle: Vec<&str> = cycles.iter().flatten().map(String::as_str).collect();
    lock_waits(snapshot, &by_id, &in_cycle, &mut diagnosis);
    lock_waits_without_holder(snapshot, &mut diagnosis);
    unchanged(snapshot, &mut diagnosis);
    let (counts, own) = counts(snapshot);
    diagnosis.counts = counts;
    diagnosis.own = own;
    diagnosis.groups = groups(snapshot);
    diagnosis
}

/// One finding per holder that others wait for: `50 threads wait for
/// Thread "holder", which holds RLock registry_lock`.
fn lock_waits(
    snapshot: &Snapshot,
    by_id: &FastMap<&str, &Stack>,
    in_cycle: &[&str],
    diagnosis: &mut Diagnosis,
) {
    let mut waiters: Vec<(&str, Vec<&Stack>)> = Vec::new();
    for stack in &snapshot.stacks {
        if stack.facts.own {
            continue;
        }
        for target in &stack.facts.waiting_for {
            let holds = by_id
                .get(&**target)
                .is_some_and(|h| !h.facts.holds.is_empty());
            if !holds {
                continue;
            }
            match waiters.iter_mut().find(|(t, _)| *t == &**target) {
                Some((_, list)) => list.push(stack),
                None => waiters.push((target, vec![stack])),
            }
        }
    }
    waiters.sort_by_key(|(_, list)| std::cmp::Reverse(list.len()));
    for (holder_id, list) in waiters {
        // A deadlock's own waits are said by the deadlock.
        if in_cycle.contains(&holder_id) && list.iter().all(|s| in_cycle.contains(&&*s.id)) {
            continue;
        }
        let holder = by_id[holder_id];
        let (who, verb) = waiters_phrase(&list);
        let what = list[0]
            .facts
            .awaiting
            .as_deref()
            .map(awaiting_kind)
            .unwrap_or("a lock");
        let mut stacks = vec![holder_id.to_string()];
        stacks.extend(list.iter().take(IDS_KEPT).map(|s| s.id.to_string()));
        diagnosis.findings.push(Finding {
            kind: "lock_wait".into(),
            text: format!(
                "{who} {verb} in {what} for {}, which holds {}",
                describe(snapshot, by_id, holder_id),
                holder.facts.holds.join(", ")
            ),
            stacks,
        });
    }
}

/// Why a stack in a lock wait has no holder named: the lock does not record
/// one (` (threading.Lock records no holder)`, ` (a gevent Semaphore records
/// no holder)`). A person still needs the wait at the top, or it stays
/// buried among sleeping threads.
const NO_HOLDER: &str = " records no holder)";

/// `(lock, what records none)` of an awaiting text that says its lock
/// records no holder.
fn without_holder(awaiting: &str) -> Option<(&str, &str)> {
    let body = awaiting.strip_suffix(NO_HOLDER)?;
    let at = body.rfind(" (")?;
    Some((&body[..at], &body[at + 2..]))
}

/// Whether a stack waits to acquire a lock, known holder or not.
fn waits_for_lock(stack: &Stack) -> bool {
    stack
        .facts
        .awaiting
        .as_deref()
        .is_some_and(|a| a.starts_with("Lock.acquire") || a.starts_with("RLock.acquire"))
}

/// `("3 threads", "wait")`, `("1 greenlet", "waits")`, `("2 stacks", "wait")`
/// for kinds mixed: the subject of a lock-wait finding.
fn waiters_phrase(list: &[&Stack]) -> (String, &'static str) {
    let mut kinds: Vec<StackKind> = list.iter().map(|s| s.kind()).collect();
    kinds.dedup();
    let who = if kinds.len() == 1 {
        kinds[0].count_noun(list.len())
    } else {
        format!("{} stacks", list.len())
    };
    (who, if list.len() == 1 { "waits" } else { "wait" })
}

/// One finding per lock that stacks wait for while its holder is unknown:
/// `1 thread waits in Lock.acquire registry_lock <0x…>; threading.Lock
/// records no holder`.
fn lock_waits_without_holder(snapshot: &Snapshot, diagnosis: &mut Diagnosis) {
    let mut waiters: Vec<((&str, &str), Vec<&Stack>)> = Vec::new();
    for stack in &snapshot.stacks {
        if stack.facts.own || !stack.facts.waiting_for.is_empty() {
            continue;
        }
        let Some(lock) = stack.facts.awaiting.as_deref().and_then(without_holder) else {
            continue;
        };
        match waiters.iter_mut().find(|(l, _)| *l == lock) {
            Some((_, list)) => list.push(stack),
            None => waiters.push((lock, vec![stack])),
        }
    }
    waiters.sort_by_key(|(_, list)| std::cmp::Reverse(list.len()));
    for ((lock, recorder), list) in waiters {
        let (who, verb) = waiters_phrase(&list);
        diagnosis.findings.push(Finding {
            kind: "lock_wait".into(),
            text: format!("{who} {verb} in {lock}; {recorder} records no holder"),
            stacks: list
                .iter()
                .take(IDS_KEPT)
                .map(|s| s.id.to_string())
                .collect(),
        });
    }
}

/// Seconds between two of our ISO-8601 UTC times (`b - a`), if both parse.
pub fn seconds_between(a: &str, b: &str) -> Option<f64> {
    Some((parse_iso8601(b)? - parse_iso8601(a)?) as f64 / 1e6)
}

/// Microseconds since the epoch of `YYYY-MM-DDTHH:MM:SS.ffffffZ` (the
/// inverse of [`crate::model::iso8601_utc`]).
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let micros = match text.get(19..20) {
        Some(".") => {
            let frac = text.get(20..)?.trim_end_matches('Z');
            let digits: String = frac.chars().take(6).collect();
            format!("{digits:0<6}").parse::<i64>().ok()?
        }
        _ => 0,
    };
    // Howard Hinnant's days-from-civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + micros)
}

/// `4 min 12 s`, `2 h 3 min`, `12.5 s`.
pub fn duration_words(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let whole = s as u64;
    let (h, m, sec) = (whole / 3600, (whole % 3600) / 60, whole % 60);
    if h > 0 {
        format!("{h} h {m} min")
    } else {
        format!("{m} min {sec} s")
    }
}

fn unchanged(snapshot: &Snapshot, diagnosis: &mut Diagnosis) {
    let mut list: Vec<(&Stack, f64)> = snapshot
        .stacks
        .iter()
        .filter(|s| !s.facts.own)
        .filter_map(|s| {
            let since = s.facts.unchanged_since.as_deref()?;
            Some((s, seconds_between(since, &snapshot.created).unwrap_or(0.0)))
        })
        .collect();
    if list.is_empty() {
        return;
    }
    list.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (longest, secs) = list[0];
    let n = list.len();
    let subject = if n == 1 {
        "1 stack is".to_string()
    } else {
        format!("{n} stacks are")
    };
    diagnosis.findings.push(Finding {
        kind: "unchanged".into(),
        text: format!(
            "{subject} unchanged since an earlier dump, the longest for {} ({} {:?})",
            duration_words(secs),
            longest.kind(),
            longest.name
        ),
        stacks: list
            .iter()
            .take(IDS_KEPT)
            .map(|(s, _)| s.id.to_string())
            .collect(),
    });
}

fn counts(snapshot: &Snapshot) -> (BTreeMap<String, BTreeMap<String, usize>>, usize) {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut own = 0;
    // Runs of one kind and state are counted without a map lookup each.
    let mut run: Option<(StackKind, &str, usize)> = None;
    let add = |out: &mut BTreeMap<String, BTreeMap<String, usize>>,
               kind: StackKind,
               state: &str,
               n: usize| {
        *out.entry(kind.as_str().to_string())
            .or_default()
            .entry(state.to_string())
            .or_default() += n;
    };
    for stack in &snapshot.stacks {
        if stack.facts.own {
            own += 1;
            continue;
        }
        match &mut run {
            Some((kind, state, n)) if *kind == stack.kind() && *state == &*stack.state => {
                *n += 1;
            }
            _ => {
                if let Some((kind, state, n)) = run {
                    add(&mut out, kind, state, n);
                }
                run = Some((stack.kind(), &stack.state, 1));
            }
        }
    }
    if let Some((kind, state, n)) = run {
        add(&mut out, kind, state, n);
    }
    (out, own)
}

/// `handle → recv`: the innermost user function, then the innermost function.
pub fn place(frames: &[Frame]) -> String {
    let Some(last) = frames.last() else {
        return "(no Python frames)".into();
    };
    // A nested function's enclosing names say little in a one-line summary.
    let short = |f: &Frame| -> String {
        let name: &str = &f.function;
        name.rsplit(".<locals>.").next().unwrap_or(name).to_string()
    };
    match user_frame(frames) {
        Some(user) if !std::ptr::eq(user, last) => {
            format!("{} → {}", short(user), short(last))
        }
        _ => short(last),
    }
}

/// A stack's frame list address, its `awaiting` text (address, length),
/// its kind, and the group it went to.
type Placed = (usize, Option<(usize, usize)>, StackKind, usize);

fn groups(snapshot: &Snapshot) -> Vec<Group> {
    // Stacks sharing one frame list are in one place: the place is worked
    // out once per list, not once per stack.
    let mut by_list: FastMap<(StackKind, usize, Option<&str>), usize> = FastMap::default();
    let mut by_place: FastMap<(StackKind, String, Option<&str>), usize> = FastMap::default();
    let mut groups: Vec<Group> = Vec::new();
    // The previous stack's frame list and awaiting text, by address, and
    // its group: most stacks are placed by that alone, without hashing.
    let mut previous: Option<Placed> = None;
    for stack in &snapshot.stacks {
        if stack.facts.own || stack.frames.is_empty() {
            continue;
        }
        let text = stack
            .facts
            .awaiting
            .as_deref()
            .map(|a| (a.as_ptr() as usize, a.len()));
        let list_ptr = stack.frames.as_ptr() as usize;
        if let Some((p, t, k, g)) = previous {
            if p == list_ptr && t == text && k == stack.kind() {
                let group = &mut groups[g];
                group.count += 1;
                if group.stacks.len() < IDS_KEPT {
                    group.stacks.push(stack.id.to_string());
                }
                continue;
            }
        }
        let awaiting = stack.facts.awaiting.as_deref().map(awaiting_kind);
        let list = (stack.kind(), stack.frames.as_ptr() as usize, awaiting);
        let g = match by_list.get(&list) {
            Some(&g) => g,
            None => {
                let key = (stack.kind(), place(&stack.frames), awaiting);
                let g = *by_place.entry(key.clone()).or_insert_with(|| {
                    groups.push(Group {
                        kind: key.0,
                        count: 0,
                        place: key.1,
                        awaiting: key.2.map(str::to_string),
                        stacks: Vec::new(),
                    });
                    groups.len() - 1
                });
                by_list.insert(list, g);
                g
            }
        };
        previous = Some((list_ptr, text, stack.kind(), g));
        let group = &mut groups[g];
        group.count += 1;
        if group.stacks.len() < IDS_KEPT {
            group.stacks.push(stack.id.to_string());
        }
    }
    groups.retain(|g| g.count >= 2);
    // Largest first; equal sizes keep capture order.
    groups.sort_by_key(|g| std::cmp::Reverse(g.count));
    groups.truncate(GROUPS_SHOWN);
    groups
}

/// Where a stack goes in the text dump, lower first: deadlocked, lock
/// holders others wait for and threads waiting for a lock (its holder known
/// or not), unchanged the longest, then in the user's own code; stacks only
/// in library code (pool workers idling; the longest unchanged first) after
/// them, and tbcollect's own units (dumper, watchdog) last.
pub fn interest(
    stack: &Stack,
    deadlocked: bool,
    snapshot_created: &str,
    memo: &mut Memo,
) -> (u8, i64) {
    if deadlocked {
        return (0, 0);
    }
    if stack.facts.own {
        return (5, 0);
    }
    // A lock's holder goes with its waiters: it is where they are stuck.
    if !stack.facts.holds.is_empty()
        || (stack.kind() == StackKind::Thread
            && (!stack.facts.waiting_for.is_empty() || waits_for_lock(stack)))
    {
        return (1, 0);
    }
    let in_user_code = memo.user_frame(&stack.frames).is_some();
    if let Some(since) = stack.facts.unchanged_since.as_deref() {
        let secs = seconds_between(since, snapshot_created).unwrap_or(0.0);
        return (if in_user_code { 2 } else { 4 }, -(secs * 1e3) as i64);
    }
    if in_user_code {
        (3, 0)
    } else {
        (4, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn stack(id: &str, name: &str, details: StackDetails, frames: &[(&str, &str)]) -> Stack {
        Stack {
            id: id.into(),
            name: name.into(),
            thread: None,
            state: "sleeping".into(),
            frames: frames
                .iter()
                .enumerate()
                .map(|(i, (file, func))| Frame::new(*file, Some(i as u32 + 1), *func))
                .collect(),
            frames_omitted: 0,
            details,
            facts: Default::default(),
        }
    }

    fn thread(id: &str, name: &str) -> Stack {
        stack(
            id,
            name,
            StackDetails::Thread(ThreadDetails::default()),
            &[
                ("/usr/lib/python3.11/threading.py", "_bootstrap"),
                ("/srv/app.py", "work"),
            ],
        )
    }

    fn task(id: &str, name: &str, awaited_by: &[&str]) -> Stack {
        stack(
            id,
            name,
            StackDetails::Task(TaskDetails {
                event_loop: "loop:0x1".into(),
                awaited_by: awaited_by.iter().map(|s| s.to_string()).collect(),
            }),
            &[("/srv/app.py", "handler")],
        )
    }

    #[test]
    fn greenlets_on_a_gevent_semaphore_are_one_lock_wait() {
        let mut snap = Snapshot::new(1, "3.11", "2026-01-01T00:00:10.000000Z");
        let waiting = "Semaphore.acquire <0x2> (a gevent Semaphore records no holder)";
        snap.stacks = (0..3)
            .map(|i| {
                let details = StackDetails::Greenlet(GreenletDetails::default());
                let mut g = stack(
                    &format!("greenlet:{i}"),
                    "g",
                    details,
                    &[("/srv/app.py", "h")],
                );
                g.facts.awaiting = Some(waiting.into());
                g
            })
            .collect();
        let diagnosis = diagnose(&snap, &[]);
        let texts: Vec<&str> = diagnosis.findings.iter().map(|f| &*f.text).collect();
        assert_eq!(
            texts,
            ["3 greenlets wait in Semaphore.acquire <0x2>; a gevent Semaphore records no holder"]
        );
    }

    #[test]
    fn a_lock_wait_without_a_known_holder_is_said_and_listed_first() {
        let mut snap = Snapshot::new(1, "3.11", "2026-01-01T00:00:10.000000Z");
        let idle = thread("thread:1", "idle");
        let mut reader = thread("thread:2", "reader");
        reader.facts.awaiting =
            Some("Lock.acquire registry_lock <0x1> (threading.Lock records no holder)".into());
        snap.stacks = vec![idle, reader];
        let diagnosis = diagnose(&snap, &[]);
        assert_eq!(diagnosis.findings.len(), 1);
        assert_eq!(
            diagnosis.findings[0].text,
            "1 thread waits in Lock.acquire registry_lock <0x1>; threading.Lock records no holder"
        );
        assert_eq!(diagnosis.findings[0].stacks, vec!["thread:2".to_string()]);
        let mut memo = Memo::default();
        let created = snap.created.clone();
        let rank = |s: &Stack, memo: &mut Memo| interest(s, false, &created, memo);
        assert!(rank(&snap.stacks[1], &mut memo) < rank(&snap.stacks[0], &mut memo));
        // A holder others wait for ranks with them, ahead of the rest.
        let mut holder = thread("thread:3", "holder");
        holder.facts.holds = vec!["RLock registry_lock <0x2>".into()];
        assert!(rank(&holder, &mut memo) < rank(&snap.stacks[0], &mut memo));
    }

    #[test]
    fn own_units_go_last_and_idle_library_stacks_after_user_code_however_long() {
        let created = "2026-01-01T00:01:00.000000Z";
        let mut memo = Memo::default();
        let rank = |s: &Stack, memo: &mut Memo| interest(s, false, created, memo);
        let mut request = thread("thread:1", "request");
        request.facts.unchanged_since = Some("2026-01-01T00:00:50.000000Z".into());
        let mut idle = stack(
            "thread:2",
            "pool",
            StackDetails::Thread(ThreadDetails::default()),
            &[
                ("/usr/lib/python3.11/threading.py", "_bootstrap"),
                ("/usr/lib/python3.11/queue.py", "get"),
            ],
        );
        idle.facts.unchanged_since = Some("2026-01-01T00:00:00.000000Z".into());
        let fresh = thread("thread:3", "fresh");
        let mut dumper = thread("thread:4", "tbcollect-dumper");
        dumper.facts.own = true;
        dumper.facts.unchanged_since = Some("2026-01-01T00:00:00.000000Z".into());
        let ranks: Vec<_> = [&request, &fresh, &idle, &dumper]
            .iter()
            .map(|s| rank(s, &mut memo))
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
    }

    #[test]
    fn two_threads_over_two_locks_are_one_deadlock() {
        let mut snap = Snapshot::new(1, "3.11", "2026-01-01T00:00:10.000000Z");
        let mut a = thread("thread:1", "a");
        let mut b = thread("thread:2", "b");
        a.facts.awaiting = Some("RLock.acquire (held by Thread \"b\")".into());
        a.facts.waiting_for = vec!["thread:2".into()];
        a.facts.holds = vec!["RLock first".into()];
        b.facts.awaiting = Some("RLock.acquire (held by Thread \"a\")".into());
        b.facts.waiting_for = vec!["thread:1".into()];
        b.facts.holds = vec!["RLock second".into()];
        snap.stacks = vec![thread("thread:0", "main"), b, a];
        analyze(&mut snap);
        assert_eq!(snap.deadlocks, vec![vec!["thread:2", "thread:1"]]);
        let d = snap.diagnosis.unwrap();
        assert_eq!(d.findings[0].kind, "deadlock");
        assert_eq!(
            d.findings[0].text,
            "Deadlock: Thread \"b\" (RLock.acquire) waits for Thread \"a\" (RLock.acquire), which waits for Thread \"b\""
        );
        // Their lock waits are the deadlock's: not listed again.
        assert_eq!(d.findings.len(), 1);
    }

    #[test]
    fn tasks_awaiting_each_other_and_a_thread_cycle() {
        let mut snap = Snapshot::new(1, "3.11", "2026-01-01T00:00:10.000000Z");
        // x awaits y, y awaits x; z awaits x (blocked, not in the cycle).
        snap.stacks = vec![
            task("task:x", "x", &["task:y", "task:z"]),
            task("task:y", "y", &["task:x"]),
            task("task:z", "z", &[]),
        ];
        // A thread waiting for task w, which waits for the thread.
        let mut t = thread("thread:9", "worker");
        t.facts.waiting_for = vec!["task:w".into()];
        let mut w = task("task:w", "w", &[]);
        w.facts.waiting_for = vec!["thread:9".into()];
        snap.stacks.push(t);
        snap.stacks.push(w);
        analyze(&mut snap);
        assert_eq!(
            snap.deadlocks,
            vec![vec!["task:x", "task:y"], vec!["thread:9", "task:w"]]
        );
    }

    #[test]
    fn a_long_chain_without_a_cycle_is_no_deadlock() {
        let mut snap = Snapshot::new(1, "3.11", "2026-01-01T00:00:10.000000Z");
        for i in 0..100_000 {
            let by = format!("task:{}", i + 1);
            snap.stacks
                .push(task(&format!("task:{i}"), "t", &[by.as_str()]));
        }
        analyze(&mut snap);
        assert!(snap.deadlocks.is_empty());
    }

    #[test]
    fn a_pile_up_names_its_holder_and_counts_waiters() {
        let mut snap = Snapshot::new(1, "3.11", "2026-01-01T00:00:10.000000Z");
        let mut holder = thread("thread:1", "holder");
        holder.facts.holds = vec!["RLock registry_lock".into()];
        snap.stacks.push(holder);
        for i in 0..50 {
            let mut w = thread(&format!("thread:{}", 100 + i), "waiter");
            w.facts.awaiting = Some("RLock.acquire (held by Thread \"holder\")".into());
            w.facts.waiting_for = vec!["thread:1".into()];
            snap.stacks.push(w);
        }
        let mut own = thread("thread:7", "tbcollect-dumper");
        own.facts.own = true;
        snap.stacks.push(own);
        analyze(&mut snap);
        let d = snap.diagnosis.unwrap();
        assert!(snap.deadlocks.is_empty());
        assert_eq!(
            d.findings[0].text,
            "50 threads wait in RLock.acquire for Thread \"holder\", which holds RLock registry_lock"
        );
        assert_eq!(d.findings[0].stacks[0], "thread:1");
        assert_eq!(d.findings[0].stacks.len(), 1 + IDS_KEPT);
        assert_eq!(d.counts["thread"]["sleeping"], 51);
        assert_eq!(d.own, 1);
        assert_eq!(d.groups[0].count, 50);
        assert_eq!(d.groups[0].place, "work");
    }

    #[test]
    fn groups_ignore_wake_times_and_name_the_user_function() {
        let mut snap = Snapshot::new(1, "3.11", "2026-01-01T00:00:10.000000Z");
        for i in 0..4 {
            let mut t = stack(
                &format!("task:{i}"),
                "t",
                StackDetails::Task(TaskDetails::default()),
                &[
                    ("/srv/app.py", "handle"),
                    ("/usr/lib/python3.11/asyncio/tasks.py", "sleep"),
                ],
            );
            t.facts.awaiting = Some(format!("sleep (wakes in 56.{i} s)").into());
            snap.stacks.push(t);
        }
        analyze(&mut snap);
        let g = &snap.diagnosis.unwrap().groups[0];
        assert_eq!(
            (g.count, g.place.as_str(), g.awaiting.as_deref()),
            (4, "handle → sleep", Some("sleep"))
        );
    }

    #[test]
    fn unchanged_stacks_say_for_how_long() {
        let mut snap = Snapshot::new(1, "3.11", "2026-01-01T00:04:12.500000Z");
        let mut a = thread("thread:1", "stuck");
        a.facts.unchanged_since = Some("2026-01-01T00:00:00.000000Z".into());
        let mut b = thread("thread:2", "newer");
        b.facts.unchanged_since = Some("2026-01-01T00:04:00.000000Z".into());
        snap.stacks = vec![b, a];
        analyze(&mut snap);
        let d = snap.diagnosis.unwrap();
        assert_eq!(
            d.findings[0].text,
            "2 stacks are unchanged since an earlier dump, the longest for 4 min 12 s (thread \"stuck\")"
        );
        assert_eq!(d.findings[0].stacks, vec!["thread:1", "thread:2"]);
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(
            seconds_between("2026-02-28T23:59:59.000000Z", "2026-03-01T00:00:01.250000Z"),
            Some(2.25)
        );
        assert_eq!(
            parse_iso8601(&iso8601_utc(1_795_307_911_500_001)),
            Some(1_795_307_911_500_001)
        );
        assert_eq!(seconds_between("garbage", "2026-03-01T00:00:01Z"), None);
        assert_eq!(duration_words(12.25), "12.2 s");
        assert_eq!(duration_words(3723.0), "1 h 2 min");
    }

    #[test]
    fn timings_split_off() {
        assert_eq!(
            split_timing("sleep (wakes in 56.3 s)"),
            ("sleep", Some(56.3))
        );
        assert_eq!(split_timing("sleep (2.5 s left)"), ("sleep", Some(2.5)));
        assert_eq!(
            split_timing("Event.wait (times out in 1.0 s)"),
            ("Event.wait", Some(1.0))
        );
        assert_eq!(split_timing("Task 'x (1 s)'"), ("Task 'x (1 s)'", None));
    }

    #[test]
    fn library_files() {
        assert!(is_library_file("/usr/lib/python3.11/threading.py"));
        assert!(is_library_file(
            "/v/lib/python3.12/site-packages/gevent/hub.py"
        ));
        assert!(is_library_file("<frozen runpy>"));
        assert!(!is_library_file("/srv/app/handlers.py"));
        assert!(!is_library_file("<string>"));
        assert!(is_library_file("/srv/.venv/bin/gunicorn"));
        assert!(is_library_file("/usr/local/bin/celery"));
        assert!(!is_library_file("/srv/bin/tool.py"));
        assert!(!is_library_file("/srv/binaries/tool"));
    }
}
