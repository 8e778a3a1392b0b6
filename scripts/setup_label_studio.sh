#!/usr/bin/env bash
# Create .venv-label-studio with the pinned Label Studio server (idempotent: a stamp skips the
# install when nothing changed). The server gets its own environment because it resolves with
# torch/streamlit only by downgrading pytz, pyarrow and python-dateutil;
# the library talks to it through label-studio-sdk from .venv. About 30 s with uv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${ALMDN_LABEL_STUDIO_VENV:-.venv-label-studio}
PIN="label-studio==1.23.2"
stamp="$VENV/.installed-$(echo "$PIN" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "Setting up $VENV ($PIN; about 30 s with uv, 90 s with pip)..."
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install --quiet uv==0.13.8 >/dev/null 2>&1 || true
fi
if command -v uv >/dev/null 2>&1; then
  [ -x "$VENV/bin/python" ] || uv venv --quiet --python "$PY" "$VENV"
  uv pip install --quiet --python "$VENV/bin/python" "$PIN"
else
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet "$PIN"
fi
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "Label Studio ready: $VENV"
