#!/usr/bin/env bash
# The app on the built-in demo project: set up .venv (and Label Studio's own environment),
# then serve `streamlit run app/main.py` at http://127.0.0.1:8501 (loopback only).
# The first run creates the demo project in projects/demo with visible progress: demo data,
# an initial labeled set, a first model trained on it (a few minutes on a 2-core CPU), the
# pool scored. Later runs open it at once. Ctrl-C stops the app.
#   ALMDN_PORT=8600 make demo          another port
#   ALMDN_PROJECT=/path/to/project     open another project instead of the demo
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Label Studio runs in its own environment (it does not resolve with torch/streamlit); the
# app's Settings page starts it. Skip with ALMDN_NO_LABEL_STUDIO=1.
if [ -z "${ALMDN_NO_LABEL_STUDIO:-}" ]; then
  bash scripts/setup_label_studio.sh
fi
export OMP_WAIT_POLICY=PASSIVE
PORT=${ALMDN_PORT:-8501}
echo "almdn app: open http://127.0.0.1:$PORT in a browser (Ctrl-C stops it)."
exec .venv/bin/python -m streamlit run app/main.py --server.address 127.0.0.1 --server.port "$PORT" --server.headless true --browser.gatherUsageStats false
