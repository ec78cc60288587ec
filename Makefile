# The README's two commands: `make demo` (the main job) and `make test`. Each installs what it needs first.
PYTHON ?= python3
RUN_DIR ?= runs/bible-en-fr
export PYTHON

.PHONY: setup demo test lint

setup:
	bash .ci/setup

# Train the default English->French model (30 CPU-minutes), score the test split (single and multi-reference),
# keep its translation, and plot attention for a few test sentences.
demo: setup
	$(PYTHON) scripts/train.py run_dir=$(RUN_DIR)
	$(PYTHON) scripts/evaluate.py model_dir=$(RUN_DIR) split=test
	$(PYTHON) scripts/visualize.py model_dir=$(RUN_DIR) input=$(RUN_DIR)/eval/test.src max_sentences=4
	@echo "outputs in $(RUN_DIR):"
	@echo "  metrics.json, curves.png         training summary and loss/BLEU curves"
	@echo "  eval/test.json                   test BLEU / chrF / TER (single and multi-reference)"
	@echo "  eval/test.hyp                    the translated test set (eval/test.src, eval/test.ref beside it)"
	@echo "  attention/attention_*.png|svg    attention alignments"

# The layer contracts first (pyproject.toml, [tool.importlinter]): an import against the layers fails in seconds.
test: setup
	lint-imports --no-logo
	$(PYTHON) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: setup
	$(PYTHON) -m ruff check nmt scripts tests
