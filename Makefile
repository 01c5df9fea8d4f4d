# The two commands a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: demo test bench docs clean venv

$(BIN)/activate: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@echo "compiling the numba kernels once (cached for later runs)..."
	$(BIN)/python -c "import kinetics; print(f'  done in {kinetics.warm_up():.1f} s')"
	touch $(BIN)/activate

venv: $(BIN)/activate

demo: venv
	$(BIN)/kinetics demo --out demo_output

test: venv
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run_all.py

docs: venv
	$(BIN)/pip install --quiet -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo_output .pytest_cache site
