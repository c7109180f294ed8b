//! One pass over a circular doubly linked list: the calling thread walks it
//! from both ends at once and, when the list is long, shares the middle
//! with a helper thread, and every walk stops where it meets another.
//!
//! A walk that waits on memory gets about as far as its chains of dependent
//! loads allow: two ends are two chains, overlapped on one core. The first
//! [`SOLO_STEPS`] steps from each end are walked that way on the calling
//! thread alone, so a short list (most of them) never pays for a thread.
//! Then a helper is started, and the calling thread walks on from both ends
//! until it is ready (a helper that is late never holds the walk up). What
//! is left then is split: the calling thread walks on forward, the helper
//! backward from where the backward chain stopped. The greenlet scan uses
//! it for the oldest GC generation, where a big heap lives.
//!
//! How the two threads meet without sharing a counter or writing to the
//! list: every [`SPACING`] steps each publishes the node it is at (a
//! checkpoint) and keeps the last [`WINDOW`] checkpoints of the other in
//! view. A thread that steps on one of the other's checkpoints stops before
//! it: the other visited that node and everything behind it, so the two
//! walks cover the middle, and what the other visited past the checkpoint
//! is dropped by step number. A thread that gets to the end of the middle
//! has visited all of it itself. A thread sees the other finish and stops
//! too. Whatever the two threads' speeds, the answer is exact; at worst one
//! walks the whole middle.
//!
//! Pure Rust (no interpreter), so `cargo test` checks the meeting logic on
//! lists of every awkward length.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Steps from each end walked on the calling thread before a helper is
/// started: lists of up to twice this many nodes are walked without one.
/// At 5-20 ns a node, that is 0.2-0.6 ms, a few times what starting and
/// joining a thread costs (0.1-0.2 ms, measured).
pub const SOLO_STEPS: usize = 16_384;
/// Steps between two checkpoints of one thread.
const SPACING: usize = 64;
/// Checkpoints of the other thread kept in view: the other may publish a
/// few more after the two have crossed, before this one reaches the last
/// one it published before crossing.
const WINDOW: usize = 8;
/// Steps between two looks at the other thread's checkpoints.
const REFRESH: usize = 16;

/// A circular doubly linked list whose nodes are addresses; the head is a
/// sentinel that is no node's value.
///
/// # Safety
/// `next` and `prev` must stay valid for every node reachable from the head
/// while [`walk`] runs (nothing may relink the list meanwhile), and must be
/// callable from another thread.
pub unsafe trait Links: Sync {
    /// The node after `node` (`0` is taken as the end).
    ///
    /// # Safety
    /// `node` is the head or a node of the list.
    unsafe fn next(&self, node: usize) -> usize;
    /// The node before `node` (`0` is taken as the end).
    ///
    /// # Safety
    /// `node` is the head or a node of the list.
    unsafe fn prev(&self, node: usize) -> usize;
    /// A hint for memory the walk will read soon, going `forward` or not.
    fn prefetch(&self, _node: usize, _forward: bool) {}
}

/// What one thread shows the other.
#[derive(Default)]
struct Beacon {
    /// Checkpoints published so far; the latest is in `nodes[(count - 1) % WINDOW]`.
    count: AtomicUsize,
    nodes: [AtomicUsize; WINDOW],
    done: AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Stopped before this node, a checkpoint of the other thread.
    Met(usize),
    /// Got to the end of its part: visited all of it.
    Whole,
    /// The other thread finished first.
    Stopped,
}

struct Half<T> {
    /// What `visit` returned, with the step it was returned at.
    found: Vec<(usize, T)>,
    /// (node, step) of each checkpoint published.
    checkpoints: Vec<(usize, usize)>,
    end: End,
}

