"""Load one template of an atlas into memory, with its labels in earlybrain's scheme."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earlybrain.atlas.manifest import AtlasManifest, ManifestError, TemplateEntry
from earlybrain.geometry import voxel_grid_world
from earlybrain.io.nifti import load_nifti


@dataclass
class TemplateImages:
    """A template's image (one contrast), brain mask and labels (earlybrain's 12 or None)."""

    image: np.ndarray
    affine: np.ndarray
    mask: np.ndarray
    dseg: np.ndarray | None
    age_weeks: float
    contrast: str
    space: str
    atlas_name: str


def load_template(
    manifest: AtlasManifest, template: TemplateEntry, contrast: str = "T2w"
) -> TemplateImages:
    """Read a template's files; atlas labels are converted to earlybrain's 12 labels."""
    if contrast not in template.images:
        raise ManifestError(
            f"{manifest.path}: the {template.age_weeks:g}-week template has no {contrast} image"
        )
    img = load_nifti(template.images[contrast])
    mask = load_nifti(template.mask)
    shape = img.shape[:3]
    if mask.shape[:3] != shape or not np.allclose(mask.affine, img.affine, atol=1e-3):
        raise ManifestError(f"{template.mask}: mask grid differs from its template image's")
    dseg = None
    if template.dseg is not None and manifest.labels is not None:
        lab = load_nifti(template.dseg)
        if lab.shape[:3] != shape or not np.allclose(lab.affine, img.affine, atol=1e-3):
            raise ManifestError(f"{template.dseg}: label grid differs from its template image's")
        x_mm = voxel_grid_world(shape, img.affine)[..., 0]
        raw = np.rint(np.asarray(lab.dataobj)).astype(np.int64)
        dseg = manifest.labels.to_earlybrain(raw, x_mm, manifest.midsagittal_plane_x_mm)
    return TemplateImages(
        image=np.asarray(img.dataobj, dtype=np.float32),
        affine=np.asarray(img.affine, dtype=np.float64),
        mask=(np.asarray(mask.dataobj) > 0).astype(np.uint8),
        dseg=dseg,
        age_weeks=template.age_weeks,
        contrast=contrast,
        space=manifest.space,
        atlas_name=manifest.name,
    )
