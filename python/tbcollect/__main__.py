"""The ``tbcollect`` command line (also ``python -m tbcollect``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import tbcollect


def _render(args: argparse.Namespace) -> int:
    snapshot = tbcollect.load(args.dump)
    sys.stdout.write(snapshot.render(args.format, group=not args.no_group, indent=args.indent))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tbcollect",
        description="What is every thread, greenlet and asyncio task doing right now?",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="re-render a saved JSON dump")
    render.add_argument("dump", help="path of a tbcollect/1 JSON dump")
    render.add_argument("--format", default="text", help="text or json (default: text)")
    render.add_argument("--indent", type=int, default=None, help="JSON indent")
    render.add_argument("--no-group", action="store_true", help="one block per stack")
    render.set_defaults(run=_render)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except tbcollect.TbcollectError as e:
        print(f"tbcollect: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
