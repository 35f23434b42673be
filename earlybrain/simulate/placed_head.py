"""A fetal head placed in a simulated pregnancy, and what it adds to a slice.

The head is a voxel image of its own (`fetal_head`); a scene puts it somewhere in the
uterus and samples it at the scanner points of each slice: skull, scalp, face and eyes
in the scene's class intensities, the brain by the head's brain map, and the
intracranial fraction that is the masking network's truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from earlybrain.simulate.fetal_head import (
    EYE,
    FACE,
    INTRACRANIAL,
    OUTSIDE,
    SCALP_LAYER,
    SKULL_LAYER,
    FetalHead,
)
from earlybrain.simulate.scene_intensities import CLASS_ID
from earlybrain.simulate.shapes import norm2, rel

_HEAD_CLASS = {SKULL_LAYER: "skull", SCALP_LAYER: "scalp", FACE: "face", EYE: "eye"}


@dataclass
class PlacedHead:
    """A fetal head in the scene at its reference pose."""

    head: FetalHead
    to_scene: np.ndarray  # head frame -> scene (4x4)
    voxel_from_scene: np.ndarray  # scene -> head voxel (4x4)
    intracranial: np.ndarray  # float32 0/1 grid, for partial-volume truth
    radius: float  # of a sphere about its centre that holds its grid

    @property
    def centre(self) -> np.ndarray:
        return self.to_scene[:3, 3]


def place_head(head: FetalHead, centre: np.ndarray, rot: np.ndarray) -> PlacedHead:
    to_scene = np.eye(4)
    to_scene[:3, :3] = rot
    to_scene[:3, 3] = centre
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in head.layers.shape], indexing="ij"))
    corners = corners.reshape(3, -1).T @ head.affine[:3, :3].T + head.affine[:3, 3]
    return PlacedHead(
        head,
        to_scene,
        np.linalg.inv(to_scene @ head.affine),
        (head.layers == INTRACRANIAL).astype(np.float32),
        float(np.max(np.linalg.norm(corners, axis=1))),
    )


def paint_head(
    Q: np.ndarray,
    placed: PlacedHead,
    brain_map: tuple,
    lut: np.ndarray,
    amp: np.ndarray,
    values: np.ndarray,
    tex: np.ndarray,
    frac: np.ndarray,
) -> None:
    """Skull, scalp, face, eyes and the brain of one head, at fetal-frame points."""
    near = np.flatnonzero(norm2(rel(Q, placed.centre)) <= placed.radius**2)
    if near.size == 0:
        return
    head = placed.head
    V = placed.voxel_from_scene.astype(np.float32)
    vox = V[:3, :3] @ Q[:, near] + V[:3, 3:4]
    layer = ndimage.map_coordinates(head.layers, vox, order=0, mode="constant", cval=OUTSIDE)
    inside = ndimage.map_coordinates(placed.intracranial, vox, order=1, mode="constant")
    frac[near] = np.maximum(frac[near], inside)
    vals = values[near]
    t = tex[near]
    for lay, name in _HEAD_CLASS.items():
        sel = layer == lay
        cid = CLASS_ID[name]
        vals[sel] = lut[cid] * (1.0 + amp[cid] * t[sel])
    brain = layer == INTRACRANIAL
    if brain.any():
        kind, params = brain_map
        if kind == "labels":
            lab = ndimage.map_coordinates(head.tissue, vox[:, brain], order=0, mode="constant")
            vals[brain] = params[lab] * (1.0 + 0.05 * t[brain])
        else:
            gamma, floor, gain = params
            img = ndimage.map_coordinates(head.image, vox[:, brain], order=1, mode="constant")
            vals[brain] = gain * (floor + (1 - floor) * np.clip(img, 0, 1.5) ** gamma)
    values[near] = vals
