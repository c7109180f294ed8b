//! Since when a stack has been exactly the same: a compact fingerprint of
//! each stack seen in earlier dumps of the process (its id and a hash of its
//! frame positions; no reference to anything in the interpreter), so a later
//! dump can say "unchanged for 4 min 12 s".

use super::fasthash::{FastHasher, FastMap};
use super::{Snapshot, Stack, Text};
use std::hash::{Hash, Hasher};

/// What earlier dumps saw: stack id -> (fingerprint, first dump it was so in).
#[derive(Debug, Default)]
pub struct History {
    seen: FastMap<Text, (u64, Text)>,
}

/// The positions of a stack's frames, hashed: two stacks with the same
/// fingerprint are in the same frames at the same lines.
pub fn fingerprint(stack: &Stack) -> u64 {
    let mut hasher = FastHasher::default();
    stack.frames_omitted.hash(&mut hasher);
    stack.frames.len().hash(&mut hasher);
    for frame in stack.frames.iter() {
        frame.location().hash(&mut hasher);
    }
    hasher.finish()
}

impl History {
    /// Fills each stack's `unchanged_since` from earlier dumps, then
    /// remembers this one. Stacks no longer present are forgotten, so the
    /// history never outgrows the latest dump.
    pub fn observe(&mut self, snapshot: &mut Snapshot) {
        let mut next: FastMap<Text, (u64, Text)> = FastMap::default();
        next.reserve(snapshot.stacks.len());
        // Stacks sharing one frame list share a fingerprint: hashed once.
        let mut last: Option<(usize, u64)> = None;
        for stack in &mut snapshot.stacks {
            let list = stack.frames.as_ptr() as usize;
            let fp = match last {
                Some((l, fp)) if l == list && !stack.frames.is_empty() => fp,
                _ => {
                    let fp = fingerprint(stack);
                    last = Some((list, fp));
                    fp
                }
            };
            let since = match self.seen.get(&stack.id) {
                Some((old, first)) if *old == fp => {
                    stack.facts.unchanged_since = Some(first.clone());
                    first.clone()
                }
                _ => {
                    stack.facts.unchanged_since = None;
                    Text::from(snapshot.created.as_str())
                }
            };
            next.insert(stack.id.clone(), (fp, since));
        }
        self.seen = next;
    }

    /// How many stacks it remembers.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn snap(created: &str, line: u32) -> Snapshot {
        let mut s = Snapshot::new(1, "3.11", created);
        for (id, l) in [("thread:1", 5), ("thread:2", line)] {
            s.stacks.push(Stack {
                id: id.into(),
                name: "t".into(),
                thread: None,
                state: "sleeping".into(),
                frames: vec![Frame::new("/srv/app.py", Some(l), "f")].into(),
                frames_omitted: 0,
                details: StackDetails::Thread(ThreadDetails::default()),
                facts: Default::default(),
            });
        }
        s
    }

    #[test]
    fn unchanged_since_the_first_dump_it_was_so_in() {
        let mut h = History::default();
        let mut a = snap("2026-01-01T00:00:00.000000Z", 10);
        h.observe(&mut a);
        assert!(a.stacks.iter().all(|s| s.facts.unchanged_since.is_none()));
        let mut b = snap("2026-01-01T00:01:00.000000Z", 11);
        h.observe(&mut b);
        assert_eq!(
            b.stacks[0].facts.unchanged_since.as_deref(),
            Some("2026-01-01T00:00:00.000000Z")
        );
        assert_eq!(b.stacks[1].facts.unchanged_since, None);
        let mut c = snap("2026-01-01T00:02:00.000000Z", 11);
        h.observe(&mut c);
        assert_eq!(
            c.stacks[1].facts.unchanged_since.as_deref(),
            Some("2026-01-01T00:01:00.000000Z")
        );
        // A stack that went away is forgotten.
        let mut d = snap("2026-01-01T00:03:00.000000Z", 11);
        d.stacks.truncate(1);
        h.observe(&mut d);
        assert_eq!(h.len(), 1);
    }
}
