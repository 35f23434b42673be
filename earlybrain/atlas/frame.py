"""The standard (atlas) frame of a labelled brain: RAS axes and origin found from its labels.

Why: subjects arrive in any pose, and an atlas must be in a standard orientation. With
labels, anatomy fixes the frame without any reference image: left-right from the
hemisphere labels, anterior-posterior as the long axis of the cerebrum in the plane
orthogonal to it (brains are longer than high), posterior being where the cerebellum
lies, superior completing a right-handed frame; the origin is the cerebrum's centroid,
so the midsagittal plane is close to x = 0.
"""

from __future__ import annotations

import numpy as np

from earlybrain.geometry import apply

# earlybrain's 12 labels (earlybrain.anatomy.labels)
CEREBRUM = (2, 3, 4, 5, 6, 7, 10, 11)
LEFT = (2, 4, 6, 10)
RIGHT = (3, 5, 7, 11)
INFRATENTORIAL = (8, 9, 12)


class FrameError(ValueError):
    """The labels do not contain what is needed to find the standard frame."""


def _points(labels: np.ndarray, affine: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    idx = np.argwhere(np.isin(labels, values))
    return apply(affine, idx.astype(np.float64))


def standard_frame(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """4x4 map from the subject's world (RAS mm) to the standard frame, from earlybrain labels."""
    labels = np.asarray(labels)
    parts = {}
    for name, vals in (
        ("cerebrum", CEREBRUM),
        ("left", LEFT),
        ("right", RIGHT),
        ("infratentorial", INFRATENTORIAL),
    ):
        pts = _points(labels, affine, vals)
        if pts.shape[0] < 10:
            raise FrameError(
                f"labels have no {name} voxels ({vals}): cannot find the brain's orientation; "
                "labels must follow earlybrain's 12-label scheme"
            )
        parts[name] = pts
    centre = parts["cerebrum"].mean(axis=0)
    x = parts["right"].mean(axis=0) - parts["left"].mean(axis=0)
    x /= np.linalg.norm(x)
    rel = parts["cerebrum"] - centre
    rel -= np.outer(rel @ x, x)  # project onto the plane orthogonal to left-right
    evals, evecs = np.linalg.eigh(np.cov(rel.T))
    y = evecs[:, int(np.argmax(evals))]
    y -= (y @ x) * x
    y /= np.linalg.norm(y)
    if (parts["infratentorial"].mean(axis=0) - centre) @ y > 0:
        y = -y  # the cerebellum is posterior
    z = np.cross(x, y)
    R = np.stack([x, y, z], axis=1)  # columns: standard axes in subject world
    S = np.eye(4)
    S[:3, :3] = R.T
    S[:3, 3] = -R.T @ centre
    return S
