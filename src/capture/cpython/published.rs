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
    /// `interpreter_frame.localsplus`: where a frame's variable part begins.
    pub frame_localsplus: usize,
    /// `interpreter_frame.stackpointer`: the value stack's top, saved when
    /// the frame is suspended.
    pub frame_stackpointer: usize,
    /// `gen_object.gi_iframe`, `gen_object.gi_frame_state`.
    pub gen_iframe: usize,
    pub gen_frame_state: usize,
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

/// `enum _frameState` values of one version (`internal/pycore_frame.h`):
/// what a generator's `gi_frame_state` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameStates {
    pub executing: i8,
    /// Suspended inside `await` / `yield from`: the stack top is what it awaits.
    pub in_await: i8,
    /// This and above: completed or cleared, the frame is gone.
    pub finished_from: i8,
}

impl FrameStates {
    /// Suspended, created or executing: the embedded frame is live.
    pub fn live(&self, state: i8) -> bool {
        state < self.finished_from
    }
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

/// Where a generator, coroutine or async generator (all three begin with
/// `_PyGenObject_HEAD`) keeps its frame state and interpreter frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOffsets {
    pub states: FrameStates,
    pub iframe: usize,
    /// `gi_iframe + localsplus`: the first of the frame's slots, which run
    /// to the end of the (variable-size) object.
    pub slots: usize,
    /// Of the stack pointer, from the object's start.
    pub stackpointer: usize,
    /// An `int8_t`: `FRAME_EXECUTING` is 0, suspended states are negative,
    /// completed or cleared ones positive.
    pub frame_state: usize,
}

/// Checks the generator offsets against the coroutine type's own size: a
/// coroutine ends with its interpreter frame, whose variable part
/// (`localsplus`) the type's item size counts, so `tp_basicsize` is
/// `gi_iframe + localsplus`.
pub fn gen_offsets(
    version: (u8, u8),
    layout: &DebugLayout,
    debug: &[u64],
    coroutine_basicsize: usize,
) -> Result<GenOffsets, String> {
    if debug.len() < layout.words || debug[0].to_le_bytes() != *COOKIE {
        return Err("no debug offsets".into());
    }
    let published = (
        ((debug[1] >> 24) & 0xff) as u8,
        ((debug[1] >> 16) & 0xff) as u8,
    );
    if published != version || debug[2] != 0 {
        return Err("the debug offsets are for another build".into());
    }
    let word = |i: usize| usize::try_from(debug[i]).unwrap_or(usize::MAX);
    let (iframe, frame_state, localsplus, stackpointer) = (
        word(layout.gen_iframe),
        word(layout.gen_frame_state),
        word(layout.frame_localsplus),
        word(layout.frame_stackpointer),
    );
    let ptr = std::mem::size_of::<usize>();
    let ok = iframe % ptr == 0
        && (2 * ptr..iframe).contains(&frame_state)
        && localsplus < 4096
        && stackpointer % ptr == 0
        && stackpointer + ptr <= localsplus
        && iframe.checked_add(localsplus) == Some(coroutine_basicsize);
    if !ok {
        return Err(format!(
            "the generator offsets ({iframe}, {frame_state}) do not fit a {coroutine_basicsize}-byte coroutine"
        ));
    }
    let states = match version {
        (3, 14) => super::v3_14::FRAME_STATES,
        (3, 15) => super::v3_15::FRAME_STATES,
        _ => return Err("no frame states for this version".into()),
    };
    Ok(GenOffsets {
        states,
        iframe,
        slots: iframe + localsplus,
        stackpointer: iframe + stackpointer,
        frame_state,
    })
}

/// `_PyRuntime`'s debug offsets, as words (see [`read_published`]).
#[cfg(target_os = "linux")]
pub fn read_debug(layout: &DebugLayout) -> Result<Vec<u64>, String> {
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
    // SAFETY: the exported `_PyRuntime` (or its section, checked to be long
    // enough) begins with `_Py_DebugOffsets`, `layout.words` words.
    Ok(unsafe { words_at(runtime, layout.words) })
}

#[cfg(not(target_os = "linux"))]
pub fn read_debug(_layout: &DebugLayout) -> Result<Vec<u64>, String> {
    Err("reading the published offsets is only implemented on Linux".into())
}

/// # Safety
/// `at` is the address of `n` readable words.
#[cfg(target_os = "linux")]
unsafe fn words_at(at: usize, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| std::ptr::read_unaligned((at as *const u64).add(i)))
        .collect()
}

/// Reads both published structs of this process, as words.
#[cfg(target_os = "linux")]
pub fn read_published(layout: &DebugLayout) -> Result<(Vec<u64>, Vec<u64>), String> {
    use crate::capture::elf;
    let debug = read_debug(layout)?;
    let interpreter = |p: &str| p == "/proc/self/exe" || p.contains("libpython");
    let asyncio = elf::loaded_section(".AsyncioDebug", |p| {
        interpreter(p) || p.contains("_asyncio")
    })
    .ok_or("no loaded object has an .AsyncioDebug section")?;
    if asyncio.size < ASYNCIO_WORDS * 8 {
        return Err(".AsyncioDebug is smaller than the offsets it should hold".into());
    }
    // SAFETY: a section inside one of its object's loaded segments, checked
    // to hold `ASYNCIO_WORDS` words.
    Ok((debug, unsafe { words_at(asyncio.address, ASYNCIO_WORDS) }))
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
        debug[layout.frame_localsplus] = 80;
        debug[layout.frame_stackpointer] = 64;
        debug[layout.gen_iframe] = 72;
        debug[layout.gen_frame_state] = 67;
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
    fn generator_offsets_must_add_up_to_the_coroutine_size() {
        let (debug, _) = published_3_14();
        let layout = &crate::capture::cpython::v3_14::DEBUG_LAYOUT;
        let gen = gen_offsets((3, 14), layout, &debug, 152).unwrap();
        assert_eq!((gen.iframe, gen.frame_state), (72, 67));
        assert_eq!((gen.slots, gen.stackpointer), (152, 136));
        assert!(gen_offsets((3, 14), layout, &debug, 160).is_err());
        assert!(gen_offsets((3, 15), layout, &debug, 152).is_err());
        let mut bad = debug.clone();
        bad[layout.gen_frame_state] = 80;
        assert!(gen_offsets((3, 14), layout, &bad, 152).is_err());
    }

    #[test]
    fn only_versions_with_task_lists_have_layouts() {
        assert!(layouts((3, 13)).is_none());
        assert!(layouts((3, 14)).is_some());
        assert!(layouts((3, 15)).is_some());
        assert!(layouts((3, 99)).is_none());
    }
}
