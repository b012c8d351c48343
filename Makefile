# Works on a fresh machine with only python3 and make: bootstraps uv, syncs the locked env, runs.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.uv-bootstrap/bin/uv)
PYTEST_ARGS ?=

.PHONY: uv sync demo test test-all benchmark gpu-check clean

uv:  # uv from PATH, else a project-local copy (works where pip --user is not allowed)
	@test -x "$(UV)" || (python3 -m venv .uv-bootstrap && .uv-bootstrap/bin/pip install --quiet uv)

sync: uv
	$(UV) sync --locked --extra test

demo: sync
	$(UV) run openscene-ray demo

test: sync
	$(UV) run pytest $(PYTEST_ARGS)

test-all: sync
	$(UV) run pytest --run-slow $(PYTEST_ARGS)

benchmark: sync
	$(UV) run python jobs/benchmark.py all

gpu-check: sync  # on a GPU machine: checks and timings as JSON (stdout and benchmarks/results/)
	$(UV) run python -m benchmarks.gpu_check

clean:
	rm -rf .pytest_cache build dist *.egg-info .uv-bootstrap
