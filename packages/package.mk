# Targets every package's Makefile includes; the root Makefile sets up the environment they use.
ROOT ?= $(abspath ../..)
PYTHON ?= $(ROOT)/.venv/bin/python
PYTEST = $(PYTHON) -m pytest -c $(ROOT)/pyproject.toml --rootdir $(ROOT)

.PHONY: unit-tests-local unit-tests-gpu-local integration-tests bench

# A tier with no tests in this package has nothing to run: pytest's "no tests collected" (5) is fine.
define run_tier
	@if [ -d tests/$(1) ]; then $(PYTEST) tests/$(1) || [ $$? -eq 5 ]; else echo "no tests/$(1) here"; fi
endef

unit-tests-local: ## This package's unit tests
	$(call run_tier,unit)

unit-tests-gpu-local: ## This package's GPU unit tests (skipped with a reason without CUDA)
	$(call run_tier,unit-gpu)

integration-tests: ## This package's integration tests
	$(call run_tier,integration)
