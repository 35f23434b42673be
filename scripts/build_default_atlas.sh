#!/usr/bin/env bash
# Rebuild the atlas that ships in atlases/earlybrain-fetal, exactly as committed:
# 24 simulated subjects (cohort seed 2025, 20-39 weeks GA, 1.0 mm), 18 weekly templates
# (21-38 weeks, 1.2 mm). Takes about an hour on 2 cores. Everything is seeded; see the
# manifest's provenance for the command, seeds and software versions used.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=2
exec "$PY" -m earlybrain.atlas.default --out atlases/earlybrain-fetal "$@"
