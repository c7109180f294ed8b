//! The human-readable dump: one header line, then one block per stack (or per
//! group of identical stacks), frames in exactly Python's traceback form so
//! editors and log tools can jump to them.

use crate::model::analysis;
use crate::model::fasthash::{FastHasher, FastMap};
use crate::model::{Coverage, Frame, ProbeResult, Snapshot, Stack, StackDetails, StackKind, Text};
use crate::render::escape::{escape, quoted};
use crate::render::tree;
use itertools::Itertools;
use std::hash::{Hash, Hasher};
use std::io::{self, Write};

/// How many member names a group header lists before "and N more".
const GROUP_NAMES_SHOWN: usize = 12;

#[derive(Debug, Clone)]
pub struct TextOptions {
    /// Merge stacks of one kind whose frames are identical into one block.
    pub group: bool,
    /// Print the source line under each frame (when the snapshot has it).
    pub source: bool,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            group: true,
            source: true,
        }
    }
}

pub fn render(snapshot: &Snapshot, options: &TextOptions, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", header_line(snapshot))?;
    super::summary::render(snapshot, out)?;
    let refs = Refs::new(snapshot);
    let deadlocked: FastMap<&str, ()> = snapshot
        .deadlocks
        .iter()
        .flatten()
        .map(|id| (id.as_str(), ()))
        .collect();
    for kind in StackKind::ALL {
        let stacks: Vec<&Stack> = snapshot
            .stacks
            .iter()
            .filter(|s| s.kind() == kind)
            .collect();
        if stacks.is_empty() {
            continue;
        }
        if kind != StackKind::Thread {
            tree::render(snapshot, kind, &stacks, out)?;
        }
        let mut groups = groups(&stacks, options.group);
        // The interesting first: deadlocked, waiting for a lock's holder,
        // unchanged the longest, in the user's code; idle library waits last.
        let mut memo = analysis::Memo::default();
        let mut interest = |s: &Stack| {
            analysis::interest(
                s,
                !deadlocked.is_empty() && deadlocked.contains_key(&*s.id),
                &snapshot.created,
                &mut memo,
            )
        };
        groups.sort_by_cached_key(|g| g.iter().map(|s| interest(s)).min());
        for group in groups {
            writeln!(out)?;
            render_group(&refs, &group, options, out)?;
        }
    }
    if !snapshot.probes.is_empty() {
        writeln!(out)?;
        writeln!(out, "Probes ({}):", snapshot.probes.len())?;
        for probe in &snapshot.probes {
            render_probe(probe, out)?;
        }
    }
    if !snapshot.errors.is_empty() {
        writeln!(out)?;
        writeln!(out, "Errors while collecting ({}):", snapshot.errors.len())?;
        for error in &snapshot.errors {
            writeln!(out, "  - {}", escape(error))?;
        }
    }
    Ok(())
}

pub fn render_to_string(snapshot: &Snapshot, options: &TextOptions) -> String {
    let mut buf = Vec::new();
    render(snapshot, options, &mut buf).expect("writing to a Vec cannot fail");
    String::from_utf8(buf).expect("the renderer writes only UTF-8")
}

/// `  name: 3` for a one-line result, else the pretty JSON (or the error) below the name.
fn render_probe(probe: &ProbeResult, out: &mut dyn Write) -> io::Result<()> {
    let (label, body) = match &probe.error {
        // Escaped line by line below: a traceback keeps its lines.
        Some(error) => (format!("{} (error)", escape(&probe.name)), error.clone()),
        None => (
            escape(&probe.name).into_owned(),
            serde_json::to_string_pretty(&probe.result).expect("a JSON value always serializes"),
        ),
    };
    if body.contains('\n') {
        writeln!(out, "  {label}:")?;
        for line in body.lines() {
            writeln!(out, "    {}", escape(line))?;
        }
    } else {
        writeln!(out, "  {label}: {}", escape(&body))?;
    }
    Ok(())
}

