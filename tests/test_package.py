"""The package's Python face: what `import tbcollect` loads, and every public
submodule reachable as an attribute (PEP 562), loaded on first use."""

from __future__ import annotations

import json
import sys

import pytest
import tbcollect

from tests.helpers import run_python


def loaded_by(code: str) -> list:
    """The modules `code` adds to sys.modules, in a fresh interpreter."""
    proc = run_python(
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"{code}\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_import_loads_only_the_native_module_and_the_exceptions():
    # __future__ is the annotations switch of our own modules; gc is built in,
    # imported by the native module so that capture never imports.
    loaded = set(loaded_by("import tbcollect")) - {"__future__", "gc"}
    assert loaded == {"tbcollect", "tbcollect._errors", "tbcollect._tbcollect"}


@pytest.mark.parametrize(
    "name, attribute",
    [("aio", "dump"), ("sentry", "capture"), ("watchdog", "Watchdog"), ("gevent", "periodic_dump")],
)
def test_public_submodules_are_attributes_loaded_on_first_use(name, attribute):
    loaded = loaded_by(f"import tbcollect\nassert callable(tbcollect.{name}.{attribute})")
    assert f"tbcollect.{name}" in loaded


def test_lazy_names_are_the_real_objects():
    from tbcollect._live import install
    from tbcollect.watchdog import Watchdog, heartbeat

    assert tbcollect.install is install
    assert tbcollect.Watchdog is Watchdog
    assert tbcollect.heartbeat is heartbeat
    assert set(tbcollect.__all__) <= set(dir(tbcollect))
    with pytest.raises(AttributeError, match="no_such_thing"):
        tbcollect.no_such_thing  # noqa: B018


def test_watchdog_is_callable_however_it_was_imported(tmp_path):
    code = (
        "import tbcollect.watchdog\n"
        "import tbcollect\n"
        f"wd = tbcollect.watchdog(directory={str(tmp_path)!r}, files=False)\n"
        "print(type(wd).__name__, wd.running)\n"
        "wd.stop()\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Watchdog", "True"]


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert tbcollect.__version__ == version("tbcollect")
    assert tbcollect.__version__.count(".") >= 2


def test_every_name_in_all_is_importable_with_star():
    namespace: dict = {}
    exec("from tbcollect import *", namespace)
    missing = [n for n in tbcollect.__all__ if n not in namespace]
    assert not missing
    assert sys.modules["tbcollect"] is tbcollect


def test_exceptions_are_declared_once_and_raised_without_importing_the_package():
    from tbcollect import _tbcollect

    assert tbcollect.InvalidOptionError is _tbcollect.InvalidOptionError
    assert issubclass(tbcollect.InvalidOptionError, (tbcollect.TbcollectError, ValueError))
    assert issubclass(tbcollect.UnsafeProbesError, (tbcollect.ProbesError, PermissionError))
    assert tbcollect.DumpWriteError.__module__ == "tbcollect"
    # With the Python modules made unimportable, the native module still
    # raises its own classes and reads its own REDACT.
    code = (
        "import sys, tbcollect\n"
        "from tbcollect import _tbcollect\n"
        "for name in [m for m in sys.modules if m.startswith('tbcollect') and m != "
        "'tbcollect._tbcollect']:\n"
        "    sys.modules[name] = None\n"
        "try:\n"
        "    _tbcollect.collect(max_depth=0)\n"
        "except _tbcollect.InvalidOptionError as e:\n"
        "    print('raised', type(e).__name__)\n"
        "_tbcollect.REDACT = 'token'\n"
        "try:\n"
        "    _tbcollect.collect(locals=True)\n"
        "except ValueError as e:\n"
        "    print('redact', 'tbcollect.REDACT' in str(e))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["raised", "InvalidOptionError", "redact", "True"]


def test_redact_is_the_native_modules_list():
    from tbcollect import _tbcollect

    assert tbcollect.REDACT is _tbcollect.REDACT
    assert "password" in tbcollect.REDACT
