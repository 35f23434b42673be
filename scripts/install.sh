#!/usr/bin/env bash
# Install earlybrain and its test tools into ./.venv (idempotent; re-runs only when
# pyproject.toml changed). Needs Python 3.11; on Debian 12 it installs python3-venv
# and chromium (for the report browser test) if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "earlybrain needs Python 3.11 (Debian 12: apt-get install python3 python3-venv)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    echo "python3-venv is missing; installing it with apt-get" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
    "$PY" -m venv .venv
  fi
fi

# Debian's Chromium for tests/test_report_browser.py: Playwright drives this system
# browser, so no browser is downloaded at test time. EARLYBRAIN_NO_CHROMIUM=1 skips it
# (that test then skips, or fails under CI=true).
if [ "${EARLYBRAIN_NO_CHROMIUM:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "chromium is missing; installing Debian's chromium with apt-get (report browser test)" >&2
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: no chromium and no apt-get; install Chromium for the report browser test" >&2
  fi
fi

stamp=".venv/.earlybrain-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # torch first and pinned: an unpinned torch pulled in by another package would
  # bring a multi-GB CUDA build. On machines without a local CPU wheel, point pip at
  # a CPU wheel index with PIP_EXTRA_INDEX_URL before running this script.
  .venv/bin/pip install --quiet "torch==2.13.0"
  .venv/bin/pip install --quiet -e ".[test]"
  echo "$want" > "$stamp"
fi
