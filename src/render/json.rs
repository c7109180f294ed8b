//! The machine-readable dump: the model as JSON, schema `tbcollect/1`.

use crate::model::Snapshot;
use serde::Serialize;

#[derive(Debug, Clone, Default)]
pub struct JsonOptions {
    /// Spaces per nesting level; `None` writes one compact line.
    pub indent: Option<usize>,
}

pub fn render_to_string(snapshot: &Snapshot, options: &JsonOptions) -> String {
    let bytes = match options.indent {
        None => serde_json::to_vec(snapshot),
        Some(n) => {
            let indent = " ".repeat(n);
            let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            let mut buf = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
            snapshot.serialize(&mut ser).map(|()| buf)
        }
    };
    // Infallible: string keys only, and probe results are serde_json values,
    // which cannot hold a non-finite float.
    let bytes = bytes.expect("the model serializes to JSON infallibly");
    String::from_utf8(bytes).expect("serde_json writes UTF-8")
}

pub fn parse(text: &str) -> Result<Snapshot, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use serde_json::{json, Value};

    fn snapshot() -> Snapshot {
        let mut snap = Snapshot::new(42, "3.11.7", "2026-11-22T00:00:00.000000Z");
        snap.stacks.push(Stack {
            facts: Default::default(),
            id: "thread:1".into(),
            name: "MainThread".into(),
            thread: Some(1),
            state: "running".into(),
            frames: vec![Frame {
                source: crate::model::Source::new(Some("main()".into())),
                ..Frame::new("/srv/main.py", Some(3), "<module>")
            }]
            .into(),
            frames_omitted: 0,
            details: StackDetails::Thread(ThreadDetails {
                native_id: Some(99),
                daemon: Some(false),
                current: true,
            }),
        });
        snap.stacks.push(Stack {
            facts: StackFacts {
                awaiting: Some("sleep (wakes in 3.0 s)".into()),
                ..Default::default()
            },
            id: "task:0x10".into(),
            name: "Task-1".into(),
            thread: None,
            state: "pending".into(),
            frames: vec![].into(),
            frames_omitted: 2,
            details: StackDetails::Task(TaskDetails {
                event_loop: "loop:0x20".into(),
                awaited_by: vec!["task:0x11".into()],
            }),
        });
        snap.stacks.push(Stack {
            facts: Default::default(),
            id: "greenlet:0x30".into(),
            name: "run".into(),
            thread: Some(1),
            state: "suspended".into(),
            frames: vec![].into(),
            frames_omitted: 0,
            details: StackDetails::Greenlet(GreenletDetails {
                parent: Some("greenlet:0x31".into()),
                ..GreenletDetails::default()
            }),
        });
        snap.errors.push("boom".into());
        snap
    }

    #[test]
    fn json_has_every_field_of_every_kind() {
        let value: Value =
            serde_json::from_str(&render_to_string(&snapshot(), &JsonOptions::default())).unwrap();
        assert_eq!(value["schema"], "tbcollect/1");
        assert_eq!(
            value["stacks"][0],
            json!({
                "kind": "thread", "id": "thread:1", "name": "MainThread", "thread": 1,
                "state": "running", "awaiting": null, "unchanged_since": null,
                "native_id": 99, "daemon": false, "current": true,
                "frames_omitted": 0,
                "frames": [{"filename": "/srv/main.py", "lineno": 3, "function": "<module>", "source": "main()"}]
            })
        );
        assert_eq!(value["stacks"][1]["loop"], "loop:0x20");
        assert_eq!(value["stacks"][1]["awaited_by"], json!(["task:0x11"]));
        assert_eq!(value["stacks"][1]["thread"], Value::Null);
        assert_eq!(value["stacks"][2]["parent"], "greenlet:0x31");
        assert_eq!(value["errors"], json!(["boom"]));
        assert_eq!(value["deadlocks"], json!([]));
    }

    #[test]
    fn diagnostic_fields_round_trip_and_are_optional() {
        let mut snap = snapshot();
        snap.stacks[0].facts = StackFacts {
            awaiting: Some("RLock.acquire (held by Thread \"w\")".into()),
            waiting_for: vec!["thread:2".into()],
            holds: vec!["RLock a".into()],
            unchanged_since: Some("2026-11-22T00:00:00.000000Z".into()),
            labels: vec![("request_id".into(), "'7f3a'".into())],
            own: true,
        };
        crate::model::analysis::analyze(&mut snap);
        let text = render_to_string(&snap, &JsonOptions::default());
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["stacks"][0]["labels"],
            json!({"request_id": "'7f3a'"})
        );
        assert_eq!(value["stacks"][0]["own"], true);
        assert_eq!(value["diagnosis"]["own"], 1);
        assert_eq!(parse(&text).unwrap(), snap);
        // A dump from before these fields loads with them empty.
        let mut old: Value =
            serde_json::from_str(&render_to_string(&snapshot(), &JsonOptions::default())).unwrap();
        for stack in old["stacks"].as_array_mut().unwrap() {
            let stack = stack.as_object_mut().unwrap();
            stack.remove("awaiting");
            stack.remove("unchanged_since");
        }
        old.as_object_mut().unwrap().remove("deadlocks");
        let back = parse(&old.to_string()).unwrap();
        assert!(back.deadlocks.is_empty() && back.diagnosis.is_none());
        assert_eq!(back.stacks[0].facts, StackFacts::default());
    }

    #[test]
    fn round_trips_through_parse() {
        let snap = snapshot();
        for indent in [None, Some(2)] {
            let text = render_to_string(&snap, &JsonOptions { indent });
            assert_eq!(parse(&text).unwrap(), snap);
        }
    }

    #[test]
    fn probes_are_left_out_when_empty_and_round_trip_when_present() {
        let value: Value =
            serde_json::from_str(&render_to_string(&snapshot(), &JsonOptions::default())).unwrap();
        assert!(value.get("probes").is_none());

        let mut snap = snapshot();
        snap.probes = vec![
            ProbeResult {
                name: "config".into(),
                result: json!({"debug": false, "workers": [1, 2.5, null]}),
                error: None,
            },
            ProbeResult {
                name: "broken".into(),
                result: Value::Null,
                error: Some("ValueError: no".into()),
            },
        ];
        let text = render_to_string(&snap, &JsonOptions::default());
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value["probes"],
            json!([
                {"name": "config", "result": {"debug": false, "workers": [1, 2.5, null]}, "error": null},
                {"name": "broken", "result": null, "error": "ValueError: no"}
            ])
        );
        assert_eq!(parse(&text).unwrap(), snap);
    }

    #[test]
    fn indent_is_honoured() {
        let text = render_to_string(&snapshot(), &JsonOptions { indent: Some(4) });
        assert!(text.starts_with("{\n    \"schema\": \"tbcollect/1\",\n"));
        assert!(!render_to_string(&snapshot(), &JsonOptions::default()).contains('\n'));
    }
}
