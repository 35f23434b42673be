"""The documentation's two generated reference pages, written from the code they describe.

`docs/reference/configuration.md` lists every configuration key (each schema leaf, and
each field of a library dataclass that a section takes, listed in the schema or not) with
its type, default and meaning; `docs/reference/outputs.md` lists every file a run writes,
from `earlybrain.io.paths.Derivatives`, the `rule_outputs` of the modules that name a
volume's registration, segmentation and brain-age files (what each holds: the comments of
the keys of their `*_paths` functions) and the `output:` of every rule. A page's
hand-written prose stays; only the part between its markers is rewritten, so a new key or
file cannot go undocumented: `python -m earlybrain.docs_reference` rewrites both,
`--check` (the tests) fails when one is out of date.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from earlybrain import REPO_ROOT
from earlybrain.docs_reference.configuration import configuration_page
from earlybrain.docs_reference.outputs import outputs_page

CONFIGURATION = REPO_ROOT / "docs" / "reference" / "configuration.md"
OUTPUTS = REPO_ROOT / "docs" / "reference" / "outputs.md"


def pages() -> list[tuple[Path, Callable[[str], str]]]:
    """(page, its generator), read at call time so that tests can point them elsewhere."""
    return [(CONFIGURATION, configuration_page), (OUTPUTS, outputs_page)]


def update(page: Path, write: Callable[[str], str], check: bool) -> bool:
    """Rewrite `page` (or, with `check`, only compare); False when it was out of date."""
    text = page.read_text()
    new = write(text)
    if new == text:
        return True
    if check:
        print(f"{page}: out of date; run python -m earlybrain.docs_reference")
        return False
    page.write_text(new)
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m earlybrain.docs_reference [--check]`: rewrite (or check) both pages."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    results = [update(page, write, check) for page, write in pages()]
    return 0 if all(results) else 1
