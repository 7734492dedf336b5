# Loupe: `make run` opens the app, `make test` runs the suite. Both set up what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null && echo sudo)
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup run test bench clean-cache

setup: $(STAMP) $(FASHION_DIR)

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

run: setup
	$(VENV)/bin/streamlit run streamlit_app.py

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_data.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_metrics.py

clean-cache:
	rm -rf $${LOUPE_CACHE_DIR:-$$HOME/.cache/loupe}