impl<T> Half<T> {
    /// What was found up to the checkpoint `node` (included), in walk order.
    fn up_to(self, node: usize) -> Option<impl Iterator<Item = T>> {
        let (_, last) = *self.checkpoints.iter().rev().find(|(n, _)| *n == node)?;
        Some(
            self.found
                .into_iter()
                .take_while(move |(step, _)| *step <= last)
                .map(|(_, value)| value),
        )
    }

    fn all(self) -> impl Iterator<Item = T> {
        self.found.into_iter().map(|(_, value)| value)
    }
}

/// A cheap first test for "is `node` one of the watched checkpoints".
fn bit(node: usize) -> u64 {
    1 << ((node >> 6) & 63)
}

/// Walks from `start` (included) towards `stop` (excluded), forward or
/// backward, until it gets there, steps on a checkpoint of the other
/// thread, or sees the other finish.
///
/// # Safety
/// As for [`Links`]; `start` and `stop` are nodes (or the head) of the list,
/// `stop` reached from `start` in that direction.
unsafe fn walk_half<L: Links, T>(
    links: &L,
    (start, stop): (usize, usize),
    forward: bool,
    mine: &Beacon,
    theirs: &Beacon,
    visit: &mut impl FnMut(usize) -> Option<T>,
) -> Half<T> {
    let advance = |node: usize| unsafe {
        if forward {
            links.next(node)
        } else {
            links.prev(node)
        }
    };
    let mut found = Vec::new();
    let mut checkpoints = Vec::new();
    let mut seen = usize::MAX;
    let mut watched = [0usize; WINDOW];
    let mut mask = 0u64;
    let mut node = start;
    let mut step = 0usize;
    let end = loop {
        if node == stop || node == 0 {
            break End::Whole;
        }
        if step.is_multiple_of(REFRESH) {
            if theirs.done.load(Ordering::Acquire) {
                break End::Stopped;
            }
            let count = theirs.count.load(Ordering::Acquire);
            if count != seen {
                seen = count;
                mask = 0;
                for (w, published) in watched.iter_mut().zip(&theirs.nodes) {
                    *w = published.load(Ordering::Acquire);
                    mask |= bit(*w);
                }
            }
        }
        if mask & bit(node) != 0 && watched.contains(&node) {
            break End::Met(node);
        }
        links.prefetch(node, forward);
        if let Some(value) = visit(node) {
            found.push((step, value));
        }
        if step.is_multiple_of(SPACING) {
            let k = step / SPACING;
            mine.nodes[k % WINDOW].store(node, Ordering::Release);
            mine.count.store(k + 1, Ordering::Release);
            checkpoints.push((node, step));
        }
        node = advance(node);
        step += 1;
    };
    mine.done.store(true, Ordering::Release);
    Half {
        found,
        checkpoints,
        end,
    }
}

/// The two halves as one answer in list order, or `None` if they do not
/// add up (not expected: the caller then walks alone).
fn combine<T>(front: Half<T>, back: Half<T>) -> Option<Vec<T>> {
    let mut out: Vec<T>;
    match (front.end, back.end) {
        (End::Met(at), _) => {
            let mut behind: Vec<T> = back.up_to(at)?.collect();
            out = front.all().collect();
            behind.reverse();
            out.extend(behind);
        }
        (_, End::Met(at)) => {
            out = front.up_to(at)?.collect();
            let mut behind: Vec<T> = back.all().collect();
            behind.reverse();
            out.extend(behind);
        }
        (End::Whole, _) => out = front.all().collect(),
        (_, End::Whole) => {
            out = back.all().collect();
            out.reverse();
        }
        (End::Stopped, End::Stopped) => return None,
    }
    Some(out)
}

/// What a walk from both ends on one thread found, and where it stopped.
struct Ends<T> {
    /// Found going forward, in list order.
    front: Vec<T>,
    /// Found going backward, in reverse list order.
    back: Vec<T>,
    /// `None` once the two ends met: every node was visited. Else the
    /// unvisited middle.
    middle: Option<Middle>,
}

