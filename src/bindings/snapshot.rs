//! `collect()`, `Snapshot`, `Stack` and `Frame`: captures, then converts the
//! model into Python objects. All logic lives in the pure-Rust modules.

use super::options;
use crate::capture::{self, CaptureOptions, LocalsMode};
use crate::error::Error;
use crate::live::output;
use crate::model::{Frame, ProbeResult, Snapshot, Stack, StackDetails, SCHEMA};
use crate::render::{self, json::JsonOptions, text::TextOptions, Format, RenderOptions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;

/// Everything one `collect()` saw: every stack, and the problems met.
#[pyclass(name = "Snapshot", module = "tbcollect", frozen)]
pub struct PySnapshot {
    pub(crate) inner: Snapshot,
}

fn json_to_py<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::IntoPyObjectExt;
    use serde_json::Value;
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_bound_py_any(py)?,
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_bound_py_any(py)?,
            (None, Some(i)) => i.into_bound_py_any(py)?,
            _ => n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)?,
        },
        Value::String(s) => s.into_bound_py_any(py)?,
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

pub(crate) fn to_py_dict<'py, T: serde::Serialize>(
    py: Python<'py>,
    value: &T,
) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(value)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    json_to_py(py, &value)
}

fn render_options(group: bool, source: bool, indent: Option<usize>) -> RenderOptions {
    RenderOptions {
        text: TextOptions { group, source },
        json: JsonOptions { indent },
    }
}

#[pymethods]
impl PySnapshot {
    /// The dump as text: a header line, then one block per stack (or group of identical stacks).
    #[pyo3(signature = (*, group = true, source = true))]
    fn to_text(&self, py: Python<'_>, group: bool, source: bool) -> String {
        let options = render_options(group, source, None);
        py.detach(|| render::render(&self.inner, Format::Text, &options))
    }

    /// The dump as JSON (schema `tbcollect/1`); `indent=None` writes one line.
    #[pyo3(signature = (indent = None))]
    fn to_json(&self, py: Python<'_>, indent: Option<&Bound<'_, PyAny>>) -> Result<String, Error> {
        let options = render_options(true, true, options::indent(indent)?);
        Ok(py.detach(|| render::render(&self.inner, Format::Json, &options)))
    }

    /// The dump in the named format: `"text"`, `"json"`, `"collapsed"` (folded stacks) or `"svg"` (a flamegraph).
    #[pyo3(signature = (format = "text", *, group = true, source = true, indent = None))]
    fn render(
        &self,
        py: Python<'_>,
        format: &str,
        group: bool,
        source: bool,
        indent: Option<&Bound<'_, PyAny>>,
    ) -> Result<String, Error> {
        let format: Format = format.parse()?;
        let options = render_options(group, source, options::indent(indent)?);
        Ok(py.detach(|| render::render(&self.inner, format, &options)))
    }

    /// The dump as plain Python data (what `json.loads(to_json())` gives).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_dict(py, &self.inner)
    }

    /// Reads a snapshot back from its JSON (`to_json()` output or a saved dump).
    #[staticmethod]
    fn from_json(py: Python<'_>, text: &str) -> Result<PySnapshot, Error> {
        let inner = py
            .detach(|| render::json::parse(text))
            .map_err(|e| Error::InvalidDump(e.to_string()))?;
        if inner.schema != SCHEMA {
            return Err(Error::InvalidDump(format!(
                "schema is '{}', this version reads '{SCHEMA}'",
                inner.schema
            )));
        }
        Ok(PySnapshot { inner })
    }

    #[getter]
    fn schema(&self) -> &str {
        &self.inner.schema
    }
    #[getter]
    fn pid(&self) -> u32 {
        self.inner.pid
    }
    #[getter]
    fn python(&self) -> &str {
        &self.inner.python
    }
    #[getter]
    fn created(&self) -> &str {
        &self.inner.created
    }
    #[getter]
    fn errors(&self) -> Vec<String> {
        self.inner.errors.clone()
    }
    #[getter]
    fn stacks(&self) -> Vec<PyStack> {
        self.inner
            .stacks
            .iter()
            .cloned()
            .map(|inner| PyStack { inner })
            .collect()
    }

    /// What the probes returned: `[{"name", "result", "error"}, ...]`.
    #[getter]
    fn probes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_dict(py, &self.inner.probes)
    }

    /// A copy of this snapshot carrying these probe results (replacing any it
    /// had): an iterable of dicts with `name` and either a JSON-able `result`
    /// or an `error` text, as `tbcollect._probes.run_probes()` returns them.
    fn with_probes(&self, probes: &Bound<'_, PyAny>) -> Result<PySnapshot, Error> {
        let mut inner = self.inner.clone();
        inner.probes = probe_results(probes)?;
        Ok(PySnapshot { inner })
    }

    /// Each cycle of stacks waiting for one another: lists of stack ids,
    /// each waiting for the next and the last for the first.
    #[getter]
    fn deadlocks(&self) -> Vec<Vec<String>> {
        self.inner.deadlocks.clone()
    }

    /// What is wrong, as data: `findings` (deadlocks, lock waits, unchanged
    /// stacks, each with `kind`, `text`, `stacks`), `counts` by kind and
    /// state, the largest `groups`, and how many stacks are tbcollect's `own`.
    #[getter]
    fn diagnosis<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let diagnosis = render::summary::diagnosis_of(&self.inner);
        to_py_dict(py, &*diagnosis)
    }

    /// The header line of the text dump (pid, time, Python, counts).
    fn summary(&self) -> String {
        render::text::header_line(&self.inner)
    }

    fn __len__(&self) -> usize {
        self.inner.stacks.len()
    }

    fn __repr__(&self) -> String {
        let counts = self
            .inner
            .counts()
            .iter()
            .map(|(k, n)| k.count_noun(*n))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "<tbcollect.Snapshot pid={} {} ({counts})>",
            self.inner.pid, self.inner.created
        )
    }
}

