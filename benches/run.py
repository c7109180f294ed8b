"""Runs every benchmark side by side and writes the tables into README.md
between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` markers.

    make bench                     # all, README updated
    python benches/run.py threads  # one, printed only
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCHES = ["threads", "tasks", "greenlets"]


def main(argv: list) -> int:
    names = argv or BENCHES
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name in names:
        try:
            module = importlib.import_module(f"benches.bench_{name}")
        except ImportError as e:
            print(f"skipping {name}: {e}", file=sys.stderr)
            continue
        result = module.run()
        print(result, end="\n\n", flush=True)
        marker = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        if not argv and marker.search(text):
            text = marker.sub(lambda m, r=result: m.group(1) + r + "\n" + m.group(2), text)
    if not argv:
        readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
