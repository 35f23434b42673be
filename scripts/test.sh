#!/usr/bin/env bash
# Install, then run the whole test suite (lint, unit tests, workflow runs).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k simulate`.
# Test files run two at a time (pytest-xdist, a file stays on one worker so its module
# fixtures are built once): much of a test's time is one core's (simulation, process
# start-up, Snakemake's scheduling), so two files keep both cores busy.
# EARLYBRAIN_TEST_WORKERS=0 runs them one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -n "${EARLYBRAIN_TEST_WORKERS:-2}" --dist loadfile "$@"
