//! The shape of a program at a glance: greenlets under their parents per
//! thread, tasks under the task that awaits them per event loop, like `pstree`.

use crate::fasthash::{FastMap, FastSet};
use crate::model::{Snapshot, Stack, StackDetails, StackKind};
use std::io::{self, Write};

/// The tree edge of a stack: its parent greenlet, or the first task awaiting it.
pub fn parent_of(stack: &Stack) -> Option<&str> {
    match &stack.details {
        StackDetails::Greenlet(d) => d.parent.as_deref(),
        StackDetails::Task(d) => d.awaited_by.first().map(String::as_str),
        StackDetails::Thread(_) => None,
    }
}

/// What the stacks of a tree have in common: the loop of a task (and the
/// thread running it), the thread of a greenlet.
fn container_key(stack: &Stack) -> (&str, Option<u64>) {
    match &stack.details {
        StackDetails::Task(d) => (d.event_loop.as_str(), stack.thread),
        _ => ("", stack.thread),
    }
}

fn container_title(stack: &Stack) -> String {
    match &stack.details {
        StackDetails::Task(d) => match stack.thread {
            Some(t) => format!("{} (thread {t})", d.event_loop),
            None => format!("{} (not running)", d.event_loop),
        },
        _ => match stack.thread {
            Some(t) => format!("thread {t}"),
            None => "no thread".to_string(),
        },
    }
}

/// `"name" [id] (state, awaiting ..., at file.py:12)`, written in place: a
/// task tree can have ten thousand lines.
fn write_label(stack: &Stack, out: &mut dyn Write) -> io::Result<()> {
    write!(out, "{:?} [{}] ({}", stack.name, stack.id, stack.state)?;
    match &stack.details {
        StackDetails::Greenlet(d) if d.hub => write!(out, ", hub")?,
        StackDetails::Task(d) => {
            if let Some(awaiting) = &d.awaiting {
                write!(out, ", awaiting {awaiting}")?;
            }
            if d.awaited_by.len() > 1 {
                // The tree shows one awaiter; say that there are more.
                write!(out, ", also awaited by {}", d.awaited_by[1..].join(", "))?;
            }
        }
        _ => {}
    }
    if let Some(last) = stack.frames.last() {
        write!(out, ", at {}:", short_file(&last.filename))?;
        match last.lineno {
            Some(n) => write!(out, "{n}")?,
            None => write!(out, "?")?,
        }
    }
    writeln!(out, ")")
}

fn short_file(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Writes one tree per container for the stacks of `kind` (greenlets or tasks).
pub fn render(
    _snapshot: &Snapshot,
    kind: StackKind,
    stacks: &[&Stack],
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut containers: Vec<(&str, Option<u64>)> = Vec::new();
    let mut members: FastMap<(&str, Option<u64>), Vec<&Stack>> = FastMap::default();
    for stack in stacks {
        let key = container_key(stack);
        let entry = members.entry(key).or_default();
        if entry.is_empty() {
            containers.push(key);
        }
        entry.push(stack);
    }
    let title = match kind {
        StackKind::Greenlet => "Greenlet tree",
        StackKind::Task => "Task tree",
        StackKind::Thread => "Thread tree",
    };
    for container in containers {
        let group = &members[&container];
        writeln!(out)?;
        writeln!(out, "{title} of {}:", container_title(group[0]))?;
        let ids: FastSet<&str> = group.iter().map(|s| s.id.as_str()).collect();
        let mut children: FastMap<&str, Vec<&Stack>> = FastMap::default();
        let mut roots: Vec<&Stack> = Vec::new();
        for stack in group {
            match parent_of(stack).filter(|p| ids.contains(p) && *p != stack.id) {
                Some(p) => children.entry(p).or_default().push(stack),
                None => roots.push(stack),
            }
        }
        let mut seen: FastSet<&str> = FastSet::default();
        for root in &roots {
            write_node(root, &children, "  ", "", &mut seen, out)?;
        }
        // Stacks on a parent cycle have no root: show them rather than drop them.
        for stack in group {
            if !seen.contains(stack.id.as_str()) {
                write_node(stack, &children, "  ", "", &mut seen, out)?;
            }
        }
    }
    Ok(())
}

fn write_node<'a>(
    stack: &'a Stack,
    children: &FastMap<&str, Vec<&'a Stack>>,
    indent: &str,
    branch: &str,
    seen: &mut FastSet<&'a str>,
    out: &mut dyn Write,
) -> io::Result<()> {
    if !seen.insert(stack.id.as_str()) {
        return writeln!(out, "{indent}{branch}{} (again, see above)", stack.id);
    }
    write!(out, "{indent}{branch}")?;
    write_label(stack, out)?;
    let kids = children
        .get(stack.id.as_str())
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let child_indent = match branch {
        "" => indent.to_string(),
        "└─ " => format!("{indent}   "),
        _ => format!("{indent}│  "),
    };
    for (i, kid) in kids.iter().enumerate() {
        let kid_branch = if i + 1 == kids.len() {
            "└─ "
        } else {
            "├─ "
        };
        write_node(kid, children, &child_indent, kid_branch, seen, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frame, TaskDetails};

    fn task(id: &str, name: &str, awaited_by: &[&str]) -> Stack {
        Stack {
            id: id.into(),
            name: name.into(),
            thread: Some(7),
            state: "pending".into(),
            frames: vec![Frame::new("/srv/app.py", Some(3), "f")],
            frames_omitted: 0,
            details: StackDetails::Task(TaskDetails {
                event_loop: "loop:0x1".into(),
                awaiting: None,
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
}
