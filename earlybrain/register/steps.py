"""Workflow step of atlas registration."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from earlybrain.stepkit import Input, Param, step


@step("register-atlas", rule="register_atlas", target="volume")
def register_atlas_step(
    volume: Annotated[Path, Input("the reconstruction (or infant image)")],
    mask: Annotated[Path, Input("its brain mask")],
    atlas: Annotated[Path, Input("atlas manifest.json")],
    age: Annotated[float, Param("age in weeks (GA or PMA)")],
    out_anat: Annotated[Path, Param("folder for images")],
    out_xfm: Annotated[Path, Param("folder for transforms")],
    prefix: Annotated[str, Param("e.g. sub-01_rec-svr")],
    params: Annotated[dict | None, Param("config register (RegistrationParams fields)")] = None,
    contrast: Annotated[str, Param("template contrast", ("T1w", "T2w"))] = "T2w",
    threads: Annotated[int, Param("CPU threads")] = 1,
    vote_weights: Annotated[
        Path | None, Param("segmentation weights voting on the orientation (default: shipped)")
    ] = None,
) -> int:
    """Register a volume to its age-matched template (rigid, affine, SyN); QC JSON."""
    from earlybrain.register.register import register_to_atlas

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    qc = register_to_atlas(
        volume,
        mask,
        age,
        atlas,
        out_anat,
        prefix,
        params={"threads": threads, **(params or {})},
        xfm_dir=out_xfm,
        contrast=contrast,
        vote_weights=vote_weights,
    )
    print(
        f"{prefix}: template {qc['template']['age_weeks']} w, NCC {qc['ncc']:.3f}, "
        f"mask Dice {qc['mask_dice']:.3f}, QC {'pass' if qc['qc_pass'] else 'FAIL'}"
    )
    return 0
