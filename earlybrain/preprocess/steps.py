"""Workflow steps of preprocessing: N4, brain masks (fetal stacks, infant heads, given
reconstructions) and the ranking of a session's stacks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from earlybrain.stepkit import Compute, Input, Output, Param, fail, step


@step("n4", rule="n4", target="image")
def n4_step(
    image: Annotated[Path, Input("the input image")],
    out: Annotated[Path, Output("its N4-corrected, normalised image")],
    bias: Annotated[Path, Output("its bias field")],
    mask: Annotated[Path, Output("its foreground mask")],
    params: Annotated[dict | None, Param("config preprocess: foreground, n4, normalise")] = None,
    threads: Annotated[int, Param("CPU threads")] = 1,
) -> int:
    """Foreground mask + N4 + normalisation of one image."""
    from earlybrain.io.nifti import ImageError
    from earlybrain.preprocess.n4 import PreprocessParams, run_n4

    try:
        summary = run_n4(
            image, out, bias, mask, PreprocessParams.from_dict(params or {}), threads=threads
        )
    except ImageError as exc:
        return fail(exc)
    print(f"{image.name}: {summary}")
    return 0


@step("brain-mask", rule="brain_mask", target="image")
def brain_mask_step(
    image: Annotated[Path, Input("one fetal stack")],
    out: Annotated[Path, Output("its brain mask")],
    precomputed: Annotated[Path | None, Input("the lab's own mask (masks_dir)")] = None,
    weights: Annotated[Path | None, Param("masking weights (empty: shipped)")] = None,
    threshold: Annotated[float | None, Param("probability threshold (default: the card's)")] = None,
    min_volume_ml: Annotated[float | None, Param("smaller masks are empty")] = None,
    compute: Annotated[Compute, Param()] = Compute(),
    masks_dir_miss: Annotated[str, Param("why masks_dir had no mask for it")] = "",
) -> int:
    """Brain mask of one stack: the lab's own mask when given, else the network's.

    A stack without a fetal head gets an empty mask and its reason (stack QC excludes
    it); only an unusable input or weights file fails the step."""
    from earlybrain.io.nifti import ImageError
    from earlybrain.preprocess.masking import MaskingError, copy_precomputed_mask, mask_stack_file

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if precomputed is not None:
            copy_precomputed_mask(image, precomputed, out)
            print(f"{image.name}: precomputed brain mask {precomputed}")
            return 0
        if masks_dir_miss:
            print(f"warning: {masks_dir_miss}; {image.name} is masked by the network instead")
        import torch

        torch.set_num_threads(max(1, compute.threads))
        res = mask_stack_file(
            image,
            out,
            weights,
            device=compute.device,
            allow_cpu_fallback=compute.cpu_fallback,
            threshold=threshold,
            **({} if min_volume_ml is None else {"min_volume_ml": min_volume_ml}),
            extra={"MasksDirMiss": masks_dir_miss} if masks_dir_miss else None,
        )
    except (MaskingError, ImageError) as exc:
        return fail(exc)
    if res.reason:
        print(f"{image.name}: empty brain mask: {res.reason}")
    return 0


@step("stack-qc", rule="stack_qc", target="out_tsv")
def stack_qc_step(
    stacks: Annotated[list[Path], Input("a session's stacks")],
    masks: Annotated[list[Path], Input("brain mask per stack, same order")],
    out_tsv: Annotated[Path, Output("stack quality TSV")],
    params: Annotated[dict | None, Param("config stack_quality (QualityRules)")] = None,
) -> int:
    """Score and rank a session's stacks; too few usable ones is this job's clear failure."""
    from earlybrain.preprocess.stack_quality import MinimumStacksError, QualityRules, rank_stacks

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rules = dict(params or {})
    if "volume_ratio_range" in rules:
        rules["volume_ratio_range"] = tuple(rules["volume_ratio_range"])
    quality = QualityRules(**rules)
    try:
        kept = rank_stacks(stacks, masks, out_tsv, quality.min_stacks, quality)
    except MinimumStacksError as exc:
        return fail(exc)
    print(f"{len(kept)} of {len(stacks)} stack(s) kept, best first: {[p.name for p in kept]}")
    return 0


def _model(weights: Path | None, compute: Compute):
    """The segmentation network, which also masks 3D images (infant heads, given recons)."""
    import torch

    from earlybrain.segment.inference import load_model

    torch.set_num_threads(max(1, compute.threads))
    return load_model(weights, device=compute.device, allow_cpu_fallback=compute.cpu_fallback)


@step("infant-prep", rule="infant_prep", target="image")
def infant_prep_step(
    raw: Annotated[Path, Input("the T1w or T2w image as given")],
    image: Annotated[Path, Input("its N4-corrected version")],
    contrast: Annotated[str, Param("its contrast", ("T1w", "T2w"))],
    age: Annotated[float, Param("post-menstrual age, weeks")],
    mask: Annotated[Path, Output("its brain mask")],
    qc: Annotated[Path, Output("masking QC JSON")],
    weights: Annotated[Path | None, Param("segmentation weights (empty: shipped)")] = None,
    tta: Annotated[bool, Param("average with the mirrored image")] = False,
    compute: Annotated[Compute, Param()] = Compute(),
) -> int:
    """Brain mask of an infant's N4-corrected 3D image: its own non-zero region when it
    came skull-stripped, else the segmentation network's."""
    from earlybrain.preprocess.infant import prepare_infant_to_files

    result = prepare_infant_to_files(
        image, contrast, age, mask, qc, lambda: _model(weights, compute), raw_path=raw, tta=tta
    )
    print(
        f"{image.name}: {contrast} at {result['age_months']:.1f} months, brain mask "
        f"{result['volume_ml']:.0f} mL ({result['method']})"
    )
    return 0


@step("given-mask", rule="given_recon_mask", target="raw")
def given_recon_mask_step(
    raw: Annotated[Path, Input("the reconstruction as given")],
    image: Annotated[Path, Input("its N4-corrected version")],
    mask: Annotated[Path, Output("its brain mask")],
    qc: Annotated[Path, Output("masking QC JSON")],
    weights: Annotated[Path | None, Param("segmentation weights (empty: shipped)")] = None,
    compute: Annotated[Compute, Param()] = Compute(),
) -> int:
    """Brain mask of a fetal reconstruction made outside earlybrain (its own support,
    else the segmentation network)."""
    from earlybrain.io.nifti import ImageError
    from earlybrain.preprocess.given_recon import GivenReconError, mask_given_recon_to_files

    try:
        result = mask_given_recon_to_files(raw, image, mask, qc, lambda: _model(weights, compute))
    except (GivenReconError, ImageError) as exc:
        return fail(exc)
    print(f"{raw.name}: brain mask {result['volume_ml']:.0f} mL ({result['method']})")
    return 0
