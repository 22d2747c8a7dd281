# Two entry points (see README): `make demo` runs the pipeline on the synthetic dataset,
# `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench venv clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m xaipipe.forkserver run -- \
		$(BIN)/snakemake --cores all --scheduler greedy --configfile config/demo.yaml

# Two pytest workers (pytest-xdist), one test file each at a time: the end-to-end runs wait
# on SLURM and on single-threaded stages, so the other worker fills the cores meanwhile.
TEST_WORKERS ?= 2
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench

clean-results:
	rm -rf results/* .snakemake
