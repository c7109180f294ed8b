//! The offsets CPython publishes for debuggers, read from this process and
//! checked against each other before anything is read through them.
//!
//! - `_PyRuntime.debug_offsets` (3.13+): `_PyRuntimeState` begins with a
//!   `_Py_DebugOffsets`, a cookie (`xdebugpy`), the version, whether the
//!   build is free-threaded, then the sizes and field offsets of the
//!   runtime, interpreter and thread states, frames, code objects, ...
//! - `Py_AsyncioModuleDebugOffsets` (3.14+), in the `.AsyncioDebug` section
//!   of the object that holds `_asyncio`: the task object's fields
//!   (`task_node` links a task into its thread's list), and where the
//!   thread state and interpreter state keep the task lists, the running
//!   loop and the running task.
//!
//! The two come from different files of CPython and both give
//! `sizeof(PyInterpreterState)`: they must agree, and every field must lie
//! inside the struct it belongs to, or nothing is read through them.

/// Indices (in `u64` words) into `_Py_DebugOffsets` of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebugLayout {
    /// How many words the struct has.
    pub words: usize,
    /// `interpreter_state.size`: `sizeof(PyInterpreterState)`.
    pub interpreter_state_size: usize,
    /// `thread_state.size`: `sizeof(PyThreadState)` (the public part of
    /// `_PyThreadStateImpl`, which holds the asyncio fields after it).
    pub thread_state_size: usize,
    pub llist_next: usize,
    pub llist_prev: usize,
}

/// Indices (in pointers) into the `_asyncio` module's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModuleStateLayout {
    pub future_type: usize,
    pub task_type: usize,
    /// WeakSet of scheduled tasks that are not `_asyncio.Task`s.
    pub non_native_tasks: usize,
    /// Set of such tasks running eagerly.
    pub non_native_eager_tasks: usize,
}

/// The version's layouts, for the versions whose native tasks live in
/// per-thread lists (3.14+); `None` for the others.
pub fn layouts(version: (u8, u8)) -> Option<(&'static DebugLayout, &'static ModuleStateLayout)> {
    match version {
        (3, 14) => Some((&super::v3_14::DEBUG_LAYOUT, &super::v3_14::MODULE_STATE)),
        (3, 15) => Some((&super::v3_15::DEBUG_LAYOUT, &super::v3_15::MODULE_STATE)),
        _ => None,
    }
}

/// Words in `Py_AsyncioModuleDebugOffsets` (3.14, 3.15).
pub const ASYNCIO_WORDS: usize = 13;

/// Checked byte offsets for walking the asyncio task lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncioOffsets {
    /// `sizeof(TaskObj)`: `_asyncio.Task`'s `tp_basicsize`.
    pub task_size: usize,
    pub task_name: usize,
    pub task_awaited_by: usize,
    pub task_coro: usize,
    pub task_node: usize,
    /// `PyInterpreterState.asyncio_tasks_head`: tasks of threads that ended.
    pub interp_tasks_head: usize,
    pub thread_running_loop: usize,
    pub thread_running_task: usize,
    pub thread_tasks_head: usize,
    pub llist_next: usize,
    pub llist_prev: usize,
}

const COOKIE: &[u8; 8] = b"xdebugpy";

