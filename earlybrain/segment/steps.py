"""Workflow step of tissue segmentation."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from earlybrain.stepkit import Compute, Input, Param, step


@step("segment", rule="segment", target="subject_volume")
def segment_step(
    volume: Annotated[Path, Input("the reconstruction in atlas space")],
    mask: Annotated[Path, Input("its brain mask in atlas space")],
    subject_volume: Annotated[Path, Input("the reconstruction (its grid)")],
    affine: Annotated[Path, Input("registration affine (subject -> atlas)")],
    inverse_warp: Annotated[Path, Input("registration inverse warp")],
    atlas: Annotated[Path, Input("atlas manifest.json (midsagittal plane)")],
    out_anat: Annotated[Path, Param("folder for images")],
    prefix: Annotated[str, Param("e.g. sub-01_rec-svr")],
    atlas_dseg: Annotated[Path | None, Input("atlas labels in subject space (QC)")] = None,
    params: Annotated[dict | None, Param("weights, tta, keep_fraction")] = None,
    compute: Annotated[Compute, Param()] = Compute(),
) -> int:
    """Tissue labels of a registered reconstruction (atlas + subject space) and volumes."""
    from earlybrain.segment.pipeline import segment_to_files

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = params or {}
    options = {k: settings[k] for k in ("tta", "keep_fraction") if k in settings}
    qc = segment_to_files(
        volume,
        mask,
        subject_volume,
        affine,
        inverse_warp,
        atlas,
        out_anat,
        prefix,
        weights=settings.get("weights") or None,
        device=compute.device,
        allow_cpu_fallback=compute.cpu_fallback,
        **options,
        atlas_dseg=atlas_dseg,
        threads=compute.threads,
    )
    vols = qc["volumes_ml"]
    print(
        f"{prefix}: total brain {vols['total_brain']:.1f} mL, intracranial "
        f"{vols['intracranial']:.1f} mL, network {qc['timings']['network_s']:.1f} s "
        f"on {qc['parameters']['device']}"
    )
    return 0