/// A part of the list not visited yet: its first and last node, and the
/// nodes visited next to it (the head if none was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Middle {
    first: usize,
    last: usize,
    before: usize,
    after: usize,
}

impl Middle {
    /// The whole list, `None` if it is empty.
    ///
    /// # Safety
    /// As for [`Links`]; `head` is the list's head.
    unsafe fn all<L: Links>(links: &L, head: usize) -> Option<Middle> {
        let (first, last) = (links.next(head), links.prev(head));
        (first != head && first != 0 && last != 0).then_some(Middle {
            first,
            last,
            before: head,
            after: head,
        })
    }
}

/// Walks `middle` from both ends at once on this thread, forwards by `next`
/// and backwards by `prev`, until the two meet or `pause` (asked with the
/// step count before each step) says to stop: two independent chains of
/// loads overlap where one would wait twice as long. What is found is
/// added to `ends`, and `ends.middle` says what is left.
///
/// # Safety
/// As for [`Links`]; `middle` is a part of the list not visited yet.
unsafe fn walk_ends<L: Links, T>(
    links: &L,
    middle: Middle,
    ends: &mut Ends<T>,
    visit: &mut impl FnMut(usize) -> Option<T>,
    mut pause: impl FnMut(usize) -> bool,
) {
    let Middle {
        first: mut front,
        last: mut back,
        mut before,
        mut after,
    } = middle;
    ends.middle = None;
    let mut step = 0;
    while !pause(step) {
        links.prefetch(front, true);
        links.prefetch(back, false);
        ends.front.extend(visit(front));
        if front == back {
            return;
        }
        ends.back.extend(visit(back));
        let next = links.next(front);
        if next == back || next == 0 {
            return;
        }
        let prev = links.prev(back);
        if next == prev {
            ends.front.extend(visit(next));
            return;
        }
        if prev == 0 {
            return;
        }
        (before, after) = (front, back);
        front = next;
        back = prev;
        step += 1;
    }
    ends.middle = Some(Middle {
        first: front,
        last: back,
        before,
        after,
    });
}

/// The thread started to walk part of a long list, joined when this is
/// dropped (or by [`Helper::join`]). It reads nothing of the list once
/// [`walk`] has returned: joining it later only keeps a process that forks
/// right after a dump from forking with a thread it did not start.
#[derive(Default)]
pub struct Helper(Option<std::thread::JoinHandle<()>>);

impl Helper {
    /// Waits for the thread to end: at once, unless it has not run yet.
    pub fn join(mut self) {
        self.wait();
    }

    /// Joins the thread if it has ended (without waiting otherwise).
    /// The earlier the better: the OS counts an ended thread among the
    /// process's threads for a moment after it is joined.
    pub fn join_if_done(&mut self) {
        if self.0.as_ref().is_some_and(|h| h.is_finished()) {
            self.wait();
        }
    }

    fn wait(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.wait();
    }
}

/// Visits every node of the list once, on this thread with `front` and,
/// for a list longer than `2 * SOLO_STEPS`, partly on a helper thread with
/// `back`, and returns what the visits returned, in list order, with the
/// helper thread to join. The helper reads the list only between the two.
///
/// # Safety
/// As for [`Links`]; `head` is the list's head.
pub unsafe fn walk<L, T, F, B>(links: &L, head: usize, front: F, back: B) -> (Vec<T>, Helper)
where
    L: Links + Clone + Send + 'static,
    T: Send + 'static,
    F: FnMut(usize) -> Option<T>,
    B: FnMut(usize) -> Option<T> + Send + 'static,
{
    let (found, helper, _) = walk_with(links, head, SOLO_STEPS, front, back);
    (found, helper)
}

/// Visits every node of the list once, on this thread only (from both ends
/// at once), and returns what the visits returned, in list order.
///
/// # Safety
/// As for [`Links`]; `head` is the list's head.
pub unsafe fn walk_alone<L: Links, T>(
    links: &L,
    head: usize,
    mut visit: impl FnMut(usize) -> Option<T>,
) -> Vec<T> {
    let mut ends = Ends {
        front: Vec::new(),
        back: Vec::new(),
        middle: None,
    };
    if let Some(all) = Middle::all(links, head) {
        walk_ends(links, all, &mut ends, &mut visit, |_| false);
    }
    joined(ends.front, None, ends.back)
}