/// Checks the published structs (as words) of a `version` interpreter
/// against each other and returns the offsets to walk the task lists with.
pub fn asyncio_offsets(
    version: (u8, u8),
    layout: &DebugLayout,
    debug: &[u64],
    asyncio: &[u64],
) -> Result<AsyncioOffsets, String> {
    if debug.len() < layout.words || asyncio.len() < ASYNCIO_WORDS {
        return Err("the published offsets are shorter than this version's".into());
    }
    if debug[0].to_le_bytes() != *COOKIE {
        return Err("_PyRuntime does not begin with the debug offsets' cookie".into());
    }
    let published = (
        ((debug[1] >> 24) & 0xff) as u8,
        ((debug[1] >> 16) & 0xff) as u8,
    );
    if published != version {
        return Err(format!(
            "_PyRuntime's debug offsets are for {}.{}, the interpreter is {}.{}",
            published.0, published.1, version.0, version.1
        ));
    }
    if debug[2] != 0 {
        return Err("the debug offsets describe a free-threaded build".into());
    }
    let word =
        |w: u64| usize::try_from(w).map_err(|_| "an offset does not fit a pointer".to_string());
    let interp_size = word(debug[layout.interpreter_state_size])?;
    let public_thread_size = word(debug[layout.thread_state_size])?;
    let (next, prev) = (
        word(debug[layout.llist_next])?,
        word(debug[layout.llist_prev])?,
    );
    let a: Vec<usize> = asyncio[..ASYNCIO_WORDS]
        .iter()
        .map(|&w| word(w))
        .collect::<Result<_, _>>()?;
    let [task_size, task_name, task_awaited_by, task_is_task, task_awaited_by_is_set, task_coro, task_node, a_interp_size, interp_tasks_head, thread_size, running_loop, running_task, thread_tasks_head] =
        a[..]
    else {
        unreachable!("ASYNCIO_WORDS words")
    };
    let ptr = std::mem::size_of::<usize>();
    let node = 2 * ptr;
    if a_interp_size != interp_size {
        return Err(format!(
            "_asyncio and _PyRuntime disagree on the interpreter state's size ({a_interp_size} and {interp_size})"
        ));
    }
    if !(next < node && prev < node && next != prev && next % ptr == 0 && prev % ptr == 0) {
        return Err("the linked-list node offsets are not two pointers of one node".into());
    }
    // The object header comes first; every field lies inside the task.
    let header = 2 * ptr;
    let task_fields = [task_name, task_awaited_by, task_coro];
    let task_ok = (64..=4096).contains(&task_size)
        && task_fields
            .iter()
            .all(|&f| f >= header && f % ptr == 0 && f + ptr <= task_size)
        && [task_is_task, task_awaited_by_is_set]
            .iter()
            .all(|&f| f >= header && f < task_size)
        && task_node >= header
        && task_node % ptr == 0
        && task_node + node <= task_size;
    if !task_ok {
        return Err(format!(
            "the task offsets do not fit a {task_size}-byte task"
        ));
    }
    // The asyncio fields are in `_PyThreadStateImpl`, after `PyThreadState`.
    let thread_ok = thread_size <= 1 << 20
        && public_thread_size < thread_size
        && [running_loop, running_task]
            .iter()
            .all(|&f| f >= public_thread_size && f % ptr == 0 && f + ptr <= thread_size)
        && thread_tasks_head >= public_thread_size
        && thread_tasks_head % ptr == 0
        && thread_tasks_head + node <= thread_size;
    if !thread_ok {
        return Err("the thread state's asyncio offsets lie outside it".into());
    }
    if interp_size > 1 << 24
        || interp_tasks_head % ptr != 0
        || interp_tasks_head + node > interp_size
    {
        return Err("the interpreter state's task list lies outside it".into());
    }
    Ok(AsyncioOffsets {
        task_size,
        task_name,
        task_awaited_by,
        task_coro,
        task_node,
        interp_tasks_head,
        thread_running_loop: running_loop,
        thread_running_task: running_task,
        thread_tasks_head,
        llist_next: next,
        llist_prev: prev,
    })
}

