"""Label maps the segmentation network is trained on, on its working grid.

Three sources, all in earlybrain's 12-label scheme (plus the simulator's scene labels):
simulated heads (`make_phantom`: fetuses over the fetal range and infants of 0-24
months, with skull, scalp, body and fluid around the brain), the templates' label maps
of the atlas, and a lab's own label maps (earlybrain labels, or FeTA's 7 tissues) for
fine-tuning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy import ndimage

from earlybrain import shared_data
from earlybrain.io.nifti import load_nifti, voxel_sizes
from earlybrain.simulate.phantom import make_phantom

log = logging.getLogger(__name__)

# changes whenever the phantom or this preparation changes: a cache never serves stale maps
DATA_VERSION = 3
# a foreign scheme's label -> an earlybrain label of that tissue (the left one for lateral
# tissues; intensities and targets are per tissue, so the side does not matter).
# FeTA: 1 eCSF, 2 cortical GM, 3 WM, 4 ventricles, 5 cerebellum, 6 deep GM, 7 brainstem.
# Fidon et al. 2021 (fidon-sb-atlas): 1 WM, 2 ventricles, 3 cerebellum, 4 eCSF,
# 5 cortical GM, 6 deep GM, 7 brainstem, 8 corpus callosum (white matter in FeTA's 7).
SCHEME_TO_EARLYBRAIN: dict[str, np.ndarray] = {
    "feta": np.array([0, 1, 2, 4, 6, 8, 10, 12], dtype=np.uint8),
    "fidon": np.array([0, 4, 6, 8, 1, 2, 10, 12, 4], dtype=np.uint8),
}
DEFAULT_SCHEME = "earlybrain"  # label maps already in earlybrain's labels
SCHEMES = (DEFAULT_SCHEME, *SCHEME_TO_EARLYBRAIN)


def crop_to_content(labels: np.ndarray, margin: int = 4) -> np.ndarray:
    """Cut a label map to the bounding box of its nonzero voxels plus a margin."""
    idx = np.argwhere(labels > 0)
    if idx.size == 0:
        raise ValueError("label map is empty")
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, labels.shape)
    return np.ascontiguousarray(labels[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))])


def phantom_map(args: tuple[float, int, float, float, str]) -> np.ndarray:
    """Detailed labels of one simulated head (age: weeks GA for a fetus, months for an
    infant; subject seed, voxel size, ventricle size factor, kind) on the grid."""
    age, seed, voxel_mm, ventricle_factor, kind = args
    ph = make_phantom(age, seed, kind=kind, voxel_mm=voxel_mm, ventricle_factor=ventricle_factor)
    return crop_to_content(ph.labels)


def phantom_maps(
    ages: list[float],
    seeds: list[int],
    voxel_mm: float,
    workers: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    ventricle_factors: list[float] | None = None,
    kind: str = "fetal",
) -> list[np.ndarray]:
    """Simulated label maps, from a cache when one is given (simulation takes minutes)."""
    factors = ventricle_factors or [1.0] * len(ages)
    jobs = [
        (float(a), int(s), float(voxel_mm), float(f), kind)
        for a, s, f in zip(ages, seeds, factors, strict=True)
    ]
    key = hashlib.sha256(repr((DATA_VERSION, jobs)).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"segment-labelmaps-{key}.pkl" if cache_dir else None
    if cache is not None and cache.is_file():
        log.info("label maps from cache %s", cache)
        return pickle.loads(cache.read_bytes())
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            maps = list(pool.map(phantom_map, jobs))
    else:
        maps = [phantom_map(j) for j in jobs]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(maps))
        os.replace(tmp, cache)
    return maps


def to_grid(labels: np.ndarray, affine: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Nearest-neighbour resampling of a label map to isotropic `voxel_mm` (voxel axes kept)."""
    zoom = voxel_sizes(affine) / float(voxel_mm)
    if np.allclose(zoom, 1.0, atol=1e-3):
        return labels
    return ndimage.zoom(labels, zoom, order=0, mode="nearest", grid_mode=True)


def to_earlybrain(labels: np.ndarray, scheme: str, source: str | os.PathLike[str]) -> np.ndarray:
    """Integer labels of `scheme` as earlybrain labels; an unknown label names the file."""
    if scheme not in SCHEMES:
        raise ValueError(f"label scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    table = SCHEME_TO_EARLYBRAIN.get(scheme)
    top = 16 if table is None else len(table) - 1
    if labels.min() < 0 or labels.max() > top:
        raise ValueError(f"{source}: label {labels.max()} is outside the {scheme} scheme (0-{top})")
    return labels.astype(np.uint8) if table is None else table[labels]


def file_map(
    path: str | os.PathLike[str], voxel_mm: float, scheme: str = "earlybrain"
) -> np.ndarray:
    """A label map file (earlybrain's labels, FeTA's 7 tissues or Fidon's 8 labels) on
    the working grid."""
    img = load_nifti(path)
    data = np.asarray(img.dataobj)
    if data.ndim != 3:
        raise ValueError(f"{path}: a label map must be 3D, got shape {data.shape}")
    if not np.allclose(data, np.rint(data)) or data.min() < 0:
        raise ValueError(f"{path}: a label map must hold non-negative integer labels")
    labels = to_earlybrain(np.rint(data).astype(np.int64), scheme, path)
    return crop_to_content(to_grid(labels, img.affine, voxel_mm))


def fidon_maps(split: str, voxel_mm: float) -> tuple[list[str], list[np.ndarray]]:
    """(time point names, label maps on the grid) of one split of the real fetal anatomies
    of fidon-sb-atlas (`earlybrain.shared_data.fidon_split`)."""
    root = shared_data.require(shared_data.FIDON)
    names = list(shared_data.fidon_split(split))
    return names, [file_map(root / n / "parcellation.nii.gz", voxel_mm, "fidon") for n in names]
