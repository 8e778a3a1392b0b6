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
if [ -z "${ALMDN_PROJECT:-}" ] && ! .venv/bin/python -c "import sys; from almdn.projects.demo_project import default_projects_root, is_ready; sys.exit(0 if is_ready(default_projects_root() / 'demo') else 1)" 2>/dev/null; then
  # The app creates the demo project, but only once a browser opens the page: say so here.
  echo "First run: the demo project (data, a first model, the scored pool; about 4 minutes on 2 CPU cores) is created when that page is first opened in a browser; the page shows its progress."
fi
# app/serve.py: `streamlit run` with the pages' libraries imported before the server answers.
exec .venv/bin/python app/serve.py run app/main.py --server.address 127.0.0.1 --server.port "$PORT" --server.headless true --browser.gatherUsageStats false
