"""Code style is part of the contract: ruff lint and format must be clean."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_ruff_lint_and_format_clean() -> None:
    paths = ["earlybrain", "tests", "bench", "workflow"]
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *paths], cwd=REPO, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr
