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


MAX_MODULE_LINES = 520


def test_no_module_grows_past_one_job() -> None:
    """A module over about 500 lines has so far always been doing several jobs (the
    report's methods, the infant brain age, the uterus scene were each split in two or
    more); a module that reaches the limit is split along its jobs, not the limit raised."""
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text(encoding="utf-8").splitlines())
        for p in (REPO / "earlybrain").rglob("*.py")
    }
    too_long = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not too_long, too_long
