"""Workflow steps of brain age: fetal (deep ensemble + atlas + volumes) and infant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from earlybrain.stepkit import Compute, Input, Param, fail, step


@step("brainage", rule="brainage", target="volume")
def brainage_step(
    volume: Annotated[Path, Input("the reconstruction (subject space)")],
    mask: Annotated[Path, Input("its brain mask")],
    affine: Annotated[Path, Input("registration affine (.mat, subject -> atlas)")],
    volumes: Annotated[Path, Input("the segmentation's volumes TSV")],
    atlas: Annotated[Path, Input("atlas manifest.json (atlas similarity)")],
    age: Annotated[float, Param("chronological age, weeks")],
    out_anat: Annotated[Path, Param("folder for the outputs")],
    prefix: Annotated[str, Param("e.g. sub-01_rec-svr")],
    params: Annotated[dict | None, Param("weights, norms")] = None,
    compute: Annotated[Compute, Param()] = Compute(),
) -> int:
    """Brain age and normative z-scores of a session.

    Deep ensemble + atlas similarity + volumes. Unusable inputs or weights
    (BrainAgeError) end the step with one line on stderr, as the infant step does."""
    from earlybrain.brainage.ensemble import BrainAgeError
    from earlybrain.brainage.pipeline import brain_age_to_files

    settings = params or {}
    try:
        r = brain_age_to_files(
            volume,
            mask,
            affine,
            volumes,
            age,
            atlas,
            out_anat,
            prefix,
            weights=settings.get("weights") or None,
            norms_file=settings.get("norms") or None,
            device=compute.device,
            allow_cpu_fallback=compute.cpu_fallback,
            threads=compute.threads,
        )
    except BrainAgeError as exc:
        return fail(f"brain age of {prefix}: BrainAgeError: {exc}")
    print(
        f"{prefix}: brain age {r['predicted_age_weeks']:.1f} ± {r['uncertainty_sd_weeks']:.1f} "
        f"weeks (chronological {age:g}), gap z {r['brain_age_gap_z']:+.2f}, "
        f"{len(r['flags'])} flag(s)"
    )
    return 0


@step("infant-brainage", rule="brainage_infant", target="volume")
def infant_brainage_step(
    volume: Annotated[Path, Input("the N4-corrected image (the registered one)")],
    mask: Annotated[Path, Input("its brain mask (same grid)")],
    affine: Annotated[Path, Input("registration affine (.mat, atlas -> subject)")],
    volumes: Annotated[Path, Input("the segmentation's volumes TSV")],
    atlas: Annotated[Path, Input("infant atlas manifest.json")],
    contrast: Annotated[str, Param("its contrast", ("T1w", "T2w"))],
    age: Annotated[float, Param("post-menstrual age, weeks")],
    out_anat: Annotated[Path, Param("folder for the outputs")],
    prefix: Annotated[str, Param("e.g. sub-01_mod-T2w")],
    dseg: Annotated[Path | None, Input("its segmentation on the image's grid")] = None,
    norms: Annotated[Path | None, Input("infant norms JSON (default: shipped)")] = None,
    mask_qc: Annotated[Path | None, Input("the brain mask's QC JSON (its method)")] = None,
) -> int:
    """Brain age and normative z-scores of an infant session.

    Atlas similarity + volumes + myelination, combined. Unusable inputs (BrainAgeError)
    end the step with one line on stderr, the last line of the job's log and so what a
    salvaged report shows."""
    from earlybrain.brainage.ensemble import BrainAgeError
    from earlybrain.brainage.infant import infant_brain_age_to_files

    try:
        r = infant_brain_age_to_files(
            volume, mask, contrast, affine, volumes, age, atlas, out_anat, prefix, norms,
            dseg=dseg, mask_qc=mask_qc,
        )  # fmt: skip
    except BrainAgeError as exc:
        return fail(f"infant brain age of {prefix}: BrainAgeError: {exc}")
    print(
        f"{prefix}: brain age {r['predicted_age_weeks']:.1f} ± {r['uncertainty_sd_weeks']:.1f} "
        f"weeks PMA ({r['predicted_age_months']} months; chronological {age:g} weeks, "
        f"{r['chronological_age_months']} months), gap z {r['brain_age_gap_z']:+.2f}, "
        f"methods {', '.join(r['methods'])}, {len(r['flags'])} flag(s)"
    )
    return 0
