"""Precomputed brain masks from a BIDS derivatives folder (e.g. drawn by hand).

A lab that already has masks points `masks_dir` at a derivatives dataset laid out like
the raw one: ``<masks_dir>/sub-X[/ses-Y]/anat/<image stem>_mask.nii.gz`` (or
``_desc-brain_mask.nii.gz``), one per stack, on the stack's own grid.
"""

from __future__ import annotations

from pathlib import Path

MASK_SUFFIXES = ("_mask.nii.gz", "_desc-brain_mask.nii.gz", "_mask.nii", "_desc-brain_mask.nii")


class MaskNotFoundError(FileNotFoundError):
    """No precomputed mask for a stack; the message names the stack and where we looked."""


def find_mask(masks_dir: str | Path, reldir: str, image_stem: str) -> Path:
    """The precomputed mask of one image (stem without the contrast suffix, e.g. `sub-1_run-2`)."""
    anat = Path(masks_dir) / reldir / "anat"
    tried = [anat / f"{image_stem}{suffix}" for suffix in MASK_SUFFIXES]
    for path in tried:
        if path.is_file():
            return path
    raise MaskNotFoundError(
        f"no precomputed brain mask for {image_stem}: looked for "
        + ", ".join(str(p) for p in tried)
    )
