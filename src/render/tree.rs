//! The shape of a program at a glance: greenlets under their parents per
//! thread, tasks under the task that awaits them per event loop, like `pstree`.

use crate::model::{Snapshot, Stack, StackDetails, StackKind};
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

/// The tree edge of a stack: its parent greenlet, or the first task awaiting it.
pub fn parent_of(stack: &Stack) -> Option<&str> {
    match &stack.details {
        StackDetails::Greenlet(d) => d.parent.as_deref(),
        StackDetails::Task(d) => d.awaited_by.first().map(String::as_str),
        StackDetails::Thread(_) => None,
    }
}

/// What the stacks of a tree have in common: the thread of a greenlet, the loop of a task.
fn container_of(stack: &Stack) -> String {
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

fn label(stack: &Stack) -> String {
    let mut facts = vec![stack.state.clone()];
    match &stack.details {
        StackDetails::Greenlet(d) if d.hub => facts.push("hub".into()),
        StackDetails::Task(d) => {
            if let Some(awaiting) = &d.awaiting {
                facts.push(format!("awaiting {awaiting}"));
            }
        }
        _ => {}
    }
    if let Some(last) = stack.frames.last() {
        facts.push(format!(
            "at {}:{}",
            short_file(&last.filename),
            last.lineno.map_or("?".into(), |n| n.to_string())
        ));
    }
    format!("{:?} [{}] ({})", stack.name, stack.id, facts.join(", "))
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
    let mut containers: Vec<String> = Vec::new();
    let mut members: HashMap<String, Vec<&Stack>> = HashMap::new();
    for stack in stacks {
        let c = container_of(stack);
        if !members.contains_key(&c) {
            containers.push(c.clone());
        }
        members.entry(c).or_default().push(stack);
    }
    let title = match kind {
        StackKind::Greenlet => "Greenlet tree",
        StackKind::Task => "Task tree",
        StackKind::Thread => "Thread tree",
    };
    for container in containers {
        let group = &members[&container];
        writeln!(out)?;
        writeln!(out, "{title} of {container}:")?;
        let ids: HashSet<&str> = group.iter().map(|s| s.id.as_str()).collect();
        let mut children: HashMap<&str, Vec<&Stack>> = HashMap::new();
        let mut roots: Vec<&Stack> = Vec::new();
        for stack in group {
            match parent_of(stack).filter(|p| ids.contains(p) && *p != stack.id) {
                Some(p) => children.entry(p).or_default().push(stack),
                None => roots.push(stack),
            }
        }
        let mut seen: HashSet<&str> = HashSet::new();
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
    children: &HashMap<&str, Vec<&'a Stack>>,
    indent: &str,
    branch: &str,
    seen: &mut HashSet<&'a str>,
    out: &mut dyn Write,
) -> io::Result<()> {
    if !seen.insert(stack.id.as_str()) {
        return writeln!(out, "{indent}{branch}{} (again, see above)", stack.id);
    }
    writeln!(out, "{indent}{branch}{}", label(stack))?;
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
