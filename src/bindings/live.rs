//! The extension's face of `live`: the dump directory checks, and
//! install/uninstall of dump-on-signal. `tbcollect/_live.py` calls these.

use crate::error::Error;
use crate::live::dumpdir::{current_uid, DumpDir};
use crate::live::signals::*;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checks (and with `create`, first creates mode 0700) a dump directory:
/// not a symlink, owned by `owner` (default: this process's user), not
/// writable by group or others. Raises DumpDirectoryError.
#[pyfunction]
#[pyo3(signature = (path, *, create = false, owner = None))]
fn check_dump_directory(
    py: Python<'_>,
    path: PathBuf,
    create: bool,
    owner: Option<u32>,
) -> Result<(), Error> {
    let owner = owner.unwrap_or_else(current_uid);
    py.detach(|| DumpDir::open(&path, create, owner).map(|_| ()))
}

/// Writes `text` as a new dump file `tbcollect-<pid>-<time>-<seq>.<extension>`
/// in the (checked) directory; returns its path.
#[pyfunction]
#[pyo3(signature = (text, *, directory, extension))]
fn write_new_dump(
    py: Python<'_>,
    text: &str,
    directory: PathBuf,
    extension: &str,
) -> Result<PathBuf, Error> {
    if !matches!(extension, "txt" | "json") {
        return Err(Error::InvalidOption {
            name: "extension",
            reason: format!("must be \"txt\" or \"json\", got {extension:?}"),
        });
    }
    let data = text.as_bytes();
    py.detach(|| DumpDir::open(&directory, false, current_uid())?.write_new(extension, data))
}

/// The dumper thread's end: waits for the next request without the GIL.
#[pyclass(name = "LiveHandle", module = "tbcollect", frozen)]
pub struct LiveHandle {
    shared: Arc<Shared>,
}

/// What the dumper may take now: a channel request first, then the signals'
/// dump once the rate limit allows it (or at once when uninstalling).
fn takeable(st: &State, now: Instant) -> Option<Option<Instant>> {
    if st.request.as_ref().is_some_and(|r| !r.taken) {
        return Some(None);
    }
    st.pending_since?;
    match st.signal_dump_allowed_at() {
        Some(at) if at > now && !st.shutdown => Some(Some(at)),
        _ => Some(None),
    }
}

