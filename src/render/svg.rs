//! A flamegraph of every stack as an SVG, drawn by inferno from the folded
//! stacks of [`collapsed`]. The width of a bar is the number of threads,
//! greenlets and tasks in it, not time: a dump is one moment.

use crate::model::Snapshot;
use crate::render::collapsed;
use crate::render::text::header_line;
use inferno::flamegraph::{self, color::Color, color::PaletteMap, Options};
use std::collections::HashMap;

pub fn render_to_string(snapshot: &Snapshot) -> String {
    let folded = collapsed::folded(snapshot);
    if folded.is_empty() {
        return empty_svg(&header_line(snapshot));
    }
    let lines: Vec<String> = folded
        .iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect();
    let mut palette = palette(snapshot);
    let mut options = Options::default();
    options.title = format!(
        "tbcollect: pid {} at {}, Python {}",
        snapshot.pid, snapshot.created, snapshot.python
    );
    options.subtitle = Some(
        snapshot
            .counts()
            .iter()
            .map(|(kind, n)| kind.count_noun(*n))
            .collect::<Vec<_>>()
            .join(", "),
    );
    options.count_name = "stacks".into();
    options.name_type = "Frame:".into();
    // Colours come from the palette map (by where the code lives); `hash`
    // keeps any frame the map misses stable from one render to the next.
    options.hash = true;
    options.palette_map = Some(&mut palette);
    let mut out = Vec::new();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)
        .expect("folded stacks of a non-empty snapshot always render");
    String::from_utf8(out).expect("inferno writes UTF-8")
}

/// Where a frame's code lives decides its colour family, as in the usual
/// Python flamegraphs: the application warm, the standard library yellow,
/// installed packages aqua, placeholders grey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    App,
    Stdlib,
    ThirdParty,
    Placeholder,
}

fn origin(filename: &str) -> Origin {
    let parts = || filename.split(['/', '\\']);
    if parts().any(|p| p == "site-packages" || p == "dist-packages") {
        Origin::ThirdParty
    } else if filename.starts_with("<frozen")
        || parts().any(|p| {
            p.strip_prefix("python")
                .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        })
    {
        Origin::Stdlib
    } else {
        Origin::App
    }
}

fn palette(snapshot: &Snapshot) -> PaletteMap {
    let mut origins: HashMap<String, Origin> = HashMap::new();
    for stack in &snapshot.stacks {
        for frame in stack.frames.iter() {
            origins
                .entry(collapsed::frame_label(frame))
                .or_insert_with(|| origin(&frame.filename));
        }
        for label in collapsed::stack_labels(stack) {
            origins.entry(label).or_insert(Origin::Placeholder);
        }
    }
    let mut map = PaletteMap::default();
    for (label, origin) in origins {
        map.insert(&label, color(origin, &label));
    }
    map
}

fn color(origin: Origin, label: &str) -> Color {
    // FNV-1a: stable across runs and machines, so the same frame keeps its shade.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in label.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let v = (hash >> 40) as f32 / (1u64 << 24) as f32;
    let w = ((hash >> 16) & 0xff_ffff) as f32 / (1u64 << 24) as f32;
    let (r, g, b) = match origin {
        Origin::App => (205.0 + 50.0 * v, 60.0 + 130.0 * w, 55.0 * v),
        Origin::Stdlib => (175.0 + 55.0 * v, 175.0 + 55.0 * v, 50.0 + 20.0 * w),
        Origin::ThirdParty => (50.0 + 60.0 * v, 165.0 + 55.0 * w, 165.0 + 55.0 * w),
        Origin::Placeholder => (190.0 + 20.0 * v, 190.0 + 20.0 * v, 190.0 + 20.0 * v),
    };
    Color {
        r: r as u8,
        g: g as u8,
        b: b as u8,
    }
}

