.PHONY: setup demo test test-quick bench

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

test-quick:
	bash scripts/test.sh -m "not slow"

bench:
	bash scripts/setup.sh && .venv/bin/python bench/cost.py
