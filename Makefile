.PHONY: setup demo test test-quick bench label-studio bench-label-studio

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

label-studio:
	bash scripts/setup_label_studio.sh

bench-label-studio:
	bash scripts/setup.sh && bash scripts/setup_label_studio.sh && .venv/bin/python bench/label_studio_roundtrip.py
