"""Brain age from atlas similarity: the template week the brain resembles most.

The subject (atlas orientation, its own size, as the network sees it) is compared with
every template of the atlas prepared the same way (each template lies in the atlas
frame at its own age's size); the normalised cross-correlation peaks at the template of
the most similar age, refined between weeks by a parabola through the peak and its
neighbours. A classical estimate beside the network: it knows only the atlas, so where
the two disagree something is off (the atlas, the registration, or the network).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from earlybrain.atlas.manifest import load_manifest
from earlybrain.atlas.templates import load_template
from earlybrain.brainage.frame import GRID, Grid, mask_centroid_mm, normalise, sample_on_grid


@dataclass(frozen=True)
class TemplateInputs:
    ages: np.ndarray
    images: np.ndarray  # (n_templates, *grid.shape)
    atlas: str


def template_inputs(
    manifest_path: str | os.PathLike[str], contrast: str = "T2w", grid: Grid = GRID
) -> TemplateInputs:
    """Every template of `contrast`, masked, on the grid at its own size."""
    manifest = load_manifest(manifest_path)
    ages, images = [], []
    for entry in manifest.templates:
        if contrast not in entry.images:
            continue
        tpl = load_template(manifest, entry, contrast)
        masked = np.where(tpl.mask > 0, np.clip(tpl.image, 0, None), 0.0)
        centre = mask_centroid_mm(tpl.mask, tpl.affine)
        images.append(normalise(sample_on_grid(masked, tpl.affine, np.eye(3), centre, grid)))
        ages.append(entry.age_weeks)
    if len(ages) < 2:
        raise ValueError(f"{manifest.path}: atlas similarity needs at least 2 {contrast} templates")
    return TemplateInputs(np.asarray(ages), np.stack(images), manifest.name)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation over the voxels where either image has brain."""
    where = (a > 0) | (b > 0)
    x, y = a[where] - a[where].mean(), b[where] - b[where].mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else 0.0


def similarity_age(subject: np.ndarray, templates: TemplateInputs) -> dict[str, object]:
    """Age of the most similar template, refined by a parabola through the peak."""
    scores = np.array([ncc(subject, t) for t in templates.images])
    k = int(np.argmax(scores))
    age = float(templates.ages[k])
    if 0 < k < len(scores) - 1:
        s0, s1, s2 = scores[k - 1 : k + 2]
        curv = s0 - 2 * s1 + s2
        if curv < 0:
            step = float(templates.ages[k + 1] - templates.ages[k])
            age += float(np.clip(0.5 * (s0 - s2) / curv, -0.5, 0.5)) * step
    return {
        "age_weeks": age,
        "best_template_weeks": float(templates.ages[k]),
        "at_range_edge": k in (0, len(scores) - 1),
        "ncc_by_template": {
            f"{a:g}": round(float(s), 4) for a, s in zip(templates.ages, scores, strict=True)
        },
        "atlas": templates.atlas,
    }
