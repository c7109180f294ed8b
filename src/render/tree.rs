//! The shape of a program at a glance: greenlets under their parents per
//! thread, tasks under the task that awaits them per event loop, like `pstree`.

use super::escape::{escape, quoted};
use super::same_text;
use crate::model::fasthash::FastMap as HashMap;
use crate::model::{analysis, Snapshot, Stack, StackDetails, StackKind, Text};
use itertools::Itertools;
use std::io::{self, Write};

/// The tree edge of a stack: its parent greenlet, or the first task awaiting it.
pub fn parent_of(stack: &Stack) -> Option<&str> {
    match &stack.details {
        StackDetails::Greenlet(d) => d.parent.as_deref(),
        StackDetails::Task(d) => d.awaited_by.first().map(String::as_str),
        StackDetails::Thread(_) => None,
    }
}

/// What the stacks of one tree share, cheap to compare: (loop, thread).
fn container_key(stack: &Stack) -> (Option<&str>, Option<u64>) {
    match &stack.details {
        StackDetails::Task(d) => (Some(&*d.event_loop), stack.thread),
        _ => (None, stack.thread),
    }
}

/// What the stacks of a tree have in common: the thread of a greenlet, the loop of a task.
fn container_of(stack: &Stack) -> String {
    match &stack.details {
        StackDetails::Task(d) => match stack.thread {
            Some(t) => format!("{} (thread {t})", escape(&d.event_loop)),
            None => format!("{} (not running)", escape(&d.event_loop)),
        },
        _ => match stack.thread {
            Some(t) => format!("thread {t}"),
            None => "no thread".to_string(),
        },
    }
}

/// Leaf siblings with the same label (bar the id) are shown as one line
/// from this many on (`├─ 812 × "worker" (suspended, at app.py:12)`).
const COLLAPSE_AT: usize = 3;

fn label(stack: &Stack, memo: &mut analysis::Memo) -> String {
    format!(
        "{} [{}] ({})",
        quoted(&stack.name),
        escape(&stack.id),
        facts(stack, memo)
    )
}

/// What a collapsed line shares: the label without the ids, and the names
/// (one name when they all share it, as a pool of greenlets does; the first
/// few when they differ, as tasks named `Task-1`, `Task-2`, ... do).
fn shared_label(members: &[&Stack], memo: &mut analysis::Memo) -> String {
    let first = members[0];
    let names = if members.iter().all(|s| s.name == first.name) {
        quoted(&first.name)
    } else {
        let shown: Vec<String> = members
            .iter()
            .take(NAMES_SHOWN)
            .map(|s| quoted(&s.name))
            .collect();
        match members.len().saturating_sub(NAMES_SHOWN) {
            0 => shown.join(", "),
            more => format!("{}, … and {more} more", shown.join(", ")),
        }
    };
    // Leaves differing only in when they wake are one line: the range says when.
    // Members one after another mostly share one text: each is cut once.
    let mut times: Vec<f64> = Vec::new();
    let mut last: Option<(usize, usize)> = None;
    for stack in members {
        let Some(a) = stack.facts.awaiting.as_deref() else {
            continue;
        };
        let key = (a.as_ptr() as usize, a.len());
        if last != Some(key) {
            last = Some(key);
            times.extend(analysis::split_timing(a).1);
        }
    }
    let awaiting = first.facts.awaiting.as_deref().map(|a| {
        let (what, _) = analysis::split_timing(a);
        let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if times.len() < 2 || lo == hi {
            a.to_string()
        } else if a.contains("(wakes in ") {
            format!("{what} (wakes in {lo:.1}–{hi:.1} s)")
        } else if a.contains("(times out in ") {
            format!("{what} (times out in {lo:.1}–{hi:.1} s)")
        } else {
            format!("{what} ({lo:.1}–{hi:.1} s left)")
        }
    });
    // Labels shown only when every member has the same ones: a line of 300
    // requests of one route says which route, and never one member's id.
    let labels: &[(Text, Text)] = if members.iter().all(|s| s.facts.labels == first.facts.labels) {
        &first.facts.labels
    } else {
        &[]
    };
    format!(
        "{names} ({})",
        facts_with(first, awaiting.as_deref(), labels, memo)
    )
}