/// `tbcollect: pid 42 at <time>, Python 3.11.7: 5 threads, 0 greenlets, 2 tasks`;
/// a kind a backend could not (fully) read says so after its count:
/// `0 tasks (tasks NOT CAPTURED, see errors)`.
pub fn header_line(snapshot: &Snapshot) -> String {
    let counts = snapshot
        .counts()
        .iter()
        .map(|(kind, n)| {
            let count = kind.count_noun(*n);
            match snapshot.coverage(*kind) {
                Coverage::Complete => count,
                Coverage::Incomplete => format!("{count} ({kind}s INCOMPLETE, see errors)"),
                Coverage::NotCaptured => format!("{count} ({kind}s NOT CAPTURED, see errors)"),
            }
        })
        .join(", ");
    let own = match snapshot.own_count() {
        0 => String::new(),
        n => format!(" (and {n} of tbcollect's own)"),
    };
    format!(
        "tbcollect: pid {} at {}, Python {}: {counts}{own}",
        snapshot.pid,
        escape(&snapshot.created),
        escape(&snapshot.python)
    )
}

/// Stacks of one kind with identical frames, in order of first appearance.
fn groups<'a>(stacks: &[&'a Stack], enabled: bool) -> Vec<Vec<&'a Stack>> {
    if !enabled {
        return stacks.iter().map(|s| vec![*s]).collect();
    }
    // Stacks holding the same shared frame lists are the same stack: most
    // members are placed by that identity alone, without reading a frame.
    let mut by_lists: FastMap<(usize, usize, u64), usize> = FastMap::default();
    // Fingerprint -> groups with it; members are confirmed frame by frame.
    let mut index: FastMap<u64, Vec<usize>> = FastMap::default();
    let mut out: Vec<Vec<&'a Stack>> = Vec::new();
    for stack in stacks {
        // An empty stack (a task or greenlet not started) says nothing shared.
        if stack.frames.is_empty() {
            out.push(vec![*stack]);
            continue;
        }
        let lists = (
            list_address(&stack.frames),
            list_address(spawn_frames(stack)),
            stack.frames_omitted,
        );
        if let Some(&g) = by_lists.get(&lists) {
            out[g].push(*stack);
            continue;
        }
        let candidates = index.entry(fingerprint(stack)).or_default();
        let g = match candidates.iter().find(|&&g| same_stack(out[g][0], stack)) {
            Some(&g) => {
                out[g].push(*stack);
                g
            }
            None => {
                candidates.push(out.len());
                out.push(vec![*stack]);
                out.len() - 1
            }
        };
        by_lists.insert(lists, g);
    }
    out
}

/// Identifies a shared frame list (0 for every empty one).
fn list_address(frames: &[Frame]) -> usize {
    if frames.is_empty() {
        0
    } else {
        frames.as_ptr() as usize
    }
}

fn spawn_frames(stack: &Stack) -> &[Frame] {
    match &stack.details {
        StackDetails::Greenlet(d) => &d.spawn_frames,
        _ => &[],
    }
}

/// Where a stack is: its frames, then (greenlets spawned from different
/// places are told apart) where gevent saw it spawned.
fn locations(stack: &Stack) -> impl Iterator<Item = (&str, Option<u32>, &str)> {
    stack
        .frames
        .iter()
        .chain(spawn_frames(stack))
        .map(Frame::location)
}

fn fingerprint(stack: &Stack) -> u64 {
    let mut hasher = FastHasher::default();
    stack.frames_omitted.hash(&mut hasher);
    for location in locations(stack) {
        location.hash(&mut hasher);
    }
    hasher.finish()
}

fn same_stack(a: &Stack, b: &Stack) -> bool {
    let spawned = spawn_frames;
    // Frames of one code object share their `Text`s: equal pointers settle
    // most comparisons without reading the names.
    use super::same_text;
    let chain = |s: &'_ Stack| s.frames.len() + spawned(s).len();
    a.frames_omitted == b.frames_omitted
        && chain(a) == chain(b)
        && a.frames
            .iter()
            .chain(spawned(a))
            .zip(b.frames.iter().chain(spawned(b)))
            .all(|(x, y)| {
                x.lineno == y.lineno
                    && same_text(&x.filename, &y.filename)
                    && same_text(&x.function, &y.function)
            })
}

/// Stacks by id, so headers name the stacks they refer to in O(1).
/// Built on first use: ten thousand tasks nobody awaits never need it.
struct Refs<'a>(
    &'a Snapshot,
    std::cell::OnceCell<FastMap<&'a str, &'a Stack>>,
);

