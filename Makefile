# virtdeck developer tasks. `make run` serves on http://127.0.0.1:8000, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Two workers: CI has two cores, and tests that share the machine (tests/conftest.py) still
# run one at a time in one of them.
PYTEST_WORKERS ?= 2

.PHONY: venv run test bench lint clean env

# The venv is rebuilt only when pyproject.toml changes. libvirt-python compiles against
# libvirt-dev, so the system packages are checked first (a quick no-op when present).
$(STAMP): pyproject.toml
	scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -U pip
	$(VENV)/bin/pip install -e '.[dev]'
	touch $@

venv: $(STAMP)
	@:

run:
	scripts/setup-system.sh
	@$(MAKE) --no-print-directory venv
	mkdir -p data
	$(VENV)/bin/virtdeck serve --host 127.0.0.1 --port 8000

test:
	scripts/setup-system.sh --test
	@$(MAKE) --no-print-directory venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench:
	scripts/setup-system.sh --test
	@$(MAKE) --no-print-directory venv
	$(VENV)/bin/python bench/sync.py
	$(VENV)/bin/python bench/backup.py
	$(VENV)/bin/python bench/live.py
	$(VENV)/bin/python bench/scale.py
	$(VENV)/bin/python bench/console.py
	$(VENV)/bin/python bench/images.py

lint: venv
	$(VENV)/bin/ruff check .

# The .env docker-compose.yml needs: a random database password and the libvirt socket's group.
# Keys already there are kept.
env:
	scripts/make-env.sh

# Removes the virtualenv (and its stamp) only; data/ is never touched.
clean:
	rm -rf $(VENV)
