//! The normalized stack model shared by every backend and every renderer.
//!
//! One [`Snapshot`] holds one [`Stack`] per thread, greenlet and asyncio task.
//! The kind-specific fields live in [`StackDetails`], whose variant *is* the
//! kind, so a thread can never carry task fields and every stack of a kind
//! carries all of that kind's fields. Nothing here knows about PyO3: the model
//! is plain data, checked by `cargo test` without an interpreter.

pub mod analysis;
pub mod fasthash;
pub mod history;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The `schema` value of every snapshot this version writes.
pub const SCHEMA: &str = "tbcollect/1";

/// Everything one `collect()` saw, frozen at capture time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`SCHEMA`]; lets readers refuse dumps they do not understand.
    pub schema: String,
    /// Process id of the process that was captured.
    pub pid: u32,
    /// `sys.version` of the captured interpreter, first line only.
    pub python: String,
    /// When the capture happened, UTC, ISO-8601 with microseconds.
    pub created: String,
    /// One entry per thread, greenlet and task, in capture order.
    pub stacks: Vec<Stack>,
    /// Problems met while collecting. Collection never raises for these.
    pub errors: Vec<String>,
    /// What the operator's probe scripts returned, when the dump ran any.
    /// Left out of the JSON when empty, so dumps without probes read as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeResult>,
    /// Each cycle of stacks waiting for one another (ids, in the order each
    /// waits for the next; the last waits for the first). Filled by
    /// [`analysis::analyze`]; absent from dumps older than it.
    #[serde(default)]
    pub deadlocks: Vec<Vec<String>>,
    /// What is wrong, in plain words and as data: counts, deadlocks, lock
    /// pile-ups, the largest groups. Filled by [`analysis::analyze`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<analysis::Diagnosis>,
}

/// One probe script's outcome: its JSON result, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// The probe's file name without `.py`.
    pub name: String,
    /// What `probe()` returned; null when it failed (or returned None).
    #[serde(default)]
    pub result: serde_json::Value,
    /// Why there is no result (the exception, or why the result is not JSON).
    #[serde(default)]
    pub error: Option<String>,
}

/// What a stack belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StackKind {
    Thread,
    Greenlet,
    Task,
}

impl StackKind {
    pub const ALL: [StackKind; 3] = [StackKind::Thread, StackKind::Greenlet, StackKind::Task];

    pub fn as_str(self) -> &'static str {
        match self {
            StackKind::Thread => "thread",
            StackKind::Greenlet => "greenlet",
            StackKind::Task => "task",
        }
    }

    /// The word for `n` stacks of this kind ("1 thread", "3 tasks").
    pub fn count_noun(self, n: usize) -> String {
        let word = self.as_str();
        if n == 1 {
            format!("1 {word}")
        } else {
            format!("{n} {word}s")
        }
    }
}

/// See [`Snapshot::coverage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    Complete,
    Incomplete,
    NotCaptured,
}

impl fmt::Display for StackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thread, greenlet or task and the frames it is in.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    /// Unique within the snapshot: `"thread:<ident>"`, `"greenlet:<addr>"`, `"task:<addr>"`.
    pub id: Text,
    /// The name a person knows it by (thread name, greenlet name, task name).
    pub name: Text,
    /// Ident of the OS thread this stack belongs to, if known.
    pub thread: Option<u64>,
    /// Kind-specific state word (`running`, `sleeping`, `suspended`, `pending`, ...).
    pub state: Text,
    /// Outermost first, i.e. most recent call last, like `traceback`.
    pub frames: Frames,
    /// How many outermost frames were dropped by the depth limit (0: none).
    pub frames_omitted: u64,
    /// The fields only this kind of stack has; the variant is the kind.
    pub details: StackDetails,
    /// What it waits on and holds, its labels, since when it is unchanged.
    pub facts: StackFacts,
}

/// What a stack waits on and holds, and what else is known of it beyond its
/// frames. Every kind has them; all are optional in the JSON.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackFacts {
    /// What it waits for, described for a person (`RLock.acquire (held by
    /// Thread "w")`, `sleep (wakes in 3.0 s)`). Shared: tasks listed one
    /// after another mostly wait alike.
    pub awaiting: Option<Text>,
    /// Ids of the stacks it waits for (a lock's holder, the task it awaits,
    /// the thread running its executor job, the greenlet it joins): the
    /// edges deadlocks are found on. Empty when it waits for nobody known.
    pub waiting_for: Vec<Text>,
    /// The locks it holds that others can be seen waiting for (`RLock
    /// registry_lock`).
    pub holds: Vec<Text>,
    /// UTC time of the earliest earlier dump of this process in which the
    /// stack was already exactly the same; `None` on a first sighting or
    /// without history (see [`history`]).
    pub unchanged_since: Option<Text>,
    /// The registered context variables set in its context, name -> value
    /// rendered like a local.
    pub labels: Vec<(Text, Text)>,
    /// True for tbcollect's own threads (dumper, watcher, watchdog): left out
    /// of counts, "stuck?" and the diagnosis.
    pub own: bool,
}