fn probe_results(probes: &Bound<'_, PyAny>) -> Result<Vec<ProbeResult>, Error> {
    let invalid = |reason: String| Error::InvalidOption {
        name: "probes",
        reason,
    };
    let py = probes.py();
    // json.dumps is the judge of "JSON-able" so a probe result means the same
    // here as in the probe author's own tests; NaN and infinities are refused.
    let dumps = py
        .import("json")
        .and_then(|json| json.getattr("dumps"))
        .map_err(|e| invalid(e.to_string()))?;
    let kwargs = PyDict::new(py);
    kwargs
        .set_item("allow_nan", false)
        .map_err(|e| invalid(e.to_string()))?;
    let items = probes
        .try_iter()
        .map_err(|_| invalid("must be an iterable of dicts".into()))?;
    let mut out = Vec::new();
    for item in items {
        let item = item.map_err(|e| invalid(e.to_string()))?;
        let dict = item
            .cast::<PyDict>()
            .map_err(|_| invalid("each probe result must be a dict".into()))?;
        let field = |key: &str| dict.get_item(key).ok().flatten().filter(|v| !v.is_none());
        let name: String = field("name")
            .and_then(|v| v.extract().ok())
            .ok_or_else(|| invalid("each probe result needs a str 'name'".into()))?;
        let error: Option<String> = match field("error") {
            None => None,
            Some(v) => Some(
                v.extract()
                    .map_err(|_| invalid(format!("probe {name:?}: 'error' must be a str")))?,
            ),
        };
        let result = match field("result") {
            None => serde_json::Value::Null,
            Some(v) => {
                let text: String = dumps
                    .call((v,), Some(&kwargs))
                    .and_then(|t| t.extract())
                    .map_err(|e| invalid(format!("probe {name:?}: result is not JSON: {e}")))?;
                serde_json::from_str(&text)
                    .map_err(|e| invalid(format!("probe {name:?}: result is not JSON: {e}")))?
            }
        };
        out.push(ProbeResult {
            name,
            result,
            error,
        });
    }
    Ok(out)
}

/// One thread, greenlet or task and the frames it is in.
#[pyclass(name = "Stack", module = "tbcollect", frozen)]
#[derive(Clone)]
pub struct PyStack {
    pub(crate) inner: Stack,
}

