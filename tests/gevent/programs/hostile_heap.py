"""Heap objects whose hooks raise -- `__class__`, `__getattr__`,
`__getattribute__`, `__eq__`, `__hash__`, `__repr__`, `__bool__`,
`__instancecheck__` -- in greenlet and gevent subclasses (greenlets, and an
`Event` and a `Queue` greenlets wait in), as run callables,
as names, as instance-dict keys that collide with the names capture reads,
and in the frame locals of an OS thread whose greenlets have no other tie to
it, beside an object whose `__del__` runs if capture refreshes that frame's
`locals()` dict. Every hook records its call while armed; capture must call
none.

Prints one line of facts (the recorded calls among them), then the JSON dump.
"""

import json
import sys
import threading

import gevent
import gevent.event
import gevent.queue
import greenlet
import tbcollect

CALLS = []
ARMED = False


def hook(what):
    """Records the call when armed (then raises); harmless before that."""
    if ARMED:
        CALLS.append(what)
        raise RuntimeError(f"capture called {what}")


class TrapMeta(type):
    def __instancecheck__(cls, obj):
        hook("__instancecheck__")
        return type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub):
        hook("__subclasscheck__")
        return type.__subclasscheck__(cls, sub)


class Trap(metaclass=TrapMeta):
    """An object every hook of which records and raises."""

    @property
    def __class__(self):
        hook("Trap.__class__")
        return Trap

    def __getattribute__(self, name):
        hook(f"Trap.__getattribute__({name})")
        return object.__getattribute__(self, name)

    def __getattr__(self, name):
        hook(f"Trap.__getattr__({name})")
        raise AttributeError(name)

    def __eq__(self, other):
        hook("Trap.__eq__")
        return NotImplemented

    def __hash__(self):
        hook("Trap.__hash__")
        return 1

    def __repr__(self):
        hook("Trap.__repr__")
        return "<Trap>"

    def __bool__(self):
        hook("Trap.__bool__")
        return True

    def __call__(self, *args):
        hook("Trap.__call__")


class CollidingKey:
    """A dict key hashing like the attribute names capture looks up."""

    def __init__(self, like):
        self.like = like

    def __hash__(self):
        return hash(self.like)

    def __eq__(self, other):
        hook(f"CollidingKey.__eq__({self.like})")
        return False


def trap_property(name):
    def get(self):
        hook(f"property {name}")
        return None

    return property(get)


def park():
    # greenlet's own `parent` getter: HostileGreenlet shadows the attribute.
    parent = vars(greenlet.greenlet)["parent"].__get__(greenlet.getcurrent())
    parent.switch()


class HostileGreenlet(greenlet.greenlet, metaclass=TrapMeta):
    gr_frame = trap_property("gr_frame")
    parent = trap_property("parent")
    dead = trap_property("dead")
    gr_context = trap_property("gr_context")
    _stack_saved = trap_property("_stack_saved")

    def __getattribute__(self, name):
        hook(f"HostileGreenlet.__getattribute__({name})")
        return greenlet.greenlet.__getattribute__(self, name)

    def __getattr__(self, name):
        hook(f"HostileGreenlet.__getattr__({name})")
        raise AttributeError(name)

    def __eq__(self, other):
        hook("HostileGreenlet.__eq__")
        return NotImplemented

    def __hash__(self):
        hook("HostileGreenlet.__hash__")
        return 1

    def __repr__(self):
        hook("HostileGreenlet.__repr__")
        return "<HostileGreenlet>"

    def __bool__(self):
        hook("HostileGreenlet.__bool__")
        return True

    @property
    def __class__(self):
        hook("HostileGreenlet.__class__")
        return HostileGreenlet

    def run(self):
        park()


class HostileGeventGreenlet(gevent.Greenlet):
    name = trap_property("name")
    spawning_greenlet = trap_property("spawning_greenlet")
    spawning_stack = trap_property("spawning_stack")
    minimal_ident = trap_property("minimal_ident")

    def __getattribute__(self, name):
        hook(f"HostileGeventGreenlet.__getattribute__({name})")
        return gevent.Greenlet.__getattribute__(self, name)

    def __repr__(self):
        hook("HostileGeventGreenlet.__repr__")
        return "<HostileGeventGreenlet>"

    def _run(self):
        gevent.sleep(600)


