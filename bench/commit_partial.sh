#!/usr/bin/env bash
# Commit an experiment's finished cycles as they come, so a long protocol survives a stopped
# session and a later one resumes from the records (almdn experiment skips finished cycles;
# trained models are not committed, the next cycle retrains from the record's labeled ids).
#   bash bench/commit_partial.sh bench/runs/demo configs/demo.yaml [interval-seconds]
# Every interval: rewrite the report (results.{md,csv,html}) and commit the cycle records and
# the report, only those paths, when they changed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$1
CONFIG=$2
INTERVAL=${3:-900}
while true; do
  if ls "$OUT"/runs/*/seed-*/cycle-*.json >/dev/null 2>&1; then
    .venv/bin/almdn experiment --config "$CONFIG" --out "$OUT" --report-only >/dev/null 2>&1 || true
    paths=$(ls "$OUT"/runs/*/seed-*/cycle-*.json "$OUT"/config.json "$OUT"/results.md "$OUT"/results.csv "$OUT"/results.html 2>/dev/null)
    # shellcheck disable=SC2086
    git add -- $paths 2>/dev/null
    if ! git diff --cached --quiet -- $paths; then
      n=$(ls "$OUT"/runs/*/seed-*/cycle-*.json | wc -l)
      for _ in 1 2 3 4 5; do
        git commit -q -m "Partial results of $(basename "$OUT"): $n finished cycles (almdn experiment --config $CONFIG --out $OUT)" -- $paths && break
        sleep 5
      done
    fi
  fi
  sleep "$INTERVAL"
done