impl<'a> Refs<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        Refs(snapshot, std::cell::OnceCell::new())
    }

    /// Stacks looked at before the index of every id is built: the ones
    /// others point at most (a thread's hub and main greenlet, the threads)
    /// come first, so most headers are described without hashing ten
    /// thousand ids.
    const SCAN_FIRST: usize = 64;

    fn describe(&self, id: &str) -> String {
        let found = match self.1.get() {
            Some(by_id) => by_id.get(id).copied(),
            None => self
                .0
                .stacks
                .iter()
                .take(Self::SCAN_FIRST)
                .find(|s| &*s.id == id)
                .or_else(|| {
                    let by_id = self
                        .1
                        .get_or_init(|| self.0.stacks.iter().map(|s| (&*s.id, s)).collect());
                    by_id.get(id).copied()
                }),
        };
        describe_stack(found, id)
    }
}

fn render_group(
    refs: &Refs<'_>,
    group: &[&Stack],
    options: &TextOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    let first = group[0];
    if group.len() == 1 {
        writeln!(out, "{}", header(refs, first))?;
    } else {
        writeln!(
            out,
            "{} with this same stack: {}",
            first.kind().count_noun(group.len()),
            name_summary(group)
        )?;
        let more = group.len().saturating_sub(GROUP_NAMES_SHOWN);
        // The names above cover the rest; every id is in the JSON dump.
        for stack in group.iter().take(GROUP_NAMES_SHOWN) {
            writeln!(out, "  {}", header(refs, stack))?;
        }
        if more > 0 {
            writeln!(out, "  … and {more} more")?;
        }
    }
    render_frames(first, options, out)?;
    render_spawn_frames(first, options, out)
}

/// The members' names in order, a repeated name once with its count
/// (`worker × 812`), the first `GROUP_NAMES_SHOWN` names at most.
fn name_summary(group: &[&Stack]) -> String {
    // Only the first names shown are counted: ten thousand distinct task
    // names need no table of ten thousand entries.
    let mut counts: FastMap<&str, usize> = FastMap::default();
    let mut order: Vec<&str> = Vec::new();
    for stack in group {
        if let Some(n) = counts.get_mut(&*stack.name) {
            *n += 1;
        } else if order.len() < GROUP_NAMES_SHOWN {
            counts.insert(&stack.name, 1);
            order.push(&stack.name);
        }
    }
    let shown = &order[..order.len().min(GROUP_NAMES_SHOWN)];
    let mut text = shown
        .iter()
        .map(|name| match counts[name] {
            1 => escape(name).into_owned(),
            n => format!("{} × {n}", escape(name)),
        })
        .join(", ");
    let covered: usize = shown.iter().map(|name| counts[name]).sum();
    if covered < group.len() {
        text.push_str(&format!(", … and {} more", group.len() - covered));
    }
    text
}

/// Where gevent saw a greenlet spawned, under its stack.
fn render_spawn_frames(
    stack: &Stack,
    options: &TextOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    if let StackDetails::Greenlet(d) = &stack.details {
        if !d.spawn_frames.is_empty() {
            writeln!(out, "  Spawned at:")?;
            for frame in d.spawn_frames.iter() {
                render_frame(frame, options, "    ", out)?;
            }
        }
    }
    Ok(())
}

/// `Thread "worker-1" (ident 1401, native id 77, sleeping, daemon)`
pub fn stack_header(snapshot: &Snapshot, stack: &Stack) -> String {
    header(&Refs::new(snapshot), stack)
}