class HostileEvent(gevent.event.Event, metaclass=TrapMeta):
    """A primitive greenlets wait in (its waiters are read from its links)."""

    _links = trap_property("_links")
    hub = trap_property("hub")

    def __getattribute__(self, name):
        hook(f"HostileEvent.__getattribute__({name})")
        return gevent.event.Event.__getattribute__(self, name)

    def __eq__(self, other):
        hook("HostileEvent.__eq__")
        return NotImplemented

    def __hash__(self):
        hook("HostileEvent.__hash__")
        return 1


class HostileQueue(gevent.queue.Queue, metaclass=TrapMeta):
    queue = trap_property("queue")
    getters = trap_property("getters")
    putters = trap_property("putters")

    def __getattribute__(self, name):
        hook(f"HostileQueue.__getattribute__({name})")
        return gevent.queue.Queue.__getattribute__(self, name)


class Canary:
    """Records its release while armed: an object only a frame's stale
    `locals()` dict still references. Refreshing that dict (what the
    `f_locals` getter and `PyFrame_GetLocals` do up to 3.12) frees it, and
    its `__del__` then runs inside the capture."""

    def __del__(self):
        hook("Canary.__del__")


def hold(things, ready, release):
    """An OS thread whose greenlets are tied to it only by its locals."""
    trap = Trap()  # noqa: F841 -- scanned along with the greenlets
    canary = Canary()
    locals()  # up to 3.12 the frame's locals dict now holds the canary too
    canary = None  # noqa: F841 -- and from here only that dict does
    mine = [greenlet.greenlet(park) for _ in range(2)] + [trap, HostileGreenlet()]
    for g in mine[:2]:
        g.switch()
    mine[3].switch()
    things.append(threading.get_ident())
    ready.set()
    release.wait(120)


def main():
    global ARMED
    keep = []
    hostile = HostileGreenlet()
    hostile.switch()
    keep.append(hostile)
    hostile_pending = HostileGreenlet()
    keep.append(hostile_pending)
    keep.append(greenlet.greenlet(Trap()))  # a Trap as the run callable, not started
    keep.append(greenlet.greenlet(lambda: None, parent=hostile_pending))

    raw = greenlet.greenlet(park)
    raw.switch()
    for like in ("name", "_run", "_ident", "thread_ident"):
        raw.__dict__[CollidingKey(like)] = 1
    keep.append(raw)

    gevent_hostile = HostileGeventGreenlet()
    gevent_hostile.start()
    named = gevent.spawn(gevent.sleep, 600)
    named.__dict__["name"] = Trap()  # a name that is no str
    for like in ("name", "_run", "spawning_greenlet", "spawning_stack"):
        named.__dict__[CollidingKey(like)] = 1
    keep += [gevent_hostile, named, Trap(), [Trap()], {CollidingKey("name"): Trap()}]
    event, queue = HostileEvent(), HostileQueue()
    in_event = gevent.spawn(lambda: event.wait())
    in_queue = gevent.spawn(lambda: queue.get())
    keep += [event, queue, in_event, in_queue]
    gevent.sleep(0)

    ready, release, things = threading.Event(), threading.Event(), []
    holder = threading.Thread(target=hold, args=(things, ready, release), daemon=True)
    holder.start()
    if not ready.wait(60):
        sys.exit("holder thread did not start")

    ARMED = True
    try:
        snapshot = tbcollect.collect()
        text = snapshot.to_text()
        data = snapshot.to_json()
    finally:
        ARMED = False
    release.set()
    holder.join(60)
    facts = {
        "calls": CALLS,
        "holder_thread": things[0],
        "hostile": hex(id(hostile)),
        "hostile_pending": hex(id(hostile_pending)),
        "raw": hex(id(raw)),
        "gevent_hostile": hex(id(gevent_hostile)),
        "named": hex(id(named)),
        "in_event": hex(id(in_event)),
        "in_queue": hex(id(in_queue)),
        "text_lines": len(text.splitlines()),
    }
    print(json.dumps(facts))
    print(data)


if __name__ == "__main__":
    main()
