"""The ``tbcollect`` command line (also ``python -m tbcollect``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import tbcollect


def _load(path: str) -> tbcollect.Snapshot:
    """A saved dump; errors name the file, so `diff A B` says which one is bad."""
    try:
        return tbcollect.load(path)
    except tbcollect.InvalidDumpError as e:
        if path in str(e):
            raise
        raise tbcollect.InvalidDumpError(f"{path}: {e}") from None


def _emit(text: str, output: Optional[str]) -> None:
    if not text.endswith("\n"):
        text += "\n"
    if output is None or output == "-":
        sys.stdout.write(text)
    else:
        tbcollect.write_dump(text, path=output)


def _render(args: argparse.Namespace) -> int:
    snapshot = _load(args.dump)
    text = snapshot.render(args.format, group=not args.no_group, indent=args.indent)
    _emit(text, args.output)
    return 0


def _diff(args: argparse.Namespace) -> int:
    a, b = _load(args.a), _load(args.b)
    _emit(tbcollect.diff(a, b).render(args.format, indent=args.indent), args.output)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tbcollect",
        description="What is every thread, greenlet and asyncio task doing right now?",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    render = commands.add_parser("render", help="re-render a saved JSON dump")
    render.add_argument("dump", help="path of a tbcollect/1 JSON dump")
    render.add_argument(
        "--format",
        default="text",
        choices=tbcollect.FORMATS,
        help="output format (default: text; svg draws a flamegraph)",
    )
    render.add_argument("--indent", type=int, default=None, help="JSON indent")
    render.add_argument("--no-group", action="store_true", help="one block per stack")
    render.add_argument(
        "-o", "--output", default=None, help="write here (atomically) instead of stdout"
    )
    render.set_defaults(run=_render)

    diff = commands.add_parser(
        "diff",
        help="compare two JSON dumps: unchanged (stuck?), moved, appeared, disappeared",
    )
    diff.add_argument("a", help="the earlier dump (tbcollect/1 JSON)")
    diff.add_argument("b", help="the later dump (tbcollect/1 JSON)")
    diff.add_argument("--format", default="text", choices=["text", "json"])
    diff.add_argument("--indent", type=int, default=None, help="JSON indent")
    diff.add_argument(
        "-o", "--output", default=None, help="write here (atomically) instead of stdout"
    )
    diff.set_defaults(run=_diff)
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
