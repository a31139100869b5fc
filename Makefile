# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest system-deps systemd-check bench bench-quick faults clean \
	constraints

# constraints.txt pins the exact version of every package the venv gets (README, "Dependencies").
$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Pin what .venv holds now (pip, setuptools and wheel, and gitopsd itself, are left out):
# run it after a deliberate upgrade, then `make test`, and commit both files.
constraints:
	$(BIN)/pip freeze --exclude-editable > constraints.txt

demo: $(STAMP)
	$(BIN)/gitopsd demo

lint: $(STAMP)
	$(BIN)/ruff check gitopsd tests bench
	$(BIN)/ruff format --check gitopsd tests bench

typecheck: $(STAMP)
	$(BIN)/mypy gitopsd

# The quick bench (3 minutes alone) and the HA crash sweep (two daemons on PostgreSQL, every
# strategy) run with the long battery, `make faults`: make test stays under 8 minutes on 2 cores.
QUICK_BENCH_TEST := tests/bench/test_bench_quick.py
HA_SWEEP_TEST := tests/faults/test_ha_crash_sweep.py
pytest: $(STAMP)
	$(BIN)/pytest -n 2 -q --deselect $(QUICK_BENCH_TEST)::test_quick_bench_writes_every_figure_with_numbers \
	  --ignore $(HA_SWEEP_TEST)

# Debian packages the tests use, installed when missing (CI machines start without them):
# systemd-analyze checks the units, /bin/kill (procps) is their ExecReload=, sshd and
# ssh-keygen test SSH sources and signed commits, gpg tests OpenPGP-signed commits, chromium
# is the browser Playwright drives in tests/ui (Playwright's own download cannot work here),
# postgresql is the server tests/store/pgserver.py starts (initdb under /usr/lib/postgresql).
system-deps:
	@command -v systemd-analyze >/dev/null && test -x /bin/kill && test -x /usr/sbin/sshd \
	  && command -v ssh-keygen >/dev/null && command -v gpg >/dev/null \
	  && test -x /usr/bin/chromium \
	  && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends systemd procps openssh-server openssh-client gnupg \
	    chromium postgresql >/dev/null; }

systemd-check: $(STAMP) system-deps
	$(BIN)/pytest -q -p no:cacheprovider tests/daemon/test_systemd_units.py

test: systemd-check lint typecheck pytest

# P7 compares the agent with workerd (npm package `workerd`, which ships its binary),
# installed into bench/.cache/workerd; without node/npm (installed here when missing, as
# root with apt-get) P7's workerd rows say so and the bench still runs.
WORKERD_VERSION = 1.20261123.1
bench: $(STAMP)
	@command -v npm >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get install -y -qq nodejs npm >/dev/null 2>&1; } || echo "bench: no npm, P7 runs without workerd"
	@mkdir -p bench/.cache && echo '*' > bench/.cache/.gitignore
	@command -v npm >/dev/null 2>&1 && { test -x bench/.cache/workerd/node_modules/.bin/workerd \
	  || npm install --silent --no-audit --no-fund --prefix bench/.cache/workerd \
	     workerd@$(WORKERD_VERSION) >/dev/null 2>&1 \
	  || echo "bench: npm could not install workerd; P7 runs without it"; } || true
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

# The reliability battery at full counts (make test runs a small sample of it).
faults: $(STAMP)
	GITOPSD_FAULTS_FULL=1 $(BIN)/pytest -q -p no:logging tests/faults $(QUICK_BENCH_TEST)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
