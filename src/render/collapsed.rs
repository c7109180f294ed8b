//! Folded ("collapsed") stacks, the input format of flamegraph tools: one
//! line per distinct stack, `outer;inner;innermost count`. Every thread,
//! greenlet and task counts once, so 10,000 tasks waiting at the same line
//! are one line with the count 10000.

use crate::model::{Frame, Snapshot, Stack};
use crate::render::escape::escape;
use std::collections::BTreeMap;

/// The one frame a stack without Python frames (a task not started yet, a
/// thread in C code) is drawn as, so every stack keeps its share of the width.
pub const NO_FRAMES: &str = "<no Python frames>";

/// `function (file.py:line)`: the file's base name keeps bars readable; the
/// full path is in the text and JSON dumps.
pub fn frame_label(frame: &Frame) -> String {
    let base = frame
        .filename
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(&frame.filename);
    let label = match frame.lineno {
        Some(line) => format!("{} ({base}:{line})", frame.function),
        None => format!("{} ({base})", frame.function),
    };
    clean(&escape(&label))
}

// `;` separates frames and a line break ends a stack in the folded format;
// neither may appear inside a frame.
fn clean(label: &str) -> String {
    label
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// The frames of one stack as folded-format names, outermost first.
pub fn stack_labels(stack: &Stack) -> Vec<String> {
    let mut labels = Vec::with_capacity(stack.frames.len() + 1);
    if stack.frames_omitted > 0 {
        labels.push(format!("[{} frames omitted]", stack.frames_omitted));
    }
    labels.extend(stack.frames.iter().map(frame_label));
    if labels.is_empty() {
        labels.push(NO_FRAMES.to_string());
    }
    labels
}

/// Distinct stacks with how many threads, greenlets and tasks are in each,
/// sorted by stack (the order flamegraph tools expect).
pub fn folded(snapshot: &Snapshot) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for stack in &snapshot.stacks {
        *counts.entry(stack_labels(stack).join(";")).or_default() += 1;
    }
    counts.into_iter().collect()
}

pub fn render_to_string(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    for (stack, count) in folded(snapshot) {
        out.push_str(&stack);
        out.push(' ');
        out.push_str(&count.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{StackDetails, TaskDetails, ThreadDetails};

    fn task(i: usize, frames: Vec<Frame>) -> Stack {
        Stack {
            facts: Default::default(),
            id: format!("task:{i:#x}").into(),
            name: format!("Task-{i}").into(),
            thread: Some(1),
            state: "pending".into(),
            frames: frames.into(),
            frames_omitted: 0,
            details: StackDetails::Task(TaskDetails {
                event_loop: "loop:0x1".into(),
                ..TaskDetails::default()
            }),
        }
    }

    fn waiting() -> Vec<Frame> {
        vec![
            Frame::new("/srv/app.py", Some(40), "serve"),
            Frame::new("/srv/app.py", Some(12), "handle"),
        ]
    }

    #[test]
    fn identical_stacks_are_one_line_with_their_count() {
        let mut snap = Snapshot::new(1, "3.12.1", "t");
        for i in 0..10_000 {
            snap.stacks.push(task(i, waiting()));
        }
        snap.stacks.push(Stack {
            facts: Default::default(),
            id: "thread:7".into(),
            name: "MainThread".into(),
            thread: Some(7),
            state: "running".into(),
            frames: vec![Frame::new("/srv/main.py", None, "<module>")].into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails::default()),
        });
        assert_eq!(
            render_to_string(&snap),
            "<module> (main.py) 1\nserve (app.py:40);handle (app.py:12) 10000\n"
        );
    }

    #[test]
    fn empty_and_truncated_stacks_keep_their_share() {
        let mut snap = Snapshot::new(1, "3.12.1", "t");
        snap.stacks.push(task(1, vec![]));
        let mut deep = task(2, waiting());
        deep.frames_omitted = 5;
        snap.stacks.push(deep);
        assert_eq!(
            folded(&snap),
            vec![
                ("<no Python frames>".to_string(), 1),
                (
                    "[5 frames omitted];serve (app.py:40);handle (app.py:12)".to_string(),
                    1
                ),
            ]
        );
    }

    #[test]
    fn separators_inside_names_cannot_split_frames() {
        let frame = Frame::new("C:\\odd;dir\\x;y.py", Some(3), "f;g\nh");
        assert_eq!(frame_label(&frame), "f:g\\nh (x:y.py:3)");
    }
}
