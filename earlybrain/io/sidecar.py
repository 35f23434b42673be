"""JSON sidecars for derivatives: version, parameters and sources of every output."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from earlybrain import __version__
from earlybrain.io.atomic import write_json_atomic
from earlybrain.io.provenance import source_references


def sidecar_path(image_path: str | os.PathLike[str]) -> Path:
    """`x.nii.gz` -> `x.json` (BIDS sidecar naming)."""
    p = Path(image_path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".tsv", ".json", ".html"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return p.with_name(name + ".json")


def write_sidecar(
    image_path: str | os.PathLike[str],
    *,
    step: str,
    parameters: dict[str, Any] | None = None,
    sources: list[str | os.PathLike[str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the sidecar beside `image_path` recording how it was made (sources as
    BIDS URIs: `earlybrain.io.provenance`)."""
    content: dict[str, Any] = {
        "GeneratedBy": [{"Name": "earlybrain", "Version": __version__, "Step": step}],
        "Parameters": parameters or {},
        "Sources": source_references(sources or []),
    }
    if extra:
        content.update(extra)
    return write_json_atomic(sidecar_path(image_path), content)


def made_by(image_path: str | os.PathLike[str]) -> str | None:
    """The software that made an input image, as its BIDS sidecar names it, or None.

    Read from `GeneratedBy` (BIDS derivatives: Name and Version) or `SoftwareName`
    (+ `SoftwareVersions`) only, so that no other field of a lab's sidecar, which may
    identify the patient, reaches a report.
    """
    import json

    try:
        side = json.loads(sidecar_path(image_path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    if not isinstance(side, dict):
        return None
    generated = side.get("GeneratedBy")
    if isinstance(generated, list) and generated and isinstance(generated[0], dict):
        name, version = generated[0].get("Name"), generated[0].get("Version")
    else:
        name, version = side.get("SoftwareName"), side.get("SoftwareVersions")
    if not isinstance(name, str) or not name.strip():
        return None
    text = name.strip() + (f" {version}".rstrip() if isinstance(version, str) else "")
    return text[:80]
