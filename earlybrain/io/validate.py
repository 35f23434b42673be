"""Per-session input validation: catch unusable inputs before any processing.

The validation step never raises for a bad *input*: it returns (and writes) a report
whose ``status`` is ``"pass"`` or ``"fail"`` with one message per problem, each naming the
file and what is wrong. The workflow reads that status to skip processing of a failed
session while still giving it a report, so one bad stack cannot stop a cohort run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from earlybrain import __version__
from earlybrain.io.atomic import write_json_atomic
from earlybrain.io.bids import SessionRecord
from earlybrain.io.nifti import ImageError, load_nifti


@dataclass(frozen=True)
class ValidationSettings:
    """Plausibility limits; ages outside them are more likely typos than real scans."""

    fetal_ga_range: tuple[float, float] = (18.0, 45.0)
    infant_pma_range: tuple[float, float] = (37.0, 160.0)
    min_slices: int = 3  # per fetal stack: fewer cannot constrain a slice-to-volume fit


def slice_axis(shape: tuple[int, ...], spacing: np.ndarray) -> int:
    """Through-plane axis of a stack: the coarsest spacing.

    Ties (isotropic volumes) go to the axis with the fewest voxels, then the last axis,
    which is the acquisition's slice axis in most scanner exports.
    """
    spacing = np.asarray(spacing, dtype=float)
    coarsest = np.flatnonzero(np.isclose(spacing, spacing.max(), rtol=1e-3))
    return int(min(coarsest, key=lambda a: (shape[a], -a)))


def _stored_zooms(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    """Voxel sizes as stored in the file.

    nibabel silently replaces zero pixdims by 1 when loading, which would hide a broken
    header (and give a wrong geometry), so read the header again without its fixes.
    """
    try:
        with ImageOpener(path) as fh:
            hdr = type(img.header).from_fileobj(fh, check=False)
        return np.asarray(hdr["pixdim"][1:4], dtype=float)
    except Exception:  # unreadable twice is reported by load_nifti already
        return np.asarray(img.header.get_zooms()[:3], dtype=float)


def check_image(path: str | os.PathLike[str], kind: str, settings: ValidationSettings) -> dict:
    """Check one image; returns a dict with ``ok`` and ``problems`` ("<file>: <problem>")."""
    path = Path(path)
    info: dict[str, Any] = {"path": str(path), "name": path.name, "problems": []}
    problems: list[str] = info["problems"]
    try:
        img = load_nifti(path)
    except ImageError as exc:
        problems.append(str(exc))
        info["ok"] = False
        return info
    shape = tuple(int(s) for s in img.shape)
    info["shape"] = list(shape)
    info["dtype"] = str(img.get_data_dtype())
    if not shape or any(s == 0 for s in shape):
        problems.append(f"{path}: image has zero size (shape {shape})")
    elif len(shape) != 3:
        problems.append(f"{path}: image is {len(shape)}D (shape {shape}), expected a 3D volume")
    if problems:
        info["ok"] = False
        return info
    zooms = _stored_zooms(path, img)
    affine = np.asarray(img.affine, dtype=float)
    info["voxel_sizes_mm"] = [round(float(z), 4) for z in zooms]
    if zooms.size < 3 or not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        problems.append(f"{path}: voxel sizes must be positive, header has {zooms.tolist()}")
    elif not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        problems.append(f"{path}: affine is singular or non-finite, cannot place the image")
    if problems:
        info["ok"] = False
        return info
    data = np.asanyarray(img.dataobj)
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(data.size - finite.sum())
        problems.append(f"{path}: {n_bad} voxels are NaN or Inf")
    elif float(data.max()) == float(data.min()):
        problems.append(f"{path}: image is constant (every voxel = {float(data.min()):g})")
    axis = slice_axis(shape, zooms)
    info["slice_axis"] = axis
    info["n_slices"] = shape[axis]
    if kind == "fetal" and shape[axis] < settings.min_slices:
        problems.append(
            f"{path}: stack has {shape[axis]} slice(s) along axis {axis}, "
            f"need at least {settings.min_slices}"
        )
    info["ok"] = not problems
    return info


def check_age(record: SessionRecord, settings: ValidationSettings) -> list[str]:
    """Problems with the session's age (missing ages are reported by BIDS discovery)."""
    if record.age_weeks is None:
        return []
    lo, hi = settings.fetal_ga_range if record.kind == "fetal" else settings.infant_pma_range
    if lo <= record.age_weeks <= hi:
        return []
    return [
        f"{record.prefix}: {record.age_measure} {record.age_weeks:.1f} weeks (column "
        f"{record.age_column!r} in {record.age_source}) is outside the supported {record.kind} "
        f"range {lo:g}-{hi:g} weeks"
    ]


def validate_session(record: SessionRecord, settings: ValidationSettings | None = None) -> dict:
    """Validate every input of a session; the report says pass/fail and why."""
    settings = settings or ValidationSettings()
    errors: list[str] = list(record.errors)
    images = [check_image(im.path, record.kind, settings) for im in record.images]
    for info in images:
        errors.extend(info["problems"])
    errors.extend(check_age(record, settings))
    return {
        "subject": record.subject,
        "session": record.session,
        "prefix": record.prefix,
        "reldir": record.reldir,
        "kind": record.kind,
        "age_weeks": record.age_weeks,
        "age_measure": record.age_measure,
        "age_column": record.age_column,
        "age_source": record.age_source,
        "notes": list(record.notes),
        "images": images,
        "status": "fail" if errors else "pass",
        "errors": errors,
        "settings": {
            "fetal_ga_range": list(settings.fetal_ga_range),
            "infant_pma_range": list(settings.infant_pma_range),
            "min_slices": settings.min_slices,
        },
        "software": {"name": "earlybrain", "version": __version__},
    }


def write_validation(report: dict, path: str | os.PathLike[str]) -> Path:
    return write_json_atomic(path, report)
