# The README's two commands: `make serve` and `make test`. Both set up what is missing
# (a virtual environment with the project and its test extras, Graphviz's `dot`, Neovim,
# Chromium for the web viewer's tests)
# and are safe to run again.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opgraph-installed
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo)
APT_GET := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: setup system-deps test test-fast lint serve bench clean

setup: system-deps $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV) || { $(APT_GET) update -qq && $(APT_GET) install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

system-deps:
	@missing=""; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	command -v nvim >/dev/null 2>&1 || missing="$$missing neovim"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing with apt-get"; \
		$(APT_GET) update -qq && $(APT_GET) install -y -qq $$missing; \
	fi

lint: setup
	$(PY) -m ruff check .

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

# The quick loop while working: every test not marked slow (the full run is `make test`).
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -m "not slow"

# Durable by default: the graphs are kept in .opgraph/data.sqlite3 in the checkout (printed at
# start); `opgraph serve --memory` is the server that forgets them.
DATA ?= $(CURDIR)/.opgraph/data.sqlite3

# The server on its two defaults: the protocol on tcp://127.0.0.1:7450, and the web viewer (the
# page, and the protocol over a WebSocket) on http://127.0.0.1:7451, whose URL it prints.
serve: setup
	$(VENV)/bin/opgraph serve --listen tcp://127.0.0.1:7450 --listen http://127.0.0.1:7451 --data $(DATA)

bench: setup
	$(PY) bench/run.py
	$(PY) bench/server.py
	$(PY) bench/store.py
	$(PY) bench/publish.py
	$(PY) bench/higher.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
