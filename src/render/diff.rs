//! Comparing two dumps of one process taken a few seconds apart: which
//! stacks did not move (the stuck ones), which moved, which appeared and
//! which disappeared — the first question of every hang investigation.

use crate::model::analysis::{parse_iso8601, seconds_between};
use crate::model::{Frame, Snapshot, Stack, StackKind};
use crate::render::escape::{escape, quoted};
use crate::render::text::stack_header;
use itertools::Itertools;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

/// The `schema` value of a diff's JSON.
pub const DIFF_SCHEMA: &str = "tbcollect-diff/1";

/// How many names a grouped line lists before "and N more".
const NAMES_SHOWN: usize = 8;

/// Which dump a diff was taken from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpInfo {
    pub pid: u32,
    pub python: String,
    pub created: String,
}

impl DumpInfo {
    fn of(snapshot: &Snapshot) -> Self {
        DumpInfo {
            pid: snapshot.pid,
            python: snapshot.python.clone(),
            created: snapshot.created.clone(),
        }
    }
}

/// The stacks of dump A and dump B, sorted into four kinds of change.
///
/// A stack is "the same" in both dumps when its id *and* name match: ids are
/// addresses and thread idents, which the process reuses once an object is
/// gone, and a reused id almost always comes with another name.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    pub a: DumpInfo,
    pub b: DumpInfo,
    /// Same frames in both dumps (as in B): possibly stuck.
    pub unchanged: Vec<Stack>,
    /// Present in both with different frames: (as in A, as in B).
    pub moved: Vec<(Stack, Stack)>,
    /// Only in B.
    pub appeared: Vec<Stack>,
    /// Only in A.
    pub disappeared: Vec<Stack>,
    /// tbcollect's own stacks (dumper, watcher, watchdog; `own` in either
    /// dump), as in B or else A: in no list above, no count and no
    /// "stuck?" (the dumper is new in every dump, and waits the same way).
    pub own: Vec<Stack>,
}

/// The innermost frames where two stacks differ, compared from the innermost
/// end: for a thread that moved from `step_one` to `step_two` and waits in
/// `Event.wait` both times, that is `step_one → step_two`, not the identical
/// `Condition.wait` lines. `None` where one stack has no frame at that depth.
pub fn changed_frames<'s>(a: &'s Stack, b: &'s Stack) -> (Option<&'s Frame>, Option<&'s Frame>) {
    let depth = a.frames.len().max(b.frames.len());
    for k in 1..=depth {
        let fa = a.frames.len().checked_sub(k).map(|i| &a.frames[i]);
        let fb = b.frames.len().checked_sub(k).map(|i| &b.frames[i]);
        if fa.map(Frame::location) != fb.map(Frame::location) {
            return (fa, fb);
        }
    }
    (a.frames.last(), b.frames.last())
}

fn same_place(a: &Stack, b: &Stack) -> bool {
    a.frames_omitted == b.frames_omitted
        && a.frames.len() == b.frames.len()
        && a.frames
            .iter()
            .zip(b.frames.iter())
            .all(|(x, y)| x.location() == y.location())
}

/// The earlier of two of our ISO-8601 UTC times.
fn earliest<'t>(a: Option<&'t str>, b: Option<&'t str>) -> Option<&'t str> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if parse_iso8601(x) <= parse_iso8601(y) {
            x
        } else {
            y
        }),
        (x, y) => x.or(y),
    }
}

