# The two commands of the README: `make demo` and `make test`. Each creates the virtualenv,
# installs the project and brings the test bed up (tests/bed/up) before doing its job.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: demo test lint bed venv airflow-db clean

demo: venv bed airflow-db
	$(BIN)/python scripts/demo.py

# Independent tests run side by side (pytest-xdist): three workers on the shared bed (this
# machine kind has 2 cores; a fourth made the load tests share them with Airflow's own services
# and lose "requests not sent" to CPU starvation, not to a deployment), each test
# file on one worker, each worker with its own Airflow metadata database (tests/conftest.py).
test: venv bed airflow-db lint
	$(BIN)/pytest -n 3 --dist loadfile --no-loadscope-reorder

lint: venv
	$(BIN)/ruff check provider tests dags scripts
	$(BIN)/ruff format --check provider tests dags scripts
	$(BIN)/mypy

bed:
	tests/bed/up

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	touch $@

airflow-db: venv
	$(BIN)/airflow db migrate >/dev/null

clean:
	rm -rf $(VENV) $(AIRFLOW_HOME)
