# Two commands for a fresh machine:  `make run` (the whole study) and `make test` (every test;
# CI). `make check` is the fast tier for the edit loop (unit tests on synthetic data).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch/torchvision pins: on machines with a local wheel cache these install from disk;
# elsewhere pip downloads them. Override e.g. `make TORCH_SPEC="torch torchvision" run`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
RUN_ARGS ?=

.PHONY: run quick test check data lint bench stress clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	touch $@

# The data: already there (cache, Debian package) -> done; else the Debian package where apt-get
# can install it (as root); else a verified download from the canonical mirrors.
data: $(VENV)/.installed
	@$(VENV)/bin/fashionlab data verify >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null || true; \
	  fi; \
	  $(VENV)/bin/fashionlab data verify >/dev/null 2>&1 || $(VENV)/bin/fashionlab data download; }
	@$(VENV)/bin/fashionlab data where

run: data
	$(VENV)/bin/fashionlab run $(RUN_ARGS)

quick: data
	$(VENV)/bin/fashionlab run --quick $(RUN_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q --durations=25

check: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(VENV)/.installed
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

# The multi-worker studies and a kill/resume cycle, repeated under CPU and disk load.
stress: $(VENV)/.installed
	$(PY) benchmarks/stress_workers.py --rounds 20 --load

clean-venv:
	rm -rf $(VENV)
