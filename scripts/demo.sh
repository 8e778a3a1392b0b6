#!/usr/bin/env bash
# The main job on the built-in demo project: generate the demo data, train the demo
# mixture-density SSD (about 5 minutes on a 2-core CPU), evaluate it, score the pool.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE
A=.venv/bin/almdn
$A demo-data --out data/demo
[ -f runs/demo/model.pt ] || $A train --data data/demo --out runs/demo
$A evaluate --checkpoint runs/demo/model.pt --data data/demo
$A score --checkpoint runs/demo/model.pt --images data/demo --out runs/demo/scores
echo
echo "Most informative pool images (runs/demo/scores/images.csv):"
head -n 6 runs/demo/scores/images.csv | cut -d, -f1-4,13
