//! A task's frames: the await chain of a suspended task, or the slice of its
//! thread's stack for a task that is executing.

use super::asyncio::Asyncio;
use super::AddrMap;
use crate::capture::awaiting::Link;
use crate::capture::inert;
use crate::capture::Capture;
use crate::model::Frames;
use pyo3::ffi;
use pyo3::prelude::*;
use std::collections::HashMap;

/// Longest await chain followed; a guard, as a coroutine cannot await itself.
const MAX_LINKS: usize = 100_000;

/// What following `cr_await`/`gi_yieldfrom`/`ag_await` from a task's
/// coroutine found.
pub struct Chain<'py> {
    /// One per coroutine that has a frame, outermost first, innermost
    /// `max_depth` kept.
    pub frames: Frames,
    pub omitted: u64,
    /// The links `awaiting` reads (see [`crate::capture::awaiting::Facts::links`]).
    pub links: Vec<Link>,
    /// The innermost awaited object that is not a coroutine (a future's
    /// iterator, an unknown awaitable), if any.
    pub leaf: Option<Bound<'py, PyAny>>,
    /// The innermost coroutine of asyncio named `sleep`, whose timer says
    /// when the task wakes.
    pub sleep: Option<Bound<'py, PyAny>>,
    /// The qualified name of the outermost user coroutine that a `wait_for`
    /// awaits in place (3.12+), if any (see `awaiting::Facts::timed`).
    pub timed: Option<crate::model::Text>,
}

/// Follows the await chain from `coro`, filling `links` (a buffer to reuse). Only the interpreter's exact
/// coroutine, generator and async-generator types are followed (their
/// getsets are the interpreter's; they cannot be subclassed), plus the
/// helper objects that bridge them (`async_generator_asend`/`athrow`,
/// `coroutine_wrapper`), whose target is found through `tp_traverse`.
pub fn follow<'py>(
    aio: &Asyncio<'py>,
    cap: &mut Capture<'py>,
    coro: &Bound<'py, PyAny>,
    mut links: Vec<Link>,
) -> Chain<'py> {
    let mut frames = cap.walker.list();
    links.clear();
    let mut leaf = None;
    let mut sleep = None;
    let mut timed = None;
    let mut current = Some(coro.clone());
    let mut followed = 0;
    while let Some(obj) = current.take() {
        if followed >= MAX_LINKS {
            break;
        }
        followed += 1;
        if let Some(kind) = aio.coro_type(&obj) {
            let key = position(aio, cap, kind, &obj, &mut frames).or_else(|| {
                aio.frame_of(kind, &obj)
                    // SAFETY: `f` is alive and the GIL is held (a `Bound`).
                    .filter(|f| unsafe { ffi::PyFrame_Check(f.as_ptr()) } != 0)
                    // SAFETY: `f` is a frame object (checked), held while it is pushed.
                    .map(|f| unsafe {
                        cap.walker
                            .push(&mut frames, f.as_ptr() as *mut ffi::PyFrameObject)
                    })
            });
            let in_asyncio = key.is_some_and(|key| aio.is_asyncio_code(&cap.walker, key));
            // Only asyncio's own names are read (see `awaiting::Link`).
            if in_asyncio {
                let link = match kind
                    .qualname
                    .as_ref()
                    .and_then(|a| a.get(&obj))
                    .and_then(|q| aio.shared_text(q))
                {
                    Some(name) => {
                        if name == "sleep" {
                            sleep = Some(obj.clone());
                        }
                        Link::new(name, true)
                    }
                    None => Link::unnamed(true),
                };
                links.push(link);
            } else if links.last().is_none_or(|l| l.asyncio) {
                // Only here is a user coroutine's name read: one per task at most.
                let under_wait_for = links
                    .last()
                    .is_some_and(|l| l.asyncio && l.qualname.as_deref() == Some("wait_for"));
                if under_wait_for && timed.is_none() {
                    timed = kind
                        .qualname
                        .as_ref()
                        .and_then(|a| a.get(&obj))
                        .and_then(|q| aio.shared_text(q));
                }
                // One user link stands for all above it (see `Facts::links`).
                links.clear();
                links.push(Link::unnamed(false));
            }
            current = aio.awaited(kind, &obj);
        } else if aio.is_bridge(&obj) {
            current = inert::referents(&obj)
                .into_iter()
                .find(|r| aio.coro_type(r).is_some());
        } else {
            leaf = Some(obj);
        }
    }
    // Made here, not up front: an empty `Frames` placeholder is a reference
    // count on one static shared by every task.
    let (frames, omitted) = cap.walker.finish(frames, false);
    Chain {
        frames,
        omitted,
        links,
        leaf,
        sleep,
        timed,
    }
}

