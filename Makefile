# flopwatt: `make run` probes this machine, `make test` runs the tests, `make bench` checks accuracy.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A range in pyproject keeps whatever torch a machine already has (a gaming PC's CUDA or ROCm build);
# a fresh venv gets this release. On Linux x86_64 PyPI's torch is the CUDA build; on Windows see README.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test bench gpu-check clean

$(BIN)/flopwatt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/flopwatt

run: setup
	$(BIN)/flopwatt probe --quick

test: setup
	$(BIN)/ruff check bench probes benchmarks tests
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks

gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
