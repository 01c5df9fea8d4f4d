# The two commands a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: demo test bench docs clean venv

# The library and numba only: the demo needs no test tools. Kernels are not compiled here: each
# group compiles on first use (a note on stderr says so), so a user pays only for the kernels
# their models use (an affine fit never compiles the stiff integrator), once, cached on disk.
$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[fast]'
	touch $(BIN)/activate

venv: $(BIN)/activate

$(VENV)/.test-extras: pyproject.toml $(BIN)/activate
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.test-extras

demo: venv
	$(BIN)/kinetics demo --out demo_output

test: venv $(VENV)/.test-extras
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

docs: venv
	$(BIN)/pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo_output .pytest_cache site
