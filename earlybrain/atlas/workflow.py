"""Helpers for workflow/rules/register.smk (Snakemake lint wants no functions in rule files).

Pure functions of the config and paths, so they are unit-testable without Snakemake.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from earlybrain.atlas.manifest import load_manifest
from earlybrain.io.paths import RECON, Derivatives, bids_name
from earlybrain.register.register import registration_paths

# the shipped atlases (the defaults of atlas.manifest and atlas.infant_manifest)
DEFAULT_MANIFEST = "atlases/earlybrain-fetal/manifest.json"
DEFAULT_INFANT_MANIFEST = "atlases/earlybrain-infant/manifest.json"


def resolve_manifest(path: str, repo: str | Path) -> str:
    """A relative path missing from the working directory is taken relative to the repository
    (where the shipped atlas lives)."""
    p = Path(path)
    return str(p if p.is_absolute() or p.exists() else Path(repo) / p)


def atlas_space(manifest: str, default: str = "earlybrainFetal") -> str:
    """The BIDS space label of outputs, from the manifest (validated) when it exists."""
    return load_manifest(manifest).space if Path(manifest).is_file() else default


def build_inputs(build: Mapping[str, Any], repo: str | Path) -> dict[str, list[str]]:
    """Input files of `build_atlas` from config atlas.build."""
    files: dict[str, list[str]] = {
        "volumes": [str(v) for v in build.get("volumes", [])],
        "labels": [str(p) for p in build.get("labels", []) if p],
        "masks": [str(p) for p in build.get("masks", []) if p],
        "cohort": [str(build["cohort"])] if build.get("cohort") else [],
        "reference": [],
    }
    if build.get("reference_atlas"):
        files["reference"] = [resolve_manifest(str(build["reference_atlas"]), repo)]
    return files


def build_args(build: Mapping[str, Any], files: Mapping[str, Sequence[str]]) -> str:
    """Command-line arguments of `earlybrain build-atlas` (shell-quoted)."""
    args: list[str] = []
    if files.get("cohort"):
        args += ["--cohort", files["cohort"][0]]
    else:
        args += ["--volumes", *files["volumes"], "--ages", *[str(a) for a in build.get("ages", [])]]
        if files.get("labels"):
            args += ["--labels", *files["labels"]]
        if files.get("masks"):
            args += ["--masks", *files["masks"]]
    weeks = build.get("weeks", "21-38")
    args += ["--weeks", *(str(weeks).split() if isinstance(weeks, str) else map(str, weeks))]
    args += ["--name", str(build.get("name", "earlybrain-fetal-custom"))]
    args += ["--space", str(build.get("space", "earlybrainFetalCustom"))]
    if files.get("reference"):
        args += ["--reference-atlas", files["reference"][0]]
    args += ["--params", json.dumps(dict(build.get("params", {})), sort_keys=True)]
    return " ".join(shlex.quote(a) for a in args)


def rule_outputs(
    deriv: Derivatives, space: str, entity: str = RECON, contrast: str = "T2w"
) -> dict[str, str]:
    """Outputs of `register_atlas` for the volume `{prefix}_{entity}` (wildcards allowed):
    a fetal reconstruction `rec-svr`, an infant's image `mod-T1w` / `mod-T2w`."""
    stem = bids_name(deriv.prefix, entity, ext="")
    paths = registration_paths(
        deriv.folder("anat"), stem, space, contrast, deriv.folder("xfm")
    )  # fmt: skip
    return {k: str(v) for k, v in paths.items()}