/// Where the helper thread is (`Handover::state`).
const NOT_STARTED: u8 = 0;
/// Started, waiting to be given a part of the list.
const WAITING: u8 = 1;
/// Given the middle, which it walks.
const GIVEN: u8 = 2;
/// Not needed: it must not read the list.
const CANCELLED: u8 = 3;

/// What the calling thread and the helper share. The helper reads the list
/// only once given a part of it, and it is given one only while it waits,
/// so a helper that starts late, or after the walk is over, never delays
/// the calling thread: that walks on from both ends meanwhile.
#[derive(Default)]
struct Handover {
    state: std::sync::atomic::AtomicU8,
    /// The part given: first, last, before, after.
    middle: [AtomicUsize; 4],
    /// The calling thread's, then the helper's.
    beacons: [Beacon; 2],
}

impl Handover {
    fn give(&self, m: Middle) {
        for (slot, value) in self.middle.iter().zip([m.first, m.last, m.before, m.after]) {
            slot.store(value, Ordering::Relaxed);
        }
        self.state.store(GIVEN, Ordering::Release);
    }

    fn given(&self) -> Middle {
        let [first, last, before, after] =
            [0, 1, 2, 3].map(|i| self.middle[i].load(Ordering::Relaxed));
        Middle {
            first,
            last,
            before,
            after,
        }
    }

    /// The helper: waits to be given a part or to be told it is not needed.
    fn wait(&self) -> Option<Middle> {
        if self
            .state
            .compare_exchange(NOT_STARTED, WAITING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        // Only briefly: the calling thread looks every REFRESH steps.
        let mut spins = 0u32;
        loop {
            match self.state.load(Ordering::Acquire) {
                WAITING if spins < 1 << 12 => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                WAITING => std::thread::yield_now(),
                GIVEN => return Some(self.given()),
                _ => return None,
            }
        }
    }
}

/// [`walk`], with the steps walked alone given, and whether a helper took
/// a part.
unsafe fn walk_with<L, T, F, B>(
    links: &L,
    head: usize,
    solo_steps: usize,
    mut front: F,
    mut back: B,
) -> (Vec<T>, Helper, bool)
where
    L: Links + Clone + Send + 'static,
    T: Send + 'static,
    F: FnMut(usize) -> Option<T>,
    B: FnMut(usize) -> Option<T> + Send + 'static,
{
    let mut ends = Ends {
        front: Vec::new(),
        back: Vec::new(),
        middle: None,
    };
    let none = Helper::default();
    let Some(all) = Middle::all(links, head) else {
        return (Vec::new(), none, false);
    };
    let solo = if has_second_core() {
        solo_steps
    } else {
        usize::MAX
    };
    walk_ends(links, all, &mut ends, &mut front, |step| step >= solo);
    let Some(rest) = ends.middle else {
        return (joined(ends.front, None, ends.back), none, false);
    };

    let handover = std::sync::Arc::new(Handover::default());
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    let spawned = {
        let (handover, links) = (handover.clone(), links.clone());
        spawn_quiet(move || {
            if let Some(part) = handover.wait() {
                let [mine, theirs] = &handover.beacons;
                let (start, stop) = (part.last, part.before);
                // SAFETY: given a part, this thread reads the list until it
                // sends what it found; the calling thread waits for that.
                let half =
                    unsafe { walk_half(&links, (start, stop), false, theirs, mine, &mut back) };
                let _ = sender.send(half);
            }
        })
    };
    let helper = Helper(spawned.ok());
    let spawned = helper.0.is_some();
    let waiting = |step: usize| {
        spawned && step.is_multiple_of(REFRESH) && handover.state.load(Ordering::Acquire) == WAITING
    };
    walk_ends(links, rest, &mut ends, &mut front, waiting);
    let Some(middle) = ends.middle else {
        // Done alone: a helper that starts now finds nothing to do.
        handover.state.store(CANCELLED, Ordering::Release);
        return (joined(ends.front, None, ends.back), helper, false);
    };
    handover.give(middle);
    let [mine, theirs] = &handover.beacons;
    let part = (middle.first, middle.after);
    let first = walk_half(links, part, true, mine, theirs, &mut front);
    let shared = receiver.recv().ok().and_then(|last| combine(first, last));
    // Not expected (see `combine`): the middle again, on this thread alone.
    let middle_found = shared.unwrap_or_else(|| {
        let (mine, theirs) = (Beacon::default(), Beacon::default());
        walk_half(links, part, true, &mine, &theirs, &mut front)
            .all()
            .collect()
    });
    (
        joined(ends.front, Some(middle_found), ends.back),
        helper,
        true,
    )
}

/// The front part, the middle and the back part (found in reverse) in list order.
fn joined<T>(mut front: Vec<T>, middle: Option<Vec<T>>, mut back: Vec<T>) -> Vec<T> {
    front.extend(middle.into_iter().flatten());
    back.reverse();
    front.extend(back);
    front
}

/// Whether a second thread can run at the same time as this one.
fn has_second_core() -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())) >= 2
}

