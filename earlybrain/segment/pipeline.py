"""File entry of the segmentation stage: atlas-space volume in, label maps and volumes out.

Writes (see `segmentation_paths`): the label map in atlas space (the network's output,
split into hemispheres at the atlas's midsagittal plane, cleaned), the same labels
pulled back to the reconstruction's grid through the inverse registration transforms,
the volumes with left/right asymmetry (measured in subject space), a BIDS label table,
and a QC JSON (timings, device, weights, agreement with the atlas-propagated labels).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from earlybrain.anatomy.labels import label_table_tsv
from earlybrain.atlas.manifest import load_manifest
from earlybrain.io.atomic import write_json_atomic, write_text_atomic
from earlybrain.io.nifti import load_nifti, save_nifti, voxel_sizes
from earlybrain.io.sidecar import write_sidecar
from earlybrain.register import antsio
from earlybrain.segment.inference import SegmentationModel, load_model, predict_probabilities
from earlybrain.segment.metrics import tissue_dice
from earlybrain.segment.postprocess import KEEP_FRACTION, clean_labels, split_hemispheres
from earlybrain.segment.volumes import volume_rows, volumes_tsv

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
# beyond the registered brain mask the network's labels are not trusted (mm of margin)
MASK_MARGIN_MM = 2.0


def segmentation_paths(anat: PathLike, prefix: str, space: str) -> dict[str, Path]:
    """Output names (BIDS-derivative style) for the reconstruction `{prefix}`; the
    comment above each key says what its file holds (the outputs reference prints it)."""
    out = Path(anat)
    return {
        # the network's tissue labels in atlas space (12 labels: 7 tissues, left/right)
        "atlas_dseg": out / f"{prefix}_space-{space}_dseg.nii.gz",
        # the same labels pulled back onto the volume's own grid (inverse registration)
        "dseg": out / f"{prefix}_dseg.nii.gz",
        # the label table (BIDS dseg.tsv): index, name, tissue and hemisphere of each label
        "labels": out / f"{prefix}_dseg.tsv",
        # volume of every tissue in mL (left, right, total, asymmetry index), total brain
        # and intracranial volume, measured on the volume's own grid
        "volumes": out / f"{prefix}_desc-volumes.tsv",
        # segmentation QC: volumes, asymmetry, weights, device, timings, Dice agreement
        # with the atlas labels
        "qc": out / f"{prefix}_desc-segmentation_qc.json",
    }


def segment_array(
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray | None,
    model: SegmentationModel,
    midline_x_mm: float,
    tta: bool = False,
    keep_fraction: float = KEEP_FRACTION,
) -> np.ndarray:
    """earlybrain labels (0..12) of an atlas-space volume."""
    prob = predict_probabilities(image, affine, model, tta)
    tissues = np.argmax(prob, axis=0).astype(np.uint8)
    if mask is not None and np.any(mask):
        iters = max(1, round(MASK_MARGIN_MM / float(np.min(voxel_sizes(affine)))))
        tissues[~ndimage.binary_dilation(mask > 0, iterations=iters)] = 0
    return clean_labels(split_hemispheres(tissues, affine, midline_x_mm), keep_fraction)


def to_subject_space(
    labels: np.ndarray,
    atlas_affine: np.ndarray,
    subject_shape: tuple[int, ...],
    subject_affine: np.ndarray,
    inverse: list[str],
    whichtoinvert: list[bool],
) -> np.ndarray:
    """Pull a label map back to the subject grid through the inverse transforms."""
    ants = antsio.ants_module()
    fixed = antsio.to_ants(np.zeros(subject_shape, np.float32), subject_affine)
    moving = antsio.to_ants(labels.astype(np.float32), atlas_affine)
    warped = ants.apply_transforms(
        fixed, moving, transformlist=inverse, whichtoinvert=whichtoinvert,
        interpolator="genericLabel",
    )  # fmt: skip
    return np.rint(warped.numpy()).astype(np.uint8)


def segment_to_files(
    atlas_volume: PathLike,
    atlas_mask: PathLike | None,
    subject_volume: PathLike,
    affine_xfm: PathLike,
    inverse_warp: PathLike,
    manifest_path: PathLike,
    out_anat: PathLike,
    prefix: str,
    *,
    weights: PathLike | None = None,
    device: str = "auto",
    allow_cpu_fallback: bool = True,
    tta: bool = False,
    keep_fraction: float = KEEP_FRACTION,
    atlas_dseg: PathLike | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Segment one registered reconstruction; write every output; return the QC dict."""
    t0 = time.perf_counter()
    if threads:
        import torch

        torch.set_num_threads(int(threads))
        antsio.set_threads(int(threads))
    manifest = load_manifest(manifest_path)
    img = load_nifti(atlas_volume)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim != 3:
        raise ValueError(f"{atlas_volume}: expected a 3D volume, got shape {data.shape}")
    mask = None
    if atlas_mask is not None:
        m = load_nifti(atlas_mask)
        if m.shape[:3] != data.shape:
            raise ValueError(f"{atlas_mask}: mask grid differs from the volume {atlas_volume}")
        mask = np.asarray(m.dataobj) > 0
    model = load_model(weights, device, allow_cpu_fallback)
    t = time.perf_counter()
    labels = segment_array(
        data, img.affine, mask, model, manifest.midsagittal_plane_x_mm, tta, keep_fraction
    )
    t_net = time.perf_counter() - t
    subj = load_nifti(subject_volume)
    subject_labels = to_subject_space(
        labels, img.affine, subj.shape[:3], subj.affine,
        [str(affine_xfm), str(inverse_warp)], [True, False],
    )  # fmt: skip
    paths = segmentation_paths(out_anat, prefix, manifest.space)
    params = {
        "weights": model.path,
        "weights_sha256": model.sha256,
        "device": str(model.device),
        "test_time_augmentation": tta,
        "keep_fraction": keep_fraction,
        "working_grid_mm": model.target_mm,
        "midsagittal_plane_x_mm": manifest.midsagittal_plane_x_mm,
        "mask_margin_mm": MASK_MARGIN_MM,
    }
    labels_note = {"Labels": "earlybrain 12 labels (7 FeTA tissues, left/right)"}
    save_nifti(labels, img.affine, paths["atlas_dseg"], dtype=np.uint8)
    write_sidecar(
        paths["atlas_dseg"], step="segment", parameters=params,
        sources=[str(atlas_volume)] + ([str(atlas_mask)] if atlas_mask else []),
        extra=labels_note | {"Space": manifest.space},
    )  # fmt: skip
    save_nifti(subject_labels, subj.affine, paths["dseg"], dtype=np.uint8)
    write_sidecar(
        paths["dseg"], step="segment", parameters=params,
        sources=[str(paths["atlas_dseg"]), str(affine_xfm), str(inverse_warp), str(subject_volume)],
        extra=labels_note,
    )  # fmt: skip
    write_text_atomic(paths["labels"], label_table_tsv())
    rows = volume_rows(subject_labels, subj.affine)
    write_text_atomic(paths["volumes"], volumes_tsv(rows))
    qc: dict[str, Any] = {
        "volumes_ml": {r["structure"]: round(float(r["total_ml"]), 3) for r in rows},
        "asymmetry_index": {
            r["structure"]: round(float(r["asymmetry_index"]), 4)
            for r in rows
            if r["asymmetry_index"] is not None and np.isfinite(r["asymmetry_index"])
        },
        "parameters": params,
        "timings": {"network_s": round(t_net, 2), "total_s": round(time.perf_counter() - t0, 2)},
    }
    if atlas_dseg is not None and Path(atlas_dseg).is_file():
        ref = np.asarray(load_nifti(atlas_dseg).dataobj)
        if ref.shape == subject_labels.shape:
            agree = tissue_dice(subject_labels, ref)
            qc["agreement_with_atlas_labels"] = {k: round(v, 4) for k, v in agree.items()}
    write_json_atomic(paths["qc"], qc)
    return qc
