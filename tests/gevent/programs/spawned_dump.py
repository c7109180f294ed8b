"""A dump taken by `gevent.spawn(tbcollect.dump_all, ...)`, with gevent's
monkey patching (argv[1] == "patched") or without ("unpatched").

argv[2] is the path the JSON dump is written to. Prints one line of facts,
then the text dump a second spawned dumper wrote to a file object.
"""

import sys

if sys.argv[1] == "patched":
    from gevent import monkey

    monkey.patch_all()

import io
import json

import gevent
import gevent.event
import gevent.monkey
import greenlet
import tbcollect


def waiter(event):
    event.wait()


def main():
    path = sys.argv[2]
    event = gevent.event.Event()
    waiters = [gevent.spawn(waiter, event) for _ in range(5)]
    gevent.sleep(0)
    dumper = gevent.spawn(tbcollect.dump_all, path, format="json")
    dumper.join()
    text = io.StringIO()
    gevent.spawn(tbcollect.dump_all, text).join()
    real_ident = gevent.monkey.get_original("_thread", "get_ident")()
    facts = {
        "patched": gevent.monkey.is_module_patched("threading"),
        "thread": real_ident,
        "main": hex(id(greenlet.getcurrent())),
        "hub": hex(id(gevent.get_hub())),
        "dumper": hex(id(dumper)),
        "dumper_ok": dumper.successful(),
        "dumper_error": repr(dumper.exception),
        "waiters": [hex(id(w)) for w in waiters],
    }
    event.set()
    gevent.joinall(waiters, timeout=60)
    print(json.dumps(facts))
    print(text.getvalue(), end="")


if __name__ == "__main__":
    main()