/// How many differing names a collapsed line lists.
const NAMES_SHOWN: usize = 3;

/// Everything `shared_label` shows but the names, without formatting it.
#[derive(Clone, Copy)]
struct LabelKey<'a>(
    &'a str,
    bool,
    Option<&'a str>,
    usize,
    Option<(&'a str, Option<u32>)>,
);

impl PartialEq for LabelKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        let LabelKey(word, hub, awaiting, awaiters, at) = self;
        let LabelKey(o_word, o_hub, o_awaiting, o_awaiters, o_at) = other;
        same_text(word, o_word)
            && hub == o_hub
            && awaiters == o_awaiters
            && match (awaiting, o_awaiting) {
                (Some(a), Some(b)) => same_text(a, b),
                (None, None) => true,
                _ => false,
            }
            && match (at, o_at) {
                (Some((file, line)), Some((o_file, o_line))) => {
                    line == o_line && same_text(file, o_file)
                }
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for LabelKey<'_> {}

// The state word and the file name are hashed by length (few distinct
// values, long names), what is awaited in full (it varies, so leaves that
// differ only there must not all share one hash); equality compares all.
impl std::hash::Hash for LabelKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let LabelKey(word, hub, awaiting, awaiters, at) = self;
        (word.len(), hub, awaiting, awaiters).hash(state);
        at.map(|(file, line)| (file.len(), line)).hash(state);
    }
}

fn label_key<'s>(stack: &'s Stack, memo: &mut analysis::Memo) -> LabelKey<'s> {
    let (hub, awaiters) = match &stack.details {
        StackDetails::Greenlet(d) => (d.hub, 0),
        StackDetails::Task(d) => (false, d.awaited_by.len()),
        StackDetails::Thread(_) => (false, 0),
    };
    let awaiting = stack.facts.awaiting.as_deref().map(|a| memo.timing_free(a));
    // The whole file name: cheaper to hash than to cut, and as exact.
    let at = at_frame(stack, memo).map(|f| (&*f.filename, f.lineno));
    LabelKey(&stack.state, hub, awaiting, awaiters, at)
}

/// The frame a tree line names: the innermost in the user's own code (the
/// handler's line, not the library's `locks.py:212`), else the innermost.
fn at_frame<'s>(stack: &'s Stack, memo: &mut analysis::Memo) -> Option<&'s crate::model::Frame> {
    memo.user_frame(&stack.frames).or(stack.frames.last())
}

fn facts(stack: &Stack, memo: &mut analysis::Memo) -> String {
    facts_with(
        stack,
        stack.facts.awaiting.as_deref(),
        &stack.facts.labels,
        memo,
    )
}

fn facts_with(
    stack: &Stack,
    awaiting: Option<&str>,
    labels: &[(Text, Text)],
    memo: &mut analysis::Memo,
) -> String {
    let mut facts = vec![escape(&stack.state).into_owned()];
    if let StackDetails::Greenlet(d) = &stack.details {
        if d.hub {
            facts.push("hub".into());
        }
    }
    if let Some(awaiting) = awaiting {
        facts.push(format!("awaiting {}", escape(awaiting)));
    }
    if let StackDetails::Task(d) = &stack.details {
        if d.awaited_by.len() > 1 {
            // The tree hangs a task under its first awaiter; say there are more.
            let more = d.awaited_by[1..].iter().map(|id| escape(id)).join(", ");
            facts.push(format!("also awaited by {more}"));
        }
    }
    if let Some(last) = at_frame(stack, memo) {
        facts.push(format!(
            "at {}:{}",
            escape(short_file(&last.filename)),
            last.lineno.map_or("?".into(), |n| n.to_string())
        ));
    }
    super::text::push_labels(labels, &mut facts);
    facts.join(", ")
}

fn short_file(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

type ContainerKey<'s> = (Option<&'s str>, Option<u64>);

/// Moves a run of stacks of one container into its group.
fn flush<'s>(
    members: &mut HashMap<ContainerKey<'s>, Vec<&'s Stack>>,
    containers: &mut Vec<&'s Stack>,
    key: Option<ContainerKey<'s>>,
    run: &mut Vec<&'s Stack>,
) {
    if let Some(key) = key {
        let group = members.entry(key).or_default();
        if group.is_empty() {
            containers.push(run[0]);
        }
        group.append(run);
    }
}