pub fn diff(a: &Snapshot, b: &Snapshot) -> Diff {
    let by_id: HashMap<&str, &Stack> = b.stacks.iter().map(|s| (&*s.id, s)).collect();
    let mut matched: HashMap<&str, ()> = HashMap::new();
    let mut out = Diff {
        a: DumpInfo::of(a),
        b: DumpInfo::of(b),
        unchanged: Vec::new(),
        moved: Vec::new(),
        appeared: Vec::new(),
        disappeared: Vec::new(),
        own: Vec::new(),
    };
    for old in &a.stacks {
        match by_id.get(&*old.id) {
            Some(new) if new.kind() == old.kind() && new.name == old.name => {
                matched.insert(&*new.id, ());
                if old.facts.own || new.facts.own {
                    out.own.push((*new).clone());
                } else if same_place(old, new) {
                    // Unchanged since A at least, or since whatever earlier
                    // dump either file already knew it unchanged from.
                    let mut new = (*new).clone();
                    let since = earliest(
                        earliest(
                            new.facts.unchanged_since.as_deref(),
                            old.facts.unchanged_since.as_deref(),
                        ),
                        Some(&a.created),
                    )
                    .map(|t| t.into());
                    new.facts.unchanged_since = since;
                    out.unchanged.push(new);
                } else {
                    out.moved.push((old.clone(), (*new).clone()));
                }
            }
            _ if old.facts.own => out.own.push(old.clone()),
            _ => out.disappeared.push(old.clone()),
        }
    }
    for new in b.stacks.iter().filter(|s| !matched.contains_key(&*s.id)) {
        if new.facts.own {
            out.own.push(new.clone());
        } else {
            out.appeared.push(new.clone());
        }
    }
    out
}

impl Diff {
    /// Seconds from dump A to dump B (negative if B is older), when both times parse.
    pub fn seconds(&self) -> Option<f64> {
        seconds_between(&self.a.created, &self.b.created)
    }

    pub fn same_process(&self) -> bool {
        self.a.pid == self.b.pid
    }

    /// `3 unchanged, 1 moved, 2 appeared, 0 disappeared` (and `(and 2 of
    /// tbcollect's own)` when there are some).
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} unchanged, {} moved, {} appeared, {} disappeared",
            self.unchanged.len(),
            self.moved.len(),
            self.appeared.len(),
            self.disappeared.len()
        );
        if !self.own.is_empty() {
            let _ = write!(text, " (and {} of tbcollect's own)", self.own.len());
        }
        text
    }

    pub fn to_json(&self, indent: Option<usize>) -> String {
        let value = self.json_value();
        match indent {
            None => value.to_string(),
            Some(n) => {
                let indent = " ".repeat(n);
                let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
                let mut buf = Vec::new();
                let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
                value
                    .serialize(&mut ser)
                    .expect("a JSON value serializes infallibly");
                String::from_utf8(buf).expect("serde_json writes UTF-8")
            }
        }
    }

    pub fn json_value(&self) -> serde_json::Value {
        use serde_json::json;
        let entry = |s: &Stack| {
            json!({
                "kind": s.kind(), "id": s.id, "name": s.name, "state": s.state,
                "frame": s.frames.last(),
            })
        };
        json!({
            "schema": DIFF_SCHEMA,
            "a": self.a,
            "b": self.b,
            "seconds": self.seconds(),
            "same_process": self.same_process(),
            "counts": {
                "unchanged": self.unchanged.len(),
                "moved": self.moved.len(),
                "appeared": self.appeared.len(),
                "disappeared": self.disappeared.len(),
            },
            "unchanged": self.unchanged.iter().map(|s| {
                let mut e = entry(s);
                e["unchanged_since"] = json!(s.facts.unchanged_since);
                e
            }).collect::<Vec<_>>(),
            "moved": self.moved.iter().map(|(old, new)| {
                let (before, after) = changed_frames(old, new);
                json!({
                    "kind": new.kind(), "id": new.id, "name": new.name,
                    "state_before": old.state, "state_after": new.state,
                    "before": before, "after": after,
                })
            }).collect::<Vec<_>>(),
            "appeared": self.appeared.iter().map(entry).collect::<Vec<_>>(),
            "disappeared": self.disappeared.iter().map(entry).collect::<Vec<_>>(),
            "own": self.own.iter().map(|s| {
                let mut e = entry(s);
                e["own"] = json!(true);
                e
            }).collect::<Vec<_>>(),
        })
    }

    /// The diff for a person: a summary, then the four headings, stacks at
    /// the same place grouped on one line.
    pub fn to_text(&self, a: &Snapshot, b: &Snapshot) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "tbcollect diff: {}", self.summary());
        let _ = writeln!(out, "  A: {}", crate::render::text::header_line(a));
        let _ = writeln!(out, "  B: {}", crate::render::text::header_line(b));
        match self.seconds() {
            Some(s) if s >= 0.0 => {
                let _ = writeln!(out, "  B was taken {s:.3} s after A");
            }
            Some(s) => {
                let _ = writeln!(out, "  B was taken {:.3} s before A", -s);
            }
            None => {}
        }
        if !self.same_process() {
            let _ = writeln!(
                out,
                "  note: the dumps are of different processes (pid {} and {}): ids do not carry over",
                self.a.pid, self.b.pid
            );
        }
        section(
            &mut out,
            "Unchanged: same frames in both dumps (stuck?)",
            self.unchanged
                .iter()
                .map(|s| (s, where_is(s.frames.last()))),
            b,
        );
        section(
            &mut out,
            "Moved: innermost changed frame before → after",
            self.moved.iter().map(|(old, new)| {
                let (before, after) = changed_frames(old, new);
                (new, format!("{} → {}", where_is(before), where_is(after)))
            }),
            b,
        );
        section(
            &mut out,
            "Appeared: only in B",
            self.appeared.iter().map(|s| (s, where_is(s.frames.last()))),
            b,
        );
        section(
            &mut out,
            "Disappeared: only in A",
            self.disappeared
                .iter()
                .map(|s| (s, where_is(s.frames.last()))),
            a,
        );
        out
    }
}