/// 3.11+: the coroutine's frame pushed from its interpreter frame, without
/// a frame object (locals, when asked for, need the frame object). `None`
/// sends the caller to the frame object.
fn position<'py>(
    aio: &Asyncio<'py>,
    cap: &mut Capture<'py>,
    kind: &super::asyncio::CoroType<'py>,
    obj: &Bound<'py, PyAny>,
    frames: &mut crate::capture::frames::FrameList,
) -> Option<crate::capture::frames::FrameKey> {
    #[cfg(Py_3_11)]
    {
        if cap.walker.wants_locals() {
            return None;
        }
        let (code, lasti) = aio.frame_position(kind, obj)?;
        // SAFETY: the coroutine holds its code object.
        Some(unsafe { cap.walker.push_position(frames, code, lasti) })
    }
    #[cfg(not(Py_3_11))]
    {
        let _ = (aio, cap, kind, obj, frames);
        None
    }
}

/// Every thread's frame objects, innermost first, indexed by address, built
/// on first use: a running task's frames are found on its thread's stack.
#[derive(Default)]
pub struct ThreadStacks<'py> {
    built: bool,
    stacks: HashMap<u64, Vec<Bound<'py, PyAny>>>,
    index: AddrMap<(u64, usize)>,
}

impl<'py> ThreadStacks<'py> {
    fn build(&mut self, cap: &Capture<'py>) {
        if self.built {
            return;
        }
        self.built = true;
        for (ident, top) in &cap.thread_tops {
            let ident = *ident;
            // SAFETY: `top` is held by `cap.thread_tops`, and read as a frame only after
            // `PyFrame_Check`.
            unsafe {
                if ffi::PyFrame_Check(top.as_ptr()) == 0 {
                    continue;
                }
                let mut stack = Vec::new();
                let mut frame = top.clone();
                loop {
                    self.index
                        .insert(frame.as_ptr() as usize, (ident, stack.len()));
                    let back = ffi::PyFrame_GetBack(frame.as_ptr() as *mut ffi::PyFrameObject);
                    stack.push(frame);
                    match inert::owned(cap.py, back as *mut ffi::PyObject) {
                        Some(b) => frame = b,
                        None => break,
                    }
                }
                self.stacks.insert(ident, stack);
            }
        }
    }

    /// The thread whose stack holds `frame`, and its depth from the top.
    pub fn locate(
        &mut self,
        cap: &Capture<'py>,
        frame: &Bound<'py, PyAny>,
    ) -> Option<(u64, usize)> {
        self.build(cap);
        self.index.get(&(frame.as_ptr() as usize)).copied()
    }

    /// Frames `top..=depth` of thread `ident` (innermost first).
    pub fn slice(&self, ident: u64, top: usize, depth: usize) -> &[Bound<'py, PyAny>] {
        self.stacks
            .get(&ident)
            .and_then(|s| s.get(top..=depth))
            .unwrap_or(&[])
    }

    /// Every thread's frames, innermost first.
    pub fn all(&mut self, cap: &Capture<'py>) -> impl Iterator<Item = (u64, &Bound<'py, PyAny>)> {
        self.build(cap);
        self.stacks
            .iter()
            .flat_map(|(ident, frames)| frames.iter().map(move |f| (*ident, f)))
    }
}
