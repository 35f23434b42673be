"""The Methods paragraphs of the steps that turn a session's images into one brain volume:
N4 bias correction, brain masking (or an infant's head mask, or a reconstruction brought
from elsewhere), stack quality ranking and slice-to-volume reconstruction.

Each paragraph is written from the sidecars and QC files the step wrote (the parameters
it really used, after any capping), never from the current config. The number and device
formatting here is shared with the analysis paragraphs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from earlybrain.report.references import Methods


def num(value: Any) -> str:
    """Compact number formatting (100.0 -> 100, 1e-06 -> 1e-06)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:g}"
    return str(value)


def device_phrase(name: Any) -> str:
    """ "cuda:0" -> "a GPU (cuda:0)", "cpu" -> "the CPU"."""
    if not name:
        return "an unrecorded device"
    name = str(name)
    if name.startswith("cuda"):
        return f"a GPU ({name})"
    return "the CPU" if name == "cpu" else name


def _values(items: Iterable[Any]) -> str:
    """Distinct values, in first-seen order: "4" or "2, 4"."""
    seen: list[str] = []
    for v in items:
        s = num(v)
        if s not in seen:
            seen.append(s)
    return ", ".join(seen) if seen else "?"


def _ordinal(value: Any) -> str:
    s = num(value)
    if not s.isdigit():
        return f"{s}th"
    n = int(s)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{s}{suffix}"


def n4_paragraph(sidecars: Sequence[dict[str, Any]], m: Methods) -> str | None:
    """N4 + normalisation, from the N4 outputs' sidecars (parameters used per image)."""
    used = [s for s in sidecars if s.get("Parameters")]
    if not used:
        return None
    params = used[0]["Parameters"]
    fg, n4, norm = params.get("foreground", {}), params.get("n4", {}), params.get("normalise", {})
    iters = n4.get("iterations", [])
    shrink = _values(s.get("N4", {}).get("shrink_factor_used", "?") for s in used)
    spline = _values(s.get("N4", {}).get("spline_distance_mm_used", "?") for s in used)
    varied = len({json.dumps(s["Parameters"], sort_keys=True) for s in used}) > 1
    capped = shrink != num(n4.get("shrink_factor", "?"))
    text = (
        f"The intensity non-uniformity of each of the {len(used)} input image(s) was corrected "
        f"with N4 {m.cite('n4')}, run in-process through ANTsPy. The bias field was fitted "
        "inside a rough foreground mask (Otsu threshold of the image smoothed with a Gaussian "
        f"of {num(fg.get('smoothing_sigma_mm', '?'))} mm, components smaller than "
        f"{num(fg.get('min_component_fraction', '?'))} times the largest discarded, holes "
        "filled; not a brain mask), as a B-spline with an "
        f"initial knot spacing of {spline} mm over {len(iters)} resolution level(s) of "
        f"{_values(iters) if len(set(iters)) == 1 else ', '.join(num(i) for i in iters)} "
        f"iterations (convergence threshold {num(n4.get('convergence_tol', '?'))}) at a "
        f"shrink factor of {shrink}"
        + (
            f" (requested {num(n4.get('shrink_factor'))}, reduced for small images)"
            if capped
            else ""
        )
        + ". Intensities were then scaled linearly so that the "
        f"{_ordinal(norm.get('lower_percentile', '?'))} and "
        f"{_ordinal(norm.get('upper_percentile', '?'))} percentiles inside the foreground "
        "map to 0 and 1 (negative values clipped, high values kept)."
    )
    if varied:
        text += " The images were not all processed with the same parameters; see their sidecars."
    return text


