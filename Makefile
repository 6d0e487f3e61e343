# The kit's user interface. `make help` lists every target.
# First use of any target that needs Python creates .venv and installs the kit (pinned).

include versions.env
export FLWR_VERSION TORCH_VERSION KAFKA_VERSION PYTHON_VERSION

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= cloud,dev
RUNTIME ?= auto
QUICK ?=
ARGS ?=
PYTEST_ARGS ?=
HOGS ?= 2
export RUNTIME
# Containers write bind-mounted files as you (docker-compose.yml reads KIT_UID and KIT_GID).
KIT_UID ?= $(shell id -u)
KIT_GID ?= $(shell id -g)
export KIT_UID KIT_GID
# The venv's bin must be on PATH: the SuperLink starts flower-superexec from there.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help install test test-unit test-integration test-labs test-under-load test-containers images up down status logs doctor \
	bench bench-edge bench-stream bench-fl bench-privacy certs clean lab-%

help: ## List every target with one line each
	@grep -hE '^[a-zA-Z0-9_%-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-18s %s\n", $$1, $$2}'
	@echo ""
	@echo "  Options: RUNTIME=auto|local|docker|external  QUICK=1  ARGS=\"key=value ...\""
	@echo "  Labs:    make lab-00 ... (an unknown number lists the labs)"

$(STAMP): pyproject.toml versions.env
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version.split()[0] + "; set PYTHON=python3.11")'
	@test -x $(PY) || { echo ">> creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); }
	@echo ">> installing the kit with extras [$(EXTRAS)] (first run takes a few minutes)"
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -e '.[$(EXTRAS)]' "torch==$(TORCH_VERSION)"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the kit (done automatically on first use)

lab-%: $(STAMP) ## Run a lab: make lab-07 [QUICK=1] [RUNTIME=local] [ARGS="devices=5"]
	$(PY) -m cloud.cli lab $* --runtime $(RUNTIME) $(if $(filter 1 true yes,$(QUICK)),--quick) $(ARGS)

test: $(STAMP) ## Set up, then run the whole test suite (unit, integration, labs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP) ## Run only the fast unit tier
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

test-integration: $(STAMP) ## Run only the integration tier (real broker, SuperLink, ...)
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-labs: $(STAMP) ## Run every lab in quick mode and check its numbers
	$(PY) -m pytest -m labs $(PYTEST_ARGS)

test-containers: $(STAMP) ## Run the container tier: images, the compose stack, labs with RUNTIME=docker
	$(PY) -m pytest -m containers --containers $(PYTEST_ARGS)

test-under-load: $(STAMP) ## Run the integration and lab tiers beside N busy processes (HOGS=2)
	$(PY) -m pytest -m "integration or labs" --cpu-hog $(HOGS) $(PYTEST_ARGS)

images: ## Build the kit's cloud and edge images (docker compose build)
	docker compose --env-file versions.env --profile lab --profile edge build

up: $(STAMP) ## Start the stack (local processes, or compose where Docker answers)
	$(PY) -m cloud.cli up --runtime $(RUNTIME)

down: $(STAMP) ## Stop everything `make up` started
	$(PY) -m cloud.cli down --runtime $(RUNTIME)

status: $(STAMP) ## Show each service and whether it is healthy
	$(PY) -m cloud.cli status --runtime $(RUNTIME)

logs: $(STAMP) ## Show the last lines of each service's log
	$(PY) -m cloud.cli logs --runtime $(RUNTIME)

doctor: $(STAMP) ## Check Python, extras, Docker, ports, LAN address, GPU, edge wheels
	$(PY) -m cloud.cli doctor

bench: $(STAMP) ## Run every benchmark into one report (runs/bench/<time>/report.md)
	$(PY) -m cloud.cli bench all $(ARGS)

bench-edge: $(STAMP) ## Edge runtimes: latency and throughput against torch eager
	$(PY) -m cloud.cli bench edge $(ARGS)

bench-stream: $(STAMP) ## Broker, device pipeline and cloud processor rates
	$(PY) -m cloud.cli bench stream $(ARGS)

bench-fl: $(STAMP) ## Federated round time and overhead for 1-10 SuperNodes
	$(PY) -m cloud.cli bench fl $(ARGS)

bench-privacy: $(STAMP) ## DP-SGD and CKKS costs
	$(PY) -m cloud.cli bench privacy $(ARGS)

certs: $(STAMP) ## Make a CA and server certificate (LAN address and name in the SAN) under certs/
	$(PY) -m cloud.cli certs

clean: ## Remove run folders (keeps .venv)
	rm -rf runs
