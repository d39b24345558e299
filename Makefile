# splitmq — developer entry points.
#   make demo    create .venv, then run a broker, a coordinator and three agents end to end
#   make demo-secure   the same on Mosquitto with TLS, passwords and per-role ACLs
#   make test    create .venv, install everything (Mosquitto too), run the whole suite
#   make pi-root   the emulated Raspberry Pi (ARM64 root under QEMU) of tests/pi, cached
#   make test-fast   the fast tier only: no TensorFlow, no Mosquitto needed, under a minute
#   make lint    ruff + mypy
#   make bench   the benchmark suite: one table of ratios against the goals (docs/performance.md)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# tflite-runtime 2.14 needs numpy < 2: it gets an environment of its own.
VENV_TFLITE := .venv-tflite214
STAMP := $(VENV)/.installed
STAMP_TFLITE := $(VENV_TFLITE)/.installed

.PHONY: demo demo-secure test test-fast lint bench bench-quick venv compiled mosquitto chromium web clean pi-root

venv: $(STAMP) $(STAMP_TFLITE) compiled

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[agent,convert,client,web,dev]"
	touch $@

$(STAMP_TFLITE): pyproject.toml
	$(PYTHON) -m venv $(VENV_TFLITE)
	$(VENV_TFLITE)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_TFLITE)/bin/python -m pip install --quiet "numpy<2" "tflite-runtime==2.14.0" "psutil>=5.9"
	$(VENV_TFLITE)/bin/python -m pip install --quiet -e .
	touch $@

# The hot modules compiled with mypyc (splitmq/compiled.py, about a minute), again only
# when one of their sources changed. gcc and Python's headers from Debian's packages
# when missing (as root); without them the same modules run as pure Python, unless
# SPLITMQ_REQUIRE_ALL is set (CI), which makes that a failure. Then the bytecode of the
# rest, as pip writes it for a package it installs (an editable install gets none): on a
# fresh clone the fast tier's workers and the processes they start would otherwise each
# compile splitmq at once (61 s for its first run on a 2-core machine, 40 s after this
# step's 0.4 s).
compiled: $(STAMP)
	@if ! command -v gcc >/dev/null 2>&1 || ! $(PY) scripts/compile.py --headers; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing gcc and Python's headers from Debian's packages"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev; \
		fi; \
	fi
	$(PY) scripts/compile.py --if-stale
	$(PY) -m compileall -q splitmq

# Mosquitto from Debian's packages when it is missing (CI runs as root).
mosquitto:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
		echo "installing mosquitto from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq mosquitto mosquitto-clients openssl; \
	fi

# Debian's Chromium for the browser tests (tests/browser): Playwright drives it through
# executable_path and never downloads a browser of its own.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing chromium from Debian's packages"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	fi

# The browser agent page, built from web/ with npm into splitmq/web/static (the wheel
# ships it built). Node and npm from Debian's packages when they are missing.
web:
	@if [ -f web/package.json ]; then \
		if ! command -v npm >/dev/null 2>&1; then \
			echo "installing nodejs and npm from Debian's packages"; \
			SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
			$$SUDO apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; \
		fi; \
		cd web && npm ci --no-audit --no-fund && npm run build; \
	fi

# The emulated Raspberry Pi of tests/pi: an ARM64 Debian bookworm root under QEMU
# user-mode emulation with splitmq[agent] inside, built once (minutes) and cached under
# .cache/pi-root by scripts/pi_root.py (keyed on the dependency versions). Debian's
# debootstrap, qemu-user-static and binfmt-support when missing. Without root the Pi
# tests skip, saying so (CI runs as root: they run there).
pi-root: $(STAMP)
	@if [ "$$(id -u)" != 0 ]; then echo "pi-root: needs root (tests/pi will skip)"; exit 0; fi; \
	if ! command -v debootstrap >/dev/null 2>&1 || [ ! -x /usr/bin/qemu-aarch64-static ] \
		|| ! command -v update-binfmts >/dev/null 2>&1; then \
		echo "installing debootstrap, qemu-user-static and binfmt-support from Debian's packages"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			debootstrap qemu-user-static binfmt-support; \
	fi; \
	$(PY) scripts/pi_root.py build

# The demo needs no root: with Mosquitto installed it uses it, else the embedded broker.
demo: $(STAMP)
	$(PY) -m splitmq demo $(DEMO_ARGS)

# TLS and ACLs need Mosquitto (and openssl): certificates and users by broker-config/*.sh.
demo-secure: $(STAMP) mosquitto
	$(PY) -m splitmq demo --secure $(DEMO_ARGS)

# The fast tier: unit and component tests (in-memory transport, the shipped test models).
# It needs only `pip install -e '.[agent,dev]'`.
# The whole suite runs on two workers (pytest-xdist) and gives a worker a test file at a
# time: a file's session fixtures (a converted model, a broker) are built once on its
# worker. The fast tier's fixtures are cheap, so its tests are dealt out one by one, to
# four workers: much of its time is spent waiting on timers, sockets and child
# processes, and with two workers both cores stood idle a third of the time (62 to 66 s
# on a 2-core machine; 39 to 46 s with four).
PYTEST_WORKERS ?= 2
PYTEST_FAST_WORKERS ?= 4
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --dist loadfile

# The tests start hundreds of Python processes (workers, agents, coordinators, import
# checks): each reads the compiled bytecode of splitmq and of the rewritten test modules
# from __pycache__ rather than compiling them again (8 s of a worker's start otherwise).
unexport PYTHONDONTWRITEBYTECODE

test-fast: $(STAMP) compiled
	$(PY) -m pytest -n $(PYTEST_FAST_WORKERS) --dist load -m "not integration and not slow"

test: venv mosquitto chromium web pi-root
	SPLITMQ_TFLITE214_PYTHON=$(CURDIR)/$(VENV_TFLITE)/bin/python $(PY) -m pytest $(PYTEST_PARALLEL)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: venv mosquitto chromium web
	$(PY) benchmarks/run_all.py

bench-quick: venv mosquitto chromium web
	$(PY) benchmarks/run_all.py --quick

clean:
	if [ -x $(PY) ]; then $(PY) scripts/compile.py --clean; fi
	rm -rf $(VENV) $(VENV_TFLITE) .pytest_cache .mypy_cache .ruff_cache
