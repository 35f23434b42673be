"""Held-out test volumes from the simulator, and Dice of a segmentation against the truth.

A simulated volume stands in for a reconstruction in atlas space: a simulated head (the
simulator's head frame is the atlas frame) rendered with the simulator's fetal T2w
contrast, or with a contrast no training sample was drawn from (`UNSEEN_CONTRAST`), plus
noise, and blanked outside the intracranial space as a masked reconstruction is.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from earlybrain.anatomy.labels import BODY, FLUID, SCALP, SKULL
from earlybrain.segment.metrics import tissue_dice
from earlybrain.simulate.contrast import intensity_image
from earlybrain.simulate.phantom import Phantom, make_phantom

# T1w-like: CSF dark, white matter darker than cortex. Training draws either uniform
# random intensities or a jittered T2-like order (CSF brightest); this inverted order is
# in neither family's typical range, so it tests contrast independence.
UNSEEN_CONTRAST = {
    1: 150.0, 2: 520.0, 3: 520.0, 4: 400.0, 5: 400.0, 6: 140.0, 7: 140.0,
    8: 470.0, 9: 470.0, 10: 560.0, 11: 560.0, 12: 480.0,
    SKULL: 80.0, SCALP: 800.0, BODY: 550.0, FLUID: 0.0,
}  # fmt: skip


@dataclass
class SimulatedVolume:
    image: np.ndarray
    affine: np.ndarray
    labels: np.ndarray  # earlybrain detailed labels (0 outside the brain)
    age_weeks: float
    seed: int
    phantom: Phantom


def simulated_volume(
    age: float,
    seed: int,
    voxel_mm: float = 0.8,
    unseen_contrast: bool = False,
    noise: float = 0.02,
    ventricle_factor: float = 1.0,
    kind: str = "fetal",
    contrast: str = "T2w",
    rim_mm: float | None = None,
) -> SimulatedVolume:
    """A simulated, masked brain volume with its labels (seeded); `age` is weeks GA for a
    fetus and months for an infant (whose T1w or T2w contrast the simulator renders).
    The mask keeps `rim_mm` of non-brain around the brain (default: about 1.5 mm)."""
    ph = make_phantom(age, seed, kind=kind, voxel_mm=voxel_mm, ventricle_factor=ventricle_factor)
    img = intensity_image(ph, contrast, values=UNSEEN_CONTRAST if unseen_contrast else None)
    rng = np.random.default_rng([seed, 7])
    img = img + noise * float(np.percentile(img, 99)) * rng.standard_normal(img.shape)
    brain = (ph.labels >= 1) & (ph.labels <= 12)
    if rim_mm is None:
        keep = ndimage.binary_dilation(brain, iterations=max(1, round(1.5 / voxel_mm)))
    else:
        keep = ndimage.distance_transform_edt(~brain, sampling=[voxel_mm] * 3) <= rim_mm
    labels = np.where(brain, ph.labels, 0).astype(np.uint8)
    return SimulatedVolume(
        (np.clip(img, 0, None) * keep).astype(np.float32),
        ph.affine,
        labels,
        ph.age_weeks,
        seed,
        ph,
    )


@dataclass
class RealVolume:
    """A real T2w brain volume with its expert labels (earlybrain labels)."""

    image: np.ndarray
    affine: np.ndarray
    labels: np.ndarray
    age_weeks: float
    name: str


def fidon_volumes(split: str = "val") -> list[RealVolume]:
    """The real T2w templates (`srr.nii.gz`, masked) of one split of fidon-sb-atlas with
    their parcellations: real contrast and real anatomy (spina bifida, Chiari II)."""
    import nibabel as nib

    from earlybrain import shared_data
    from earlybrain.segment.labelmaps import to_earlybrain

    root = shared_data.require(shared_data.FIDON)
    out = []
    for name in shared_data.fidon_split(split):
        img, affine, brain = shared_data.fidon_timepoint(root, name)
        par_path = root / name / "parcellation.nii.gz"
        par = np.rint(np.asanyarray(nib.load(par_path).dataobj)).astype(np.int64)
        labels = to_earlybrain(par, "fidon", par_path)
        week = float(shared_data.fidon_week(name))
        out.append(RealVolume((img * brain).astype(np.float32), affine, labels, week, name))
    return out


def network_vs_atlas(
    age_weeks: float,
    seed: int,
    model: Any,
    atlas_dir: str | Path,
    threads: int = 2,
    unseen_contrast: bool = False,
    ventricle_factor: float = 1.0,
) -> tuple[dict[str, float], dict[str, float]]:
    """Tissue Dice of the network and of atlas propagation on one held-out subject.

    The subject is a brain-masked 0.8 mm volume in a random scanner pose (seeded). The
    registration stage (rigid, affine, SyN to the age-matched template) gives the baseline,
    the template's labels pulled back to the subject; the network segments the registered
    atlas-space volume and its labels come back through the same inverse transforms, as in
    the `segment` rule. Returns (network Dice, atlas Dice) per tissue.
    """
    # registration needs ANTsPy: imported here so that evaluation without it stays light
    from earlybrain.atlas.manifest import load_manifest, select_template
    from earlybrain.atlas.templates import load_template
    from earlybrain.register.register import RegistrationParams, register_images
    from earlybrain.register.synthetic import posed_subject, random_pose
    from earlybrain.segment.pipeline import segment_array, to_subject_space

    manifest = load_manifest(Path(atlas_dir) / "manifest.json")
    params = RegistrationParams(threads=threads)
    sub = posed_subject(
        age_weeks, seed, 0.8, random_pose(np.random.default_rng(seed)),
        values=UNSEEN_CONTRAST if unseen_contrast else None,
        ventricle_factor=ventricle_factor,
    )  # fmt: skip
    choice = select_template(manifest, age_weeks, "T2w", params.max_age_distance_weeks)
    template = load_template(manifest, choice.template, "T2w")
    with tempfile.TemporaryDirectory(prefix="earlybrain-seg-vs-atlas-") as tmp:
        reg = register_images(template, sub.image, sub.affine, sub.mask, tmp, params)
        atlas_space = segment_array(
            reg.atlas_image, reg.atlas_affine, reg.atlas_mask, model,
            manifest.midsagittal_plane_x_mm,
        )  # fmt: skip
        net = to_subject_space(
            atlas_space, reg.atlas_affine, sub.image.shape, sub.affine,
            list(reg.invtransforms), [True, False],
        )  # fmt: skip
    return tissue_dice(net, sub.labels), tissue_dice(reg.subject_dseg, sub.labels)
