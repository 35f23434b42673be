"""File entry point for the workflow: stacks + masks in, volume + poses + QC out."""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any

import numpy as np

from earlybrain.io.atomic import write_json_atomic, write_text_atomic
from earlybrain.io.nifti import save_nifti
from earlybrain.io.provenance import source_reference, source_references
from earlybrain.io.sidecar import write_sidecar
from earlybrain.recon.config import ReconConfig
from earlybrain.recon.pipeline import POSE_COLUMNS, ReconResult, reconstruct
from earlybrain.recon.stacks import load_stacks

PathLike = str | os.PathLike[str]


def _clean(obj: Any) -> Any:
    """NaN/inf -> None so the metrics file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def poses_tsv(result: ReconResult) -> str:
    """Per-slice table: pose M_k (earlybrain.geometry convention), weight, scale, NCC."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(POSE_COLUMNS), delimiter="\t", lineterminator="\n")
    w.writeheader()
    for row in result.slices:
        out = {}
        for k in POSE_COLUMNS:
            v = row[k]
            if isinstance(v, bool):
                out[k] = "1" if v else "0"
            elif isinstance(v, float):
                out[k] = "n/a" if not math.isfinite(v) else f"{v:.4f}"
            else:
                out[k] = v
        w.writerow(out)
    return buf.getvalue()


def run_recon(
    stack_paths: list[PathLike],
    mask_paths: list[PathLike],
    out_volume: PathLike,
    out_poses_tsv: PathLike,
    out_metrics_json: PathLike,
    params: dict[str, Any] | None = None,
    device: str = "auto",
    out_mask: PathLike | None = None,
    out_log: PathLike | None = None,
    reference: int | None = None,
) -> ReconResult:
    """Reconstruct one subject from files and write every output atomically.

    - `out_volume`: float32 NIfTI (+ JSON sidecar with parameters, sources, reference
      stack and the pose convention);
    - `out_poses_tsv`: one row per slice (see POSE_COLUMNS): the pose M_k of slice k,
      such that stack voxel v of slice k shows the reconstruction at M_k^-1(A v), as
      rotations (deg) and translations (mm) about `PoseCentre` in the sidecar, plus the
      slice's robust weight, intensity scale, NCC with its simulated slice, and whether
      it was rejected;
    - `out_metrics_json`: QC metrics (per-stack motion, rejected fraction, consistency
      NCC, convergence per outer iteration, timings);
    - `out_mask` (optional): uint8 brain mask of the reconstruction;
    - `out_log` (optional): the reconstruction's log lines.
    `reference`: index of the reference stack in `stack_paths` (None: chosen here).
    Bad inputs raise `ReconInputError` naming the file.
    """
    cfg = ReconConfig.from_dict(params)
    stacks = load_stacks(stack_paths, mask_paths, interleave=cfg.interleave)
    result = reconstruct(stacks, cfg, device=device, reference=reference)
    save_nifti(result.volume, result.affine, out_volume, dtype=np.float32)
    convention = (
        "M(p) = R (p - c) + c + t, R = Rz Ry Rx (degrees), c = PoseCentre (scanner mm); "
        "stack voxel v of slice k shows the reconstruction at M_k^-1(A v)"
    )
    write_sidecar(
        out_volume,
        step="recon",
        parameters=cfg.to_dict(),
        sources=[*stack_paths, *mask_paths],
        extra={
            "ReferenceStack": source_reference(stack_paths[result.reference]),
            "PoseCentre": [float(v) for v in result.pose_centre],
            "PoseConvention": convention,
            "Device": result.metrics["device"],
        },
    )
    write_text_atomic(out_poses_tsv, poses_tsv(result))
    metrics = dict(result.metrics)
    metrics["pose_centre_mm"] = [float(v) for v in result.pose_centre]
    metrics["pose_convention"] = convention
    metrics["reject_weight"] = cfg.reject_weight
    metrics["sources"] = source_references(stack_paths)
    write_json_atomic(out_metrics_json, _clean(metrics))
    if out_mask is not None:
        save_nifti(result.mask, result.affine, out_mask, dtype=np.uint8)
        write_sidecar(
            out_mask,
            step="recon",
            sources=[out_volume, *mask_paths],
            extra={
                "Description": "brain mask of the reconstruction: voxels where at least "
                "half of the observing slice pixels lie in a stack brain mask"
            },
        )
    if out_log is not None:
        write_text_atomic(out_log, "\n".join(result.log) + "\n")
    return result


__all__ = ["poses_tsv", "run_recon"]
