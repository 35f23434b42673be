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

from earlybrain import __version__
from earlybrain.io.atomic import write_json_atomic
from earlybrain.io.bids import SessionRecord
from earlybrain.io.nifti import (
    QFORM_SFORM_NOTE_MM,
    ImageError,
    affine_usable,
    check_scalar,
    corner_voxels,
    load_nifti,
    orientation_notes,
    read_header,
    scaling_notes,
    squeeze_to_3d,
    voxel_sizes,
)
from earlybrain.io.provenance import portable, source_reference
from earlybrain.io.sidecar import made_by


@dataclass(frozen=True)
class ValidationSettings:
    """Plausibility limits; ages outside them are more likely typos than real scans."""

    fetal_ga_range: tuple[float, float] = (18.0, 45.0)
    infant_pma_range: tuple[float, float] = (37.0, 160.0)
    min_slices: int = 3  # per fetal stack: fewer cannot constrain a slice-to-volume fit
    # MRI voxels outside this range mean a header in other units (m, um) or a broken affine
    voxel_size_range_mm: tuple[float, float] = (0.1, 12.0)
    # qform and sform are both "the" position of the image and tools pick different ones:
    # the pipeline uses the sform, and a disagreement beyond this is noted in the report
    # (axes pointing different ways are an error: see nifti.orientation_notes)
    qform_sform_note_mm: float = QFORM_SFORM_NOTE_MM


def slice_axis(shape: tuple[int, ...], spacing: np.ndarray) -> int:
    """Through-plane axis of a stack: the coarsest spacing.

    Ties (isotropic volumes) go to the axis with the fewest voxels, then the last axis,
    which is the acquisition's slice axis in most scanner exports.
    """
    spacing = np.asarray(spacing, dtype=float)
    coarsest = np.flatnonzero(np.isclose(spacing, spacing.max(), rtol=1e-3))
    return int(min(coarsest, key=lambda a: (shape[a], -a)))


def _geometry_problems(
    path: Path,
    img: nib.Nifti1Image,
    hdr: nib.Nifti1Header,
    settings: ValidationSettings,
    notes: list[str],
) -> list[str]:
    """Affine, orientation codes, qform/sform agreement and voxel sizes: where the image is
    in the scanner (an ImageError for what `orientation_notes` refuses; notes appended)."""
    if not affine_usable(np.asarray(img.affine, dtype=float)):
        return [f"{path}: affine is singular or non-finite, cannot place the image"]
    for name, (aff, code) in {
        "qform": hdr.get_qform(coded=True),
        "sform": hdr.get_sform(coded=True),
    }.items():
        if code and code > 0 and not affine_usable(aff):
            return [f"{path}: {name} is singular or non-finite, cannot place the image"]
    notes.extend(orientation_notes(path, hdr, img.shape, settings.qform_sform_note_mm))
    spacing = voxel_sizes(img.affine)
    lo, hi = settings.voxel_size_range_mm
    if np.any(spacing < lo) or np.any(spacing > hi):
        units = hdr.get_xyzt_units()[0]
        return [
            f"{path}: voxel sizes {', '.join(f'{v:.4g}' for v in spacing)} mm are implausible "
            f"for MRI (expected {lo:g}-{hi:g} mm; header spatial unit: {units}): "
            "affine in other units or broken"
        ]
    return []


def _image_problems(
    path: Path, img: nib.Nifti1Image, kind: str, settings: ValidationSettings, info: dict
) -> list[str]:
    """Checks in order of dependence; the first level that fails ends the checking.

    Shape, data type, orientation codes and scaling are read as every raw-input reader
    reads them (the helpers of `load_input_image`); an ImageError from those is the
    image's one problem. What they note goes to ``info["notes"]`` (the report shows it).
    """
    shape = tuple(int(s) for s in img.shape)
    info["shape"] = list(shape)  # as stored: a squeezed 4th dimension's note explains it
    info["dtype"] = str(img.get_data_dtype())
    notes: list[str] = info["notes"]
    img, squeezed = squeeze_to_3d(path, img)
    notes.extend(squeezed)
    check_scalar(path, img)
    shape = tuple(int(s) for s in img.shape)
    hdr = read_header(path)  # as stored: nibabel's fixes would hide problems
    zooms = np.asarray(hdr["pixdim"][1:4], dtype=float)
    info["voxel_sizes_mm"] = [round(float(z), 4) for z in zooms]
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        return [f"{path}: voxel sizes must be positive, header has {zooms.tolist()}"]
    notes.extend(scaling_notes(path, hdr))
    problems = _geometry_problems(path, img, hdr, settings, notes)
    if problems:
        return problems
    info["bounds_mm"] = _world_bounds(img.affine, shape)
    data = np.asanyarray(img.dataobj)
    finite = np.isfinite(data)
    if not finite.all():
        problems.append(f"{path}: {int(data.size - finite.sum())} voxels are NaN or Inf")
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
    return problems


