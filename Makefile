# medseg: two commands do everything on a fresh machine.
#   make run   - set up if needed, then start the app on http://localhost:8501 (bundled sample case)
#   make test  - set up if needed (incl. Debian chromium + playwright), then run the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
MEDSEG := $(VENV)/bin/medseg
PORT ?= 8501
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-test run test test-fast lint fuzz bench loadtest checkpoints table1 clean help

help:
	@echo "make run | make test | make test-fast | make lint | make fuzz | make bench | make loadtest | make checkpoints | make table1 | make clean"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# the pinned requirements, then medseg itself (editable: `import medseg_core` and the `medseg` command anywhere)
$(VENV)/.runtime.stamp: requirements.txt constraints.txt pyproject.toml | $(VENV)/bin/python
	$(PIP) -r requirements.txt -c constraints.txt
	$(PIP) --no-deps --no-build-isolation -e .
	@touch $@

$(VENV)/.dev.stamp: requirements-dev.txt constraints.txt $(VENV)/.runtime.stamp
	$(PIP) -r requirements-dev.txt -c constraints.txt
	@touch $@

/usr/bin/chromium:
	@if [ "$$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null

setup: $(VENV)/.runtime.stamp

setup-test: $(VENV)/.dev.stamp /usr/bin/chromium

run: setup
	$(MEDSEG) app --server.port $(PORT) --server.headless true

test: setup-test
	$(PY) -m pytest -q -p no:cacheprovider tests

test-fast: setup-test
	$(PY) -m pytest -q -p no:cacheprovider -m "not browser and not slow" tests

# Linters (configured in pyproject.toml; .ci/run calls this before `make test`, which does not need it):
# ruff check + ruff format --check on the app, library, tests and benchmarks; mypy on medseg_core.
lint: $(VENV)/.dev.stamp
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy medseg_core

fuzz: setup-test
	MEDSEG_FUZZ_EXAMPLES=$${MEDSEG_FUZZ_EXAMPLES:-20000} MEDSEG_FUZZ_RANDOM=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_bad_inputs.py -k fuzz

# Benchmarks (never part of make test): writes benchmarks/RESULTS.md and results.json (about 2 min here).
bench: setup-test
	$(PY) benchmarks/run_all.py

# Load test (issue 21; never part of make test): N concurrent Chromium sessions, each uploading a large CT,
# running a model, moving the slider and exporting; peak RSS, latency percentiles, failures -> RESULTS.md.
# Defaults: 6 sessions, 300 x 512 x 512 CTs, MEDSEG_MEMORY_GB=8; e.g. LOADTEST_ARGS="--sessions 3 --budget-gb 4".
LOADTEST_ARGS ?=
loadtest: setup-test
	$(PY) benchmarks/loadtest.py $(LOADTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts

# Train every shipped demo checkpoint on this CPU (synthetic data is generated on first use).
# One model: make checkpoints MODELS=ovary_unet. About 2 h for all thirteen (the cards sum to 6980 s) on 2 CPU cores.
MODELS ?= ovary_slice_classifier ovary_unet ovary_attention_unet ovary_tl5 prostate_microus gi_unetpp_effb3 \
          us_mtl_effb0 us_mtl_unet us_cascade us_denoiser unet3d unetr3d vnet3d
checkpoints: setup
	@for m in $(MODELS); do echo "== $$m"; $(MEDSEG) train --config configs/demo/$$m.yaml || exit 1; done
	@rm -f checkpoints/*_last.safetensors checkpoints/*_last.json

# Report 000 Table 1 (side masking off / oracle / two-pass) with the shipped ovary checkpoints on
# fresh synthetic pelvic phantoms; the run folder opens in the app's Failure gallery.
# Your own models too, by name or path: make table1 TABLE1_MODELS="runs/000_m3 ovary_unet"
TABLE1_MODELS ?= ovary_unet ovary_attention_unet ovary_tl5
table1: setup
	$(MEDSEG) cohort --models $(TABLE1_MODELS) \
	  --data data/synthetic/pelvic_eval_seed7 --adapter ut_endomri_d2 --synthetic pelvic:12:7 \
	  --mc 4 --out runs/cohorts/table1_pelvic

# Every result row of a report (configs/reproduce/rows/NNN.yaml), one config each:
#   make reproduce-001            lists the commands (train per config, evaluate per row with the report's protocol)
#   make reproduce-001 RUN=1      runs them on the real dataset (place it under data/) and prints the report's
#                                 numbers beside the reproduced ones (runs/reproduce/001/table.md)
#   make reproduce-001 SMOKE=1    the same on small synthetic phantoms, one epoch of two steps per config
reproduce-%: setup
	$(MEDSEG) reproduce $* $(if $(or $(RUN),$(SMOKE)),--run) $(if $(SMOKE),--smoke)
