# Two commands: `make run` (the whole pipeline on config/config.yaml) and `make test`.
# TORCH pins the torch build pip installs first; override it for another platform, e.g.
#   make test TORCH="torch torchvision"
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1 torchvision==0.29.1
CONFIG ?= config/config.yaml
CORES ?= all

.PHONY: run test lint bench clean-results

$(BIN)/natv2: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

run: $(BIN)/natv2
	$(BIN)/natv2 check-config --config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)

test: $(BIN)/natv2
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(BIN)/natv2
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

bench: $(BIN)/natv2
	$(BIN)/python benchmarks/supernet_speed.py --threads 2 --markdown docs/BENCHMARKS.md

clean-results:
	rm -rf results logs .snakemake
