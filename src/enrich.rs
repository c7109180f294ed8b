//! What is added to a snapshot after capture, without the GIL: source lines
//! (read from disk, one read per file) and what the OS says each thread is
//! doing. Pure Rust, so `cargo test` checks it.

use crate::fasthash::FastMap;
use crate::model::{Snapshot, Stack, StackDetails};

/// Fills `Frame::source` from the files on disk. Files that cannot be read
/// (frozen modules, `<string>`, deleted files, zip imports) leave it null.
pub fn fill_sources(snapshot: &mut Snapshot) {
    // Lines are stored trimmed; thousands of frames share a few files.
    let mut files: FastMap<String, Option<Vec<String>>> = FastMap::default();
    let frames = snapshot.stacks.iter_mut().flat_map(|s| {
        let spawn: &mut [crate::model::Frame] = match &mut s.details {
            StackDetails::Greenlet(d) => &mut d.spawn_frames,
            _ => &mut [],
        };
        s.frames.iter_mut().chain(spawn.iter_mut())
    });
    for frame in frames {
        let Some(lineno) = frame.lineno.filter(|&n| n > 0) else {
            continue;
        };
        let lines = match files.get(frame.filename.as_str()) {
            Some(lines) => lines,
            None => files
                .entry(frame.filename.clone())
                .or_insert_with(|| read_lines(&frame.filename)),
        };
        frame.source = lines
            .as_ref()
            .and_then(|l| l.get(lineno as usize - 1))
            .cloned();
    }
}

fn read_lines(filename: &str) -> Option<Vec<String>> {
    if filename.starts_with('<') {
        return None;
    }
    let bytes = std::fs::read(filename).ok()?;
    // Python source is UTF-8 unless a coding cookie says otherwise; such
    // files are rare, and a lossy line beats no line in a dump.
    let text = String::from_utf8_lossy(&bytes);
    Some(text.lines().map(|l| l.trim().to_string()).collect())
}

/// Replaces the placeholder state of each thread with what the OS says it is
/// doing (Linux `/proc/self/task/<tid>/stat`); the calling thread stays `running`.
pub fn fill_thread_states(stacks: &mut [Stack]) {
    for stack in stacks {
        let StackDetails::Thread(details) = &stack.details else {
            continue;
        };
        if details.current {
            continue;
        }
        if let Some(state) = details.native_id.and_then(os_thread_state) {
            stack.state = state.to_string();
        }
    }
}

/// The scheduler state of one of this process's threads, by native id.
pub fn os_thread_state(native_id: u64) -> Option<&'static str> {
    let stat = std::fs::read(format!("/proc/self/task/{native_id}/stat")).ok()?;
    // The state letter follows the command name, which is in parentheses and
    // may itself contain spaces or parentheses: take the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let letter = *stat.get(close + 2)?;
    Some(match letter {
        b'R' => "running",
        b'S' | b'I' => "sleeping",
        b'D' => "disk-wait",
        b'T' | b't' => "stopped",
        b'Z' | b'X' => "exited",
        _ => "unknown",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frame, ThreadDetails};

    #[test]
    fn own_thread_state_is_read_from_proc() {
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u64>().ok());
        if let Some(tid) = tid {
            assert_eq!(os_thread_state(tid), Some("running"));
        }
        assert_eq!(os_thread_state(u64::MAX), None);
    }

    #[test]
    fn sources_come_from_disk_once_per_file() {
        let dir = std::env::temp_dir().join(format!("tbcollect-enrich-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mod.py");
        std::fs::write(&file, "def f():\n    return 1   \n").unwrap();
        let name = file.to_str().unwrap();
        let mut snap = Snapshot::new(1, "3.11", "t");
        snap.stacks.push(Stack {
            id: "thread:1".into(),
            name: "t".into(),
            thread: Some(1),
            state: "unknown".into(),
            frames: vec![
                Frame::new(name, Some(2), "f"),
                Frame::new(name, Some(99), "f"),
                Frame::new("<frozen importlib._bootstrap>", Some(1), "g"),
                Frame::new(name, None, "f"),
            ],
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails::default()),
        });
        fill_sources(&mut snap);
        let sources: Vec<_> = snap.stacks[0]
            .frames
            .iter()
            .map(|f| f.source.clone())
            .collect();
        assert_eq!(
            sources,
            vec![Some("return 1".to_string()), None, None, None]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