/// Writes one tree per container for the stacks of `kind` (greenlets or tasks).
pub fn render(
    snapshot: &Snapshot,
    kind: StackKind,
    stacks: &[&Stack],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut containers: Vec<&Stack> = Vec::new();
    let mut members: HashMap<ContainerKey<'_>, Vec<&Stack>> = HashMap::default();
    // Stacks of one container come in runs sharing its loop id text: a run
    // is pushed to the group found for its first stack.
    let mut run: Vec<&Stack> = Vec::new();
    let mut run_key: Option<ContainerKey<'_>> = None;
    let same_key = |a: ContainerKey<'_>, b: ContainerKey<'_>| {
        a.1 == b.1
            && match (a.0, b.0) {
                (Some(x), Some(y)) => same_text(x, y),
                (None, None) => true,
                _ => false,
            }
    };
    for stack in stacks {
        let key = container_key(stack);
        if !run_key.is_some_and(|k| same_key(k, key)) {
            flush(&mut members, &mut containers, run_key, &mut run);
            run_key = Some(key);
        }
        run.push(stack);
    }
    flush(&mut members, &mut containers, run_key, &mut run);
    let title = match kind {
        StackKind::Greenlet => "Greenlet tree",
        StackKind::Task => "Task tree",
        StackKind::Thread => "Thread tree",
    };
    for first in containers {
        let container = container_of(first);
        let group = &members[&container_key(first)];
        writeln!(out)?;
        // A greenlet tree is per thread: name the thread when the snapshot has it.
        let thread_name = match (kind, group[0].thread) {
            (StackKind::Greenlet, Some(t)) => snapshot
                .stack(&format!("thread:{t}"))
                .map(|s| format!(" ({})", quoted(&s.name))),
            _ => None,
        };
        writeln!(
            out,
            "{title} of {container}{}:",
            thread_name.unwrap_or_default()
        )?;
        Tree::new(group).write(out)?;
    }
    Ok(())
}

/// One container's stacks as a tree, by index into `stacks`.
struct Tree<'a> {
    stacks: &'a [&'a Stack],
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
    seen: Vec<bool>,
    /// Valid while `stacks` is borrowed, which is the tree's whole life.
    memo: analysis::Memo,
}

