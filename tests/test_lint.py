"""Code style is part of the contract: ruff lint and format, and snakefmt, must be clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_snakefmt_clean() -> None:
    """The rules are formatted by snakefmt (black for Snakefiles), configured in
    pyproject.toml: a rule's directives always come in the same order."""
    snakefmt = Path(sys.executable).parent / "snakefmt"
    res = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow/rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
