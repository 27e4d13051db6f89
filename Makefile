# The exchange failure dashboard. `make run` and `make test` are all a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000
export PYTHONUNBUFFERED := 1

.PHONY: run run-multi test test-fast bench soak chromium check clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

var:
	mkdir -p var

# Settings fail closed (DJANGO_DEBUG off, a real secret required). The embedded default asks
# for the local dev posture, and so do the suite, the bench and the soak that drive it.
run run-multi test test-fast bench soak: export DJANGO_DEBUG ?= 1

# The embedded default's own secret: random, made once, readable by its owner only; every
# manage.py command with the same EXCHANGE_VAR_DIR reads it (exchange_ui/settings.py).
SECRET_FILE := $(or $(EXCHANGE_VAR_DIR),var)/secret_key
$(SECRET_FILE): | var
	@mkdir -p $(dir $@) && umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(60))' > $@

run: $(STAMP) $(SECRET_FILE) | var
	$(PY) manage.py migrate --noinput -v 0
	PORT=$(PORT) $(PY) manage.py run_exchange --port $(PORT)

# The local multi-process topology: moto, Redis (started if REDIS_URL's local server is not up),
# daphne on channels-redis and one SimFill process per region and AZ, under one supervisor.
run-multi: $(STAMP) $(SECRET_FILE) | var
	$(PY) manage.py migrate --noinput -v 0
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} PORT=$(PORT) $(PY) manage.py run_multi --port $(PORT)

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The API's tests run a second time on PostgreSQL, which refuses what SQLite lets through
# (a NUL in text, for one). .ci/run starts the loopback server these expect.
API_TESTS := tests/test_api.py tests/test_fuzz_api.py tests/test_faults_api.py tests/test_mirror.py
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test

test: $(STAMP) chromium | var
	$(PY) -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m pytest -n 2 --dist loadgroup -q $(API_TESTS)

test-fast: $(STAMP) | var
	$(PY) -m pytest -q -m "not browser" $(PYTEST_ARGS)

check: $(STAMP)
	DJANGO_DEBUG=0 DJANGO_SECRET_KEY=$$($(PY) -c 'import secrets;print(secrets.token_urlsafe(60))') \
	  DJANGO_ALLOWED_HOSTS=exchange.example.com $(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) var

# Measurement: every timing against a floor measured in the same run (bench/REPORT.md).
bench: $(STAMP) chromium | var
	$(PY) -m bench.run $(BENCH_ARGS)

# A seeded game day: SEED picks the fault schedule, ORDERS the synthetic order count.
SEED ?= 1
ORDERS ?= 1000
soak: $(STAMP) | var
	$(PY) manage.py soak --seed $(SEED) --orders $(ORDERS) $(SOAK_ARGS)