impl<'a> Tree<'a> {
    fn new(stacks: &'a [&'a Stack]) -> Self {
        // Only ids some stack points at are indexed: ten thousand greenlets
        // usually point at one hub, and tasks nobody awaits at nothing.
        let mut ids: HashMap<&str, usize> = HashMap::default();
        let mut last: Option<&str> = None;
        for stack in stacks {
            if let Some(p) = parent_of(stack) {
                if !last.is_some_and(|l| same_text(l, p)) {
                    ids.insert(p, usize::MAX);
                    last = Some(p);
                }
            }
        }
        if !ids.is_empty() {
            for (i, stack) in stacks.iter().enumerate() {
                if let Some(at) = ids.get_mut(&*stack.id) {
                    *at = i; // ids are unique; were one not, the last would win as before
                }
            }
            ids.retain(|_, at| *at != usize::MAX);
        }
        let mut children = vec![Vec::new(); stacks.len()];
        let mut roots = Vec::new();
        // Siblings come in runs that share one parent id text: the last
        // answer is reused for the same text.
        let mut last: Option<(&str, Option<usize>)> = None;
        for (i, stack) in stacks.iter().enumerate() {
            let parent = parent_of(stack).and_then(|p| match last {
                Some((text, at)) if same_text(text, p) => at,
                _ => {
                    let at = ids.get(p).copied();
                    last = Some((p, at));
                    at
                }
            });
            match parent.filter(|&p| p != i) {
                Some(p) => children[p].push(i),
                None => roots.push(i),
            }
        }
        Tree {
            stacks,
            children,
            roots,
            seen: vec![false; stacks.len()],
            memo: analysis::Memo::default(),
        }
    }

    fn write(mut self, out: &mut dyn Write) -> io::Result<()> {
        // Ten thousand tasks that nobody awaits are ten thousand roots:
        // identical ones collapse into one line like identical siblings.
        let roots = std::mem::take(&mut self.roots);
        for item in self.collapse(&roots) {
            match item.as_slice() {
                [root] => self.write_node(*root, "  ", "", out)?,
                many => self.write_collapsed(many, "  ", "", out)?,
            }
        }
        // Stacks on a parent cycle have no root: show them rather than drop them.
        for i in 0..self.stacks.len() {
            if !self.seen[i] {
                self.write_node(i, "  ", "", out)?;
            }
        }
        Ok(())
    }

    fn write_node(
        &mut self,
        i: usize,
        indent: &str,
        branch: &str,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let stack = self.stacks[i];
        if std::mem::replace(&mut self.seen[i], true) {
            return writeln!(
                out,
                "{indent}{branch}{} (again, see above)",
                escape(&stack.id)
            );
        }
        let text = label(stack, &mut self.memo);
        writeln!(out, "{indent}{branch}{text}")?;
        let child_indent = match branch {
            "" => indent.to_string(),
            "└─ " => format!("{indent}   "),
            _ => format!("{indent}│  "),
        };
        let items = self.collapse(&self.children[i]);
        for (n, item) in items.iter().enumerate() {
            let kid_branch = if n + 1 == items.len() {
                "└─ "
            } else {
                "├─ "
            };
            match item.as_slice() {
                [kid] => self.write_node(*kid, &child_indent, kid_branch, out)?,
                many => self.write_collapsed(many, &child_indent, kid_branch, out)?,
            }
        }
        Ok(())
    }

    fn write_collapsed(
        &mut self,
        many: &[usize],
        indent: &str,
        branch: &str,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        for &k in many {
            self.seen[k] = true;
        }
        let members: Vec<&Stack> = many.iter().map(|&k| self.stacks[k]).collect();
        writeln!(
            out,
            "{indent}{branch}{} × {}",
            many.len(),
            shared_label(&members, &mut self.memo)
        )
    }

    /// Siblings in order, leaves with the same shared label gathered into
    /// one item (at the place of the first) once there are `COLLAPSE_AT`.
    fn collapse(&self, kids: &[usize]) -> Vec<Vec<usize>> {
        // Each leaf's place among the groups of equal labels, in first-seen order.
        let mut same: HashMap<LabelKey<'a>, usize> = HashMap::default();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut slot: Vec<Option<usize>> = Vec::with_capacity(kids.len());
        // Equal leaves come in runs (siblings listed by name): a leaf equal
        // to the one before joins its group without being hashed.
        let mut last: Option<(LabelKey<'a>, usize)> = None;
        let mut memo = analysis::Memo::default();
        for &k in kids {
            if !self.children[k].is_empty() {
                slot.push(None);
                continue;
            }
            let key = label_key(self.stacks[k], &mut memo);
            let g = match &last {
                Some((previous, g)) if *previous == key => *g,
                _ => {
                    let g = *same.entry(key).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    last = Some((key, g));
                    g
                }
            };
            groups[g].push(k);
            slot.push(Some(g));
        }
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        let mut items = Vec::new();
        for (&k, g) in kids.iter().zip(slot) {
            match g {
                Some(g) if sizes[g] >= COLLAPSE_AT => {
                    // The whole group goes where its first member was.
                    if groups[g].first() == Some(&k) {
                        items.push(std::mem::take(&mut groups[g]));
                    }
                }
                _ => items.push(vec![k]),
            }
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frame, GreenletDetails, TaskDetails, ThreadDetails};

    fn task(id: &str, name: &str, awaited_by: &[&str]) -> Stack {
        Stack {
            facts: Default::default(),
            id: id.into(),
            name: name.into(),
            thread: Some(7),
            state: "pending".into(),
            frames: vec![Frame::new("/srv/app.py", Some(3), "f")].into(),
            frames_omitted: 0,
            details: StackDetails::Task(TaskDetails {
                event_loop: "loop:0x1".into(),
                awaited_by: awaited_by.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    #[test]
    fn tasks_hang_under_their_awaiter() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        snap.stacks = vec![
            task("task:1", "main", &[]),
            task("task:2", "a", &["task:1"]),
            task("task:3", "b", &["task:1"]),
            task("task:4", "leaf", &["task:2"]),
        ];
        let refs: Vec<&Stack> = snap.stacks.iter().collect();
        let mut buf = Vec::new();
        render(&snap, StackKind::Task, &refs, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(
            text,
            "
Task tree of loop:0x1 (thread 7):
  \"main\" [task:1] (pending, at app.py:3)
  ├─ \"a\" [task:2] (pending, at app.py:3)
  │  └─ \"leaf\" [task:4] (pending, at app.py:3)
  └─ \"b\" [task:3] (pending, at app.py:3)
"
        );
    }

    #[test]
    fn cycles_are_shown_not_lost() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        snap.stacks = vec![
            task("task:1", "x", &["task:2"]),
            task("task:2", "y", &["task:1"]),
        ];
        let refs: Vec<&Stack> = snap.stacks.iter().collect();
        let mut buf = Vec::new();
        render(&snap, StackKind::Task, &refs, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("\"x\" [task:1]"), "{text}");
        assert!(text.contains("\"y\" [task:2]"), "{text}");
        assert!(text.contains("again, see above"), "{text}");
    }

    fn greenlet(id: &str, name: &str, parent: Option<&str>, state: &str, line: u32) -> Stack {
        Stack {
            facts: Default::default(),
            id: id.into(),
            name: name.into(),
            thread: Some(7),
            state: state.into(),
            frames: vec![Frame::new("/srv/app.py", Some(line), "work")].into(),
            frames_omitted: 0,
            details: StackDetails::Greenlet(GreenletDetails {
                parent: parent.map(Into::into),
                hub: name == "Hub",
                ..GreenletDetails::default()
            }),
        }
    }

    fn tree_text(snap: &Snapshot, kind: StackKind) -> String {
        let refs: Vec<&Stack> = snap.stacks.iter().filter(|s| s.kind() == kind).collect();
        let mut buf = Vec::new();
        render(snap, kind, &refs, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn leaves_show_the_user_line_and_one_line_for_all_wake_times() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        snap.stacks.push(task("task:1", "main", &[]));
        for i in 0..4 {
            let mut t = task(&format!("task:{}", i + 10), "sleeper", &["task:1"]);
            t.frames = vec![
                Frame::new("/srv/app.py", Some(32), "hold_ep"),
                Frame::new("/usr/lib/python3.11/asyncio/tasks.py", Some(649), "sleep"),
            ]
            .into();
            t.facts.awaiting = Some(format!("sleep (wakes in 56.{i} s)").into());
            snap.stacks.push(t);
        }
        let text = tree_text(&snap, StackKind::Task);
        assert!(
            text.contains(
                "└─ 4 × \"sleeper\" (pending, awaiting sleep (wakes in 56.0–56.3 s), at app.py:32)"
            ),
            "{text}"
        );
    }

    #[test]
    fn greenlets_hang_under_the_hub_and_identical_leaves_collapse() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        snap.stacks.push(Stack {
            facts: Default::default(),
            id: "thread:7".into(),
            name: "MainThread".into(),
            thread: Some(7),
            state: "running".into(),
            frames: vec![].into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails::default()),
        });
        snap.stacks.push(greenlet(
            "greenlet:0x1",
            "<main greenlet>",
            None,
            "running",
            1,
        ));
        snap.stacks.push(greenlet(
            "greenlet:0x2",
            "Hub",
            Some("greenlet:0x1"),
            "suspended",
            9,
        ));
        for i in 0..812 {
            let id = format!("greenlet:0x{:x}", 0x100 + i);
            snap.stacks.push(greenlet(
                &id,
                "worker",
                Some("greenlet:0x2"),
                "suspended",
                12,
            ));
        }
        // Same name and place but another state, and a worker with a child:
        // neither joins the 812.
        snap.stacks.push(greenlet(
            "greenlet:0x3",
            "worker",
            Some("greenlet:0x2"),
            "running",
            12,
        ));
        snap.stacks.push(greenlet(
            "greenlet:0x4",
            "worker",
            Some("greenlet:0x2"),
            "suspended",
            12,
        ));
        snap.stacks.push(greenlet(
            "greenlet:0x5",
            "child",
            Some("greenlet:0x4"),
            "suspended",
            30,
        ));
        snap.stacks.push(greenlet(
            "greenlet:0x6",
            "pair",
            Some("greenlet:0x2"),
            "suspended",
            40,
        ));
        snap.stacks.push(greenlet(
            "greenlet:0x7",
            "pair",
            Some("greenlet:0x2"),
            "suspended",
            40,
        ));
        assert_eq!(
            tree_text(&snap, StackKind::Greenlet),
            "
Greenlet tree of thread 7 (\"MainThread\"):
  \"<main greenlet>\" [greenlet:0x1] (running, at app.py:1)
  └─ \"Hub\" [greenlet:0x2] (suspended, hub, at app.py:9)
     ├─ 812 × \"worker\" (suspended, at app.py:12)
     ├─ \"worker\" [greenlet:0x3] (running, at app.py:12)
     ├─ \"worker\" [greenlet:0x4] (suspended, at app.py:12)
     │  └─ \"child\" [greenlet:0x5] (suspended, at app.py:30)
     ├─ \"pair\" [greenlet:0x6] (suspended, at app.py:40)
     └─ \"pair\" [greenlet:0x7] (suspended, at app.py:40)
"
        );
    }

    #[test]
    fn one_greenlet_tree_per_thread_and_unknown_threads_apart() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        let mut other = greenlet("greenlet:0x9", "<main greenlet>", None, "dead", 1);
        other.thread = None;
        other.frames = Default::default();
        snap.stacks = vec![
            greenlet("greenlet:0x1", "<main greenlet>", None, "running", 1),
            other,
            greenlet("greenlet:0x2", "a", Some("greenlet:0x1"), "suspended", 5),
        ];
        assert_eq!(
            tree_text(&snap, StackKind::Greenlet),
            "
Greenlet tree of thread 7:
  \"<main greenlet>\" [greenlet:0x1] (running, at app.py:1)
  └─ \"a\" [greenlet:0x2] (suspended, at app.py:5)

Greenlet tree of no thread:
  \"<main greenlet>\" [greenlet:0x9] (dead)
"
        );
    }

    #[test]
    fn leaves_that_differ_in_what_they_await_stay_apart() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        snap.stacks.push(task("task:1", "main", &[]));
        for i in 0..3 {
            snap.stacks
                .push(task(&format!("task:{}", i + 10), "fetch", &["task:1"]));
        }
        snap.stacks[3].facts.awaiting = Some("Future pending".into());
        let text = tree_text(&snap, StackKind::Task);
        assert!(
            text.contains("├─ \"fetch\" [task:10] (pending, at app.py:3)\n"),
            "{text}"
        );
        assert!(
            text.contains("├─ \"fetch\" [task:11] (pending, at app.py:3)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "└─ \"fetch\" [task:12] (pending, awaiting Future pending, at app.py:3)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn leaves_show_labels_a_collapsed_line_only_those_all_share() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        snap.stacks.push(task("task:1", "main", &[]));
        for i in 0..6 {
            let mut t = task(&format!("task:{}", i + 10), "req", &["task:1"]);
            t.facts.awaiting = Some(if i < 3 { "sleep" } else { "Event.wait" }.into());
            t.facts.labels = vec![("route".into(), "'GET /slow'".into())];
            if i >= 3 {
                t.facts.labels.push(("id".into(), format!("'{i}'").into()));
            }
            snap.stacks.push(t);
        }
        let text = tree_text(&snap, StackKind::Task);
        assert!(
            text.contains(
                "├─ 3 × \"req\" (pending, awaiting sleep, at app.py:3, route='GET /slow')\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("└─ 3 × \"req\" (pending, awaiting Event.wait, at app.py:3)\n"),
            "{text}"
        );
        snap.stacks.truncate(2);
        let text = tree_text(&snap, StackKind::Task);
        assert!(
            text.contains("(pending, awaiting sleep, at app.py:3, route='GET /slow')"),
            "{text}"
        );
    }
}
