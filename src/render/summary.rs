//! The diagnosis at the top of a text dump: what is wrong in plain words
//! (deadlocks, pile-ups behind a lock's holder, stacks unchanged since
//! earlier dumps), then the states and the largest groups, so a person
//! knows where to look before reading a single stack.

use crate::model::analysis::{self, Diagnosis};
use crate::model::Snapshot;
use crate::render::escape::escape;
use std::borrow::Cow;
use std::io::{self, Write};

/// The snapshot's diagnosis, or one worked out now for a dump written
/// before diagnoses were (its stacks carry no wait edges, so it finds what
/// the stacks alone say).
pub fn diagnosis_of(snapshot: &Snapshot) -> Cow<'_, Diagnosis> {
    match &snapshot.diagnosis {
        Some(d) => Cow::Borrowed(d),
        None => {
            let cycles = analysis::deadlocks(snapshot);
            Cow::Owned(analysis::diagnose(snapshot, &cycles))
        }
    }
}

/// Writes the diagnosis section (its lines end in a blank line).
pub fn render(snapshot: &Snapshot, out: &mut dyn Write) -> io::Result<()> {
    let diagnosis = diagnosis_of(snapshot);
    writeln!(out)?;
    if diagnosis.findings.is_empty() {
        writeln!(
            out,
            "Diagnosis: no deadlock, no lock wait with a known holder."
        )?;
    } else {
        writeln!(out, "Diagnosis:")?;
        for finding in &diagnosis.findings {
            // Findings quote names, states and lock names the target chose.
            writeln!(out, "  - {}", escape(&finding.text))?;
        }
    }
    let states: Vec<String> = diagnosis
        .counts
        .iter()
        .map(|(kind, states)| {
            let mut by_count: Vec<(&String, &usize)> = states.iter().collect();
            by_count.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
            let list: Vec<String> = by_count
                .iter()
                .map(|(s, n)| format!("{n} {}", escape(s)))
                .collect();
            format!("{kind}s {}", list.join(", "))
        })
        .collect();
    if !states.is_empty() {
        writeln!(out, "States: {}", states.join("; "))?;
    }
    if !diagnosis.groups.is_empty() {
        writeln!(out, "Largest groups:")?;
        for group in &diagnosis.groups {
            let mut line = format!(
                "{} in {}",
                group.kind.count_noun(group.count),
                escape(&group.place)
            );
            if let Some(awaiting) = &group.awaiting {
                line.push_str(&format!(", awaiting {}", escape(awaiting)));
            }
            writeln!(out, "  - {line}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::*;
    use crate::render::text::{render_to_string, TextOptions};

    fn thread(id: &str, name: &str, line: u32) -> Stack {
        Stack {
            facts: Default::default(),
            id: id.into(),
            name: name.into(),
            thread: None,
            state: "sleeping".into(),
            frames: vec![Frame::new("/srv/app.py", Some(line), "work")].into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails::default()),
        }
    }

    #[test]
    fn the_deadlock_comes_first_and_its_stacks_lead() {
        let mut snap = Snapshot::new(1, "3.11.7", "2026-01-01T00:00:00.000000Z");
        snap.stacks.push(thread("thread:0", "idle", 1));
        let mut a = thread("thread:1", "a", 2);
        let mut b = thread("thread:2", "b", 3);
        a.facts.awaiting = Some("RLock.acquire (held by Thread \"b\")".into());
        a.facts.waiting_for = vec!["thread:2".into()];
        a.facts.holds = vec!["RLock first".into()];
        b.facts.awaiting = Some("RLock.acquire (held by Thread \"a\")".into());
        b.facts.waiting_for = vec!["thread:1".into()];
        b.facts.holds = vec!["RLock second".into()];
        snap.stacks.push(a);
        snap.stacks.push(b);
        analysis::analyze(&mut snap);
        let text = render_to_string(&snap, &TextOptions::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "Diagnosis:");
        assert_eq!(
            lines[3],
            "  - Deadlock: Thread \"a\" (RLock.acquire) waits for Thread \"b\" (RLock.acquire), which waits for Thread \"a\""
        );
        assert!(text.contains("States: threads 3 sleeping\n"), "{text}");
        // The deadlocked threads are listed before the idle one.
        let a_at = text.find("Thread \"a\" (").unwrap();
        let idle_at = text.find("Thread \"idle\" (").unwrap();
        assert!(a_at < idle_at, "{text}");
    }

    #[test]
    fn an_old_dump_gets_a_diagnosis_from_its_stacks() {
        let mut snap = Snapshot::new(1, "3.11.7", "2026-01-01T00:00:00.000000Z");
        snap.stacks.push(thread("thread:0", "one", 1));
        snap.stacks.push(thread("thread:1", "two", 1));
        let text = render_to_string(&snap, &TextOptions::default());
        assert!(
            text.contains("Diagnosis: no deadlock, no lock wait with a known holder.\n"),
            "{text}"
        );
        assert!(
            text.contains("Largest groups:\n  - 2 threads in work\n"),
            "{text}"
        );
    }
}