/// A helper thread with every signal blocked (it inherits the mask it is
/// created with), so no signal meant for the program is handled on it.
fn spawn_quiet(f: impl FnOnce() + Send + 'static) -> std::io::Result<std::thread::JoinHandle<()>> {
    let builder = std::thread::Builder::new()
        .name("tbcollect-walk".into())
        .stack_size(256 * 1024);
    #[cfg(unix)]
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let spawned = builder.spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    }
    #[cfg(not(unix))]
    builder.spawn(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes 1..=n in order, head n + 1, shared with a helper thread.
    #[derive(Clone)]
    struct Ring(std::sync::Arc<RingLinks>);

    struct RingLinks {
        next: Vec<usize>,
        prev: Vec<usize>,
    }

    impl Ring {
        fn new(n: usize) -> (Ring, usize) {
            let head = n + 1;
            let mut next = vec![0; n + 2];
            let mut prev = vec![0; n + 2];
            let order: Vec<usize> = std::iter::once(head).chain(1..=n).collect();
            for (i, &node) in order.iter().enumerate() {
                next[node] = order[(i + 1) % order.len()];
                prev[node] = order[(i + order.len() - 1) % order.len()];
            }
            (Ring(std::sync::Arc::new(RingLinks { next, prev })), head)
        }
    }

    unsafe impl Links for Ring {
        unsafe fn next(&self, node: usize) -> usize {
            self.0.next[node]
        }
        unsafe fn prev(&self, node: usize) -> usize {
            self.0.prev[node]
        }
    }

    fn spin(rounds: u32) {
        for _ in 0..rounds {
            std::hint::spin_loop();
        }
    }

    /// Walks nodes 1..=n, keeping those not divisible by 3, and checks the
    /// answer; `solo_steps` as `walk_with` takes it. Returns whether a
    /// helper thread was started.
    fn check_with(n: usize, solo_steps: usize, front_delay: u32, back_delay: u32) -> bool {
        let (ring, head) = Ring::new(n);
        let keep = |node: usize| (!node.is_multiple_of(3)).then_some(node);
        let (got, helper, helped) = unsafe {
            walk_with(
                &ring,
                head,
                solo_steps,
                |node| {
                    spin(front_delay);
                    keep(node)
                },
                move |node| {
                    spin(back_delay);
                    keep(node)
                },
            )
        };
        let spawned = helper.0.is_some();
        helper.join();
        let want: Vec<usize> = (1..=n).filter_map(keep).collect();
        assert_eq!(
            got, want,
            "n = {n}, solo {solo_steps}, delays {front_delay}/{back_delay}"
        );
        assert!(spawned || !helped);
        spawned
    }

    /// As `check_with`, the middle split from the start, so short lists are
    /// shared too.
    fn check(n: usize, front_delay: u32, back_delay: u32) {
        for solo_steps in [0, 1, 5] {
            check_with(n, solo_steps, front_delay, back_delay);
        }
    }

    #[test]
    fn every_node_once_in_order_for_short_and_awkward_lengths() {
        for n in (0..=300).chain([511, 512, 513, 1023, 1024, 1025, 4097]) {
            check(n, 0, 0);
        }
    }

    #[test]
    fn every_node_once_for_long_lists() {
        for n in [100_000, 250_001] {
            check(n, 0, 0);
        }
    }

    #[test]
    fn every_node_once_when_one_thread_lags() {
        for n in [10, 1000, 20_000] {
            check(n, 200, 0);
            check(n, 0, 200);
        }
    }

    #[test]
    fn a_walk_stops_before_a_checkpoint_of_the_other() {
        let (ring, head) = Ring::new(1000);
        let theirs = Beacon::default();
        theirs.nodes[3].store(700, Ordering::Release);
        theirs.count.store(4, Ordering::Release);
        let mine = Beacon::default();
        let part = (1, head);
        let half = unsafe { walk_half(&ring, part, true, &mine, &theirs, &mut |node| Some(node)) };
        assert_eq!(half.end, End::Met(700));
        assert_eq!(half.all().collect::<Vec<_>>(), (1..700).collect::<Vec<_>>());
        assert!(mine.done.load(Ordering::Acquire));
        // Published every SPACING steps, the latest in its slot.
        assert_eq!(mine.count.load(Ordering::Acquire), 699 / SPACING + 1);
    }

    #[test]
    fn a_walk_stops_when_the_other_is_done() {
        let (ring, head) = Ring::new(1000);
        let theirs = Beacon::default();
        theirs.done.store(true, Ordering::Release);
        let half = unsafe {
            walk_half(
                &ring,
                (1000, head),
                false,
                &Beacon::default(),
                &theirs,
                &mut |node| Some(node),
            )
        };
        assert_eq!(half.end, End::Stopped);
        assert!(half.found.is_empty());
    }

    #[test]
    fn halves_that_met_add_up() {
        // A front half that stopped before node 5, a checkpoint of the back half.
        let front = Half {
            found: vec![(0, 1), (1, 2), (2, 3), (3, 4)],
            checkpoints: vec![(1, 0)],
            end: End::Met(5),
        };
        let back = Half {
            found: vec![(0, 8), (1, 7), (2, 6), (3, 5), (4, 4), (5, 3)],
            checkpoints: vec![(8, 0), (5, 3)],
            end: End::Stopped,
        };
        assert_eq!(combine(front, back), Some(vec![1, 2, 3, 4, 5, 6, 7, 8]));
    }

    #[test]
    fn halves_that_both_stopped_do_not_add_up() {
        let half = || Half::<usize> {
            found: Vec::new(),
            checkpoints: Vec::new(),
            end: End::Stopped,
        };
        assert_eq!(combine(half(), half()), None);
    }

    #[test]
    fn both_ends_on_one_thread_cover_the_list_around_the_middle_left() {
        for n in 0..=40 {
            for limit in 0..=25 {
                let (ring, head) = Ring::new(n);
                let mut ends = Ends {
                    front: Vec::new(),
                    back: Vec::new(),
                    middle: None,
                };
                if let Some(all) = unsafe { Middle::all(&ring, head) } {
                    unsafe { walk_ends(&ring, all, &mut ends, &mut Some, |step| step >= limit) };
                }
                let mut got = ends.front.clone();
                if let Some(m) = ends.middle {
                    let links = &ring.0;
                    assert_eq!(
                        (links.prev[m.first], links.next[m.last]),
                        (m.before, m.after)
                    );
                    // A middle left after a step holds two nodes at least.
                    assert!(m.first < m.last || limit == 0 && m.first == m.last, "{m:?}");
                    got.extend(m.first..=m.last);
                }
                got.extend(ends.back.iter().rev());
                assert_eq!(got, (1..=n).collect::<Vec<_>>(), "n = {n}, limit {limit}");
                // Each end walks `limit` steps, unless the two met first
                // (a last node between them is taken in that same step).
                let walked = ends.front.len() + ends.back.len();
                match ends.middle {
                    None => assert!(walked == n && n <= 2 * limit + 1, "n = {n}, limit {limit}"),
                    Some(_) => assert_eq!(walked, 2 * limit, "n = {n}, limit {limit}"),
                }
            }
        }
    }

    #[test]
    fn a_short_list_is_walked_without_a_helper() {
        assert!(!check_with(2 * SOLO_STEPS, SOLO_STEPS, 0, 0));
    }

    #[test]
    fn a_helper_that_shows_up_takes_part_of_a_long_list() {
        // This thread goes slowly until the helper has visited a node: it
        // takes the part it is given as soon as it starts.
        let n = 2 * SOLO_STEPS + 50_000;
        let (ring, head) = Ring::new(n);
        let helped = std::sync::Arc::new(AtomicBool::new(false));
        let seen = helped.clone();
        let (got, helper, took_part) = unsafe {
            walk_with(
                &ring,
                head,
                SOLO_STEPS,
                |node| {
                    let start = std::time::Instant::now();
                    while !seen.load(Ordering::Relaxed)
                        && start.elapsed() < std::time::Duration::from_micros(20)
                    {
                        std::hint::spin_loop();
                    }
                    Some(node)
                },
                move |node| {
                    helped.store(true, Ordering::Relaxed);
                    Some(node)
                },
            )
        };
        assert_eq!(helper.0.is_some(), has_second_core());
        helper.join();
        assert_eq!(took_part, has_second_core());
        assert_eq!(got, (1..=n).collect::<Vec<_>>());
    }

    /// A thread in `Handover::wait`, once it waits.
    fn waiting_helper() -> (
        std::sync::Arc<Handover>,
        std::thread::JoinHandle<Option<Middle>>,
    ) {
        let handover = std::sync::Arc::new(Handover::default());
        let waiter = {
            let handover = handover.clone();
            std::thread::spawn(move || handover.wait())
        };
        while handover.state.load(Ordering::Acquire) != WAITING {
            std::thread::yield_now();
        }
        (handover, waiter)
    }

    #[test]
    fn a_helper_that_comes_too_late_finds_nothing_to_do() {
        let handover = Handover::default();
        handover.state.store(CANCELLED, Ordering::Release);
        assert_eq!(handover.wait(), None);
        // Waiting, then told it is not needed.
        let (handover, waiter) = waiting_helper();
        handover.state.store(CANCELLED, Ordering::Release);
        assert_eq!(waiter.join().unwrap(), None);
    }

    #[test]
    fn a_waiting_helper_is_given_the_middle() {
        let (handover, waiter) = waiting_helper();
        let middle = Middle {
            first: 3,
            last: 9,
            before: 2,
            after: 10,
        };
        handover.give(middle);
        assert_eq!(waiter.join().unwrap(), Some(middle));
    }

    #[test]
    fn every_node_once_around_the_solo_limit() {
        for n in (2 * SOLO_STEPS - 2)..=(2 * SOLO_STEPS + 3) {
            check_with(n, SOLO_STEPS, 0, 0);
        }
        for n in [3 * SOLO_STEPS, 100_003] {
            check_with(n, SOLO_STEPS, 0, 0);
            check_with(n, SOLO_STEPS, 100, 0);
            check_with(n, SOLO_STEPS, 0, 100);
        }
    }
}
