"""Brain mask of a fetal reconstruction a lab brings (SVRTK, NiftyMIC, NeSVoR output).

Such a session skips stack masking, stack QC and SVR/SRR; everything after works on a
brain mask of the volume. Those tools write the reconstruction brain-extracted (zero
outside the brain mask they reconstructed with: the Fidon atlas's `srr.nii.gz` is 97 %
exact zeros), so the mask is first read off the volume itself: the largest connected
region of non-zero voxels, holes filled. That is the lab's own mask, so no network can
do better. A volume with signal everywhere (reconstructed without a mask) is masked by
the tissue segmentation network, as an infant's head image is (`preprocess.infant`):
the union of the tissues it finds. How well that works on unmasked real
reconstructions has not been measured (no such data here); the QC JSON says which way
was taken.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain import __version__
from earlybrain.io.atomic import write_json_atomic
from earlybrain.io.nifti import load_input_image, load_nifti, save_nifti, voxel_sizes
from earlybrain.io.sidecar import write_sidecar
from earlybrain.preprocess.support import support_mask

PathLike = str | os.PathLike[str]

# plausible fetal intracranial volumes, mL (about 40 mL at 20 weeks, 450 mL at term)
VOLUME_RANGE_ML = (15.0, 700.0)


class GivenReconError(ValueError):
    """A given reconstruction that cannot be masked (names the file and the problem)."""


def given_recon_mask(
    raw: np.ndarray, corrected: np.ndarray, affine: np.ndarray, model_loader: Any
) -> tuple[np.ndarray, dict[str, Any]]:
    """(mask, QC) of a given reconstruction: its own support, else the network's.

    `raw` decides (a brain-extracted volume has exact zeros, which N4's percentile
    scaling could add inside the brain); `model_loader()` gives the segmentation
    network, loaded only when needed.
    """
    mask = support_mask(raw)
    if mask is not None:
        qc: dict[str, Any] = {"method": "support"}
    else:
        from earlybrain.preprocess.infant import infant_brain_mask

        model = model_loader()
        mask, net_qc = infant_brain_mask(corrected, affine, model, tta=True)
        qc = {"method": "network", "weights": model.path} | net_qc
    voxel_ml = float(np.prod(voxel_sizes(affine))) / 1000.0
    qc["volume_ml"] = round(float(mask.sum()) * voxel_ml, 2)
    return mask, qc


METHOD_TEXT = {
    "support": "the reconstruction came brain-extracted: its non-zero region, holes filled",
    "network": "tissue segmentation network on the whole volume, union of the tissues",
}


def mask_given_recon_to_files(
    raw_path: PathLike,
    corrected_path: PathLike,
    out_mask: PathLike,
    out_qc: PathLike,
    model_loader: Any,
) -> dict[str, Any]:
    """Mask the N4-corrected reconstruction; write the mask (+ sidecar) and QC JSON."""
    raw_img, _ = load_input_image(raw_path)
    img = load_nifti(corrected_path)
    raw = np.asarray(raw_img.dataobj, dtype=np.float32)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3 or raw.shape != data.shape:
        raise GivenReconError(
            f"{raw_path}: expected one 3D volume (a reconstruction), got shape {raw.shape}"
        )
    mask, qc = given_recon_mask(raw, data, img.affine, model_loader)
    lo, hi = VOLUME_RANGE_ML
    if not lo <= qc["volume_ml"] <= hi:
        raise GivenReconError(
            f"{raw_path}: the brain mask ({METHOD_TEXT[qc['method']]}) holds "
            f"{qc['volume_ml']:.0f} mL, outside the {lo:g}-{hi:g} mL of a fetal brain: is this "
            "a fetal brain reconstruction, with the brain and its voxel size right?"
        )
    out_mask = Path(out_mask)
    save_nifti(mask.astype(np.uint8), img.affine, out_mask, dtype=np.uint8)
    write_sidecar(
        out_mask,
        step="given_recon_mask",
        sources=[raw_path, corrected_path],
        parameters={"method": METHOD_TEXT[qc["method"]], "weights": qc.get("weights")},
        extra={
            "Type": "Brain",
            "Description": "brain mask of a reconstruction made outside earlybrain",
            "Contrast": "T2w",
            "BrainVolume_ml": qc["volume_ml"],
            "MaskMethod": qc["method"],
        },
    )
    qc |= {
        "reconstruction": str(raw_path),
        "mask": str(out_mask),
        "software": {"earlybrain": __version__},
    }
    write_json_atomic(Path(out_qc), qc)
    return qc
