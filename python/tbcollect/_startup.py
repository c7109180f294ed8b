"""``TBCOLLECT=1``: install the dump handler at interpreter start-up.

``tbcollect_startup.pth`` (installed next to the package in site-packages)
imports this module only when ``TBCOLLECT`` is set to something other than
``""`` or ``"0"``, so an unset variable costs one dictionary lookup. Options
come from the environment: ``TBCOLLECT_SIGNAL`` (default SIGQUIT),
``TBCOLLECT_FORMAT`` (text or json), ``TBCOLLECT_DIR``, ``TBCOLLECT_PROBES``.
A problem is reported in one line on stderr and never stops the program.
"""

from __future__ import annotations

import os
import sys


def enabled(environ: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    return environ.get("TBCOLLECT", "").strip() not in ("", "0")


_started = False


def main() -> None:
    global _started
    # site may process the same site-packages twice (a lib64 -> lib symlink).
    if _started or not enabled():
        return
    _started = True
    try:
        import tbcollect
        from tbcollect import _options

        fmt = _options.dump_file_format(
            os.environ.get("TBCOLLECT_FORMAT") or "text", "TBCOLLECT_FORMAT"
        )
        tbcollect.install(
            os.environ.get("TBCOLLECT_SIGNAL") or tbcollect._live.DEFAULT_SIGNAL, format=fmt
        )
    except Exception as e:  # never stop the program over its diagnostics
        sys.stderr.write(
            f"tbcollect: warning: TBCOLLECT is set but no dump handler is installed: {e}\n"
        )