fn header(refs: &Refs<'_>, stack: &Stack) -> String {
    let mut facts: Vec<String> = Vec::new();
    let title = match &stack.details {
        StackDetails::Thread(d) => {
            if let Some(ident) = stack.thread {
                facts.push(format!("ident {ident}"));
            }
            if let Some(native) = d.native_id {
                facts.push(format!("native id {native}"));
            }
            facts.push(escape(&stack.state).into_owned());
            if d.daemon == Some(true) {
                facts.push("daemon".into());
            }
            if d.current {
                facts.push("current".into());
            }
            push_wait_facts(stack, &mut facts);
            "Thread"
        }
        StackDetails::Greenlet(d) => {
            facts.push(escape(&stack.id).into_owned());
            facts.push(escape(&stack.state).into_owned());
            if let Some(ident) = stack.thread {
                facts.push(format!("thread {ident}"));
            }
            if d.hub {
                facts.push("hub".into());
            }
            if let Some(parent) = &d.parent {
                facts.push(format!("parent {}", refs.describe(parent)));
            }
            if let Some(spawner) = &d.spawned_by {
                facts.push(format!("spawned by {}", refs.describe(spawner)));
            }
            push_wait_facts(stack, &mut facts);
            "Greenlet"
        }
        StackDetails::Task(d) => {
            facts.push(escape(&stack.id).into_owned());
            facts.push(escape(&stack.state).into_owned());
            match stack.thread {
                Some(ident) => facts.push(format!("{} in thread {ident}", escape(&d.event_loop))),
                None => facts.push(escape(&d.event_loop).into_owned()),
            }
            if let Some(awaiting) = &stack.facts.awaiting {
                facts.push(format!("awaiting {}", escape(awaiting)));
            }
            if !d.awaited_by.is_empty() {
                let by = d.awaited_by.iter().map(|id| refs.describe(id)).join(", ");
                facts.push(format!("awaited by {by}"));
            }
            "Task"
        }
    };
    if !stack.facts.holds.is_empty() {
        let holds = stack.facts.holds.iter().map(|h| escape(h)).join(", ");
        facts.push(format!("holds {holds}"));
    }
    if let Some(since) = &stack.facts.unchanged_since {
        if let Some(secs) = analysis::seconds_between(since, &refs.0.created) {
            facts.push(format!("unchanged for {}", analysis::duration_words(secs)));
        }
    }
    push_labels(&stack.facts.labels, &mut facts);
    if stack.facts.own {
        facts.push("tbcollect's own".into());
    }
    format!("{title} {} ({})", quoted(&stack.name), facts.join(", "))
}

/// Labels as a header or tree line shows them: `request_id='7f3a'`.
pub fn push_labels(labels: &[(Text, Text)], facts: &mut Vec<String>) {
    for (name, value) in labels {
        facts.push(format!("{}={}", escape(name), escape(value)));
    }
}

/// `awaiting ...` for threads and greenlets (a task says it among its own facts).
fn push_wait_facts(stack: &Stack, facts: &mut Vec<String>) {
    if let Some(awaiting) = &stack.facts.awaiting {
        facts.push(format!("awaiting {awaiting}"));
    }
}

/// A stack id as a person reads it: `Task "main"` when the snapshot has it.
pub fn describe_ref(snapshot: &Snapshot, id: &str) -> String {
    describe_stack(snapshot.stack(id), id)
}

fn describe_stack(stack: Option<&Stack>, id: &str) -> String {
    match stack {
        Some(s) => {
            let title = match s.kind() {
                StackKind::Thread => "Thread",
                StackKind::Greenlet => "Greenlet",
                StackKind::Task => "Task",
            };
            format!("{title} {}", quoted(&s.name))
        }
        None => escape(id).into_owned(),
    }
}

fn render_frames(stack: &Stack, options: &TextOptions, out: &mut dyn Write) -> io::Result<()> {
    if stack.frames_omitted > 0 {
        writeln!(out, "  ... {} frames omitted", stack.frames_omitted)?;
    }
    if stack.frames.is_empty() && stack.frames_omitted == 0 {
        writeln!(out, "  (no Python frames)")?;
    }
    for frame in stack.frames.iter() {
        render_frame(frame, options, "  ", out)?;
    }
    Ok(())
}