#[pymethods]
impl PyStack {
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind().as_str()
    }
    #[getter]
    fn id(&self) -> &str {
        &self.inner.id
    }
    #[getter]
    fn name(&self) -> &str {
        &self.inner.name
    }
    #[getter]
    fn thread(&self) -> Option<u64> {
        self.inner.thread
    }
    #[getter]
    fn state(&self) -> &str {
        &self.inner.state
    }
    #[getter]
    fn frames(&self) -> Vec<PyFrame> {
        self.inner
            .frames
            .iter()
            .cloned()
            .map(|inner| PyFrame { inner })
            .collect()
    }
    #[getter]
    fn frames_omitted(&self) -> u64 {
        self.inner.frames_omitted
    }
    // Kind-specific fields read as None on stacks of other kinds, so code
    // iterating a mixed list needs no isinstance-style checks.
    #[getter]
    fn native_id(&self) -> Option<u64> {
        match &self.inner.details {
            StackDetails::Thread(d) => d.native_id,
            _ => None,
        }
    }
    #[getter]
    fn daemon(&self) -> Option<bool> {
        match &self.inner.details {
            StackDetails::Thread(d) => d.daemon,
            _ => None,
        }
    }
    #[getter]
    fn current(&self) -> Option<bool> {
        match &self.inner.details {
            StackDetails::Thread(d) => Some(d.current),
            _ => None,
        }
    }
    #[getter]
    fn parent(&self) -> Option<String> {
        match &self.inner.details {
            StackDetails::Greenlet(d) => d.parent.as_deref().map(str::to_string),
            _ => None,
        }
    }
    #[getter]
    fn hub(&self) -> Option<bool> {
        match &self.inner.details {
            StackDetails::Greenlet(d) => Some(d.hub),
            _ => None,
        }
    }
    #[getter]
    fn spawned_by(&self) -> Option<String> {
        match &self.inner.details {
            StackDetails::Greenlet(d) => d.spawned_by.as_deref().map(str::to_string),
            _ => None,
        }
    }
    #[getter]
    fn spawn_frames(&self) -> Option<Vec<PyFrame>> {
        match &self.inner.details {
            StackDetails::Greenlet(d) => Some(
                d.spawn_frames
                    .iter()
                    .cloned()
                    .map(|inner| PyFrame { inner })
                    .collect(),
            ),
            _ => None,
        }
    }
    #[getter(r#loop)]
    fn event_loop(&self) -> Option<String> {
        match &self.inner.details {
            StackDetails::Task(d) => Some(d.event_loop.to_string()),
            _ => None,
        }
    }
    #[getter]
    fn awaiting(&self) -> Option<String> {
        self.inner.facts.awaiting.as_deref().map(str::to_owned)
    }
    #[getter]
    fn awaited_by(&self) -> Option<Vec<String>> {
        match &self.inner.details {
            StackDetails::Task(d) => Some(d.awaited_by.clone()),
            _ => None,
        }
    }

    /// Ids of the stacks it waits for (a lock's holder, a task, a thread, a greenlet).
    #[getter]
    fn waiting_for(&self) -> Vec<String> {
        self.inner
            .facts
            .waiting_for
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
    /// The locks it holds that others can be seen waiting for.
    #[getter]
    fn holds(&self) -> Vec<String> {
        self.inner
            .facts
            .holds
            .iter()
            .map(|s| s.to_string())
            .collect()
    }
    /// UTC time of the earliest earlier dump in which it was already exactly
    /// the same (None on a first sighting, or without `keep_history()`).
    #[getter]
    fn unchanged_since(&self) -> Option<String> {
        self.inner
            .facts
            .unchanged_since
            .as_deref()
            .map(str::to_owned)
    }
    /// The registered labels set in its context, name -> rendered value.
    #[getter]
    fn labels(&self) -> Vec<(String, String)> {
        self.inner
            .facts
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
    /// True for tbcollect's own threads (dumper, watcher, watchdog).
    #[getter]
    fn own(&self) -> bool {
        self.inner.facts.own
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_dict(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        format!(
            "<tbcollect.Stack {} {:?} {} ({} frames)>",
            self.inner.id,
            self.inner.name,
            self.inner.state,
            self.inner.frames.len()
        )
    }
}

/// One frame: where a stack is, in `traceback` terms.
#[pyclass(name = "Frame", module = "tbcollect", frozen)]
#[derive(Clone)]
pub struct PyFrame {
    inner: Frame,
}

#[pymethods]
impl PyFrame {
    #[getter]
    fn filename(&self) -> &str {
        &self.inner.filename
    }
    #[getter]
    fn lineno(&self) -> Option<u32> {
        self.inner.lineno
    }
    #[getter]
    fn function(&self) -> &str {
        &self.inner.function
    }
    #[getter]
    fn source(&self) -> Option<&str> {
        self.inner.source.get().map(|s| s.as_str())
    }
    #[getter]
    fn locals(&self) -> Option<Vec<(String, String)>> {
        self.inner.locals.as_ref().map(|l| l.0.clone())
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_dict(py, &self.inner)
    }

    fn __repr__(&self) -> String {
        let line = self
            .inner
            .lineno
            .map_or("None".to_string(), |n| n.to_string());
        format!(
            "<tbcollect.Frame {}:{line} in {}>",
            render::escape::escape(&self.inner.filename),
            render::escape::escape(&self.inner.function)
        )
    }
}

/// From now on, every `collect()` in this process marks each stack
/// `unchanged_since` the earliest earlier dump in which it was already the
/// same (a fingerprint per stack, no reference to anything). `False` stops
/// and forgets. Returns whether history was kept before.
#[pyfunction]
#[pyo3(signature = (enabled = true))]
fn keep_history(enabled: bool) -> bool {
    let before = capture::keeping_history();
    capture::keep_history(enabled);
    before
}

/// Registers `contextvars.ContextVar`s as labels: from now on each stack
/// carries the ones set in its own context (`Stack.labels`, name -> value
/// rendered like a local, redacted by name). Registering one again changes
/// nothing. Returns the names registered, in order.
#[pyfunction]
#[pyo3(signature = (*variables))]
fn label(variables: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
    for var in &variables {
        capture::labels::register(var).map_err(|reason| Error::InvalidOption {
            name: "label",
            reason,
        })?;
    }
    Ok(capture::labels::registered_names())
}

/// Stops showing `variables` as labels; with none, every label. Returns the
/// names still registered.
#[pyfunction]
#[pyo3(signature = (*variables))]
fn unlabel(variables: Vec<Bound<'_, PyAny>>) -> Vec<String> {
    capture::labels::unregister(&variables);
    capture::labels::registered_names()
}

/// Captures every thread, greenlet and asyncio task. Never raises for what
/// it finds; problems are in the snapshot's `errors`.
#[pyfunction]
#[pyo3(signature = (*, threads = true, greenlets = true, tasks = true, source = true, max_depth = None, done_tasks = false, locals = None, redact = None))]
#[allow(clippy::too_many_arguments)]
fn collect(
    py: Python<'_>,
    threads: bool,
    greenlets: bool,
    tasks: bool,
    source: bool,
    max_depth: Option<&Bound<'_, PyAny>>,
    done_tasks: bool,
    locals: Option<&Bound<'_, PyAny>>,
    redact: Option<&Bound<'_, PyAny>>,
) -> Result<PySnapshot, Error> {
    let max_depth = match max_depth.filter(|v| !v.is_none()) {
        Some(value) => options::max_depth(value)?,
        None => options::DEFAULT_MAX_DEPTH,
    };
    let options = CaptureOptions {
        threads,
        greenlets,
        tasks,
        source,
        max_depth,
        done_tasks,
        locals: locals_mode(locals)?,
        redact: redact_names(py, redact)?,
    };
    Ok(PySnapshot {
        inner: capture::collect(py, options),
    })
}

/// `locals=False|True|"repr"` (None means False).
fn locals_mode(value: Option<&Bound<'_, PyAny>>) -> Result<LocalsMode, Error> {
    let Some(value) = value else {
        return Ok(LocalsMode::Off);
    };
    if let Ok(flag) = value.cast::<pyo3::types::PyBool>() {
        return Ok(if flag.is_true() {
            LocalsMode::Safe
        } else {
            LocalsMode::Off
        });
    }
    match value.extract::<String>().as_deref() {
        Ok("repr") => Ok(LocalsMode::Repr),
        _ => Err(Error::InvalidOption {
            name: "locals",
            reason: "must be False, True or \"repr\"".into(),
        }),
    }
}

/// This module, for the names to redact that the program configured: its
/// `REDACT` attribute, which `tbcollect.REDACT` reads and sets (a property
/// of the package). The module never imports the package that wraps it.
static OWN_MODULE: pyo3::sync::PyOnceLock<Py<PyModule>> = pyo3::sync::PyOnceLock::new();

/// The names to redact: `tbcollect.REDACT` (the defaults unless the program
/// changed it) plus this call's `redact=`.
fn redact_names(py: Python<'_>, extra: Option<&Bound<'_, PyAny>>) -> Result<Vec<String>, Error> {
    let configured = OWN_MODULE
        .get(py)
        .and_then(|m| m.bind(py).getattr("REDACT").ok());
    let mut names = match configured {
        Some(value) => name_list(&value, "tbcollect.REDACT")?,
        None => capture::locals::DEFAULT_REDACT
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    if let Some(extra) = extra.filter(|v| !v.is_none()) {
        names.extend(name_list(extra, "redact")?);
    }
    Ok(names)
}

fn name_list(value: &Bound<'_, PyAny>, what: &str) -> Result<Vec<String>, Error> {
    let invalid = || Error::InvalidOption {
        name: "redact",
        reason: format!("{what} must be a list of non-empty strings"),
    };
    if value.is_instance_of::<pyo3::types::PyString>() {
        return Err(invalid());
    }
    let mut names = Vec::new();
    for item in value.try_iter().map_err(|_| invalid())? {
        let name: String = item.and_then(|i| i.extract()).map_err(|_| invalid())?;
        if name.is_empty() {
            return Err(invalid());
        }
        names.push(name);
    }
    Ok(names)
}

/// `text` safe to print: control characters, terminal escapes, line breaks
/// and bidirectional overrides escaped (the text renderer's own rule).
#[pyfunction]
fn escape_text(text: &str) -> String {
    render::escape::escape(text).into_owned()
}

/// Checks a format name; raises UnknownFormatError for anything else.
#[pyfunction]
fn check_format(format: &str) -> Result<String, Error> {
    let parsed: Format = format.parse()?;
    Ok(parsed.extension().to_string())
}

/// Writes a finished dump to a path or to an open descriptor. A regular file
/// is replaced whole and keeps its mode; a new one gets 0644 less the umask,
/// or 0600 with `private=True` (a dump holding local variables); a device or
/// FIFO is written through. See docs/security.md.
#[pyfunction]
#[pyo3(signature = (text, *, path = None, fd = None, private = false))]
fn write_dump(
    py: Python<'_>,
    text: &str,
    path: Option<PathBuf>,
    fd: Option<&Bound<'_, PyAny>>,
    private: bool,
) -> Result<(), Error> {
    let fd = fd.map(options::fd).transpose()?;
    let data = text.as_bytes();
    let mode = if private {
        output::NEW_FILE_MODE_WITH_LOCALS
    } else {
        output::NEW_FILE_MODE
    };
    py.detach(|| match (path, fd) {
        (Some(path), None) => output::write_path(&path, data, mode),
        (None, Some(fd)) => output::write_fd(fd, data),
        _ => Err(Error::InvalidOption {
            name: "file",
            reason: "give exactly one of a path or a file descriptor".into(),
        }),
    })
}

/// How the greenlet heap scan lists the collector's objects (for tests).
#[pyfunction]
fn _heap_scan_source(py: Python<'_>) -> &'static str {
    capture::greenlets::heap_scan_source(py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    capture::threads::note_main_thread();
    // Before any program code can replace sys._current_frames.
    capture::remember_builtins(m.py());
    // Capture never imports (an import can run user code and release the
    // GIL); it finds `gc` in sys.modules to pause the collector on 3.9 and
    // to prove the layout of its lists (or list objects), so import it now,
    // at our own import time.
    m.py().import("gc")?;
    m.add("SCHEMA", SCHEMA)?;
    m.add("DEFAULT_REDACT", capture::locals::DEFAULT_REDACT.to_vec())?;
    m.add("REDACT", capture::locals::DEFAULT_REDACT.to_vec())?;
    let _ = OWN_MODULE.set(m.py(), m.clone().unbind());
    m.add("FORMATS", Format::NAMES.to_vec())?;
    m.add("UNKNOWN_THREAD_NAME", capture::threads::UNKNOWN_THREAD_NAME)?;
    m.add("MAIN_GREENLET_NAME", capture::greenlets::MAIN_GREENLET_NAME)?;
    m.add_class::<PySnapshot>()?;
    m.add_class::<PyStack>()?;
    m.add_class::<PyFrame>()?;
    m.add_function(wrap_pyfunction!(collect, m)?)?;
    m.add_function(wrap_pyfunction!(keep_history, m)?)?;
    m.add_function(wrap_pyfunction!(label, m)?)?;
    m.add_function(wrap_pyfunction!(unlabel, m)?)?;
    m.add_function(wrap_pyfunction!(check_format, m)?)?;
    m.add_function(wrap_pyfunction!(write_dump, m)?)?;
    m.add_function(wrap_pyfunction!(escape_text, m)?)?;
    m.add_function(wrap_pyfunction!(_heap_scan_source, m)?)?;
    Ok(())
}
