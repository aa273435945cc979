# The README's two commands are `make demo` and `make test`; both set up everything
# they need (venv, npm packages, Debian packages) and are quick when already done.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP_STAMP := $(VENV)/.stamp-$(shell cat pyproject.toml | md5sum | cut -c1-12)
NPM_STAMP := node_modules/.stamp-$(shell cat package-lock.json | md5sum | cut -c1-12)

# COMMAND:PACKAGE pairs, installed only when the command is missing.
DEBS_TEST := node:nodejs npm:npm chromium:chromium promtool:prometheus nginx:nginx \
	podman:podman runc:runc debootstrap:debootstrap catatonit:catatonit
DEBS_BENCH := nginx:nginx wrk:wrk apache2:apache2

.PHONY: test demo bench fuzz soak setup debs check-config clean

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The demo needs only the Python package: no Debian or npm packages.
demo: $(PIP_STAMP)
	$(VENV)/bin/authproxy demo $(DEMO_ARGS)

# The load benchmark, Apache httpd + mod_auth_openidc side by side (BENCH_ARGS="--quick" for ~2 min).
bench: setup
	./scripts/ensure-debs.sh $(DEBS_BENCH)
	test -e /usr/lib/apache2/modules/mod_auth_openidc.so || ./scripts/ensure-debs.sh mod_auth_openidc:libapache2-mod-auth-openidc
	$(PY) bench/run.py $(BENCH_ARGS)

# A script, not a test: 10 minutes of mixed traffic over 2 replicas sharing a store
# (SOAK_ARGS="--minutes 3" shortens it); appends its figures to bench/RESULTS.md.
soak: setup
	$(PY) bench/soak.py $(SOAK_ARGS)

# The property tests of tests/fuzz, with 100x the examples make test gives them.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q -p no:cacheprovider --timeout 1800 tests/fuzz $(PYTEST_ARGS)

check-config: setup
	$(VENV)/bin/authproxy check-config config.example.yaml

setup: debs $(PIP_STAMP) $(NPM_STAMP)

debs:
	./scripts/ensure-debs.sh $(DEBS_TEST)

$(PIP_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	# xds-protos (Envoy's API, for the tests) ships an old copy of opentelemetry/proto/*, and
	# whichever package pip writes last wins: opentelemetry-proto's own files go back on top.
	$(PY) -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
		"opentelemetry-proto==$$($(PY) -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"
	rm -f $(VENV)/.stamp-* && touch $@

$(NPM_STAMP): package-lock.json package.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

clean:
	rm -rf $(VENV) node_modules bench/.work