#[pymethods]
impl LiveHandle {
    /// Blocks (without the GIL) until a dump is asked for. Returns
    /// `(signals, None, 0)` for a dump on the signal (how many signals asked
    /// for it), `(0, format, id)` for a request over the channel (to be
    /// answered with `answer` or `fail`; format "" means the installed one), or None once uninstalled (and no
    /// dump pending). A request counts as taken only when this returns, with
    /// the GIL in hand: until then the watcher may still answer it with a
    /// raw dump.
    fn wait(&self, py: Python<'_>) -> Option<(u64, Option<String>, u64)> {
        // The dumper comes here when it starts and after every dump: the
        // raw dump's name table then knows the threads started meanwhile.
        note_thread_names(py);
        loop {
            py.detach(|| {
                let mut st = self.shared.lock();
                loop {
                    match takeable(&st, Instant::now()) {
                        Some(None) => return,
                        Some(Some(at)) => {
                            let wait = at.saturating_duration_since(Instant::now());
                            st = self
                                .shared
                                .wake
                                .wait_timeout(st, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        None if st.shutdown => return,
                        None => {
                            st = self.shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                        }
                    }
                }
            });
            let taken = {
                let mut st = self.shared.lock();
                match takeable(&st, Instant::now()) {
                    Some(None) => {
                        if let Some(r) = st.request.as_mut().filter(|r| !r.taken) {
                            r.taken = true;
                            Some((0, Some(r.format.clone().unwrap_or_default()), r.id))
                        } else {
                            // A dump asked for before uninstall() is still made.
                            st.pending_since = None;
                            st.raw_since = None;
                            st.last_signal_dump = Some(Instant::now());
                            Some((std::mem::take(&mut st.signals).max(1), None, 0))
                        }
                    }
                    Some(Some(_)) => None,
                    None if st.shutdown => return None,
                    // The watcher answered the request with a raw dump meanwhile.
                    None => None,
                }
            };
            if let Some(taken) = taken {
                return Some(taken);
            }
        }
    }

    /// Hands the dump made for channel request `id`, in `format`, to the watcher.
    fn answer(&self, id: u64, format: String, data: Vec<u8>) {
        self.finish(id, Ok((format, data)));
    }

    /// Tells the asker of channel request `id` why there is no dump.
    fn fail(&self, id: u64, message: String) {
        self.finish(id, Err(message));
    }
}

impl LiveHandle {
    fn finish(&self, id: u64, result: Answer) {
        let mut st = self.shared.lock();
        if st.request.as_ref().is_some_and(|r| r.id == id) {
            st.request = None;
            st.answer = Some((id, result));
        }
        drop(st);
        self.shared.wake.notify_all();
    }
}

/// Installs the C-level handler for `signum` (after `signal.signal(signum,
/// handler)` and, with a raw timeout, faulthandler's registration under it)
/// and starts the watcher. Returns the dumper's handle.
#[pyfunction]
#[pyo3(signature = (signum, handler, *, directory, signal_name, raw_timeout = None, chain_python = true))]
fn live_install(
    py: Python<'_>,
    signum: i32,
    handler: Bound<'_, PyAny>,
    directory: PathBuf,
    signal_name: String,
    raw_timeout: Option<f64>,
    chain_python: bool,
) -> PyResult<LiveHandle> {
    // Not held across the calls below: signal.signal() runs pending Python
    // signal handlers, which may call back into tbcollect.
    if current().is_some() {
        return Err(PyRuntimeError::new_err("tbcollect: already installed"));
    }
    ensure_descriptors().map_err(|e| os_error("cannot create the wake-up pipe", e))?;
    drain_pipe(WAKE_READ.load(Ordering::Acquire));
    let signal = py.import("signal")?;
    let faulthandler = py.import("faulthandler")?;

    // faulthandler keeps one registration per signal: ours replaces any other.
    faulthandler.call_method1("unregister", (signum,))?;
    let original = current_action(signum).map_err(|e| os_error("sigaction", e))?;
    let original_py = signal.call_method1("getsignal", (signum,))?.unbind();
    signal.call_method1("signal", (signum, &handler))?;
    let python = current_action(signum).map_err(|e| os_error("sigaction", e))?;

    let rollback = |py: Python<'_>| {
        let _ = faulthandler.call_method1("unregister", (signum,));
        if !original_py.is_none(py) {
            let _ = signal.call_method1("signal", (signum, original_py.bind(py)));
        }
        let _ = set_action(signum, &original);
    };
    if raw_timeout.is_some() {
        let kwargs = PyDict::new(py);
        kwargs.set_item("file", RAW_FD.load(Ordering::Acquire))?;
        kwargs.set_item("all_threads", true)?;
        kwargs.set_item("chain", false)?;
        if let Err(e) = faulthandler.call_method("register", (signum,), Some(&kwargs)) {
            rollback(py);
            return Err(e);
        }
        match current_action(signum) {
            Ok(action) => FAULTHANDLER.set(&action),
            Err(e) => {
                rollback(py);
                return Err(os_error("sigaction", e));
            }
        }
    } else {
        FAULTHANDLER.clear();
    }
    // Without a Python-level handler to pass the signal on to, CPython's
    // handler would only make the main thread run a handler that does nothing.
    if chain_python {
        PYTHON.set(&python);
    } else {
        PYTHON.clear();
    }
    if is_default_or_ignore(original.sa_sigaction)
        || original.sa_sigaction == python.sa_sigaction
        || original.sa_sigaction == handler_address()
    {
        FOREIGN.clear();
    } else {
        FOREIGN.set(&original);
    }

    let config = Arc::new(Config {
        signum,
        signal_name,
        directory,
        raw_timeout: raw_timeout.map(Duration::from_secs_f64),
    });
    let shared = Arc::new(Shared::default());
    note_thread_names(py);
    let channel = open_channel();
    let watcher = match start_watcher(&config, &shared, &channel, true) {
        Ok(w) => w,
        Err(e) => {
            close_channel(&channel);
            rollback(py);
            return Err(e);
        }
    };
    INSTALLED_PID.store(pid(), Ordering::Release);
    if let Err(e) = install_ours(signum, &python) {
        INSTALLED_PID.store(0, Ordering::Release);
        shared.lock().shutdown = true;
        wake_watcher();
        let _ = watcher.join();
        close_channel(&channel);
        rollback(py);
        return Err(os_error("sigaction", e));
    }
    open_beacon(&config.signal_name, &config.directory);
    *current() = Some(Installation {
        config,
        shared: shared.clone(),
        watcher: Some(watcher),
        channel,
        original,
        original_py,
        handler: handler.unbind(),
        pid: pid(),
    });
    Ok(LiveHandle { shared })
}

/// Removes the handler, putting back what was there before (unless someone
/// replaced ours since: then theirs stays), and stops the watcher. Returns
/// False when nothing was installed.
#[pyfunction]
fn live_uninstall(py: Python<'_>) -> PyResult<bool> {
    let Some(mut inst) = current().take() else {
        return Ok(false);
    };
    let signum = inst.config.signum;
    INSTALLED_PID.store(0, Ordering::Release);
    let now = current_action(signum).map_err(|e| os_error("sigaction", e))?;
    let ours_on_top = now.sa_sigaction == handler_address();
    let signal = py.import("signal")?;
    if inst.config.raw_timeout.is_some() {
        py.import("faulthandler")?
            .call_method1("unregister", (signum,))?;
    }
    if ours_on_top {
        let still_ours = signal
            .call_method1("getsignal", (signum,))?
            .is(inst.handler.bind(py));
        if still_ours && !inst.original_py.is_none(py) {
            signal.call_method1("signal", (signum, inst.original_py.bind(py)))?;
        }
        set_action(signum, &inst.original).map_err(|e| os_error("sigaction", e))?;
    } else {
        // faulthandler.unregister() put back what it found under it; the
        // handler that replaced ours is the one to keep.
        set_action(signum, &now).map_err(|e| os_error("sigaction", e))?;
    }
    PYTHON.clear();
    FOREIGN.clear();
    FAULTHANDLER.clear();
    close_beacon();
    // No new connection is taken; one being served gets "gone".
    CHANNEL_BEACON.close();
    {
        // Signals already received but not yet seen by the watcher still get
        // their dump (the handler writes no more: INSTALLED_PID is 0).
        let signals = drain_pipe(WAKE_READ.load(Ordering::Acquire));
        let mut st = inst.shared.lock();
        if signals > 0 {
            st.signals += signals;
            st.pending_since.get_or_insert_with(Instant::now);
            // No raw dump now: the watcher is stopping.
        }
        st.shutdown = true;
    }
    inst.shared.wake.notify_all();
    wake_watcher();
    if inst.pid != pid() {
        // The parent's watcher: no such thread here, nothing to join.
        std::mem::forget(inst.watcher.take());
    }
    if let Some(watcher) = inst.watcher.take() {
        py.detach(|| {
            let _ = watcher.join();
        });
    }
    close_channel(&inst.channel);
    Ok(true)
}

/// In a forked child: the parent's watcher and dumper do not exist here. Give
/// the child its own pipe, channel and watcher, and return the handle for its
/// new dumper (None when there is nothing to serve: no channel, and the
/// signal handler replaced).
#[pyfunction]
fn live_after_fork_child(_py: Python<'_>) -> PyResult<Option<LiveHandle>> {
    let mut guard = current();
    let Some(inst) = guard.as_mut() else {
        return Ok(None);
    };
    // The parent's thread is gone; its handle must not be joined or dropped
    // through pthread calls about a thread this process never had.
    std::mem::forget(inst.watcher.take());
    inst.pid = pid();
    // The parent's channel is the parent's: holding its socket open here
    // would keep the name answering after the parent is gone.
    close_channel(&inst.channel);
    // The parent may have been in the middle of a raw dump.
    RAW_REQUEST.store(false, Ordering::Release);
    let _ = dup_onto(
        NULL_FD.load(Ordering::Acquire),
        RAW_FD.load(Ordering::Acquire),
    );
    let signal_ours = ours_installed(inst.config.signum);
    if !signal_ours {
        close_beacon();
    }
    inst.channel = open_channel();
    if inst.channel.is_none() && !signal_ours {
        *guard = None;
        return Ok(None);
    }
    ensure_descriptors().map_err(|e| os_error("cannot create the wake-up pipe", e))?;
    // The parent's state may have been locked by a thread that is gone.
    let shared = Arc::new(Shared::default());
    std::mem::forget(std::mem::replace(&mut inst.shared, shared.clone()));
    inst.watcher = Some(start_watcher(
        &inst.config,
        &shared,
        &inst.channel,
        signal_ours,
    )?);
    if signal_ours {
        INSTALLED_PID.store(pid(), Ordering::Release);
    }
    Ok(Some(LiveHandle { shared }))
}

/// Puts the SIGABRT handler in place: a raw dump (faulthandler's stacks of
/// the dump signal, without the GIL) into `directory` when the process is
/// aborted, then the handler it replaced. Needs an installation with a raw
/// timeout (faulthandler registered on its signal).
#[pyfunction]
#[pyo3(signature = (*, directory))]
fn abort_install(directory: PathBuf) -> PyResult<()> {
    let Some(signum) = current().as_ref().map(|inst| inst.config.signum) else {
        return Err(PyRuntimeError::new_err(
            "tbcollect: the abort handler needs install() first",
        ));
    };
    crate::live::abort::install(&directory, signum).map_err(|e| os_error("sigaction", e))
}

/// Puts back the SIGABRT handler `abort_install` replaced; False when it
/// was not installed.
#[pyfunction]
fn abort_uninstall() -> PyResult<bool> {
    crate::live::abort::uninstall().map_err(|e| os_error("sigaction", e))
}

/// Whether our SIGABRT handler is the one installed.
#[pyfunction]
fn abort_active() -> bool {
    crate::live::abort::active()
}

/// Sets the retention rule applied after every dump file this process
/// writes: keep the newest `keep` dumps of this process (0: all) and none
/// older than `max_age_days` (0: any age).
#[pyfunction]
#[pyo3(signature = (*, keep, max_age_days))]
fn set_retention(keep: u64, max_age_days: f64) -> Result<(), Error> {
    if !(max_age_days.is_finite() && (0.0..=36_500.0).contains(&max_age_days)) {
        return Err(Error::InvalidOption {
            name: "max_age_days",
            reason: format!("must be between 0 and 36500 days, got {max_age_days}"),
        });
    }
    let age = (max_age_days > 0.0).then(|| Duration::from_secs_f64(max_age_days * 86_400.0));
    crate::live::dumpdir::set_retention(keep, age);
    Ok(())
}

/// The retention rule in force: (dumps kept per process, maximum age in days; 0 for no limit).
#[pyfunction]
fn retention() -> (u64, f64) {
    let (keep, age) = crate::live::dumpdir::retention();
    (keep, age.map_or(0.0, |a| a.as_secs_f64() / 86_400.0))
}

/// Whether this process has a dump handler installed and still in place
/// (other code may have replaced it with `signal.signal`).
#[pyfunction]
fn live_active() -> bool {
    let Some(signum) = current().as_ref().map(|inst| inst.config.signum) else {
        return false;
    };
    INSTALLED_PID.load(Ordering::Acquire) == pid() && ours_installed(signum)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("BEACON_PREFIX", BEACON_PREFIX)?;
    m.add(
        "CHANNEL_BEACON_PREFIX",
        crate::live::channel::CHANNEL_BEACON_PREFIX,
    )?;
    m.add_class::<LiveHandle>()?;
    m.add_function(wrap_pyfunction!(live_active, m)?)?;
    m.add_function(wrap_pyfunction!(check_dump_directory, m)?)?;
    m.add_function(wrap_pyfunction!(write_new_dump, m)?)?;
    m.add_function(wrap_pyfunction!(live_install, m)?)?;
    m.add_function(wrap_pyfunction!(live_uninstall, m)?)?;
    m.add_function(wrap_pyfunction!(live_after_fork_child, m)?)?;
    m.add_function(wrap_pyfunction!(abort_install, m)?)?;
    m.add_function(wrap_pyfunction!(abort_uninstall, m)?)?;
    m.add_function(wrap_pyfunction!(abort_active, m)?)?;
    m.add_function(wrap_pyfunction!(set_retention, m)?)?;
    m.add_function(wrap_pyfunction!(retention, m)?)?;
    Ok(())
}
