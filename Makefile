# Loupe: `make run` opens the app, `make test` runs the suite. Both set up what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)
FASHION_DIR := /usr/share/datasets/fashion-mnist
CHROMIUM := /usr/bin/chromium

.PHONY: setup run test lint format bench bench-gpu clean-cache

setup: $(STAMP) $(FASHION_DIR) $(CHROMIUM)

# Reinstall only when requirements.txt changed: a second `make setup` takes well under a second.
$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

# The real Fashion-MNIST photos come from Debian's dataset-fashion-mnist package (offline, no download).
$(FASHION_DIR):
	@if command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
	  echo "warning: could not install dataset-fashion-mnist; builtin:fashion-* datasets will be unavailable"; \
	else echo "warning: no apt-get; install Fashion-MNIST into $(FASHION_DIR) or set LOUPE_FASHION_MNIST_DIR"; fi

# The browser tests (tests/e2e) drive Debian's Chromium through Playwright (Playwright's own download is not used).
$(CHROMIUM):
	@if command -v apt-get >/dev/null 2>&1; then \
	  $(SUDO) apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) apt-get install -y -q chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the browser tests (tests/e2e) will be skipped"; \
	else echo "warning: no apt-get; install Chromium at $(CHROMIUM) or set LOUPE_CHROMIUM, or the browser tests are skipped"; fi

run: setup
	$(VENV)/bin/streamlit run streamlit_app.py

test: setup lint
	$(PY) -m pytest -q

# ruff (settings in ruff.toml): lint and formatting are checked by `make test`; `make format` fixes both.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Each prints a table beside the plain recipe; figures and machines are kept in bench/RESULTS.md.
bench: setup
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_accuracy.py
	$(PY) bench/bench_probe.py
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_predict.py
	$(PY) bench/bench_explain.py
	$(PY) bench/bench_sweep.py

# The GPU check (bench/bench_gpu.py, under 8 minutes on one GPU); DRY_RUN=1 walks every code path on the CPU.
bench-gpu: setup
	$(PY) bench/bench_gpu.py $(if $(filter-out 0,$(DRY_RUN)),--dry-run)
	$(PY) bench/bench_recipes.py

clean-cache:
	rm -rf $${LOUPE_CACHE_DIR:-$$HOME/.cache/loupe}
