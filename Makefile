# One entry point for people and CI. Every target sets up what it needs first; `make setup` is idempotent.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.modelfleet-installed
# The serving toolchain (tritonserver, perf_analyzer, Model Analyzer) pins protobuf 6; Pulumi's policy SDK
# pins protobuf 5. Each gets its own venv; modelfleet runs the toolchain as processes.
TRITON_VENV ?= .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.modelfleet-triton.stamp
MODELS := build/model-artifacts/.built
# Prometheus, promtool, Alertmanager from Debian (scripts/install_monitoring.sh; idempotent, needs root for apt).
MONITORING := monitoring-tools
# The gateway's key check, an Envoy dynamic module in C: cc and OpenSSL headers (scripts/install_build_tools.sh),
# then compiled once into ~/.cache/modelfleet (modelfleet.gateway.native_auth.module_path).
AUTHN_MODULE := gateway-module
STACK  ?= prod

.PHONY: setup plan test test-unit bench clean $(MONITORING) $(AUTHN_MODULE)
.PHONY: setup plan up down test test-unit bench clean

setup: $(STAMP) $(TRITON_STAMP) $(MODELS) $(MONITORING) $(AUTHN_MODULE)

$(MONITORING):
	bash scripts/install_monitoring.sh

$(AUTHN_MODULE): $(STAMP)
	bash scripts/install_build_tools.sh
	$(BIN)/python -c "from modelfleet.gateway.native_auth import module_path; print('gateway key check:', module_path())"

# Re-run only when the dependency pins change; `pip install -e` keeps the code itself live. The drift-report
# extra (Evidently) too: tests/test_drift_report.py runs it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,drift-report]'
	touch $@

# A real CPU tritonserver, perf_analyzer and Model Analyzer, from PyPI wheels (see scripts/install_triton.sh).
$(TRITON_STAMP): scripts/install_triton.sh
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	bash scripts/install_triton.sh $(TRITON_VENV)

# The example models' artefacts are generated, not committed.
$(MODELS): $(TRITON_STAMP) examples/build_models.py $(wildcard examples/backends/*.py)
	$(TRITON_VENV)/bin/python examples/build_models.py build/model-artifacts
	touch $@

plan: setup
	$(BIN)/modelfleet plan --stack $(STACK)

# The local stack in the background: Triton (and the gateway and monitoring it runs) on 127.0.0.1.
up: setup
	$(BIN)/modelfleet up --stack local

down:
	$(BIN)/modelfleet down --stack local

test: setup
	$(BIN)/pytest -q

test-unit: setup
	$(BIN)/pytest -q -m "not integration"

# Benchmarks print ratios measured side by side in one run; bench/tuning_gain.py (minutes) runs on its own.
bench: setup
	$(BIN)/python bench/plan_scale.py
	$(BIN)/python bench/serve_local.py

clean:
	rm -rf $(VENV) $(TRITON_VENV) build
