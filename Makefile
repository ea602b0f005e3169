# The two commands a newcomer needs: `make run` and `make test`.
# Both work on a fresh clone: they create .venv and install what they need.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEPS := $(VENV)/.deps-installed
TOX := $(VENV)/bin/tox
SSLYZE_VENV := .venv-sslyze
SSLYZE := $(SSLYZE_VENV)/bin/sslyze
CERTS := certs
LISTEN_PORT ?= 8443

.PHONY: run test install pki clean system-tools

$(PY):
	$(PYTHON) -m venv $(VENV)

# Dependencies (re-installed when the packaging metadata changes): the test
# suite and the checks, tox among them.
$(DEPS): $(PY) pyproject.toml
	$(PY) -m pip install -q '.[dev]'
	touch $@

# A plain (non-editable) install of the current source, so that twistd finds
# twisted/plugins/securenet_*.py exactly as a user's install would.
install: $(DEPS)
	$(PY) -m pip install -q --no-deps --force-reinstall .

# sslyze pins an older cryptography than pyOpenSSL wants: its own virtualenv.
$(SSLYZE):
	$(PYTHON) -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/pip install -q sslyze

# The development PKI: a CA, a server certificate for localhost/127.0.0.1 and
# a client certificate dev-client. Created only where missing.
pki: install
	@test -f $(CERTS)/ca.pem || $(VENV)/bin/securenet pki init --dir $(CERTS)
	@test -f $(CERTS)/server.pem || $(VENV)/bin/securenet pki issue server server --dir $(CERTS) --san DNS:localhost,IP:127.0.0.1
	@test -f $(CERTS)/dev-client.pem || $(VENV)/bin/securenet pki issue client dev-client --dir $(CERTS)
	@echo "CA certificate: $(CURDIR)/$(CERTS)/ca.pem"
	@echo "server pin:     $$($(VENV)/bin/securenet pki pin $(CERTS)/server.pem)"

run: pki
	$(VENV)/bin/twistd -n --pidfile= securenet

# Debian tools the end-to-end tests drive (openssl s_client, curl, chattr,
# HAProxy, Prometheus's promtool),
# and the PostgreSQL server the store tests start (tests/support/postgres.py),
# installed when missing.
system-tools:
	@missing=""; \
	for tool in openssl:openssl curl:curl chattr:e2fsprogs haproxy:haproxy promtool:prometheus; do \
	  command -v $${tool%%:*} >/dev/null 2>&1 || missing="$$missing $${tool##*:}"; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# Every check, each in its tox environment (tox.ini; kept in .tox and reused):
# mypy --strict, ruff check, ruff format --check, pydoctor, the suite under
# trial and under pytest, and trial again with the oldest dependencies allowed.
# All run even if one fails; the last line gives each one's exit status.
test: system-tools install $(SSLYZE)
	@rm -f .tox/result.json; \
	SECURENET_SSLYZE="$(CURDIR)/$(SSLYZE)" $(TOX) run --result-json .tox/result.json; tox=$$?; \
	$(PY) .ci/tox_summary.py .tox/result.json && test $$tox -eq 0

clean:
	rm -rf $(VENV) $(SSLYZE_VENV) .tox build *.egg-info _trial_temp .pytest_cache .mypy_cache

# Benchmarks (bench/README.md): securenet against bare Twisted TLS, AMP, Foolscap,
# asyncio, uvloop and nginx, on 127.0.0.1, ratios from runs made side by side.
#   make bench        the full run (about 20 minutes), profiles missed targets
#   make bench-quick  small counts, under 2 minutes (CI: keeps the code from rotting)
BENCH_DEPS := $(VENV)/.bench-installed

.PHONY: bench bench-quick bench-tools

$(BENCH_DEPS): $(DEPS) pyproject.toml
	$(PY) -m pip install -q '.[bench]'
	touch $@

# nginx and wrk (peers), a C compiler and OpenSSL headers (bench/tlsload.c), from Debian.
bench-tools:
	@if ! { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1 \
	    || ! command -v cc >/dev/null 2>&1 || ! test -f /usr/include/openssl/ssl.h; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk gcc libssl-dev >/dev/null; \
	fi

bench: $(BENCH_DEPS) bench-tools
	PYTHONPATH=$(CURDIR) $(PY) -m bench --full --profile

bench-quick: $(BENCH_DEPS) bench-tools
	PYTHONPATH=$(CURDIR) $(PY) -m bench --quick