def recon_paragraph(sidecar: dict[str, Any], metrics: dict[str, Any], m: Methods) -> str | None:
    """SVR/SRR, from the reconstruction's sidecar (parameters) and QC metrics (what happened)."""
    p = sidecar.get("Parameters")
    if not p:
        return None
    n_stacks = metrics.get("n_stacks", len(metrics.get("per_stack", [])) or "?")
    parts = [
        f"The {n_stacks} bias-corrected stacks were combined into one volume with isotropic "
        f"{num(p.get('resolution_mm', '?'))} mm voxels by alternating slice-to-volume "
        "registration (SVR) and super-resolution reconstruction (SRR) "
        f"{m.cite('svr_em', 'svr_gpu')}, implemented in PyTorch and run on "
        f"{device_phrase(sidecar.get('Device') or metrics.get('device'))}."
    ]
    ref = metrics.get("reference_stack")
    if ref is not None:
        per_stack = {st.get("stack"): st.get("name") for st in metrics.get("per_stack", [])}
        name = f" ({per_stack[ref]})" if per_stack.get(ref) else ""
        parts.append(
            "The stack with the least inter-slice inconsistency, "
            f"stack {ref}{name}, defined the output grid, which covers the brain masks dilated "
            f"by {num(p.get('mask_dilation_mm', '?'))} mm plus a "
            f"{num(p.get('margin_mm', '?'))} mm margin."
        )
    if p.get("motion_correction", True):
        chunks = p.get("chunk_slices", 1)
        loo = (
            ", each stack against a volume reconstructed from the other stacks"
            if p.get("leave_one_out")
            else ""
        )
        parts.append(
            "Rigid motion was estimated by Gauss-Newton registration from coarse to fine "
            f"({num(p.get('svr_steps', '?'))} steps per smoothing level): every other stack "
            "as a whole against a reconstruction from the reference stack (smoothing "
            f"{_values(p.get('stack_sigmas_mm', []))} mm); then, in the first of "
            f"{num(p.get('outer_iterations', '?'))} outer iteration(s), packets of "
            f"interleaved slices ({num(p.get('interleave', '?'))} per stack where the slice "
            "timing is not recorded)"
            + (
                f" and runs of {num(chunks)} consecutively acquired slices"
                if isinstance(chunks, int) and chunks > 1
                else ""
            )
            + f"; and in every outer iteration single slices{loo}, each iteration followed "
            "by a new volume estimate."
        )
    else:
        parts.append("Slice motion was not corrected: the stacks were combined as acquired.")
    parts.append(
        "The forward model uses a Gaussian point-spread function with an in-plane FWHM of "
        f"{num(p.get('psf_inplane_fwhm_factor', '?'))} times the pixel spacing and a "
        "through-plane FWHM equal to the slice thickness (the sidecar's SliceThickness "
        "where recorded and plausible, so gaps between slices are modelled; else the "
        "slice spacing), sampled every "
        f"{num(p.get('psf_step_factor', '?'))} voxel widths. SRR minimised a weighted "
        "least-squares data term plus an edge-preserving smoothness penalty (weight "
        f"{num(p.get('regularisation', '?'))} relative to the data term, edge threshold "
        f"{num(p.get('edge_delta', '?'))} of the median brain intensity) by conjugate "
        f"gradients ({num(p.get('cg_steps', '?'))} steps per solve, "
        f"{num(p.get('inner_iterations', '?'))} solves per outer iteration, "
        f"{num(p.get('final_cg_steps', '?'))} final steps)."
    )
    lo, hi = [*p.get("slice_scale_range", []), "?", "?"][:2]
    intensity = (
        f"Each stack had a smooth multiplicative bias field (polynomial of order "
        f"{num(p.get('bias_order', '?'))}) and each slice an intensity scale limited to "
        f"{num(lo)}-{num(hi)}."
    )
    if p.get("robust", False):
        rejected = metrics.get("rejected_slices")
        total = metrics.get("slices_with_brain")
        count = (
            f" ({rejected} of {total} slices containing brain)"
            if rejected is not None and total is not None
            else ""
        )
        parts.append(
            intensity + " Outliers were down-weighted by an expectation-maximisation "
            "mixture model at the voxel and the slice level "
            f"{m.cite('svr_em')}; slices with a weight below "
            f"{num(p.get('reject_weight', '?'))} are reported as rejected{count}."
        )
    else:
        parts.append(intensity + " No robust outlier weighting was used.")
    return " ".join(parts)


def is_precomputed_mask(sidecar: dict[str, Any]) -> bool:
    """Whether a brain-mask sidecar says the mask came from masks_dir (not the network)."""
    return sidecar.get("Parameters", {}).get("method", "").startswith("precomputed")


def infant_mask_paragraph(sidecar: dict[str, Any]) -> str:
    """How an infant's 3D image was masked."""
    par = sidecar.get("Parameters", {})
    chosen = (
        f"The infant's {sidecar.get('Contrast', '?')} image (the session's working contrast, "
        "chosen by age: T2w early, T1w once white matter has myelinated)"
    )
    if sidecar.get("MaskMethod") == "support":
        return (
            f"{chosen} came skull-stripped: its non-zero region (holes filled; "
            f"{num(sidecar.get('BrainVolume_ml'))} mL, a plausible intracranial volume for "
            "the age) was kept as the brain mask."
        )
    return (
        f"{chosen} was masked by running "
        "the tissue segmentation network on the whole head and keeping the union of the "
        "tissues it found (largest connected component, holes filled"
        + (", mirror test-time augmentation" if par.get("test_time_mirror") else "")
        + f"; weights {Path(str(par.get('weights', '?'))).name}, SHA-256 "
        f"{str(par.get('weights_sha256', '?'))[:12]})."
    )


