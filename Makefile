# The README's two commands: `make demo` (the main job) and `make test`. Each installs what it needs first.
PYTHON ?= python3
RUN_DIR ?= runs/bible-en-fr
export PYTHON

.PHONY: setup demo test lint

setup:
	bash .ci/setup

demo: setup
	$(PYTHON) scripts/prepare_data.py run_dir=$(RUN_DIR)

test: setup
	$(PYTHON) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: setup
	$(PYTHON) -m ruff check nmt scripts tests
