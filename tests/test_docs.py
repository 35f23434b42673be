"""The documentation: the site builds offline with warnings as errors, and the README
stays short, true to CI and linked to pages that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_site_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, a missing image or a page left out of the
    navigation fails the build (mkdocs.yml's validation settings)."""
    site = tmp_path / "site"
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    config = (site / "reference" / "configuration" / "index.html").read_text()
    assert "recon.resolution_mm" in config and "register.qc_min_ncc" in config
    assert (site / "qc-guide" / "index.html").is_file()


def test_readme_is_short_and_gives_the_command_ci_runs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    ci = (REPO / ".ci" / "run").read_text()
    commands = re.findall(r"^(bash scripts/\S+)", text, re.M)
    assert commands[:2] == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in ci.splitlines()[-1]


def test_readme_links_point_at_files_that_exist() -> None:
    """README is read on a code host, outside the site: its relative links and images."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, missing
