# Two commands: `make run` (the whole pipeline on config/config.yaml) and `make test`.
# TORCH pins the torch build pip installs first; override it for another platform, e.g.
#   make test TORCH="torch torchvision"
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1 torchvision==0.29.1
CONFIG ?= config/config.yaml
CORES ?= all

.PHONY: run test lint bench bench-fashion clean-results

$(BIN)/natv2: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# After Snakemake, `dvc commit` records what it built in dvc.lock (and DVC's cache), so that
# `dvc repro` and `dvc push` find the pipeline done; only where dvc.yaml is this config's. DVC
# copies each output back out of its cache (new modification times): `snakemake --touch` then
# restores the order Snakemake compares, so that neither tool has anything left to do.
run: $(BIN)/natv2
	$(BIN)/natv2 check-config --config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	if [ -d .dvc ] && $(BIN)/natv2 dvc-yaml --config $(CONFIG) --check; then \
	  $(BIN)/dvc commit --force --quiet && \
	  $(BIN)/snakemake --touch --cores 1 --quiet all --configfile $(CONFIG); fi

test: $(BIN)/natv2
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(BIN)/natv2
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint

# `make bench` (not in CI, about an hour on 2 cores): regenerates docs/BENCHMARKS.md from scratch;
# each script rewrites only its own block, so one can also be rerun alone (commands in the file).
BENCH_WORK ?= benchmarks/work
BENCH_MD ?= docs/BENCHMARKS.md
BENCH_SUPERNET = $(BENCH_WORK)/pipeline/project/results/supernet
bench: $(BIN)/natv2
	rm -rf $(BENCH_WORK) $(BENCH_MD)
	$(BIN)/python benchmarks/pipeline_cost.py --work $(BENCH_WORK)/pipeline --markdown $(BENCH_MD)
	$(BIN)/python benchmarks/search_quality.py --supernet $(BENCH_SUPERNET) --work $(BENCH_WORK)/search --markdown $(BENCH_MD)
	$(BIN)/python benchmarks/predictors.py --work $(BENCH_WORK)/search --markdown $(BENCH_MD)
	$(BIN)/python benchmarks/scaling.py --supernet $(BENCH_SUPERNET) --work $(BENCH_WORK)/scaling --markdown $(BENCH_MD)
	$(BIN)/python benchmarks/supernet_speed.py --threads 2 --resolutions 32 64 128 224 --markdown $(BENCH_MD)
	$(BIN)/python benchmarks/latency.py --threads 2 --markdown $(BENCH_MD)
	MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 $(BIN)/python benchmarks/supernet_speed.py --threads 2 --resolutions 224 --markdown $(BENCH_MD) --block supernet_speed_malloc

# `make bench-fashion` (not in CI, about 30 + 65 minutes on 2 cores): the Fashion-MNIST pipeline
# (config/fashion-mnist.yaml) in a fresh copy, then the search-quality benchmark on its trained
# super-network (NATv2, NAT and random search, 6 search seeds, 4 rounds; the ablations stay in
# the embedded default's search-quality block: at 6 seeds each would add about 20 minutes), their
# blocks of docs/BENCHMARKS.md rewritten.
FASHION_SUPERNET = $(BENCH_WORK)/fashion/project/results/fashion-mnist/supernet
FASHION_VARIANTS = natv2 nat random
bench-fashion: $(BIN)/natv2
	rm -rf $(BENCH_WORK)/fashion $(BENCH_WORK)/search-fashion
	$(BIN)/python benchmarks/pipeline_cost.py --config config/fashion-mnist.yaml --work $(BENCH_WORK)/fashion --archs 8 --repeats 1 --extra-resolutions --block pipeline_cost_fashion --section "## Fashion-MNIST pipeline" --markdown $(BENCH_MD)
	$(BIN)/python benchmarks/search_quality.py --config config/fashion-mnist.yaml --supernet $(FASHION_SUPERNET) --work $(BENCH_WORK)/search-fashion --rounds 4 --seeds 0 1 2 3 4 5 --variants $(FASHION_VARIANTS) --block search_quality_fashion --section "## Search quality on Fashion-MNIST: NATv2 vs NAT vs random" --markdown $(BENCH_MD)

clean-results:
	rm -rf results logs .snakemake
