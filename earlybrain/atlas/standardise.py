"""Bring atlas subjects into the standard frame, once, before any week is built.

Subjects arrive in any pose, at any resolution and intensity scale; groupwise
registration needs them axis-aligned in one RAS frame with comparable intensities.
A subject with labels finds its frame from them (`atlas.frame`), one without by a
rigid registration to a reference atlas of the nearest age; it is then resampled onto
a grid around its brain, at its own resolution, with its brain intensities scaled to a
common value. Apart from `atlas.build` because this is done per subject, whatever the
weeks, and needs no template.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from earlybrain.atlas.buildspec import BuildParams
from earlybrain.atlas.frame import standard_frame
from earlybrain.atlas.manifest import AtlasManifest, select_template
from earlybrain.atlas.templates import load_template
from earlybrain.geometry import apply
from earlybrain.io.nifti import voxel_sizes
from earlybrain.register import antsio

N_LABELS = 12  # earlybrain's label scheme: 7 tissues split left/right


@dataclass
class AtlasSubject:
    """One input: a brain volume (any pose), its age, and labels and/or a brain mask."""

    image: np.ndarray
    affine: np.ndarray
    age_weeks: float
    labels: np.ndarray | None = None  # earlybrain's 12 labels
    mask: np.ndarray | None = None  # default: labels > 0, else image > 0
    name: str = ""


@dataclass
class Prepared:
    """A subject resampled into the standard frame (axis-aligned RAS grid)."""

    name: str
    age_weeks: float
    image: Any  # ants image, intensities scaled to intensity_scale
    labels: Any | None  # ants image of labels
    mask: Any  # ants image
    lo: np.ndarray  # standard-frame bounding box of the brain (mm)
    hi: np.ndarray
    frame: str  # how the standard frame was found


def _scaled_brain(image: np.ndarray, mask: np.ndarray, params: BuildParams) -> np.ndarray:
    inside = image[mask > 0]
    top = float(np.percentile(inside, params.intensity_percentile)) if inside.size else 0.0
    if top <= 0:
        raise ValueError("a subject's brain mask holds no positive intensities")
    return np.where(mask > 0, image * (params.intensity_scale / top), 0.0).astype(np.float32)


def _reference_frame(
    subject: AtlasSubject, mask: np.ndarray, reference: AtlasManifest, params: BuildParams
) -> np.ndarray:
    """World -> standard map of an unlabelled subject, by rigid registration to a reference."""
    from earlybrain.register.register import RegistrationParams, rigid_align

    choice = select_template(reference, subject.age_weeks, "T2w", max_distance_weeks=4.0)
    tpl = load_template(reference, choice.template, "T2w")
    rp = RegistrationParams(threads=params.threads, random_seed=params.random_seed)
    with tempfile.TemporaryDirectory(prefix="earlybrain-frame-") as tmp:
        M, _ = rigid_align(tpl, subject.image, subject.affine, mask, tmp, rp)
    lin = M[:3, :3]
    scale = float(np.cbrt(np.linalg.det(lin)))
    R = lin / scale  # template direction -> subject direction
    c_ref = apply(tpl.affine, np.argwhere(tpl.mask > 0).astype(float)).mean(axis=0)
    p_c = apply(M, c_ref)
    S = np.eye(4)
    S[:3, :3] = R.T
    S[:3, 3] = c_ref - R.T @ p_c
    return S


def prepare_subject(
    subject: AtlasSubject, params: BuildParams, reference: AtlasManifest | None = None
) -> Prepared:
    """Resample a subject into the standard frame at its own resolution."""
    antsio.ants_module()
    if subject.labels is not None:
        labels = np.rint(np.asarray(subject.labels)).astype(np.int16)
        labels[(labels < 0) | (labels > N_LABELS)] = 0
        mask = labels > 0 if subject.mask is None else np.asarray(subject.mask) > 0
        S = standard_frame(labels, subject.affine)
        how = "labels"
    else:
        labels = None
        mask = (
            np.asarray(subject.image) > 0 if subject.mask is None else np.asarray(subject.mask) > 0
        )
        if reference is None:
            raise ValueError(
                f"subject {subject.name or '?'} has no labels: give a reference atlas to "
                "find its orientation"
            )
        S = _reference_frame(subject, mask.astype(np.uint8), reference, params)
        how = f"rigid registration to {reference.name}"
    if mask.sum() < 100:
        raise ValueError(f"subject {subject.name or '?'}: brain mask is empty or tiny")
    vox = float(np.min(voxel_sizes(subject.affine)))
    pts = apply(S @ subject.affine, np.argwhere(mask).astype(np.float64))
    lo = pts.min(axis=0) - params.margin_mm
    hi = pts.max(axis=0) + params.margin_mm
    shape = tuple(int(np.ceil((h - low) / vox)) + 1 for low, h in zip(lo, hi, strict=True))
    grid = np.diag([vox, vox, vox, 1.0])
    grid[:3, 3] = lo
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    src = apply(
        np.linalg.inv(subject.affine) @ np.linalg.inv(S) @ grid, idx.reshape(-1, 3).astype(float)
    ).T
    img = _scaled_brain(np.asarray(subject.image, dtype=np.float32), mask, params)
    img_s = ndimage.map_coordinates(img, src, order=1, mode="constant").reshape(shape)
    mask_s = ndimage.map_coordinates(mask.astype(np.uint8), src, order=0).reshape(shape)
    lab_s = None
    if labels is not None:
        lab_s = ndimage.map_coordinates(labels, src, order=0, mode="constant").reshape(shape)
    return Prepared(
        name=subject.name,
        age_weeks=float(subject.age_weeks),
        image=antsio.to_ants(img_s * (mask_s > 0), grid),
        labels=None if lab_s is None else antsio.to_ants(lab_s.astype(np.float32), grid),
        mask=antsio.to_ants(mask_s.astype(np.float32), grid),
        lo=pts.min(axis=0),
        hi=pts.max(axis=0),
        frame=how,
    )
