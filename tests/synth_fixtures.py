"""Tiny synthetic NIfTI phantoms and BIDS layouts for unit tests.

Independent of earlybrain.simulate on purpose: these tests exercise discovery,
validation, N4 and reporting on inputs whose properties are known exactly, and must
not change when the simulator's realism improves.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

# Workflow settings for tests that run the whole DAG on the tiny preset (1.6 mm truth):
# the same jobs as the defaults, each doing less work.
FAST_WORKFLOW_CONFIG = """\
preprocess:
  n4:
    iterations: [20]
recon:
  resolution_mm: 1.6
  outer_iterations: 1
register:
  syn_iterations: [20, 10, 5]
"""


def phantom(shape: Sequence[int] = (48, 48, 12), spacing=(2.0, 2.0, 4.0), seed: int = 0):
    """Ellipsoidal 'head' with three intensity classes plus Rician-like noise.

    Returns (image, truth) where truth is the noise-free piecewise-constant image.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    grids = np.meshgrid(*axes, indexing="ij")
    radii = [0.42 * n * s for n, s in zip(shape, spacing, strict=True)]
    r = np.sqrt(sum((g / rad) ** 2 for g, rad in zip(grids, radii, strict=True)))
    truth = np.zeros(shape, np.float32)
    truth[r < 1.0] = 300.0  # "CSF/scalp" ring
    truth[r < 0.8] = 200.0  # "grey matter"
    truth[r < 0.5] = 120.0  # "white matter"
    # a few bright blobs so the content is not radially symmetric
    for _ in range(4):
        c = [rng.uniform(-0.3, 0.3) * rad for rad in radii]
        d = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True)))
        truth[(d < 0.12 * min(radii)) & (r < 0.8)] = 260.0
    noise = rng.normal(0, 6.0, shape) + 1j * rng.normal(0, 6.0, shape)
    img = np.abs(truth + noise).astype(np.float32)
    return img, truth


def smooth_bias(shape: Sequence[int], spacing=(2.0, 2.0, 4.0), strength: float = 0.5) -> np.ndarray:
    """A smooth multiplicative field exp(linear + quadratic) in scanner millimetres.

    Coordinates are in units of 100 mm from the grid centre (like coil shading, the
    field's smoothness is physical, not tied to the matrix size).
    """
    axes = [(np.arange(n) - (n - 1) / 2) * s / 100.0 for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    log_field = strength * (0.8 * x + 0.5 * y - 0.6 * x * y + 0.4 * z**2)
    return np.exp(log_field).astype(np.float32)


def oblique_affine(spacing=(2.0, 2.0, 4.0), angle_deg: float = 15.0) -> np.ndarray:
    t = np.deg2rad(angle_deg)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = [-40.0, -50.0, -20.0]
    return aff


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype=np.int16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(data)
    if np.issubdtype(np.dtype(dtype), np.integer):
        arr = np.round(arr)
    img = nib.Nifti1Image(arr.astype(dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


def make_stack(path: Path, shape=(48, 48, 12), spacing=(2.0, 2.0, 4.0), seed: int = 0) -> Path:
    img, _ = phantom(shape, spacing, seed)
    img *= smooth_bias(shape, spacing, 0.5)
    return write_nifti(path, img, oblique_affine(spacing))


def make_bids(
    root: Path,
    fetal: dict[str, float] | None = None,
    infant: dict[str, float] | None = None,
    n_stacks: int = 2,
    ga_column: str = "ga_weeks",
    pma_column: str = "pma_weeks",
    stack_shape=(40, 40, 10),
    volume_shape=(40, 40, 40),
) -> Path:
    """A small BIDS raw dataset: fetal stacks (run-<n>_T2w) and infant 3D T1w+T2w."""
    fetal = fetal if fetal is not None else {"f01": 25.0}
    infant = infant if infant is not None else {}
    root.mkdir(parents=True, exist_ok=True)
    description = '{"Name": "synthetic", "BIDSVersion": "1.9.0"}\n'
    (root / "dataset_description.json").write_text(description)
    lines = [f"participant_id\t{ga_column}\t{pma_column}"]
    for i, (sub, ga) in enumerate(fetal.items()):
        lines.append(f"sub-{sub}\t{ga}\tn/a")
        for run in range(1, n_stacks + 1):
            make_stack(
                root / f"sub-{sub}" / "anat" / f"sub-{sub}_run-{run}_T2w.nii.gz",
                shape=stack_shape,
                seed=10 * i + run,
            )
    for i, (sub, pma) in enumerate(infant.items()):
        lines.append(f"sub-{sub}\tn/a\t{pma}")
        for j, suffix in enumerate(("T1w", "T2w")):
            make_stack(
                root / f"sub-{sub}" / "anat" / f"sub-{sub}_{suffix}.nii.gz",
                shape=volume_shape,
                spacing=(1.5, 1.5, 1.5),
                seed=100 + 10 * i + j,
            )
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


def corrupt_gzip(path: Path) -> None:
    """Truncate a .nii.gz in the middle of its compressed stream."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    try:  # make sure it really is unreadable now
        gzip.decompress(path.read_bytes())
    except (EOFError, OSError):
        return
    raise AssertionError("truncation did not corrupt the gzip stream")
