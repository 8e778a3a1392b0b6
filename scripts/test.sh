#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, slow end-to-end tests included.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A headless Chromium for the app's browser tests (tests/test_app_browser.py).
bash scripts/setup_browser.sh
# The Label Studio server (its own venv) for the round-trip tests; stamped, so a no-op when ready.
bash scripts/setup_label_studio.sh
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python -m pytest -q "$@"
