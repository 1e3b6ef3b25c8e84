# shardws: every target installs what it needs first.
PY        ?= python3
VENV      ?= .venv
VPY       := $(VENV)/bin/python
SHARED    ?= $(abspath ../shared)
ABV       ?= /tmp/abv
STAMP     := $(VENV)/.installed-dev

.PHONY: all install test lint typecheck pytest autobahn-quick conformance run bench bench-protocol bench-bus clean loadtest

all: test

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel

$(STAMP): $(VPY) pyproject.toml setup.py shardws/_speedups.c
	$(VPY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check shardws tests scripts examples compliance loadtests

typecheck: $(STAMP)
	$(VENV)/bin/mypy shardws

# The protocol and server tests run twice: with the C speedups and with the pure
# fallback (the Python methods that the C fast paths of ServerConnection replace).
pytest: $(STAMP)
	rm -f .coverage .coverage.*
	$(VENV)/bin/coverage run -m pytest -q -p no:cacheprovider tests
	SHARDWS_NO_SPEEDUPS=1 $(VENV)/bin/coverage run -m pytest -q -p no:cacheprovider tests/protocol tests/asyncio tests/hostile tests/interop
	$(VENV)/bin/coverage combine -q
	$(VENV)/bin/coverage report --include='shardws/protocol/*'
	$(VENV)/bin/coverage report --fail-under=95 --include='shardws/protocol/*' > /dev/null || \
	  (echo "branch coverage of shardws/protocol/ is below 95 %"; exit 1)
	$(VENV)/bin/coverage report --include='shardws/*' | tail -1

$(ABV)/bin/wstest:
	bash $(SHARED)/conformance/install_autobahn.sh $(ABV)

# Quick Autobahn|Testsuite subset (groups 1-7 and 10) against compliance/echo.py.
autobahn-quick: $(STAMP) $(ABV)/bin/wstest
	WSTEST=$(ABV)/bin/wstest $(VPY) scripts/run_autobahn.py --shared $(SHARED) --cases '1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*' --report reports/autobahn-quick

# All 517 cases, with permessage-deflate and without.
conformance: $(STAMP) $(ABV)/bin/wstest
	WSTEST=$(ABV)/bin/wstest $(VPY) scripts/run_autobahn.py --shared $(SHARED) --cases '*' --report reports/autobahn-deflate
	WSTEST=$(ABV)/bin/wstest $(VPY) scripts/run_autobahn.py --shared $(SHARED) --cases '*' --no-compression --report reports/autobahn-plain

test: lint typecheck pytest autobahn-quick

# The demo chat (examples/app.py) on 2 workers; Ctrl-C stops it gracefully.
run: $(STAMP)
	@echo "shardws demo (echo + '/all TEXT' broadcast): ws://127.0.0.1:8000 with 2 workers"
	@echo "  talk to it:  $(VPY) -m websockets ws://127.0.0.1:8000"
	@echo "  inspect it:  $(VENV)/bin/shardws status --port 8000"
	@echo "  stop it:     Ctrl-C here, or $(VENV)/bin/shardws stop --port 8000"
	$(VENV)/bin/shardws serve examples.app:handler --host 127.0.0.1 --port 8000 --workers 2

bench-protocol: $(STAMP)
	$(VPY) scripts/bench_protocol.py

# The benchmark peers (websockets, aiohttp, picows: the `bench` extra), then
# scripts/bench.py; e.g. make bench BENCH_ARGS="--quick" or "--workers 2".
$(VENV)/.installed-bench: $(STAMP)
	$(VPY) -m pip install -q -e '.[bench]'
	@touch $@

bench: $(VENV)/.installed-bench
	$(VPY) scripts/bench.py $(BENCH_ARGS)

bench-bus: $(STAMP)
	command -v redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)
	$(VPY) scripts/bench_bus.py

# Locust against `shardws serve examples.app:handler` (workers: the CPU count), reports in
# loadtests/reports/; fails on any failure or when the p99 is above MAX_P99_MS (if given).
#   make loadtest USERS=2000 TIME=5m SCENARIO=chat MAX_P99_MS=50 WORKERS=4 LOCUST_ARGS='--room-size 20'
USERS      ?= 500
SPAWN_RATE ?= 100
TIME       ?= 60s
SCENARIO   ?= echo
LOADTEST_STAMP := $(VENV)/.installed-loadtest

$(LOADTEST_STAMP): $(STAMP)
	$(VPY) -m pip install -q -e '.[loadtest]'
	@touch $(LOADTEST_STAMP)

loadtest: $(LOADTEST_STAMP)
	$(VPY) scripts/loadtest.py --users $(USERS) --spawn-rate $(SPAWN_RATE) --time $(TIME) \
	  --scenario $(SCENARIO) $(if $(WORKERS),--workers $(WORKERS)) \
	  $(if $(MAX_P99_MS),--max-p99-ms $(MAX_P99_MS)) $(LOCUST_ARGS)

clean:
	rm -rf build dist *.egg-info .coverage .coverage.* htmlcov .mypy_cache .ruff_cache .pytest_cache reports
	find . -name __pycache__ -prune -exec rm -rf {} +
	rm -f shardws/*.so
