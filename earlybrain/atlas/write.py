"""Write an atlas folder: templates, label table, licence, and the manifest that ties them.

What is written is read back with `load_manifest` before returning, so a built atlas is
always a valid one.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from earlybrain import __version__
from earlybrain.anatomy.labels import label_table_rows
from earlybrain.atlas.manifest import FORMAT, FORMAT_VERSION, load_manifest
from earlybrain.io.atomic import write_json_atomic, write_text_atomic
from earlybrain.io.nifti import save_nifti
from earlybrain.register import antsio

if TYPE_CHECKING:
    from earlybrain.atlas.buildspec import BuildParams, WeekTemplate

PathLike = str | os.PathLike[str]


def week_tag(week: float) -> str:
    """'22' for 22.0, '22p5' for 22.5 (file names)."""
    return f"{week:02.0f}" if float(week).is_integer() else f"{week:g}".replace(".", "p")


def software_versions() -> dict[str, str]:
    import nibabel
    import scipy

    ants = antsio.ants_module()
    return {
        "earlybrain": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "nibabel": nibabel.__version__,
        "antspyx": getattr(ants, "__version__", "unknown"),
    }


MIT_TEXT = """MIT License

Copyright (c) the earlybrain authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""


def _labels_tsv() -> str:
    rows = label_table_rows()
    lines = ["index\tname\ttissue\themisphere"]
    lines += [f"{r['index']}\t{r['name']}\t{r['tissue']}\t{r['hemisphere']}" for r in rows]
    return "\n".join(lines) + "\n"


def write_atlas(
    templates: Sequence[WeekTemplate],
    out_dir: PathLike,
    *,
    name: str,
    space: str,
    params: BuildParams | None,
    provenance: dict[str, Any],
    description: str = "",
    population: str = "fetal",
    age_kind: str = "GA",
    license_name: str = "MIT",
    license_text: str | None = MIT_TEXT,
    citation: str | None = None,
    resolution_mm: float | None = None,
) -> Path:
    """Write templates, label table, licence and manifest into `out_dir`; returns the manifest.

    A template writes one image per contrast (`WeekTemplate.contrast_images()`: its
    `images`, or `image` as the T2w); the manifest's `contrasts` lists them in order of
    first appearance. Templates made without groupwise registration (e.g. the infant
    atlas) pass `params=None` and their grid's `resolution_mm`; their provenance then
    has no `build_parameters`.
    """
    if params is None and resolution_mm is None:
        raise ValueError("write_atlas needs the build parameters or the resolution_mm")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_labels = all(t.dseg is not None for t in templates)
    entries = []
    contrasts: list[str] = []
    for t in templates:
        stem = f"tpl-{space}_week-{week_tag(t.week)}"
        mask_name = f"{stem}_desc-brain_mask.nii.gz"
        images = {}
        for contrast, image in t.contrast_images().items():
            images[contrast] = f"{stem}_{contrast}.nii.gz"
            save_nifti(np.rint(image), t.affine, out / images[contrast], dtype=np.int16)
            if contrast not in contrasts:
                contrasts.append(contrast)
        save_nifti(t.mask, t.affine, out / mask_name, dtype=np.uint8)
        entry: dict[str, Any] = {
            "age_weeks": t.week,
            "images": images,
            "mask": mask_name,
        }
        if t.dseg is not None:
            save_nifti(t.dseg, t.affine, out / f"{stem}_dseg.nii.gz", dtype=np.uint8)
            entry["dseg"] = f"{stem}_dseg.nii.gz"
        entry["build"] = t.build_info()
        entries.append(entry)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "space": space,
        "description": description,
        "population": population,
        "age_kind": age_kind,
        "contrasts": contrasts,
        "resolution_mm": params.voxel_mm if resolution_mm is None else resolution_mm,
        "orientation": "RAS",
        "midsagittal_plane_x_mm": 0.0,
    }
    if has_labels:
        write_text_atomic(out / "labels.tsv", _labels_tsv())
        manifest["labels"] = "labels.tsv"
    manifest["license"] = license_name
    if license_text:
        write_text_atomic(out / "LICENSE", license_text)
        manifest["license_file"] = "LICENSE"
    if citation:
        manifest["citation"] = citation
    manifest["provenance"] = provenance | {"software": software_versions()}
    if params is not None:
        manifest["provenance"]["build_parameters"] = asdict(params)
    manifest["templates"] = entries
    path = write_json_atomic(out / "manifest.json", manifest)
    load_manifest(path)  # what we write must read back
    return path
