//! One pass over a long circular doubly linked list, shared by two threads:
//! the calling thread walks forward from the head while a helper walks
//! backward from the tail, and both stop where they meet.
//!
//! A walk that waits on memory gets about as far per thread as the core's
//! outstanding loads allow; a second core doubles that. The greenlet scan
//! uses it for the oldest GC generation, where a big heap lives.
//!
//! How they meet without sharing a counter or writing to the list: every
//! [`SPACING`] steps each thread publishes the node it is at (a checkpoint)
//! and keeps the last [`WINDOW`] checkpoints of the other in view. A thread
//! that steps on one of the other's checkpoints stops before it: the other
//! visited that node and everything behind it, so the two walks cover the
//! list, and what the other visited past the checkpoint is dropped by step
//! number. A thread that gets back to the head has visited everything
//! itself. A thread sees the other finish and stops too. Whatever the two
//! threads' speeds, the answer is exact; at worst one walks the whole list.
//!
//! Pure Rust (no interpreter), so `cargo test` checks the meeting logic on
//! lists of every awkward length.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    /// Got back to the head: visited every node.
    Head,
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

/// # Safety
/// As for [`Links`]; `head` is the list's head.
unsafe fn walk_half<L: Links, T>(
    links: &L,
    head: usize,
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
    let mut node = advance(head);
    let mut step = 0usize;
    let end = loop {
        if node == head || node == 0 {
            break End::Head;
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
        (End::Head, _) => out = front.all().collect(),
        (_, End::Head) => {
            out = back.all().collect();
            out.reverse();
        }
        (End::Stopped, End::Stopped) => return None,
    }
    Some(out)
}

/// Whether a second thread can run at the same time as this one.
fn has_second_core() -> bool {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())) >= 2
}

/// Visits every node of the list once, the first part on this thread with
/// `front`, the last part on a helper thread with `back`, and returns what
/// the visits returned, in list order. `None` when there is no second core
/// or no helper thread could be started: nothing was visited then.
///
/// # Safety
/// As for [`Links`]; `head` is the list's head.
pub unsafe fn walk<L, T, F, B>(links: &L, head: usize, mut front: F, mut back: B) -> Option<Vec<T>>
where
    L: Links,
    T: Send,
    F: FnMut(usize) -> Option<T>,
    B: FnMut(usize) -> Option<T> + Send,
{
    if !has_second_core() {
        return None;
    }
    let beacons = [Beacon::default(), Beacon::default()];
    let (ahead, behind) = (&beacons[0], &beacons[1]);
    std::thread::scope(|scope| {
        let helper = spawn_quiet(scope, move || unsafe {
            walk_half(links, head, false, behind, ahead, &mut back)
        })
        .ok()?;
        let first = unsafe { walk_half(links, head, true, ahead, behind, &mut front) };
        let last = helper.join().ok()?;
        combine(first, last)
    })
}

/// A helper thread with every signal blocked (it inherits the mask it is
/// created with), so no signal meant for the program is handled on it.
fn spawn_quiet<'scope, 'env, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    let builder = std::thread::Builder::new()
        .name("tbcollect-walk".into())
        .stack_size(256 * 1024);
    #[cfg(unix)]
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let spawned = builder.spawn_scoped(scope, f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    }
    #[cfg(not(unix))]
    builder.spawn_scoped(scope, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nodes 1..=n in order, head n + 1; `slow` makes visits of the nodes
    /// it names spin, so one thread lags.
    struct Ring {
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
            (Ring { next, prev }, head)
        }
    }

    unsafe impl Links for Ring {
        unsafe fn next(&self, node: usize) -> usize {
            self.next[node]
        }
        unsafe fn prev(&self, node: usize) -> usize {
            self.prev[node]
        }
    }

    fn spin(rounds: u32) {
        for _ in 0..rounds {
            std::hint::spin_loop();
        }
    }

    fn check(n: usize, front_delay: u32, back_delay: u32) {
        let (ring, head) = Ring::new(n);
        let keep = |node: usize| (!node.is_multiple_of(3)).then_some(node);
        let got = unsafe {
            walk(
                &ring,
                head,
                |node| {
                    spin(front_delay);
                    keep(node)
                },
                |node| {
                    spin(back_delay);
                    keep(node)
                },
            )
        };
        let Some(got) = got else {
            assert!(!has_second_core(), "a helper thread could not be started");
            return;
        };
        let want: Vec<usize> = (1..=n).filter_map(keep).collect();
        assert_eq!(got, want, "n = {n}, delays {front_delay}/{back_delay}");
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
        let half = unsafe { walk_half(&ring, head, true, &mine, &theirs, &mut |node| Some(node)) };
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
                head,
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
}
