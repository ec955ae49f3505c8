# Two set-up commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Rules call `python -m pipeline.<stage>`: the venv's python must come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo test lint clean-demo

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: any looser spec may pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	# pyserini without its heavy dependency set; what it imports is in pyproject.toml
	$(BIN)/pip install --quiet --no-deps pyserini==1.6.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/demo
	@cat results/table1.md

test: $(STAMP)
	$(BIN)/ruff check --no-cache pipeline tests benchmarks
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check --no-cache pipeline tests benchmarks
	$(BIN)/snakemake --lint --configfile config.yaml

clean-demo:
	rm -rf results/synthetic resources/synthetic logs/synthetic results/table*.tsv results/table*.md \
		results/report.html results/figures
