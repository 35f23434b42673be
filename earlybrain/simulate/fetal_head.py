"""Fetal heads to place in a simulated uterus: a brain inside its skull and scalp, with
the face and eyes in front.

A head carries its brain's own image (T2-like, cerebrospinal fluid near 1) and tissue
labels, and the layers around it. The brain comes from one of two sources:
- the simulator's phantoms (`phantom.make_phantom`: any age, any seed);
- real anatomy: a time point of Fidon's spina bifida atlas (T2w super-resolution
  template and its tissue labels, `shared_data.FIDON`), skull-stripped, so the skull
  and scalp are grown around its brain mask here.
The intracranial volume (brain and CSF up to the inner table of the skull) is the brain
mask every masking network of earlybrain learns and is measured against.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from earlybrain.anatomy.labels import FLUID, SCALP, SKULL, to_tissues
from earlybrain.simulate.contrast import intensity_image, scene_value
from earlybrain.simulate.phantom import make_phantom

# head layers
OUTSIDE, INTRACRANIAL, SKULL_LAYER, SCALP_LAYER, FACE, EYE = 0, 1, 2, 3, 4, 5
PAD_MM = 30.0  # room around the skull for the face and eyes


@dataclass
class FetalHead:
    """One fetal head on its own grid (head frame: RAS mm, origin at the brain's centre)."""

    image: np.ndarray  # float32 brain intensities (CSF ~ 1) inside the intracranial volume
    tissue: np.ndarray  # uint8 brain tissue class inside (the source's own classes), else 0
    layers: np.ndarray  # uint8: OUTSIDE, INTRACRANIAL, SKULL_LAYER, SCALP_LAYER, FACE, EYE
    affine: np.ndarray  # voxel -> head frame mm
    ga_weeks: float
    source: str
    half_axes_mm: tuple[float, float, float]  # intracranial half-extent along x, y, z

    @property
    def radius_mm(self) -> float:
        """Radius of a sphere about the origin that holds the skull and scalp."""
        return float(np.linalg.norm(self.half_axes_mm)) * 0.75 + 8.0

    @property
    def n_tissues(self) -> int:
        return int(self.tissue.max())


def _pad(arrays: list[np.ndarray], affine: np.ndarray, pad_vox: int) -> tuple[list, np.ndarray]:
    out = [np.pad(a, pad_vox) for a in arrays]
    shifted = affine.copy()
    shifted[:3, 3] -= affine[:3, :3] @ np.full(3, pad_vox)
    return out, shifted


def _centre_on(affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The affine moved so that the head frame's origin is the mask's bounding-box centre."""
    idx = np.argwhere(mask)
    centre_vox = (idx.min(0) + idx.max(0)) / 2.0
    out = affine.copy()
    out[:3, 3] -= affine[:3, :3] @ centre_vox + affine[:3, 3]
    return out


def _half_axes(mask: np.ndarray, affine: np.ndarray) -> tuple[float, float, float]:
    idx = np.argwhere(mask)
    span = (idx.max(0) - idx.min(0) + 1) * np.abs(np.diag(affine)[:3])
    return tuple(float(s) / 2 for s in span)


def _add_face(
    layers: np.ndarray, affine: np.ndarray, half: tuple[float, ...], rng: np.random.Generator
) -> None:
    """Soft tissue of the face and two eyes (bright vitreous) in front of and below the
    frontal lobes, outside the skull: round bright structures beside the brain that a
    masking network must learn to leave out."""
    a, b, c = half
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in layers.shape], indexing="ij"), -1)
    pts = grid @ affine[:3, :3].T + affine[:3, 3]
    free = layers == OUTSIDE
    face_c = np.array([0.0, 0.78 * b, -0.55 * c])
    face_s = np.array([0.62 * a, 0.42 * b, 0.45 * c]) * rng.uniform(0.9, 1.1, 3)
    face = (((pts - face_c) / face_s) ** 2).sum(-1) <= 1
    layers[face & free] = FACE
    r_eye = 0.16 * a * rng.uniform(0.9, 1.1)
    for side in (-1.0, 1.0):
        direction = np.array([side * 0.45 * a, 0.85 * b, -0.45 * c])
        direction /= np.linalg.norm(direction)
        centre = _first_free(layers, affine, direction) + direction * (r_eye + 0.5)
        eye = ((pts - centre) ** 2).sum(-1) <= r_eye**2
        layers[eye & (layers != SKULL_LAYER) & (layers != INTRACRANIAL)] = EYE


def _first_free(layers: np.ndarray, affine: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """The first point along a ray from the origin that lies outside skull and scalp."""
    inv = np.linalg.inv(affine)
    for r in np.arange(0.0, 200.0, 0.5):
        p = direction * r
        v = np.rint(inv[:3, :3] @ p + inv[:3, 3]).astype(int)
        if np.any(v < 0) or np.any(v >= layers.shape):
            return p
        if layers[tuple(v)] in (OUTSIDE, FACE):
            return p
    return direction * 200.0


def phantom_head(ga_weeks: float, seed: int, voxel_mm: float = 1.0) -> FetalHead:
    """A simulator phantom's head: its T2w image, FeTA tissues, skull and scalp."""
    ph = make_phantom(ga_weeks, seed, kind="fetal", voxel_mm=voxel_mm)
    fluid = scene_value(FLUID, ph, "T2w")
    image = intensity_image(ph, "T2w") / fluid
    intra = (ph.labels >= 1) & (ph.labels <= 12)
    layers = np.zeros(ph.labels.shape, np.uint8)
    layers[intra] = INTRACRANIAL
    layers[ph.labels == SKULL] = SKULL_LAYER
    layers[ph.labels == SCALP] = SCALP_LAYER
    tissue = np.where(intra, to_tissues(ph.labels), 0).astype(np.uint8)
    image = np.where(intra, image, 0.0).astype(np.float32)
    pad = int(np.ceil(PAD_MM / voxel_mm))
    (image, tissue, layers), affine = _pad([image, tissue, layers], ph.affine, pad)
    affine = _centre_on(affine, layers == INTRACRANIAL)
    half = _half_axes(layers == INTRACRANIAL, affine)
    _add_face(layers, affine, half, np.random.default_rng([seed, 7]))
    return FetalHead(image, tissue, layers, affine, float(ga_weeks), "phantom", half)


@functools.lru_cache(maxsize=16)
def _real_anatomy(folder: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, tissue, distance outside the mask in mm, affine) of one Fidon time point,
    cropped around its brain; cached because several heads reuse one anatomy."""
    path = Path(folder)
    srr = nib.load(path / "srr.nii.gz")
    tissue = np.asarray(nib.load(path / "parcellation.nii.gz").dataobj).astype(np.uint8)
    mask = np.asarray(nib.load(path / "mask.nii.gz").dataobj) > 0
    image = np.asarray(srr.dataobj, dtype=np.float32)
    voxel = float(np.abs(srr.header.get_zooms()[0]))
    pad = int(np.ceil(PAD_MM / voxel))
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, mask.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    image, tissue, mask = image[crop], tissue[crop], mask[crop]
    affine = srr.affine.copy()
    affine[:3, 3] += srr.affine[:3, :3] @ lo
    (image, tissue, mask), affine = _pad([image, tissue, mask], affine, pad)
    # CSF level: the bright end of the brain's own histogram (ventricles, eCSF)
    csf = float(np.percentile(image[mask], 97))
    image = np.where(mask, image / max(csf, 1e-6), 0.0).astype(np.float32)
    tissue = np.where(mask, tissue, 0).astype(np.uint8)
    outside = ndimage.distance_transform_edt(~mask, sampling=voxel).astype(np.float32)
    return image, tissue, outside, affine


def real_head(folder: str | Path, rng: np.random.Generator, scale: float = 1.0) -> FetalHead:
    """A real anatomy's head: skull 1-2.5 mm and scalp 2-5 mm grown around its mask,
    scaled by `scale` (the spread of head size at one age)."""
    image, tissue, outside, affine = _real_anatomy(str(Path(folder)))
    skull = rng.uniform(1.0, 2.5)
    scalp = rng.uniform(2.0, 5.0)
    layers = np.zeros(tissue.shape, np.uint8)
    intra = outside == 0
    layers[intra] = INTRACRANIAL
    layers[(outside > 0) & (outside <= skull)] = SKULL_LAYER
    layers[(outside > skull) & (outside <= skull + scalp)] = SCALP_LAYER
    affine = _centre_on(affine, intra)
    affine[:3] *= scale
    half = _half_axes(intra, affine)
    _add_face(layers, affine, half, rng)
    name = Path(folder).name
    ga = float(name.split("_GA")[1].split("_")[0]) if "_GA" in name else float("nan")
    return FetalHead(image, tissue.copy(), layers, affine, ga, f"real:{name}", half)
