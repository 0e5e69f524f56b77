# collapse — two commands on a fresh machine with Python 3.11 and make:
#   make demo   the quickstart experiment (building the CPU base first) and its report under runs/reports/
#   make test   the test suite
#   make replicate  the replication suite (experiments/replications/) and reports/replications/
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch. On machines whose pip does not already find it
# (e.g. no local wheel), point pip at PyTorch's CPU index:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
PIP_TORCH_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install bench replicate clean help

help:
	@echo "make demo   - install, run experiments/quickstart.yaml (the CPU base is pretrained on first use), report into runs/reports/quickstart/"
	@echo "make test   - install, run the test suite"
	@echo "make bench  - the benchmarks of BENCHMARKS.md"
	@echo "make replicate - the six replication sweeps (~90 min on 2 cores), reports/replications/FINDINGS.md"

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (set PYTHON=...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The pinned CPU torch first: a later range in the dependencies is then already met.
	$(PY) -m pip install -q torch==$(TORCH_VERSION) $(PIP_TORCH_ARGS)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/collapse run experiments/quickstart.yaml
	$(VENV)/bin/collapse report quickstart --out runs/reports

test: install
	$(PY) -m pytest -q

# Resumable: run it again after an interruption; finished runs are skipped.
PARALLEL ?= 2
replicate: install
	COLLAPSE=$(VENV)/bin/collapse PARALLEL=$(PARALLEL) scripts/replicate.sh

bench: install
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_sample.py

clean:
	rm -rf $(VENV) runs
