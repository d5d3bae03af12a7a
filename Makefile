# Two entry points: `make demo` (install + the main job) and `make test` (install + lint + types + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: torch install install-cli demo test lint bench mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU build that lies on this kind of machine; a bare range would pull a
# multi-GB CUDA build. Where torch is already importable nothing is reinstalled.
torch: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "torch==2.13.0" || $(BIN)/pip install -q "torch>=2.4"

# dev = the cli extra (matplotlib, scikit-learn, rich, platformdirs) + test and lint tools
install: torch
	@$(BIN)/pip install -q -e ".[dev]"

# the demo needs only the library and the cli extra
install-cli: torch
	@$(BIN)/pip install -q -e ".[cli]"

demo: install-cli
	$(BIN)/hypernet demo

lint: install
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest tests

# Per-sample weights, the designs table and the peers; the kernel benchmark (benchmarks/kernels.py) compares
# against neural-tangents where that is installed, so it is run by hand (see README).
# peers.py measures hyperlight, hypnettorch and hyper-nn beside us: the bench extra, and hyper-nn's
# torch path without the jax and flax it declares.
bench: install
	@$(BIN)/pip install -q -e ".[dev,bench]"
	@$(BIN)/pip install -q --no-deps "hyper-nn==0.2.2"
	$(BIN)/python benchmarks/per_sample.py --json docs/benchmarks/per_sample.json
	$(BIN)/python benchmarks/designs.py --json docs/benchmarks/designs.json
	$(BIN)/python benchmarks/scaling.py --threads 2 --json docs/benchmarks/scaling.json
	$(BIN)/python benchmarks/lowrank_memory.py --threads 2 --json docs/benchmarks/lowrank_memory.json
	$(BIN)/python benchmarks/peers.py --threads 2 --json docs/benchmarks/peers.json
	$(BIN)/python benchmarks/peers.py --parts shared --threads 1 --repeat 20 --json docs/benchmarks/peers_shared.json
	$(BIN)/python benchmarks/peers.py --parts shared --threads 1 --repeat 40 --build-order hypernet,hyperlight,hypnettorch,hyper-nn --json docs/benchmarks/peers_shared_hypernet_first.json
	$(BIN)/python benchmarks/peers.py --parts shared --threads 1 --repeat 40 --build-order hyper-nn,hypnettorch,hyperlight,hypernet --json docs/benchmarks/peers_shared_hypernet_last.json

# Mutation testing of one module with its own tests: `make mutation MODULE=spec` (list: MODULE=--list).
# Minutes per module on 2 cores; scores and equivalent mutants in docs/testing.md.
MODULE ?= --list
mutation: install
	$(BIN)/python tools/mutation.py $(MODULE)

clean:
	rm -rf $(VENV) .mutation build *.egg-info .pytest_cache .mypy_cache .ruff_cache
