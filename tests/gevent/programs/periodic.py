"""tbcollect.gevent.periodic_dump in a gevent program: JSON dumps appended
to an open file (argv[1]) and text dumps rewriting a path (argv[2]), until
three of each exist; then both dumpers are killed.

Prints one line of facts.
"""

import json
import os
import sys
import time

import gevent
import tbcollect.gevent


def busy():
    gevent.sleep(600)


def main():
    json_path, text_path = sys.argv[1], sys.argv[2]
    workers = [gevent.spawn(busy) for _ in range(3)]
    deadline = time.monotonic() + 60  # hang guard only
    with open(json_path, "a", encoding="utf-8") as out:
        json_dumper = tbcollect.gevent.periodic_dump(0.02, out, format="json")
        text_dumper = tbcollect.gevent.periodic_dump(0.02, text_path, group=False)
        rewrites = 0
        last = None
        while time.monotonic() < deadline:
            gevent.sleep(0.01)
            if os.path.exists(text_path):
                stamp = open(text_path, encoding="utf-8").readline()
                if stamp != last:
                    rewrites += 1
                    last = stamp
            with open(json_path, encoding="utf-8") as f:
                written = sum(1 for _ in f)
            if written >= 3 and rewrites >= 3:
                break
        json_dumper.kill()
        text_dumper.kill()
    gevent.killall(workers)
    print(
        json.dumps(
            {
                "json_dumps": written,
                "text_rewrites": rewrites,
                "killed": [json_dumper.dead, text_dumper.dead],
                "dumper_name": tbcollect.gevent.DUMPER_NAME,
                "successful": [json_dumper.successful(), text_dumper.successful()],
            }
        )
    )


if __name__ == "__main__":
    main()
