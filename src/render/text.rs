//! The human-readable dump: one header line, then one block per stack (or per
//! group of identical stacks), frames in exactly Python's traceback form so
//! editors and log tools can jump to them.

use crate::model::{Frame, ProbeResult, Snapshot, Stack, StackDetails, StackKind};
use crate::render::tree;
use itertools::Itertools;
use std::collections::HashMap;
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
        for group in groups(&stacks, options.group) {
            writeln!(out)?;
            render_group(snapshot, &group, options, out)?;
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
            writeln!(out, "  - {error}")?;
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
        Some(error) => (format!("{} (error)", probe.name), error.clone()),
        None => (
            probe.name.clone(),
            serde_json::to_string_pretty(&probe.result).expect("a JSON value always serializes"),
        ),
    };
    if body.contains('\n') {
        writeln!(out, "  {label}:")?;
        for line in body.lines() {
            writeln!(out, "    {line}")?;
        }
    } else {
        writeln!(out, "  {label}: {body}")?;
    }
    Ok(())
}

/// `tbcollect: pid 42 at <time>, Python 3.11.7: 5 threads, 0 greenlets, 2 tasks`
pub fn header_line(snapshot: &Snapshot) -> String {
    let counts = snapshot
        .counts()
        .iter()
        .map(|(kind, n)| kind.count_noun(*n))
        .join(", ");
    format!(
        "tbcollect: pid {} at {}, Python {}: {counts}",
        snapshot.pid, snapshot.created, snapshot.python
    )
}

/// Stacks of one kind with identical frames, in order of first appearance.
fn groups<'a>(stacks: &[&'a Stack], enabled: bool) -> Vec<Vec<&'a Stack>> {
    if !enabled {
        return stacks.iter().map(|s| vec![*s]).collect();
    }
    type Key<'k> = (u64, Vec<(&'k str, Option<u32>, &'k str)>);
    let mut index: HashMap<Key<'a>, usize> = HashMap::new();
    let mut out: Vec<Vec<&'a Stack>> = Vec::new();
    for stack in stacks {
        // An empty stack (a task or greenlet not started) says nothing shared.
        if stack.frames.is_empty() {
            out.push(vec![*stack]);
            continue;
        }
        let key = (
            stack.frames_omitted,
            stack.frames.iter().map(Frame::location).collect(),
        );
        match index.get(&key) {
            Some(&i) => out[i].push(*stack),
            None => {
                index.insert(key, out.len());
                out.push(vec![*stack]);
            }
        }
    }
    out
}

fn render_group(
    snapshot: &Snapshot,
    group: &[&Stack],
    options: &TextOptions,
    out: &mut dyn Write,
) -> io::Result<()> {
    let first = group[0];
    if group.len() == 1 {
        writeln!(out, "{}", stack_header(snapshot, first))?;
    } else {
        let names = group
            .iter()
            .take(GROUP_NAMES_SHOWN)
            .map(|s| s.name.as_str())
            .join(", ");
        let more = group.len().saturating_sub(GROUP_NAMES_SHOWN);
        let tail = if more > 0 {
            format!(", … and {more} more")
        } else {
            String::new()
        };
        writeln!(
            out,
            "{} with this same stack: {names}{tail}",
            first.kind().count_noun(group.len())
        )?;
        for stack in group {
            writeln!(out, "  {}", stack_header(snapshot, stack))?;
        }
    }
    render_frames(first, options, out)
}

/// `Thread "worker-1" (ident 1401, native id 77, sleeping, daemon)`
pub fn stack_header(snapshot: &Snapshot, stack: &Stack) -> String {
    let mut facts: Vec<String> = Vec::new();
    let title = match &stack.details {
        StackDetails::Thread(d) => {
            if let Some(ident) = stack.thread {
                facts.push(format!("ident {ident}"));
            }
            if let Some(native) = d.native_id {
                facts.push(format!("native id {native}"));
            }
            facts.push(stack.state.clone());
            if d.daemon == Some(true) {
                facts.push("daemon".into());
            }
            if d.current {
                facts.push("current".into());
            }
            "Thread"
        }
        StackDetails::Greenlet(d) => {
            facts.push(stack.id.clone());
            facts.push(stack.state.clone());
            if let Some(ident) = stack.thread {
                facts.push(format!("thread {ident}"));
            }
            if d.hub {
                facts.push("hub".into());
            }
            if let Some(parent) = &d.parent {
                facts.push(format!("parent {}", describe_ref(snapshot, parent)));
            }
            if let Some(spawner) = &d.spawned_by {
                facts.push(format!("spawned by {}", describe_ref(snapshot, spawner)));
            }
            "Greenlet"
        }
        StackDetails::Task(d) => {
            facts.push(stack.id.clone());
            facts.push(stack.state.clone());
            match stack.thread {
                Some(ident) => facts.push(format!("{} in thread {ident}", d.event_loop)),
                None => facts.push(d.event_loop.clone()),
            }
            if let Some(awaiting) = &d.awaiting {
                facts.push(format!("awaiting {awaiting}"));
            }
            if !d.awaited_by.is_empty() {
                let by = d
                    .awaited_by
                    .iter()
                    .map(|id| describe_ref(snapshot, id))
                    .join(", ");
                facts.push(format!("awaited by {by}"));
            }
            "Task"
        }
    };
    format!("{title} {:?} ({})", stack.name, facts.join(", "))
}

/// A stack id as a person reads it: `Task "main"` when the snapshot has it.
pub fn describe_ref(snapshot: &Snapshot, id: &str) -> String {
    match snapshot.stack(id) {
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

fn render_frames(stack: &Stack, options: &TextOptions, out: &mut dyn Write) -> io::Result<()> {
    if stack.frames_omitted > 0 {
        writeln!(out, "  ... {} frames omitted", stack.frames_omitted)?;
    }
    if stack.frames.is_empty() && stack.frames_omitted == 0 {
        writeln!(out, "  (no Python frames)")?;
    }
    for frame in &stack.frames {
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
        frame.filename, frame.function
    )?;
    if options.source {
        if let Some(source) = frame.source.as_deref().filter(|s| !s.is_empty()) {
            writeln!(out, "{indent}  {source}")?;
        }
    }
    if let Some(locals) = &frame.locals {
        for (name, value) in &locals.0 {
            writeln!(out, "{indent}    {name} = {value}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Locals, ThreadDetails};

    fn thread(ident: u64, name: &str, frames: Vec<Frame>) -> Stack {
        Stack {
            id: format!("thread:{ident}"),
            name: name.into(),
            thread: Some(ident),
            state: "sleeping".into(),
            frames,
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
            source: Some(src.into()),
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
    fn groups_identical_stacks_and_keeps_traceback_form() {
        let text = render_to_string(&snapshot(), &TextOptions::default());
        let expected = "\
tbcollect: pid 42 at 2026-11-22T00:00:00.000000Z, Python 3.11.7: 3 threads, 0 greenlets, 0 tasks

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
        assert_eq!(text.matches("in Worker.run").count(), 2);
    }

    #[test]
    fn truncation_marker_missing_line_and_locals() {
        let mut snap = snapshot();
        let s = &mut snap.stacks[0];
        s.frames_omitted = 3000;
        s.frames[0].lineno = None;
        s.frames[0].source = None;
        s.frames[0].locals = Some(Locals(vec![("x".into(), "1".into())]));
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
}
