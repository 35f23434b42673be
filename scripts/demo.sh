#!/usr/bin/env bash
# Install, simulate a small fetal + infant cohort, run the whole workflow on 2 cores,
# and print where the reports are. Output goes to ./demo (override: DEMO_OUT=dir).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/earlybrain demo --out "${DEMO_OUT:-demo}" --cores "${CORES:-2}"
