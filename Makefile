# Two commands for a new user: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# crowd-kit is a reference peer for tests and benchmarks only. Its package metadata pulls in
# transformers (and so torch); its aggregation needs none of that, so it goes in without deps
# and the few modules it imports come from the `peers` extra.
PEERS  := crowd-kit==1.4.2

.PHONY: install install-test install-bench demo test bench clean label-studio ui-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install --quiet -e '.[test,peers]'
	$(PIP) install --quiet --no-deps $(PEERS)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/labelloop demo

# Label Studio for the integration tests, in a venv of its own cached outside the clone
# ($$LABELLOOP_CACHE, default ~/.cache/labelloop), so a clean clone reuses it. Only CI builds
# it before the tests (about 1.5 minutes from a warm pip cache, 5 from a cold one); elsewhere
# the tests that need it skip until `make label-studio` has run.
label-studio:
	@bash scripts/install_label_studio.sh >/dev/null  # prints the install time when it installs

# --durations=30: every log (CI's too) lists the slowest tests, so the suite's time stays visible.
# eatmydata (Debian's package; CI installs it) turns fsync into a no-op for the tests: the
# store's SQLite files commit with synchronous=FULL, and thousands of test commits waited on
# the disk (BENCHMARKS.md, "Test suite time"). No test can observe a power loss; without it
# the tests run the same, only slower.
EATMYDATA := $(shell command -v eatmydata 2>/dev/null)
test: install $(if $(filter true,$(CI)),label-studio)
	$(EATMYDATA) $(PY) -m pytest -q --durations=30 $(PYTEST_ARGS)

# The MLflow UI as a manager opens it: a small comparison, `mlflow server` on it, the printed link
# in headless Chromium (Debian's chromium and chromium-driver); screenshots in
# $$LABELLOOP_CI_ARTIFACTS/mlflow-ui (default ci-artifacts/). `make test` runs it too.
ui-check: install
	LABELLOOP_CI_ARTIFACTS=$${LABELLOOP_CI_ARTIFACTS:-$(CURDIR)/ci-artifacts} $(PY) -m pytest -q tests/experiments/test_mlflow_ui.py
	@echo "screenshots: $${LABELLOOP_CI_ARTIFACTS:-$(CURDIR)/ci-artifacts}/mlflow-ui"

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
