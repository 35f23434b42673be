"""Which way round is the brain? The segmentation network settles what the template cannot.

Why: the initialisation ranks orientations by how well the image correlates with the
template. Our templates are drawn from the simulator: smooth, nearly symmetric shapes
that a real brain matches about as well facing forwards as facing backwards. On the
real reconstruction of mial-sub01 the right orientation and the one turned 180 degrees
about the head's long axis scored 0.5725 and 0.5728 after refinement in one run, 0.5743
and 0.5722 in another run of the same reconstruction; from the wrong one the network
found a cerebellum of 0.4 mL instead of 2.6. On the 15 real images of the Fidon atlas,
in atlas orientation, NCC chose the turned one for the 21-week brain.

The segmentation network was trained on label maps of real anatomy with random
contrasts, within 15 degrees of atlas orientation: it is sure of its labels on a brain
turned the right way and less sure on one turned the wrong way. So each refined start
gets the network's mean confidence (its highest class probability) inside the
template's brain mask, with the image resampled into the template through each start,
and the surest start replaces NCC's choice when it leads it by InitParams.vote_margin
(on a blurry 1.6 mm simulated reconstruction the confidences of three starts spread
0.001, which says nothing: NCC's choice, the right one there, stands).
On those 15 Fidon images the right start was the more confident one in every case
(0.83-0.86 against 0.76-0.83); `bench/orientation.py` measures it over random poses.
(Dice of the network's tissues against the template's labels was tried first: it chose
the turned start for 3 of the first 5; the cartoon labels reward overlap, not anatomy.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from earlybrain.geometry import apply

# a point map (template mm -> subject mm) in, a confidence (higher is better) out
Vote = Callable[[np.ndarray], float]


def resample_through(
    moving: np.ndarray, moving_affine: np.ndarray, shape: tuple[int, ...], affine: np.ndarray,
    point_map: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """`moving` on the grid (`shape`, `affine`), each grid point taken through `point_map`
    into the moving image's world (linear interpolation, zero outside)."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    vox = apply(np.linalg.inv(moving_affine) @ point_map @ affine, idx).T
    out = ndimage.map_coordinates(moving, vox, order=1, mode="constant", cval=0.0)
    return out.reshape(shape).astype(np.float32)


def confidence(prob: np.ndarray, region: np.ndarray) -> float:
    """Mean over `region` of the highest class probability (classes first in `prob`)."""
    return float(np.mean(np.max(prob, axis=0)[region]))


def network_vote(
    template_mask: np.ndarray,
    template_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    model: Any,
) -> Vote:
    """The vote of a segmentation network (a segment.inference.SegmentationModel) on
    starts of the brain-only image `moving`: its confidence inside `template_mask`."""
    from earlybrain.segment.inference import predict_probabilities

    shape = tuple(template_mask.shape[:3])
    region = np.asarray(template_mask) > 0

    def vote(point_map: np.ndarray) -> float:
        image = resample_through(moving, moving_affine, shape, template_affine, point_map)
        return confidence(predict_probabilities(image, template_affine, model), region)

    return vote