/// Reads both published structs of this process, as words.
#[cfg(target_os = "linux")]
pub fn read_published(layout: &DebugLayout) -> Result<(Vec<u64>, Vec<u64>), String> {
    use crate::capture::elf;
    let interpreter = |p: &str| p == "/proc/self/exe" || p.contains("libpython");
    let runtime = match elf::exported_symbol("_PyRuntime") {
        Some(address) => address,
        None => {
            elf::loaded_section(".PyRuntime", interpreter)
                .filter(|s| s.size >= layout.words * 8)
                .ok_or("_PyRuntime is neither exported nor in a .PyRuntime section")?
                .address
        }
    };
    let asyncio = elf::loaded_section(".AsyncioDebug", |p| {
        interpreter(p) || p.contains("_asyncio")
    })
    .ok_or("no loaded object has an .AsyncioDebug section")?;
    if asyncio.size < ASYNCIO_WORDS * 8 {
        return Err(".AsyncioDebug is smaller than the offsets it should hold".into());
    }
    // SAFETY: both addresses are of loaded data of this process: the
    // exported `_PyRuntime` (at least `_Py_DebugOffsets` long, which
    // begins it) and a section inside one of the object's loaded
    // segments, checked to hold `ASYNCIO_WORDS` words. Unaligned reads.
    unsafe {
        let words = |at: usize, n: usize| -> Vec<u64> {
            (0..n)
                .map(|i| std::ptr::read_unaligned((at as *const u64).add(i)))
                .collect()
        };
        Ok((
            words(runtime, layout.words),
            words(asyncio.address, ASYNCIO_WORDS),
        ))
    }
}

#[cfg(not(target_os = "linux"))]
pub fn read_published(_layout: &DebugLayout) -> Result<(Vec<u64>, Vec<u64>), String> {
    Err("reading the published offsets is only implemented on Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3.14.10's published values on x86_64 (Debian's build).
    fn published_3_14() -> (Vec<u64>, Vec<u64>) {
        let layout = &crate::capture::cpython::v3_14::DEBUG_LAYOUT;
        let mut debug = vec![0u64; layout.words];
        debug[0] = u64::from_le_bytes(*COOKIE);
        debug[1] = 0x030e_0af0;
        debug[layout.interpreter_state_size] = 225_864;
        debug[layout.thread_state_size] = 832;
        debug[layout.llist_next] = 0;
        debug[layout.llist_prev] = 8;
        let asyncio = vec![
            168, 136, 96, 108, 109, 128, 152, 225_864, 10_880, 936, 864, 872, 880,
        ];
        (debug, asyncio)
    }

    #[test]
    fn agreeing_offsets_are_accepted() {
        let (debug, asyncio) = published_3_14();
        let layout = &crate::capture::cpython::v3_14::DEBUG_LAYOUT;
        let off = asyncio_offsets((3, 14), layout, &debug, &asyncio).unwrap();
        assert_eq!(off.task_node, 152);
        assert_eq!(off.thread_tasks_head, 880);
        assert_eq!((off.llist_next, off.llist_prev), (0, 8));
    }

    #[test]
    fn every_inconsistency_is_refused_with_a_reason() {
        let layout = &crate::capture::cpython::v3_14::DEBUG_LAYOUT;
        let check = |edit: &dyn Fn(&mut Vec<u64>, &mut Vec<u64>), version, words: &str| {
            let (mut debug, mut asyncio) = published_3_14();
            edit(&mut debug, &mut asyncio);
            let err = asyncio_offsets(version, layout, &debug, &asyncio).unwrap_err();
            assert!(err.contains(words), "{err}");
        };
        check(&|d, _| d[0] = 0, (3, 14), "cookie");
        check(&|_, _| {}, (3, 15), "are for 3.14");
        check(&|d, _| d[2] = 1, (3, 14), "free-threaded");
        check(&|_, a| a[7] += 8, (3, 14), "disagree");
        check(&|d, _| d[layout.llist_prev] = 0, (3, 14), "node offsets");
        check(&|_, a| a[6] = 154, (3, 14), "task offsets");
        check(&|_, a| a[6] = 4000, (3, 14), "task offsets");
        check(&|_, a| a[12] = 936, (3, 14), "thread state");
        check(&|_, a| a[10] = 100, (3, 14), "thread state");
        check(&|_, a| a[8] = 225_864, (3, 14), "interpreter state");
        check(&|d, _| d.truncate(10), (3, 14), "shorter");
    }

    #[test]
    fn only_versions_with_task_lists_have_layouts() {
        assert!(layouts((3, 13)).is_none());
        assert!(layouts((3, 14)).is_some());
        assert!(layouts((3, 15)).is_some());
        assert!(layouts((3, 99)).is_none());
    }
}