impl Stack {
    pub fn kind(&self) -> StackKind {
        self.details.kind()
    }
}

/// Kind-specific fields. Each variant lists every field its kind always has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StackDetails {
    Thread(ThreadDetails),
    Greenlet(GreenletDetails),
    Task(TaskDetails),
}

impl StackDetails {
    pub fn kind(&self) -> StackKind {
        match self {
            StackDetails::Thread(_) => StackKind::Thread,
            StackDetails::Greenlet(_) => StackKind::Greenlet,
            StackDetails::Task(_) => StackKind::Task,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadDetails {
    /// The OS thread id (`threading.get_native_id()`), when `threading` knows it.
    pub native_id: Option<u64>,
    /// `Thread.daemon`, or null for threads `threading` does not know.
    pub daemon: Option<bool>,
    /// True for the thread that called the collector.
    pub current: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GreenletDetails {
    /// Id of the parent greenlet's stack, if it has one.
    pub parent: Option<Text>,
    /// True for a gevent hub.
    #[serde(default)]
    pub hub: bool,
    /// Id of the greenlet that spawned this one, when gevent tracks the tree.
    #[serde(default)]
    pub spawned_by: Option<Text>,
    /// Where it was spawned, when gevent tracks spawn stacks (outermost first).
    #[serde(default)]
    pub spawn_frames: Frames,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskDetails {
    /// Id of the event loop the task belongs to (`"loop:<addr>"`).
    #[serde(rename = "loop")]
    pub event_loop: Text,
    /// Ids of the stacks waiting for this task.
    pub awaited_by: Vec<String>,
}

/// `prefix` followed by `addr` as `{:#x}` prints it (`task:0x7f...`),
/// without the formatting machinery: captures make one such id per task or
/// greenlet, ten thousand at a time.
pub fn address_id(prefix: &str, addr: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + 18);
    push_address(&mut id, prefix, addr);
    id
}

/// [`address_id`] as a [`Text`]: held inline, no allocation, for every
/// prefix the capture uses (`greenlet:0x7f9d47518680` is 23 bytes).
pub fn address_text(prefix: &str, addr: usize) -> Text {
    const INLINE: usize = 23;
    // Hex digits of `addr`, at least one.
    let digits = (usize::BITS - (addr | 1).leading_zeros()).div_ceil(4) as usize;
    let len = prefix.len() + 2 + digits;
    if len > INLINE {
        return address_id(prefix, addr).into();
    }
    // Byte by byte into a fixed buffer, the digits straight from the
    // number: ten thousand ids per capture, and `copy_from_slice` of these
    // short, varying lengths calls `memcpy`.
    let mut buf = [0u8; INLINE];
    for (slot, byte) in buf.iter_mut().zip(prefix.bytes()) {
        *slot = byte;
    }
    buf[prefix.len()] = b'0';
    buf[prefix.len() + 1] = b'x';
    let mut n = addr;
    for slot in buf[len - digits..len].iter_mut().rev() {
        *slot = HEX[n & 0xf];
        n >>= 4;
    }
    // SAFETY: a `&str` followed by ASCII bytes is UTF-8. Ten thousand ids per
    // capture made the check show in profiles.
    Text::new_inline(unsafe { std::str::from_utf8_unchecked(&buf[..len]) })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digits(addr: usize) -> ([u8; 16], usize) {
    let mut buf = [0u8; 16];
    let mut n = addr;
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    (buf, start)
}

fn push_address(out: &mut String, prefix: &str, addr: usize) {
    let (buf, start) = hex_digits(addr);
    out.push_str(prefix);
    out.push_str("0x");
    // Only ASCII hex digits were written.
    out.push_str(std::str::from_utf8(&buf[start..]).unwrap_or_default());
}

/// Immutable text. Up to 23 bytes (state words, ids, most names) it is held
/// inline: a clone is a copy, with no allocation and no reference count to
/// raise on a line shared by ten thousand stacks. Longer texts (file names,
/// source lines) share one allocation each instead of being copied (clone
/// and drop are then a reference count).
pub type Text = smol_str::SmolStr;

/// A list of frames, outermost first. Shared: ten thousand tasks suspended
/// at the same await hold one list between them, so building, grouping,
/// filling in source lines and dropping a snapshot cost per distinct list.
pub type Frames = std::sync::Arc<[Frame]>;

/// One frame of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// As the code object has it (absolute for imported modules).
    pub filename: Text,
    /// Null where the interpreter has no line for the current instruction.
    pub lineno: Option<u32>,
    /// Qualified name where the interpreter has one (`Worker.run`).
    pub function: Text,
    /// The stripped source line, or null when the file can't be read.
    pub source: Source,
    /// Local variables as rendered text, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locals: Option<Locals>,
}

impl Frame {
    pub fn new(filename: impl Into<Text>, lineno: Option<u32>, function: impl Into<Text>) -> Self {
        Frame {
            filename: filename.into(),
            lineno,
            function: function.into(),
            source: Source::default(),
            locals: None,
        }
    }

    /// Where the frame is, ignoring source text and locals: what makes two stacks "the same".
    pub fn location(&self) -> (&str, Option<u32>, &str) {
        (&self.filename, self.lineno, &self.function)
    }
}

/// A frame's source line, filled in once after capture, in place: every
/// stack sharing the frame list sees it, and none is rebuilt for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source(std::sync::OnceLock<Text>);

impl Source {
    pub fn new(line: Option<Text>) -> Self {
        let source = Source::default();
        if let Some(line) = line {
            source.fill(line);
        }
        source
    }

    pub fn get(&self) -> Option<&Text> {
        self.0.get()
    }

    /// Sets the line unless it is set already.
    pub fn fill(&self, line: Text) {
        let _ = self.0.set(line);
    }
}

impl std::hash::Hash for Source {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.get().hash(state);
    }
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Source {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<Text>::deserialize(deserializer).map(Source::new)
    }
}

/// Local variables in definition order; serialized as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Locals(pub Vec<(String, String)>);

impl Serialize for Locals {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Locals {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Locals;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of local names to rendered values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Locals, A::Error> {
                let mut items = Vec::new();
                while let Some(entry) = access.next_entry::<String, String>()? {
                    items.push(entry);
                }
                Ok(Locals(items))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

// Stack is serialized by hand so the JSON reads in a person's order (kind, id,
// name, ... frames last) while the kind-specific fields stay flat beside them.
impl Serialize for Stack {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Stack", 18)?;
        s.serialize_field("kind", &self.kind())?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("name", &self.name)?;
        s.serialize_field("thread", &self.thread)?;
        s.serialize_field("state", &self.state)?;
        let facts = &self.facts;
        s.serialize_field("awaiting", &facts.awaiting)?;
        if !facts.waiting_for.is_empty() {
            s.serialize_field("waiting_for", &facts.waiting_for)?;
        }
        if !facts.holds.is_empty() {
            s.serialize_field("holds", &facts.holds)?;
        }
        s.serialize_field("unchanged_since", &facts.unchanged_since)?;
        if !facts.labels.is_empty() {
            s.serialize_field("labels", &LabelsRef(&facts.labels))?;
        }
        if facts.own {
            s.serialize_field("own", &true)?;
        }
        match &self.details {
            StackDetails::Thread(d) => {
                s.serialize_field("native_id", &d.native_id)?;
                s.serialize_field("daemon", &d.daemon)?;
                s.serialize_field("current", &d.current)?;
            }
            StackDetails::Greenlet(d) => {
                s.serialize_field("parent", &d.parent)?;
                s.serialize_field("hub", &d.hub)?;
                s.serialize_field("spawned_by", &d.spawned_by)?;
                s.serialize_field("spawn_frames", &d.spawn_frames)?;
            }
            StackDetails::Task(d) => {
                s.serialize_field("loop", &d.event_loop)?;
                s.serialize_field("awaited_by", &d.awaited_by)?;
            }
        }
        s.serialize_field("frames_omitted", &self.frames_omitted)?;
        s.serialize_field("frames", &self.frames)?;
        s.end()
    }
}

impl<'de> Deserialize<'de> for Stack {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Repr {
            id: String,
            name: String,
            thread: Option<u64>,
            state: String,
            frames: Frames,
            #[serde(default)]
            frames_omitted: u64,
            #[serde(default)]
            awaiting: Option<Text>,
            #[serde(default)]
            waiting_for: Vec<Text>,
            #[serde(default)]
            holds: Vec<Text>,
            #[serde(default)]
            unchanged_since: Option<Text>,
            #[serde(default)]
            labels: std::collections::BTreeMap<String, String>,
            #[serde(default)]
            own: bool,
            #[serde(flatten)]
            details: StackDetails,
        }
        let r = Repr::deserialize(deserializer)?;
        Ok(Stack {
            id: r.id.into(),
            name: r.name.into(),
            thread: r.thread,
            state: r.state.into(),
            frames: r.frames,
            frames_omitted: r.frames_omitted,
            details: r.details,
            facts: StackFacts {
                awaiting: r.awaiting,
                waiting_for: r.waiting_for,
                holds: r.holds,
                unchanged_since: r.unchanged_since,
                labels: r
                    .labels
                    .into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
                own: r.own,
            },
        })
    }
}

/// Labels in their order, as a JSON object.
struct LabelsRef<'a>(&'a [(Text, Text)]);

impl Serialize for LabelsRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Snapshot {
    pub fn new(pid: u32, python: impl Into<String>, created: impl Into<String>) -> Self {
        Snapshot {
            schema: SCHEMA.to_string(),
            pid,
            python: python.into(),
            created: created.into(),
            stacks: Vec::new(),
            errors: Vec::new(),
            probes: Vec::new(),
            deadlocks: Vec::new(),
            diagnosis: None,
        }
    }

    /// How many stacks of each kind, in [`StackKind::ALL`] order;
    /// tbcollect's own threads are not counted (see [`Snapshot::own_count`]).
    pub fn counts(&self) -> [(StackKind, usize); 3] {
        StackKind::ALL.map(|kind| {
            (
                kind,
                self.stacks
                    .iter()
                    .filter(|s| s.kind() == kind && !s.facts.own)
                    .count(),
            )
        })
    }

    /// How many stacks are tbcollect's own (dumper, watcher, watchdog).
    pub fn own_count(&self) -> usize {
        self.stacks.iter().filter(|s| s.facts.own).count()
    }

    /// Whether every stack of `kind` could be captured, as the backends
    /// say in `errors`: an entry beginning `tasks not captured:` (a backend
    /// that cannot read this interpreter) or `tasks incomplete:` (one that
    /// left some out).
    pub fn coverage(&self, kind: StackKind) -> Coverage {
        let not_captured = format!("{}s not captured:", kind.as_str());
        let incomplete = format!("{}s incomplete:", kind.as_str());
        let mut out = Coverage::Complete;
        for error in &self.errors {
            if error.starts_with(&not_captured) {
                return Coverage::NotCaptured;
            }
            if error.starts_with(&incomplete) {
                out = Coverage::Incomplete;
            }
        }
        out
    }

    pub fn stack(&self, id: &str) -> Option<&Stack> {
        self.stacks.iter().find(|s| &*s.id == id)
    }
}

/// Formats a Unix time as UTC ISO-8601 with microseconds (`2026-11-22T00:18:31.123456Z`).
///
/// Written out here because the civil-date arithmetic is twenty lines and a
/// date crate would be the project's largest dependency for this one call.
pub fn iso8601_utc(unix_micros: i64) -> String {
    let secs = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_ids_print_like_lower_hex() {
        for addr in [
            0usize,
            1,
            0xf,
            0x10,
            0x7f12_3456_789a,
            usize::MAX,
            0xdead_beef,
        ] {
            assert_eq!(super::address_id("task:", addr), format!("task:{addr:#x}"));
            assert_eq!(
                &*super::address_text("greenlet:", addr),
                format!("greenlet:{addr:#x}")
            );
        }
    }

    use super::*;

    #[test]
    fn iso8601_known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            iso8601_utc(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            iso8601_utc(1_795_307_911_500_000),
            "2026-11-22T00:38:31.500000Z"
        );
        assert_eq!(iso8601_utc(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn coverage_follows_the_backends_errors() {
        let mut snap = Snapshot::new(1, "3.14", "t");
        assert_eq!(snap.coverage(StackKind::Task), Coverage::Complete);
        snap.errors.push("tasks incomplete: some left out".into());
        snap.errors.push("thread 9: vanished".into());
        assert_eq!(snap.coverage(StackKind::Task), Coverage::Incomplete);
        assert_eq!(snap.coverage(StackKind::Thread), Coverage::Complete);
        snap.errors.push("tasks not captured: CPython 3.99".into());
        assert_eq!(snap.coverage(StackKind::Task), Coverage::NotCaptured);
        assert_eq!(snap.coverage(StackKind::Greenlet), Coverage::Complete);
    }

    #[test]
    fn counts_by_kind() {
        let mut snap = Snapshot::new(1, "3.11", "t");
        for (i, details) in [
            StackDetails::Thread(ThreadDetails::default()),
            StackDetails::Task(TaskDetails::default()),
            StackDetails::Task(TaskDetails::default()),
        ]
        .into_iter()
        .enumerate()
        {
            snap.stacks.push(Stack {
                id: format!("x:{i}").into(),
                name: "".into(),
                thread: None,
                state: "".into(),
                frames: Frames::default(),
                frames_omitted: 0,
                details,
                facts: Default::default(),
            });
        }
        assert_eq!(
            snap.counts(),
            [
                (StackKind::Thread, 1),
                (StackKind::Greenlet, 0),
                (StackKind::Task, 2)
            ]
        );
        assert_eq!(StackKind::Task.count_noun(2), "2 tasks");
        assert_eq!(StackKind::Thread.count_noun(1), "1 thread");
    }
}