/// One frame exactly as `traceback.format_list` writes it, under `indent`.
pub fn render_frame(
    frame: &Frame,
    options: &TextOptions,
    indent: &str,
    out: &mut dyn Write,
) -> io::Result<()> {
    let line = match frame.lineno {
        Some(n) => n.to_string(),
        None => "None".to_string(),
    };
    writeln!(
        out,
        "{indent}File \"{}\", line {line}, in {}",
        escape(&frame.filename),
        escape(&frame.function)
    )?;
    if options.source {
        if let Some(source) = frame.source.get().filter(|s| !s.is_empty()) {
            writeln!(out, "{indent}  {}", escape(source))?;
        }
    }
    if let Some(locals) = &frame.locals {
        for (name, value) in &locals.0 {
            writeln!(out, "{indent}    {} = {}", escape(name), escape(value))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GreenletDetails, Locals, TaskDetails, ThreadDetails};

    fn thread(ident: u64, name: &str, frames: Vec<Frame>) -> Stack {
        Stack {
            facts: Default::default(),
            id: format!("thread:{ident}").into(),
            name: name.into(),
            thread: Some(ident),
            state: "sleeping".into(),
            frames: frames.into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails {
                native_id: Some(ident + 1000),
                daemon: Some(false),
                current: false,
            }),
        }
    }

    fn frame(file: &str, line: u32, func: &str, src: &str) -> Frame {
        Frame {
            source: crate::model::Source::new(Some(src.into())),
            ..Frame::new(file, Some(line), func)
        }
    }

    fn worker_frames() -> Vec<Frame> {
        vec![
            frame(
                "/usr/lib/python3.11/threading.py",
                1002,
                "Thread._bootstrap",
                "self._bootstrap_inner()",
            ),
            frame("/srv/app.py", 12, "Worker.run", "time.sleep(1)"),
        ]
    }

    fn snapshot() -> Snapshot {
        let mut snap = Snapshot::new(42, "3.11.7", "2026-11-22T00:00:00.000000Z");
        let mut main = thread(
            1,
            "MainThread",
            vec![frame("/srv/main.py", 3, "<module>", "dump()")],
        );
        main.state = "running".into();
        if let StackDetails::Thread(d) = &mut main.details {
            d.current = true;
        }
        snap.stacks.push(main);
        snap.stacks.push(thread(2, "worker-1", worker_frames()));
        snap.stacks.push(thread(3, "worker-2", worker_frames()));
        snap
    }

    #[test]
    fn header_counts_every_kind() {
        assert_eq!(
            header_line(&snapshot()),
            "tbcollect: pid 42 at 2026-11-22T00:00:00.000000Z, Python 3.11.7: 3 threads, 0 greenlets, 0 tasks"
        );
    }

    #[test]
    fn header_says_which_kinds_are_missing() {
        let mut snap = snapshot();
        snap.errors
            .push("tasks not captured: CPython 3.99 is not one this tbcollect knows".into());
        snap.errors
            .push("greenlets incomplete: a list was cut".into());
        assert_eq!(
            header_line(&snap),
            "tbcollect: pid 42 at 2026-11-22T00:00:00.000000Z, Python 3.11.7: 3 threads, \
             0 greenlets (greenlets INCOMPLETE, see errors), 0 tasks (tasks NOT CAPTURED, see errors)"
        );
    }

    #[test]
    fn groups_identical_stacks_and_keeps_traceback_form() {
        let text = render_to_string(&snapshot(), &TextOptions::default());
        let expected = "\
tbcollect: pid 42 at 2026-11-22T00:00:00.000000Z, Python 3.11.7: 3 threads, 0 greenlets, 0 tasks

Diagnosis: no deadlock, no lock wait with a known holder.
States: threads 2 sleeping, 1 running
Largest groups:
  - 2 threads in Worker.run

Thread \"MainThread\" (ident 1, native id 1001, running, current)
  File \"/srv/main.py\", line 3, in <module>
    dump()

2 threads with this same stack: worker-1, worker-2
  Thread \"worker-1\" (ident 2, native id 1002, sleeping)
  Thread \"worker-2\" (ident 3, native id 1003, sleeping)
  File \"/usr/lib/python3.11/threading.py\", line 1002, in Thread._bootstrap
    self._bootstrap_inner()
  File \"/srv/app.py\", line 12, in Worker.run
    time.sleep(1)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn grouping_can_be_switched_off() {
        let options = TextOptions {
            group: false,
            ..TextOptions::default()
        };
        let text = render_to_string(&snapshot(), &options);
        assert!(!text.contains("with this same stack"));
        assert_eq!(text.matches(", in Worker.run").count(), 2);
    }

    #[test]
    fn truncation_marker_missing_line_and_locals() {
        let mut snap = snapshot();
        let s = &mut snap.stacks[0];
        s.frames_omitted = 3000;
        let first = &mut std::sync::Arc::make_mut(&mut s.frames)[0];
        first.lineno = None;
        first.source = crate::model::Source::default();
        first.locals = Some(Locals(vec![("x".into(), "1".into())]));
        snap.errors.push("thread 9: vanished".into());
        let text = render_to_string(&snap, &TextOptions::default());
        assert!(text.contains(
            "(ident 1, native id 1001, running, current)\n  ... 3000 frames omitted\n  File \"/srv/main.py\", line None, in <module>\n      x = 1\n"
        ), "{text}");
        assert!(text.ends_with("Errors while collecting (1):\n  - thread 9: vanished\n"));
    }

    #[test]
    fn source_lines_can_be_left_out() {
        let options = TextOptions {
            source: false,
            ..TextOptions::default()
        };
        let text = render_to_string(&snapshot(), &options);
        assert!(!text.contains("time.sleep(1)"));
        assert!(text.contains("line 12, in Worker.run"));
    }

    #[test]
    fn probes_section_lists_results_and_errors() {
        let mut snap = snapshot();
        snap.probes = vec![
            ProbeResult {
                name: "queue".into(),
                result: serde_json::json!({"depth": 3, "names": ["a", "b"]}),
                error: None,
            },
            ProbeResult {
                name: "uptime".into(),
                result: serde_json::json!(12.5),
                error: None,
            },
            ProbeResult {
                name: "broken".into(),
                result: serde_json::Value::Null,
                error: Some(
                    "Traceback (most recent call last):\nZeroDivisionError: division by zero"
                        .into(),
                ),
            },
        ];
        snap.errors.push("thread 9: vanished".into());
        let text = render_to_string(&snap, &TextOptions::default());
        let expected = "
Probes (3):
  queue:
    {
      \"depth\": 3,
      \"names\": [
        \"a\",
        \"b\"
      ]
    }
  uptime: 12.5
  broken (error):
    Traceback (most recent call last):
    ZeroDivisionError: division by zero

Errors while collecting (1):
  - thread 9: vanished
";
        assert!(text.ends_with(expected), "{text}");
    }

    #[test]
    fn no_probes_no_section() {
        let text = render_to_string(&snapshot(), &TextOptions::default());
        assert!(!text.contains("Probes"));
    }

    #[test]
    fn long_groups_name_the_first_few() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        for i in 0..20 {
            snap.stacks
                .push(thread(i, &format!("w{i}"), worker_frames()));
        }
        let text = render_to_string(&snap, &TextOptions::default());
        assert!(text.contains("20 threads with this same stack: w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11, … and 8 more\n"));
    }

    fn greenlet(id: &str, name: &str, spawned_at: u32) -> Stack {
        Stack {
            facts: Default::default(),
            id: id.into(),
            name: name.into(),
            thread: Some(1),
            state: "suspended".into(),
            frames: vec![
                frame("/srv/app.py", 12, "worker", "queue.get()"),
                frame(
                    "/srv/venv/gevent/queue.py",
                    300,
                    "Queue.get",
                    "return self.__get_or_peek(...)",
                ),
            ]
            .into(),
            frames_omitted: 0,
            details: StackDetails::Greenlet(GreenletDetails {
                parent: Some("greenlet:0xhub".into()),
                hub: false,
                spawned_by: Some("greenlet:0xmain".into()),
                spawn_frames: vec![frame(
                    "/srv/app.py",
                    spawned_at,
                    "serve",
                    "gevent.spawn(worker)",
                )]
                .into(),
            }),
        }
    }

    fn greenlet_snapshot(workers: usize) -> Snapshot {
        let mut snap = Snapshot::new(42, "3.11.7", "2026-11-22T00:00:00.000000Z");
        let mut main = greenlet("greenlet:0xmain", "<main greenlet>", 0);
        main.state = "running".into();
        main.frames = vec![frame("/srv/app.py", 40, "<module>", "serve()")].into();
        main.details = StackDetails::Greenlet(GreenletDetails::default());
        let mut hub = greenlet("greenlet:0xhub", "Hub", 0);
        hub.frames = vec![frame(
            "/srv/venv/gevent/hub.py",
            647,
            "Hub.run",
            "loop.run()",
        )]
        .into();
        hub.details = StackDetails::Greenlet(GreenletDetails {
            parent: Some("greenlet:0xmain".into()),
            hub: true,
            ..GreenletDetails::default()
        });
        snap.stacks.push(main);
        snap.stacks.push(hub);
        for i in 0..workers {
            snap.stacks.push(greenlet(
                &format!("greenlet:0x{i}"),
                &format!("worker-{i}"),
                20,
            ));
        }
        snap
    }

    #[test]
    fn greenlet_headers_name_parent_and_spawner_and_show_where_spawned() {
        let text = render_to_string(&greenlet_snapshot(1), &TextOptions::default());
        let expected = "\
Greenlet \"worker-0\" (greenlet:0x0, suspended, thread 1, parent Greenlet \"Hub\", spawned by Greenlet \"<main greenlet>\")
  File \"/srv/app.py\", line 12, in worker
    queue.get()
  File \"/srv/venv/gevent/queue.py\", line 300, in Queue.get
    return self.__get_or_peek(...)
  Spawned at:
    File \"/srv/app.py\", line 20, in serve
      gevent.spawn(worker)
";
        assert!(text.ends_with(expected), "{text}");
        assert!(text.contains(
            "Greenlet \"Hub\" (greenlet:0xhub, suspended, thread 1, hub, parent Greenlet \"<main greenlet>\")\n"
        ));
    }

    #[test]
    fn many_identical_greenlets_are_one_block_with_a_few_headers() {
        let text = render_to_string(&greenlet_snapshot(812), &TextOptions::default());
        assert!(text.starts_with(
            "tbcollect: pid 42 at 2026-11-22T00:00:00.000000Z, Python 3.11.7: 0 threads, 814 greenlets, 0 tasks\n"
        ));
        assert!(text.contains(
            "\n812 greenlets with this same stack: worker-0, worker-1, worker-2, worker-3, worker-4, worker-5, worker-6, worker-7, worker-8, worker-9, worker-10, worker-11, … and 800 more\n"
        ), "{text}");
        assert_eq!(
            text.matches("  Greenlet \"worker-").count(),
            GROUP_NAMES_SHOWN
        );
        assert!(text.contains("  Greenlet \"worker-11\" (greenlet:0x11, suspended, thread 1, parent Greenlet \"Hub\", spawned by Greenlet \"<main greenlet>\")\n  … and 800 more\n  File \"/srv/app.py\", line 12, in worker\n"), "{text}");
        assert_eq!(text.matches("Spawned at:").count(), 1);
        // Names differ, the rest is equal: one tree line naming the first few.
        assert!(
            text.contains("     └─ 812 × \"worker-0\", \"worker-1\", \"worker-2\", … and 809 more (suspended, at queue.py:300)\n"),
            "{text}"
        );
    }

    #[test]
    fn greenlets_spawned_from_different_places_are_grouped_apart() {
        let mut snap = greenlet_snapshot(4);
        if let StackDetails::Greenlet(d) = &mut snap.stacks[5].details {
            std::sync::Arc::make_mut(&mut d.spawn_frames)[0].lineno = Some(21);
        }
        let text = render_to_string(&snap, &TextOptions::default());
        assert!(
            text.contains("3 greenlets with this same stack: worker-0, worker-1, worker-2\n"),
            "{text}"
        );
        assert!(
            text.contains("\nGreenlet \"worker-3\" (greenlet:0x3,"),
            "{text}"
        );
        assert_eq!(text.matches("Spawned at:").count(), 2);
    }

    #[test]
    fn repeated_names_are_counted_once() {
        let mut snap = greenlet_snapshot(0);
        for i in 0..30 {
            let name = if i % 10 == 9 { "other" } else { "worker" };
            snap.stacks
                .push(greenlet(&format!("greenlet:0x{i}"), name, 20));
        }
        let text = render_to_string(&snap, &TextOptions::default());
        assert!(
            text.contains("30 greenlets with this same stack: worker × 27, other × 3\n"),
            "{text}"
        );
    }

    fn task(id: &str, name: &str, thread: Option<u64>, details: TaskDetails) -> Stack {
        Stack {
            facts: Default::default(),
            id: id.into(),
            name: name.into(),
            thread,
            state: "pending".into(),
            frames: vec![frame("/srv/app.py", 9, "child", "await asyncio.sleep(30)")].into(),
            frames_omitted: 0,
            details: StackDetails::Task(details),
        }
    }

    #[test]
    fn task_headers_name_their_loop_wait_and_awaiters() {
        let mut snap = Snapshot::new(7, "3.12.1", "t");
        let mut main = task(
            "task:0x10",
            "main",
            Some(5),
            TaskDetails {
                event_loop: "loop:0x1".into(),
                awaited_by: vec![],
            },
        );
        main.facts.awaiting = Some("gather of 2".into());
        main.state = "running".into();
        main.frames = vec![frame("/srv/app.py", 3, "main", "dump()")].into();
        snap.stacks.push(main);
        for (id, name) in [("task:0x20", "a"), ("task:0x30", "b")] {
            snap.stacks.push(task(
                id,
                name,
                Some(5),
                TaskDetails {
                    event_loop: "loop:0x1".into(),
                    awaited_by: vec!["task:0x10".into(), "task:0xdead".into()],
                },
            ));
            snap.stacks.last_mut().unwrap().facts.awaiting = Some("sleep (wakes in 29.9 s)".into());
        }
        snap.stacks.push(task(
            "task:0x40",
            "idle",
            None,
            TaskDetails {
                event_loop: "loop:0x2".into(),
                awaited_by: vec![],
            },
        ));
        let text = render_to_string(&snap, &TextOptions::default());
        let expected = "\
tbcollect: pid 7 at t, Python 3.12.1: 0 threads, 0 greenlets, 4 tasks

Diagnosis: no deadlock, no lock wait with a known holder.
States: tasks 3 pending, 1 running
Largest groups:
  - 2 tasks in child, awaiting sleep

Task tree of loop:0x1 (thread 5):
  \"main\" [task:0x10] (running, awaiting gather of 2, at app.py:3)
  ├─ \"a\" [task:0x20] (pending, awaiting sleep (wakes in 29.9 s), also awaited by task:0xdead, at app.py:9)
  └─ \"b\" [task:0x30] (pending, awaiting sleep (wakes in 29.9 s), also awaited by task:0xdead, at app.py:9)

Task tree of loop:0x2 (not running):
  \"idle\" [task:0x40] (pending, at app.py:9)

Task \"main\" (task:0x10, running, loop:0x1 in thread 5, awaiting gather of 2)
  File \"/srv/app.py\", line 3, in main
    dump()

3 tasks with this same stack: a, b, idle
  Task \"a\" (task:0x20, pending, loop:0x1 in thread 5, awaiting sleep (wakes in 29.9 s), awaited by Task \"main\", task:0xdead)
  Task \"b\" (task:0x30, pending, loop:0x1 in thread 5, awaiting sleep (wakes in 29.9 s), awaited by Task \"main\", task:0xdead)
  Task \"idle\" (task:0x40, pending, loop:0x2)
  File \"/srv/app.py\", line 9, in child
    await asyncio.sleep(30)
";
        assert_eq!(text, expected);
        // The indexed header used by `render` and the public one agree.
        assert_eq!(
            stack_header(&snap, &snap.stacks[1]),
            "Task \"a\" (task:0x20, pending, loop:0x1 in thread 5, awaiting sleep (wakes in 29.9 s), awaited by Task \"main\", task:0xdead)"
        );
    }

    #[test]
    fn nothing_from_the_target_reaches_the_output_raw() {
        let evil = "x\n  File \"/forged.py\", line 1\x1b[2J\x07\r\u{9b}";
        let mut snap = Snapshot::new(7, evil, evil);
        let mut a = thread(2, evil, vec![frame(evil, 1, evil, evil)]);
        a.frames = vec![Frame {
            locals: Some(Locals(vec![(evil.into(), evil.into())])),
            ..frame(evil, 1, evil, evil)
        }]
        .into();
        let mut b = a.clone();
        b.id = "thread:3".into();
        snap.stacks.push(a);
        snap.stacks.push(b);
        let mut t = task(
            evil,
            evil,
            None,
            TaskDetails {
                event_loop: evil.into(),
                awaited_by: vec![evil.into()],
            },
        );
        t.state = evil.into();
        t.facts.awaiting = Some(evil.into());
        t.facts.holds = vec![evil.into()];
        t.facts.waiting_for = vec![evil.into()];
        snap.stacks.push(t);
        snap.errors.push(evil.into());
        snap.probes.push(ProbeResult {
            name: evil.into(),
            result: serde_json::Value::Null,
            error: Some(evil.into()),
        });
        let text = render_to_string(&snap, &TextOptions::default());
        for bad in ['\x1b', '\x07', '\r', '\u{9b}'] {
            assert!(!text.contains(bad), "{bad:?} in {text}");
        }
        assert!(!text.contains("\n  File \"/forged.py\""), "{text}");
        assert!(text.contains("x\\n  File"), "{text}");
    }
}