def _world_bounds(affine: np.ndarray, shape: tuple[int, ...]) -> list[list[float]]:
    """Scanner-space box (min and max corner, mm) around the image's voxel centres."""
    pts = (np.asarray(affine, dtype=float) @ corner_voxels(shape))[:3]
    return [pts.min(axis=1).round(3).tolist(), pts.max(axis=1).round(3).tolist()]


def check_image(path: str | os.PathLike[str], kind: str, settings: ValidationSettings) -> dict:
    """Check one image; returns a dict with ``ok`` and ``problems`` ("<file>: <problem>").

    Never raises: a malformed file must become a message about that file, not a crash
    of the validation of the whole session.
    """
    path = Path(path)
    info: dict[str, Any] = {
        "path": source_reference(path),  # a BIDS URI: the folders may name the patient
        "name": path.name,
        "problems": [],
        "notes": [],
    }
    try:
        img = load_nifti(path, verify_checksum=True)
        info["problems"] = _image_problems(path, img, kind, settings, info)
    except ImageError as exc:
        info["problems"] = [str(exc)]
    except MemoryError:  # the job needs more memory; the file may well be fine
        raise
    except Exception as exc:  # a case the checks above do not know: still name the file
        text = " ".join(str(exc).split())
        info["problems"] = [
            f"{path}: unexpected error while checking ({type(exc).__name__}: {text})"
        ]
    # problems name the file inside its dataset, not by the folders it lies in
    for spelled in {str(path), os.path.abspath(path)}:
        info["problems"] = [p.replace(spelled, info["path"]) for p in info["problems"]]
    info["ok"] = not info["problems"]
    return info


def check_overlap(images: list[dict]) -> list[str]:
    """Images of one session that share no scanner space with any other image of it.

    Stacks (or T1w/T2w) of one session all cover the same head; one that lies elsewhere
    has a wrong affine or belongs to another scan, and would wreck the reconstruction.
    """
    boxes = [(info, np.asarray(info["bounds_mm"])) for info in images if "bounds_mm" in info]
    if len(boxes) < 2:
        return []
    problems = []
    for info, box in boxes:
        others = [b for i, b in boxes if i is not info]
        if any(np.all(box[0] <= b[1]) and np.all(b[0] <= box[1]) for b in others):
            continue
        centre = box.mean(axis=0)
        dist = min(float(np.linalg.norm(centre - b.mean(axis=0))) for b in others)
        problems.append(
            f"{info['path']}: does not overlap any other image of this session in scanner "
            f"space (its centre is {dist:.0f} mm from the nearest other image's): wrong affine, "
            "or an image from another scan?"
        )
    return problems


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
    if record.reconstruction and images:
        images[0]["made_by"] = made_by(record.images[0].path)
    for info in images:
        errors.extend(info["problems"])
    errors.extend(check_overlap(images))
    errors.extend(check_age(record, settings))
    return {
        "subject": record.subject,
        "session": record.session,
        "prefix": record.prefix,
        "reldir": record.reldir,
        "kind": record.kind,
        # a fetal reconstruction made elsewhere: its rec label (the report says so)
        "reconstruction": record.reconstruction,
        "age_weeks": record.age_weeks,
        "age_measure": record.age_measure,
        "age_column": record.age_column,
        "age_source": record.age_source,
        "notes": [*record.notes, *(n for info in images for n in info["notes"])],
        "images": images,
        "status": "fail" if errors else "pass",
        "errors": errors,
        "settings": {
            "fetal_ga_range": list(settings.fetal_ga_range),
            "infant_pma_range": list(settings.infant_pma_range),
            "min_slices": settings.min_slices,
            "voxel_size_range_mm": list(settings.voxel_size_range_mm),
            "qform_sform_note_mm": settings.qform_sform_note_mm,
        },
        "software": {"name": "earlybrain", "version": __version__},
    }


def write_validation(report: dict, path: str | os.PathLike[str]) -> Path:
    return write_json_atomic(path, portable(report))