/// inferno refuses an empty input; a dump with no stacks still gets a picture saying so.
fn empty_svg(header: &str) -> String {
    let escaped = header
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"60\" viewBox=\"0 0 1200 60\" \
         xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"600\" y=\"34\" text-anchor=\"middle\" font-family=\"Verdana\" font-size=\"14\">\
         {escaped} (no stacks)</text></svg>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frame, Stack, StackDetails, TaskDetails, ThreadDetails};
    use quick_xml::events::Event;
    use quick_xml::Reader;

    /// Parses the whole document (any well-formedness error fails the test)
    /// and returns every text node.
    fn texts(svg: &str) -> Vec<String> {
        let mut reader = Reader::from_str(svg);
        let mut depth = 0i32;
        let mut out = Vec::new();
        loop {
            match reader.read_event().expect("well-formed SVG") {
                Event::Start(_) => depth += 1,
                Event::End(_) => depth -= 1,
                Event::Text(t) => out.push(t.decode().unwrap().into_owned()),
                Event::GeneralRef(r) => out.push(format!("&{};", r.decode().unwrap())),
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0, "every element is closed");
        out
    }

    fn snapshot() -> Snapshot {
        let mut snap = Snapshot::new(42, "3.12.1", "2026-11-22T00:00:00.000000Z");
        snap.stacks.push(Stack {
            facts: Default::default(),
            id: "thread:1".into(),
            name: "MainThread".into(),
            thread: Some(1),
            state: "running".into(),
            frames: vec![
                Frame::new("/usr/lib/python3.12/threading.py", Some(1030), "Thread.run"),
                Frame::new("/srv/app.py", Some(7), "main<&>"),
            ]
            .into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails::default()),
        });
        for i in 0..500 {
            snap.stacks.push(Stack {
                facts: Default::default(),
                id: format!("task:{i:#x}").into(),
                name: format!("Task-{i}").into(),
                thread: Some(1),
                state: "pending".into(),
                frames: vec![
                    Frame::new("/srv/app.py", Some(20), "worker"),
                    Frame::new(
                        "/venv/lib/python3.12/site-packages/aiohttp/client.py",
                        Some(600),
                        "ClientSession._request",
                    ),
                ]
                .into(),
                frames_omitted: 0,
                details: StackDetails::Task(TaskDetails::default()),
            });
        }
        snap
    }

    #[test]
    fn svg_is_well_formed_and_names_every_frame() {
        let svg = render_to_string(&snapshot());
        let text = texts(&svg).concat();
        assert!(text.contains("tbcollect: pid 42"), "title");
        assert!(
            text.contains("1 thread, 0 greenlets, 500 tasks"),
            "subtitle"
        );
        for name in [
            "Thread.run (threading.py:1030)",
            "worker (app.py:20)",
            "ClientSession._request (client.py:600)",
        ] {
            assert!(svg.contains(&format!("<title>{name} (")), "{name} missing");
        }
        // Names are escaped, not injected as markup.
        assert!(svg.contains("main&lt;&amp;&gt; (app.py:7)"));
        assert!(svg.contains("500 stacks"), "counts are stacks, not samples");
    }

    #[test]
    fn colours_follow_where_the_code_lives() {
        assert_eq!(origin("/srv/app.py"), Origin::App);
        assert_eq!(origin("/usr/lib/python3.12/threading.py"), Origin::Stdlib);
        assert_eq!(origin("<frozen importlib._bootstrap>"), Origin::Stdlib);
        assert_eq!(
            origin("/venv/lib/python3.12/site-packages/aiohttp/client.py"),
            Origin::ThirdParty
        );
        assert_eq!(origin("/home/python/app.py"), Origin::App);
        let a = render_to_string(&snapshot());
        assert_eq!(a, render_to_string(&snapshot()), "same dump, same picture");
    }

    #[test]
    fn a_dump_without_stacks_is_still_a_picture() {
        let svg = render_to_string(&Snapshot::new(7, "3.9.18", "t<"));
        assert!(texts(&svg).concat().contains("pid 7 at t&lt;"));
    }
}