/// `in Worker.run (/srv/app.py:12)`
fn where_is(frame: Option<&Frame>) -> String {
    match frame {
        None => "(no Python frames)".to_string(),
        Some(f) => match f.lineno {
            Some(n) => format!("in {} ({}:{n})", escape(&f.function), escape(&f.filename)),
            None => format!("in {} ({})", escape(&f.function), escape(&f.filename)),
        },
    }
}

fn section<'a>(
    out: &mut String,
    title: &str,
    entries: impl Iterator<Item = (&'a Stack, String)>,
    snapshot: &Snapshot,
) {
    // Group by kind and place, in order of first appearance.
    let mut groups: Vec<((StackKind, String), Vec<&Stack>)> = Vec::new();
    let mut index: HashMap<(StackKind, String), usize> = HashMap::new();
    let mut total = 0;
    for (stack, place) in entries {
        total += 1;
        let key = (stack.kind(), place);
        match index.get(&key) {
            Some(&i) => groups[i].1.push(stack),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![stack]));
            }
        }
    }
    let _ = writeln!(out, "\n{title} ({total}):");
    if groups.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for ((kind, place), stacks) in groups {
        if let [stack] = stacks.as_slice() {
            let _ = writeln!(out, "  {}", stack_header(snapshot, stack));
            let _ = writeln!(out, "    {place}");
        } else {
            let names = stacks
                .iter()
                .take(NAMES_SHOWN)
                .map(|s| quoted(&s.name))
                .join(", ");
            let more = stacks.len().saturating_sub(NAMES_SHOWN);
            let tail = if more > 0 {
                format!(", … and {more} more")
            } else {
                String::new()
            };
            // The longest a member has been unchanged (a single stack's
            // header says its own).
            let longest = stacks
                .iter()
                .filter_map(|s| {
                    seconds_between(s.facts.unchanged_since.as_deref()?, &snapshot.created)
                })
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let unchanged = longest.map_or(String::new(), |secs| {
                format!(
                    " (unchanged for {})",
                    crate::model::analysis::duration_words(secs)
                )
            });
            let _ = writeln!(
                out,
                "  {}{unchanged}: {names}{tail}",
                kind.count_noun(stacks.len())
            );
            let _ = writeln!(out, "    {place}");
        }
        let source = stacks[0]
            .frames
            .last()
            .and_then(|f| f.source.get().map(|s| s.as_str()));
        if let Some(source) = source.filter(|s| !s.is_empty()) {
            let _ = writeln!(out, "      {}", escape(source));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{iso8601_utc, StackDetails, TaskDetails, ThreadDetails};

    fn thread(ident: u64, name: &str, line: u32) -> Stack {
        Stack {
            facts: Default::default(),
            id: format!("thread:{ident}").into(),
            name: name.into(),
            thread: Some(ident),
            state: "sleeping".into(),
            frames: vec![
                Frame::new("/srv/app.py", Some(3), "main"),
                Frame {
                    source: crate::model::Source::new(Some(format!("step_{line}()").into())),
                    ..Frame::new("/srv/app.py", Some(line), "Worker.run")
                },
            ]
            .into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails::default()),
        }
    }

    fn task(addr: u64, name: &str, line: u32) -> Stack {
        Stack {
            facts: Default::default(),
            id: format!("task:{addr:#x}").into(),
            name: name.into(),
            thread: Some(1),
            state: "pending".into(),
            frames: vec![Frame::new("/srv/jobs.py", Some(line), "job")].into(),
            frames_omitted: 0,
            details: StackDetails::Task(TaskDetails::default()),
        }
    }

    fn pair() -> (Snapshot, Snapshot) {
        let mut a = Snapshot::new(42, "3.12.1", "2026-11-22T00:00:58.250000Z");
        let mut b = Snapshot::new(42, "3.12.1", "2026-11-22T00:01:03.500000Z");
        a.stacks.push(thread(1, "stuck", 10));
        b.stacks.push(thread(1, "stuck", 10));
        a.stacks.push(thread(2, "busy", 10));
        b.stacks.push(thread(2, "busy", 11));
        a.stacks.push(thread(3, "gone", 10));
        b.stacks.push(thread(4, "new", 12));
        for i in 0..20 {
            a.stacks.push(task(0x100 + i, &format!("Task-{i}"), 5));
            b.stacks.push(task(0x100 + i, &format!("Task-{i}"), 5));
        }
        // Same address, another task: the first one finished.
        a.stacks.push(task(0x900, "Task-old", 5));
        b.stacks.push(task(0x900, "Task-reused", 5));
        (a, b)
    }

    #[test]
    fn sorts_stacks_into_the_four_kinds_of_change() {
        let (a, b) = pair();
        let d = diff(&a, &b);
        let ids = |v: &[Stack]| v.iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
        assert_eq!(d.unchanged.len(), 21);
        assert_eq!(&*d.unchanged[0].id, "thread:1");
        assert_eq!(d.moved.len(), 1);
        assert_eq!(d.moved[0].0.frames[1].lineno, Some(10));
        assert_eq!(d.moved[0].1.frames[1].lineno, Some(11));
        assert_eq!(ids(&d.appeared), ["thread:4", "task:0x900"]);
        assert_eq!(ids(&d.disappeared), ["thread:3", "task:0x900"]);
        assert_eq!(&*d.disappeared[1].name, "Task-old");
        assert_eq!(d.seconds(), Some(5.25));
        assert_eq!(
            d.summary(),
            "21 unchanged, 1 moved, 2 appeared, 2 disappeared"
        );
    }

    #[test]
    fn text_groups_by_heading_and_place() {
        let (a, b) = pair();
        let text = diff(&a, &b).to_text(&a, &b);
        assert!(
            text.starts_with("tbcollect diff: 21 unchanged, 1 moved, 2 appeared, 2 disappeared\n")
        );
        assert!(text.contains("  B was taken 5.250 s after A\n"));
        assert!(text.contains(
            "\nUnchanged: same frames in both dumps (stuck?) (21):\n  Thread \"stuck\" (ident 1, sleeping, unchanged for 5.2 s)\n    in Worker.run (/srv/app.py:10)\n      step_10()\n"
        ), "{text}");
        assert!(text.contains(
            "  20 tasks (unchanged for 5.2 s): \"Task-0\", \"Task-1\", \"Task-2\", \"Task-3\", \"Task-4\", \"Task-5\", \"Task-6\", \"Task-7\", … and 12 more\n    in job (/srv/jobs.py:5)\n"
        ), "{text}");
        assert!(text.contains(
            "\nMoved: innermost changed frame before → after (1):\n  Thread \"busy\" (ident 2, sleeping)\n    in Worker.run (/srv/app.py:10) → in Worker.run (/srv/app.py:11)\n"
        ), "{text}");
        assert!(text.contains("\nAppeared: only in B (2):\n  Thread \"new\""));
        assert!(text.contains("\nDisappeared: only in A (2):\n  Thread \"gone\""));
        assert!(!text.contains("different processes"));
    }

    #[test]
    fn moved_shows_where_the_stacks_part() {
        let mut old = thread(5, "mover", 10);
        let mut new = thread(5, "mover", 20);
        for s in [&mut old, &mut new] {
            let mut frames = s.frames.to_vec();
            frames.push(Frame::new("/lib/threading.py", Some(320), "Condition.wait"));
            s.frames = frames.into();
        }
        let (a, b) = changed_frames(&old, &new);
        assert_eq!(a.unwrap().lineno, Some(10));
        assert_eq!(b.unwrap().lineno, Some(20));
        let mut frames = new.frames.to_vec();
        frames.insert(0, Frame::new("/srv/app.py", Some(1), "outer"));
        frames[2].lineno = Some(10);
        new.frames = frames.into();
        let (a, b) = changed_frames(&old, &new);
        assert_eq!(
            (a.map(|f| &*f.function), &*b.unwrap().function),
            (None, "outer")
        );
    }

    #[test]
    fn empty_headings_say_none_and_other_processes_are_flagged() {
        let a = Snapshot::new(1, "3.9.18", "2026-11-22T00:00:00.000000Z");
        let b = Snapshot::new(2, "3.9.18", "not a time");
        let d = diff(&a, &b);
        let text = d.to_text(&a, &b);
        assert_eq!(text.matches("  (none)\n").count(), 4);
        assert!(text.contains("different processes (pid 1 and 2)"));
        assert_eq!(d.seconds(), None);
        assert!(!text.contains("taken"));
    }

    #[test]
    fn json_has_counts_and_innermost_frames() {
        let (a, b) = pair();
        let value: serde_json::Value =
            serde_json::from_str(&diff(&a, &b).to_json(Some(2))).unwrap();
        assert_eq!(value["schema"], DIFF_SCHEMA);
        assert_eq!(value["counts"]["unchanged"], 21);
        assert_eq!(value["moved"][0]["before"]["lineno"], 10);
        assert_eq!(value["moved"][0]["after"]["lineno"], 11);
        assert_eq!(value["appeared"][0]["frame"]["lineno"], 12);
        assert_eq!(value["seconds"], 5.25);
        assert_eq!(value["same_process"], true);
        assert_eq!(value["b"]["created"], "2026-11-22T00:01:03.500000Z");
    }

    #[test]
    fn created_times_parse_back() {
        for micros in [0, 951_782_400_000_001, 1_795_307_911_500_000, -1] {
            assert_eq!(parse_iso8601(&iso8601_utc(micros)), Some(micros));
        }
        assert_eq!(parse_iso8601("2026-11-22 00:00:00"), None);
    }

    #[test]
    fn own_stacks_are_set_apart_and_unchanged_says_since_when() {
        let (mut a, mut b) = pair();
        // The dumper: the same in both (it waits the same way each time).
        for snap in [&mut a, &mut b] {
            let mut dumper = thread(77, "tbcollect-dumper", 40);
            dumper.facts.own = true;
            snap.stacks.push(dumper);
        }
        // A's own history knew thread 1 unchanged a minute before A.
        a.stacks[0].facts.unchanged_since = Some("2026-11-22T00:00:03.500000Z".into());
        let d = diff(&a, &b);
        assert_eq!(d.unchanged.len(), 21);
        assert_eq!(
            d.own.iter().map(|s| &*s.name).collect::<Vec<_>>(),
            ["tbcollect-dumper"]
        );
        assert_eq!(
            d.summary(),
            "21 unchanged, 1 moved, 2 appeared, 2 disappeared (and 1 of tbcollect's own)"
        );
        assert_eq!(
            d.unchanged[0].facts.unchanged_since.as_deref(),
            Some("2026-11-22T00:00:03.500000Z")
        );
        assert_eq!(
            d.unchanged[1].facts.unchanged_since.as_deref(),
            Some(&*a.created)
        );
        let text = d.to_text(&a, &b);
        assert!(!text.contains("tbcollect-dumper"), "{text}");
        assert!(
            text.contains("(ident 1, sleeping, unchanged for 1 min 0 s)"),
            "{text}"
        );
        let json = d.json_value();
        assert_eq!(json["own"][0]["own"], true);
        assert_eq!(json["unchanged"][1]["unchanged_since"], a.created.as_str());
        // Own in one dump only: still not "appeared" or "disappeared".
        b.stacks.retain(|s| !s.facts.own);
        let d = diff(&a, &b);
        assert_eq!(d.own.len(), 1);
        assert!(d.disappeared.iter().all(|s| !s.facts.own));
    }
}