def given_recon_paragraph(sidecar: dict[str, Any]) -> str:
    """A session that brought its own reconstruction: what was (not) done to it."""
    par = sidecar.get("Parameters", {})
    source = Path(str((sidecar.get("Sources") or ["?"])[0])).name
    weights = par.get("weights")
    return (
        f"The session brought its own super-resolution reconstruction ({source}), made "
        "outside earlybrain; stack masking, stack quality ranking and slice-to-volume "
        "reconstruction were therefore not run. After N4, its brain mask was taken as "
        f"{par.get('method', '?')}"
        + (f" (weights {Path(str(weights)).name})" if weights else "")
        + f"; {num(sidecar.get('BrainVolume_ml'))} mL."
    )


def brain_mask_paragraph(sidecars: Sequence[dict[str, Any]], m: Methods) -> str:
    """Network masks (with the weights' identity and validation) and/or precomputed ones."""
    step = sidecars[0].get("GeneratedBy", [{}])[0].get("Step") if sidecars else None
    if step == "infant_prep":
        return infant_mask_paragraph(sidecars[0])
    if step == "given_recon_mask":
        return given_recon_paragraph(sidecars[0])
    net = [s for s in sidecars if not is_precomputed_mask(s)]
    given = len(sidecars) - len(net)
    parts = []
    if net:
        par, card = net[0].get("Parameters", {}), net[0].get("ModelCard", {})
        geo = par.get("geometry", {})
        dice = card.get("validation_dice_mean")
        fine = geo.get("fine_mm", ("?", "?"))
        parts.append(
            f"The fetal brain (intracranial volume) was masked in {len(net)} stack(s) by two "
            f"2D U-Nets {m.cite('unet')} built with MONAI {m.cite('monai')}, each applied "
            "slice by slice with the neighbouring slices as context: a localiser found the "
            f"fetal head on whole slices at {geo.get('coarse_mm', '?')} mm, then a segmenter "
            f"masked a crop around it at the stack's in-plane resolution (kept within "
            f"{fine[0]}-{fine[1]} mm), threshold {par.get('threshold', '?')}, followed by a 3D "
            "clean-up (largest connected component, hole filling). The networks were trained "
            "on simulated clinical stacks (maternal abdomen, uterus, fetal body; brains from "
            "earlybrain's simulator and from a real fetal atlas) (weights "
            f"{Path(str(par.get('weights', '?'))).name}, SHA-256 "
            f"{str(par.get('weights_sha256', '?'))[:12]}, trained {card.get('trained', '?')} "
            f"with seed {card.get('seed', '?')}"
            + (f", simulated validation Dice {dice:.3f}" if isinstance(dice, float) else "")
            + ")."
        )
        empty = sum(bool(s.get("NoBrainReason")) for s in net)
        if empty:
            parts.append(f"In {empty} stack(s) no fetal brain was found; their masks are empty.")
        fallback = sum(bool(s.get("MasksDirMiss")) for s in net)
        if fallback:
            parts.append(
                f"masks_dir held no mask for {fallback} stack(s); the network masked them."
            )
    if given:
        parts.append(f"Brain masks of {given} stack(s) were given (masks_dir), not computed.")
    return " ".join(parts) or "Brain masks were computed (their sidecars could not be read)."


def stack_qc_paragraph(sidecar: dict[str, Any], rows: Sequence[dict[str, str]]) -> str:
    """How stacks were scored and which were excluded."""
    par = sidecar.get("Parameters", {})
    kept = sum(r.get("kept") == "true" for r in rows)
    lo, hi = par.get("volume_ratio_range", ("?", "?"))
    return (
        "Stacks were scored by the mean normalised cross-correlation of each brain slice "
        "with its neighbours, penalised for signal drop-out, jumps of the brain between "
        "slices (motion) and an implausible brain-mask volume, and ranked; the best stack "
        "was the reference. Motion lowered a stack's rank but never excluded it. A stack "
        "was excluded only when it could not help: no brain, brain in fewer than "
        f"{par.get('min_brain_slices', '?')} slices, drop-out in more than "
        f"{par.get('max_dropout_fraction', '?')} of its brain slices, or a mask volume "
        f"outside {lo}-{hi} x the median of the stacks; at least "
        f"{par.get('min_stacks', '?')} stacks were required. {kept} of "
        f"{len(rows)} stacks were kept."
    )
