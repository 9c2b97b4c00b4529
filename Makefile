# `make demo` and `make test` set up everything they need on a fresh Debian/Ubuntu machine.
PYTHON ?= python3.11
VENV := .venv
LSVENV := .venv-labelstudio
PY := $(VENV)/bin/python
LABEL_STUDIO_VERSION ?= 1.23.2
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# Debian packages the crawler and its tests start for real
SYSTEM_PACKAGES := chromium tinyproxy redis-server

.PHONY: setup system demo test test-kernels lint bench bench-crawl bench-lake bench-al bench-train gpu-check clean

setup: system $(VENV)/.installed $(LSVENV)/.installed

system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" \
			|| missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3.11 python3.11-venv; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned by constraints.txt, so pip takes the CPU wheel instead of a CUDA build
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

$(LSVENV)/.installed:
	@$(PYTHON) -c "import ensurepip" 2>/dev/null || { $(SUDO) apt-get update && $(SUDO) apt-get install -y python3.11 python3.11-venv; }
	test -x $(LSVENV)/bin/python || $(PYTHON) -m venv $(LSVENV)
	$(LSVENV)/bin/python -m pip install -q --upgrade pip
	$(LSVENV)/bin/python -m pip install -q label-studio==$(LABEL_STUDIO_VERSION)
	touch $@

demo: setup
	$(VENV)/bin/harvest demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# test files spread over this many processes, each file whole in one (its module fixtures
# started once); most tests wait on servers and child processes, so two overlap well
TEST_WORKERS ?= 2

test: setup lint
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

# the numeric tests under every OpenBLAS kernel this CPU runs (not part of `make test`)
test-kernels: setup
	tests/kernels.sh

bench: bench-crawl bench-lake bench-train

bench-crawl: setup
	$(PY) -m bench.crawl
	$(PY) -m bench.scaleout
	$(PY) -m bench.ratelimit

bench-lake: setup
	$(PY) -m bench.lake

# not in `bench`: about 40 minutes of Label Studio round trips
bench-al: setup
	$(PY) -m bench.al

# the models, auto and tune against the TF-IDF baseline on AG News (../shared/datasets), on the CPU
bench-train: setup
	$(PY) -m bench.train
	$(PY) -m bench.models

# on a machine with a CUDA GPU: both models on AG News, GPU against CPU, under 5 minutes
gpu-check: $(VENV)/.installed
	$(PY) -m bench.gpu_check

clean:
	rm -rf demo lake reports .labelstudio mlflow models
