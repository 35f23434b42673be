"""NIfTI reading and writing with clear errors, atomic and byte-reproducible output."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from earlybrain.io.atomic import write_bytes_atomic


class ImageError(ValueError):
    """An input image that cannot be used; the message names the file and the problem."""


def load_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """Load a NIfTI image fully into memory, turning every failure into an ImageError."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file does not exist")
    try:
        img = nib.load(str(path))
        img.get_fdata(dtype=np.float32)  # force the read so corrupt data fails here
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ImageError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ImageError(f"{path}: not a NIfTI image ({type(img).__name__})")
    return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header)


def save_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    *,
    dtype: type | np.dtype | None = None,
    xyzt_units: tuple[str, str] = ("mm", "sec"),
) -> Path:
    """Save an array as NIfTI; gzip when the name ends in .gz.

    The gzip header carries no timestamp, so the same data gives the same bytes
    (needed for reproducible simulations and for comparing runs), and the write is
    atomic.
    """
    path = Path(path)
    arr = np.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units(*xyzt_units)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    raw = img.to_bytes()
    if path.name.endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
            gz.write(raw)
        raw = buf.getvalue()
    return write_bytes_atomic(path, raw)


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel spacing in mm along each array axis."""
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
