# flopwatt: `make run` probes this machine, `make test` runs the tests, `make bench` checks accuracy.
VENV := .venv
# A venv keeps its programs in Scripts/ on Windows (make from MSYS2 or Chocolatey, in Git Bash),
# where the interpreter is python; bin/ and python3 everywhere else.
ifeq ($(OS),Windows_NT)
PYTHON ?= python
BIN := $(VENV)/Scripts
else
PYTHON ?= python3
BIN := $(VENV)/bin
endif
# A range in pyproject keeps whatever torch a machine already has (a gaming PC's CUDA or ROCm build);
# a fresh venv gets this release. On Linux x86_64 PyPI's torch is the CUDA build; on Windows see README.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup run test bench gpu-check mutation clean

# Stamped when the install finishes, so an interrupted install is redone; pyproject changes redo it too.
INSTALLED := $(VENV)/.flopwatt-installed

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

setup: $(INSTALLED)

run: setup
	$(BIN)/flopwatt probe --quick

test: setup
	$(BIN)/ruff check bench probes benchmarks tests
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks

gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check

# Mutation testing (tests/mutation.py, which maps each module to its tests): not part of `make test`,
# it runs a module's tests once per mutant. `make mutation MODULE=bench/server/validation.py` runs one
# target; niced, since it keeps a core busy for minutes to hours. Output: .mutation/ (ignored).
MUTATION_INSTALLED := $(VENV)/.flopwatt-mutation-installed

$(MUTATION_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -e '.[test,mutation]'
	touch $@

mutation: $(MUTATION_INSTALLED)
	nice -n 10 $(BIN)/python tests/mutation.py $(MODULE) $(if $(SAMPLE),--sample $(SAMPLE)) $(if $(RESUME),--resume)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mutation
