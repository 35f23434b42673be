"""How outputs name the files they were made from: BIDS URIs, not absolute paths.

An absolute path names the folders a lab keeps its scans in, and clinical folders are
often named after the patient or the scan date; it also stops pointing anywhere once the
data move. BIDS (1.8 and later) names a file `bids:<dataset>:<path inside it>`, where
the empty dataset name is the derivatives dataset itself and the others resolve through
`DatasetLinks` in its dataset_description.json (written as paths relative to it).

The workflow declares its datasets once (`declare_datasets`, from workflow/rules/
common.smk) in the environment, which every step's process inherits. A step run on its
own, without them, records paths as it was given them, except the shipped models and
atlases, which are always named relative to the earlybrain checkout.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from earlybrain import REPO_ROOT

# BIDS URI dataset name -> environment variable holding that dataset's folder
DATASET_ENV = {
    "": "EARLYBRAIN_DERIVATIVES_DIR",
    "raw": "EARLYBRAIN_BIDS_DIR",
    "masks": "EARLYBRAIN_MASKS_DIR",
}


def declare_datasets(
    derivatives: str | os.PathLike[str],
    bids: str | os.PathLike[str],
    masks: str | os.PathLike[str] | None = None,
) -> None:
    """Name the datasets of this run for every step started from this process."""
    folders = {"": derivatives, "raw": bids, "masks": masks}
    for name, var in DATASET_ENV.items():
        if folders[name]:
            os.environ[var] = os.path.abspath(folders[name])
        else:
            os.environ.pop(var, None)


def dataset_roots() -> list[tuple[str, Path]]:
    """(name, folder) of the declared datasets, the deepest folder first: the
    derivatives often live inside the raw dataset (`bids/derivatives/earlybrain`)."""
    roots = [(n, Path(os.environ[v])) for n, v in DATASET_ENV.items() if os.environ.get(v)]
    return sorted(roots, key=lambda item: len(item[1].parts), reverse=True)


def source_reference(path: str | os.PathLike[str]) -> str:
    """`path` as an output records it: a BIDS URI inside a declared dataset, relative to
    the checkout for a shipped file, else as given."""
    p = Path(os.path.abspath(path))
    for name, root in dataset_roots():
        if p.is_relative_to(root):
            return f"bids:{name}:{p.relative_to(root).as_posix()}"
    if p.is_relative_to(REPO_ROOT):
        return p.relative_to(REPO_ROOT).as_posix()
    return str(path)


def portable(value: Any) -> Any:
    """`value` (text, or JSON-like lists and dicts of it) with every path inside a
    declared dataset spelled as its BIDS URI: for messages and reports that quote paths
    in free text (a validation problem names its file)."""
    if isinstance(value, str):
        for name, root in dataset_roots():
            value = value.replace(f"{root}{os.sep}", f"bids:{name}:")
        return value
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v) for v in value]
    return value


def source_references(paths: Iterable[str | os.PathLike[str] | None]) -> list[str]:
    """`source_reference` of each given path (None entries are left out)."""
    return [source_reference(p) for p in paths if p]


def dataset_links(
    derivatives: str | os.PathLike[str], bids: str | os.PathLike[str]
) -> dict[str, str]:
    """DatasetLinks of the derivatives' dataset_description.json: the raw dataset
    `bids` and any other declared dataset, relative to the derivatives folder."""
    base = os.path.abspath(derivatives)
    folders = {name: str(root) for name, root in dataset_roots() if name}
    folders["raw"] = os.path.abspath(bids)
    return {name: Path(os.path.relpath(f, base)).as_posix() for name, f in sorted(folders.items())}


def resolve_reference(reference: str, derivatives: str | os.PathLike[str] | None = None) -> Path:
    """The file a `source_reference` names: through the declared datasets, else through
    the DatasetLinks of `derivatives`' dataset_description.json (a reader of finished
    outputs). Raises KeyError for a dataset it cannot find."""
    if not reference.startswith("bids:"):
        path = Path(reference)
        return path if path.is_absolute() else REPO_ROOT / path
    name, _, rel = reference[len("bids:") :].partition(":")
    declared = os.environ.get(DATASET_ENV.get(name, ""), "")
    if declared:
        return Path(declared) / rel
    if derivatives is None:
        raise KeyError(f"{reference}: dataset {name!r} is not declared")
    base = Path(derivatives)
    if not name:
        return base / rel
    description = json.loads((base / "dataset_description.json").read_text())
    return (base / description["DatasetLinks"][name] / rel).resolve()
