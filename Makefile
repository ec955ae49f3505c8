# Two set-up commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
# Faiss build (a pyproject extra): cpu, or gpu on a CUDA machine (`make FAISS=gpu install`).
FAISS ?= cpu
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Rules call `python -m pipeline.<stage>`: the venv's python must come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install demo demo-full test lint clean-demo scifact check-gpu

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: any looser spec may pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,$(FAISS)]"
	# pyserini without its heavy dependency set; what it imports is in pyproject.toml
	$(BIN)/pip install --quiet --no-deps pyserini==1.6.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/demo
	@cat results/table1.md

# The demo plus Table 3 (triplet distillation), Table 5 (every fusion method) and the HN / HN+ rounds; it reuses
# every job `make demo` ran.
demo-full: $(STAMP)
	$(BIN)/snakemake --profile profiles/demo-full
	@cat results/table1.md results/table3_ablation.md results/table5_fusion.md

# Real data: BEIR SciFact from ../shared/data, MiniLM, every distillation strategy (Table 4); run time per CPU: docs/results.md.
scifact: $(STAMP)
	$(BIN)/snakemake --profile profiles/scifact
	@cat results/table4_distillation.md

# Two pytest-xdist workers, one test at a time, the longest first (tests/conftest.py): the whole-DAG run on one
# worker while the other takes the rest.
test: $(STAMP)
	$(BIN)/ruff check --no-cache pipeline scripts tests benchmarks
	$(BIN)/python -m pytest -q -ra --durations=20 -n 2 --dist load --maxschedchunk 1

# The GPU paths (precision auto, fp16 with loss scaling, GPU encoding, faiss-gpu search against the CPU's) on a
# CUDA machine, in under 5 minutes; without a GPU it says so and exits 0. faiss-gpu: `make FAISS=gpu install`.
check-gpu: $(STAMP)
	$(BIN)/python benchmarks/check_gpu.py

# profiles/slurm against a real one-node SLURM on this machine (tests/cluster/slurm.sh: Debian's slurmctld,
# slurmd and munge, installed with apt-get when missing; needs root). Skips when they cannot be installed.
# SIGINT on time-out: pytest then runs the fixture that stops the daemons it started.
.PHONY: test-cluster
test-cluster: $(STAMP)
	PIPELINE_SLURM=1 timeout -s INT -k 120 3000 $(BIN)/python -m pytest -q -ra -s --durations=20 tests/cluster

lint: $(STAMP)
	$(BIN)/ruff check --no-cache pipeline scripts tests benchmarks
	$(BIN)/snakemake --lint --configfile config.yaml

clean-demo:
	rm -rf results/synthetic resources/synthetic logs/synthetic results/table*.tsv results/table*.md \
		results/report.html results/figures
