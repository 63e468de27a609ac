# Two commands set everything up: `make run` and `make test`. See README.md.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

PG_URL ?= postgres://postgres@127.0.0.1:5432/nightstorm
BENCH_PG_URL ?= postgres://postgres@127.0.0.1:5432/nightstorm_bench
LOAD_PG_URL ?= postgres://postgres@127.0.0.1:5432/nightstorm_load
LOAD_REDIS_URL ?= redis://127.0.0.1:6379/13
# `make load`: seconds of workload split over the stages (users per stage, comma-separated).
LOAD_SECONDS ?= 180
LOAD_STAGES ?= 16,32,64,96,128,160
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
SQLITE_TEST_NAME ?= $(CURDIR)/.test-sqlite.sqlite3
PYTEST_ARGS ?=
# `make test` measures coverage across both runs and prints the report at the end.
COVERAGE ?=

.PHONY: install run test test-postgres test-sqlite services bench load lint format clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# The platform on the embedded default (SQLite, no services) unless DATABASE_URL/REDIS_URL
# say otherwise: web server, task cluster and orchestrator in the foreground; Ctrl-C stops them.
run: install
	DEBUG=$${DEBUG:-1} $(PY) manage.py run_platform

services:
	@bash scripts/ensure_services.sh

# The whole suite on PostgreSQL + Redis, then the part meant for SQLite on SQLite; coverage
# of both runs together (pytest-cov) is printed at the end.
test: install services
	@$(MAKE) --no-print-directory test-postgres COVERAGE="--cov --cov-report="
	@$(MAKE) --no-print-directory test-sqlite COVERAGE="--cov --cov-append --cov-report=term"

test-postgres:
	DATABASE_URL=$(PG_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest -q $(COVERAGE) $(PYTEST_ARGS)

test-sqlite:
	rm -f $(SQLITE_TEST_NAME)
	DATABASE_URL=sqlite:///$(CURDIR)/.sqlite-unused.sqlite3 SQLITE_TEST_NAME=$(SQLITE_TEST_NAME) \
	  REDIS_URL= $(PY) -m pytest -q -m "not postgres and not redis" $(COVERAGE) $(PYTEST_ARGS)

bench: install services
	DATABASE_URL=$(BENCH_PG_URL) REDIS_URL=redis://127.0.0.1:6379/14 DEBUG=0 \
	  SECRET_KEY=bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz \
	  SECURE_SSL_REDIRECT=0 THROTTLE_ANON=100000000/min THROTTLE_AUTH=100000000/min \
	  THROTTLE_USER=100000000/min THROTTLE_REGISTER=100000000/min $(PY) -m bench

# Every process (gunicorn, qcluster, orchestrator, gateway) under a mixed locust workload, as a
# step ramp; then the invariants. Reports under .load/ (see docs/operations.md, "Load").
load: install services
	DATABASE_URL=$(LOAD_PG_URL) REDIS_URL=$(LOAD_REDIS_URL) DEBUG=0 \
	  SECRET_KEY=load-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz \
	  SECURE_SSL_REDIRECT=0 THROTTLE_ANON=100000000/min THROTTLE_AUTH=100000000/min \
	  THROTTLE_USER=100000000/min THROTTLE_REGISTER=100000000/min DB_CONN_MAX_AGE=60 \
	  LOAD_SECONDS=$(LOAD_SECONDS) LOAD_STAGES=$(LOAD_STAGES) $(PY) -m load

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles .screenshots $(SQLITE_TEST_NAME) .coverage .load
