# Two commands do all the set-up on a fresh machine (see README):
#   make smoke   installs into .venv, then runs the whole offline smoke DAG (report at the end)
#   make test    installs into .venv, then runs the tests (the SLURM one too where SLURM is installed)
#   make test-cluster  the real-SLURM test alone (root; apt-get install slurmctld slurmd slurm-client munge)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: smoke test test-cluster install clean

$(BIN)/.installed: pyproject.toml requirements-nodeps.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,cluster]'
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements-nodeps.txt
	touch $@

install: $(BIN)/.installed

smoke: install
	$(BIN)/snakemake --cores $(CORES)

test: install
	HF_HUB_OFFLINE=1 BENCH_OFFLINE=1 $(BIN)/python -m pytest -n 2 -q

test-cluster: install
	HF_HUB_OFFLINE=1 BENCH_OFFLINE=1 $(BIN)/python -m pytest -q -m cluster tests/cluster

clean:
	rm -rf results/smoke resources .snakemake

# The prepared GPU check (benchmarks/gpu_check.sh): on one GPU, offline, < 8 min; results/gpu_check/
.PHONY: gpu-check
gpu-check:
	bash benchmarks/gpu_check.sh
