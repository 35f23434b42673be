#!/usr/bin/env bash
# Install, then run the whole test suite (lint, unit tests, workflow runs).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k simulate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest "$@"
