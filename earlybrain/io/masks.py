"""Precomputed brain masks from a BIDS derivatives folder (e.g. drawn by hand).

A lab that already has masks points `masks_dir` at a derivatives dataset laid out like
the raw one, one mask per stack on the stack's own grid:
``<masks_dir>/sub-X[/ses-Y]/anat/<name>.nii[.gz]``. Tools name them differently; any of
these is found, for a stack ``sub-1_run-2_T2w.nii.gz``:
- ``sub-1_run-2_T2w_desc-brain_mask`` (MIALSRTK: the image's full stem + ``_desc-brain_mask``)
- ``sub-1_run-2_desc-brain_mask``, ``sub-1_run-2_mask``, ``sub-1_run-2_brainmask``
- the same with the contrast kept (``sub-1_run-2_T2w_mask``, ``sub-1_run-2_T2w_brainmask``)
- ``sub-1_run-2_desc-brain_T2w_mask`` (earlybrain's own output naming)
A mask directory without a mask for some stack is not an error: the masking network
masks that stack, and the log, the stage table and the report say which.
"""

from __future__ import annotations

from pathlib import Path

from earlybrain.io.provenance import source_reference

MASK_ENDINGS = ("_desc-brain_mask", "_mask", "_brainmask")
EXTENSIONS = (".nii.gz", ".nii")


class MaskNotFoundError(FileNotFoundError):
    """No precomputed mask for a stack; the message names the stack and where we looked."""


def mask_names(image_stem: str, suffix: str = "") -> list[str]:
    """File names a mask of the image `<image_stem>[_<suffix>]` may have, in the order
    they are tried (`image_stem`: entities without the contrast suffix, e.g. `sub-1_run-2`)."""
    bases = [f"{image_stem}_{suffix}", image_stem] if suffix else [image_stem]
    names = [f"{b}{end}{ext}" for b in bases for end in MASK_ENDINGS for ext in EXTENSIONS]
    if suffix:
        names += [f"{image_stem}_desc-brain_{suffix}_mask{ext}" for ext in EXTENSIONS]
    return names


def find_mask(masks_dir: str | Path, reldir: str, image_stem: str, suffix: str = "") -> Path:
    """The precomputed mask of one image (see `mask_names`)."""
    anat = Path(masks_dir) / reldir / "anat"
    for name in mask_names(image_stem, suffix):
        if (anat / name).is_file():
            return anat / name
    shown = ", ".join(mask_names(image_stem, suffix)[::2])
    raise MaskNotFoundError(
        f"no precomputed brain mask for {image_stem}{'_' + suffix if suffix else ''} in "
        f"{source_reference(anat)} (looked for {shown}, also as .nii)"
    )
