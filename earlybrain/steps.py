"""Single workflow steps, one per Snakemake rule (called via ``earlybrain step ...``).

Rules stay thin: each calls one function here, which calls the library. Keeping the
logic out of the Snakefile means it is unit-tested and also runnable by hand when
debugging one subject.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from earlybrain import __version__
from earlybrain.io.atomic import write_json_atomic

BIDS_VERSION = "1.10.0"


def _fail(message: object) -> int:
    """A step's expected failure: one line on stderr (the end of the job's log, which a
    salvaged report shows; torch's load errors span several lines) and status 1."""
    print("error: " + " ".join(str(message).split()), file=sys.stderr)
    return 1


def validate_step(
    bids: Path,
    subject: str,
    session: str | None,
    out: Path,
    fetal_ga_range: tuple[float, float],
    infant_pma_range: tuple[float, float],
    min_slices: int,
    reconstructed: bool = False,
) -> int:
    """Always writes `out` (status pass/fail), so a bad session never stops the workflow.

    Only running out of memory (the job's problem, not the input's: a re-run with more
    memory must validate again) and failing to write the JSON make this step fail.
    """
    from earlybrain.io.bids import discover_sessions
    from earlybrain.io.validate import ValidationSettings, validate_session, write_validation

    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    try:
        records = [
            r
            for r in discover_sessions(bids, [subject], strict=False, reconstructed=reconstructed)
            if r.session == session
        ]
        if not records:
            raise ValueError(f"{prefix}: session not found in {bids}")
        settings = ValidationSettings(
            fetal_ga_range=tuple(fetal_ga_range),
            infant_pma_range=tuple(infant_pma_range),
            min_slices=int(min_slices),
        )
        report = validate_session(records[0], settings)
    except MemoryError:
        raise
    except Exception as exc:  # report, don't crash: the session gets a report saying why
        traceback.print_exc()
        report = {
            "subject": subject,
            "session": session,
            "prefix": prefix,
            "reldir": f"sub-{subject}" + (f"/ses-{session}" if session else ""),
            "kind": None,
            "age_weeks": None,
            "images": [],
            "status": "fail",
            "errors": [f"{prefix}: validation could not run ({type(exc).__name__}: {exc})"],
        }
    write_validation(report, out)
    if report.get("age_weeks") is not None:
        print(
            f"{prefix}: {report['kind']}, {report['age_measure']} {report['age_weeks']:.1f} weeks"
            f" from column {report['age_column']!r} in {report['age_source']}"
        )
    for note in report.get("notes", []):
        print(f"note: {note}")
    for e in report["errors"]:
        print(f"validation problem: {e}")
    print(f"{prefix}: validation {report['status']}")
    return 0


def n4_step(
    in_path: Path,
    out: Path,
    bias: Path,
    mask: Path,
    *,
    shrink_factor: int,
    iterations: list[int],
    convergence_tol: float,
    spline_distance_mm: float,
    smoothing_sigma_mm: float,
    min_component_fraction: float,
    lower_percentile: float,
    upper_percentile: float,
    threads: int,
) -> int:
    from earlybrain.io.nifti import ImageError
    from earlybrain.preprocess.n4 import (
        ForegroundParams,
        N4Params,
        NormaliseParams,
        PreprocessParams,
        run_n4,
    )

    params = PreprocessParams(
        foreground=ForegroundParams(smoothing_sigma_mm, min_component_fraction),
        n4=N4Params(shrink_factor, tuple(iterations), convergence_tol, spline_distance_mm),
        normalise=NormaliseParams(lower_percentile, upper_percentile),
    )
    try:
        summary = run_n4(in_path, out, bias, mask, params, threads=threads)
    except ImageError as exc:
        return _fail(exc)
    print(f"{in_path.name}: {summary}")
    return 0


def brain_mask_step(
    in_path: Path,
    out: Path,
    *,
    precomputed: Path | None,
    weights: Path | None,
    threshold: float | None,
    min_volume_ml: float,
    device: str,
    device_fallback: str,
    masks_dir_miss: str = "",
) -> int:
    """Brain mask of one stack: the lab's own mask when given, else the network's. A
    stack without a fetal head gets an empty mask and its reason (stack QC excludes it);
    only an unusable input or weights file fails the step."""
    import logging

    from earlybrain.io.nifti import ImageError
    from earlybrain.preprocess.masking import MaskingError, copy_precomputed_mask, mask_stack_file

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if precomputed is not None:
            copy_precomputed_mask(in_path, precomputed, out)
            print(f"{in_path.name}: precomputed brain mask {precomputed}")
            return 0
        if masks_dir_miss:
            print(f"warning: {masks_dir_miss}; {in_path.name} is masked by the network instead")
        res = mask_stack_file(
            in_path,
            out,
            weights,
            device=device,
            allow_cpu_fallback=device_fallback == "cpu",
            threshold=threshold,
            min_volume_ml=min_volume_ml,
            extra={"MasksDirMiss": masks_dir_miss} if masks_dir_miss else None,
        )
    except (MaskingError, ImageError) as exc:
        return _fail(exc)
    if res.reason:
        print(f"{in_path.name}: empty brain mask: {res.reason}")
    return 0


def stack_qc_step(stacks: list[Path], masks: list[Path], out_tsv: Path, rules: dict) -> int:
    """Rank a session's stacks; too few usable stacks is this job's (clear) failure."""
    import logging

    from earlybrain.preprocess.stack_quality import MinimumStacksError, QualityRules, rank_stacks

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if "volume_ratio_range" in rules:
        rules = rules | {"volume_ratio_range": tuple(rules["volume_ratio_range"])}
    quality = QualityRules(**rules)
    try:
        kept = rank_stacks(stacks, masks, out_tsv, quality.min_stacks, quality)
    except MinimumStacksError as exc:
        return _fail(exc)
    print(f"{len(kept)} of {len(stacks)} stack(s) kept, best first: {[p.name for p in kept]}")
    return 0


def kept_stacks(stack_qc: Path, stacks: list[Path], masks: list[Path]) -> tuple[list, list]:
    """The stacks (and their masks) that stack QC kept, best first: the first is the
    reconstruction's reference."""
    import csv

    with open(stack_qc, newline="") as fh:
        rows = {Path(r["stack"]).name: r for r in csv.DictReader(fh, delimiter="\t")}
    missing = [p.name for p in stacks if p.name not in rows]
    if missing:
        raise ValueError(f"{stack_qc}: no row for {', '.join(missing)}")
    kept = [(int(rows[p.name]["rank"]), p, m) for p, m in zip(stacks, masks, strict=True)]
    kept = sorted(k for k in kept if rows[k[1].name]["kept"] == "true")
    return [p for _, p, _ in kept], [m for _, _, m in kept]


def recon_step(
    stacks: list[Path],
    masks: list[Path],
    out_volume: Path,
    out_mask: Path,
    out_slices: Path,
    out_metrics: Path,
    *,
    params: dict,
    device: str,
    device_fallback: str,
    threads: int,
    stack_qc: Path | None = None,
) -> int:
    """SVR + SRR of one fetal session; progress goes to the job log as it happens.

    With `stack_qc` (the stack-quality TSV) only the stacks it kept are used.
    """
    import logging

    from earlybrain.device import resolve_device
    from earlybrain.recon.io import run_recon
    from earlybrain.recon.stacks import ReconInputError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dev = resolve_device(device, allow_cpu_fallback=device_fallback == "cpu")
    reference = None
    if stack_qc is not None:
        stacks, masks = kept_stacks(stack_qc, stacks, masks)
        reference = 0  # ranked first by stack QC
    try:
        result = run_recon(
            stacks,
            masks,
            out_volume,
            out_slices,
            out_metrics,
            params={"threads": threads, **params},
            device=dev,
            out_mask=out_mask,
            reference=reference,
        )
    except ReconInputError as exc:
        return _fail(exc)
    m = result.metrics
    print(
        f"{out_volume.name}: {m['n_stacks']} stack(s), reference stack {m['reference_stack']}"
        f" ({m['reference_reason']}), {m['rejected_slices']} of {m['slices_with_brain']}"
        f" slices rejected, NCC observed/simulated {m['ncc_observed_simulated']:.3f},"
        f" {m['seconds']:.0f} s on {m['device']}"
    )
    return 0


def recon_figures_step(
    volume: Path, mask: Path, slices: Path, metrics: Path, out_views: Path, out_motion: Path
) -> int:
    """The SVR/SRR figures as PNG files (embedded by the report, usable on their own)."""
    import json

    from earlybrain.io.atomic import write_bytes_atomic
    from earlybrain.report.recon_figures import motion_figure, orthogonal_views

    reject_weight = json.loads(metrics.read_text())["reject_weight"]
    write_bytes_atomic(out_views, orthogonal_views(volume, mask))
    write_bytes_atomic(out_motion, motion_figure(slices, reject_weight))
    return 0


def register_atlas_step(
    volume: Path,
    mask: Path,
    age_weeks: float,
    manifest: Path,
    out_anat: Path,
    out_xfm: Path,
    prefix: str,
    *,
    params: dict,
    threads: int,
    contrast: str = "T2w",
) -> int:
    """Volume -> age-matched template (rigid, affine, SyN); QC JSON for the report."""
    import logging

    from earlybrain.register.register import register_to_atlas

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    qc = register_to_atlas(
        volume,
        mask,
        age_weeks,
        manifest,
        out_anat,
        prefix,
        params={"threads": threads, **params},
        xfm_dir=out_xfm,
        contrast=contrast,
    )
    print(
        f"{prefix}: template {qc['template']['age_weeks']} w, NCC {qc['ncc']:.3f}, "
        f"mask Dice {qc['mask_dice']:.3f}, QC {'pass' if qc['qc_pass'] else 'FAIL'}"
    )
    return 0


def infant_prep_step(
    image: Path,
    contrast: str,
    pma_weeks: float,
    out_mask: Path,
    out_qc: Path,
    *,
    weights: Path | None,
    tta: bool,
    device: str,
    device_fallback: str,
    threads: int,
) -> int:
    """Brain mask of an infant's N4-corrected 3D image (the segmentation network)."""
    import torch

    from earlybrain.preprocess.infant import prepare_infant_to_files
    from earlybrain.segment.inference import load_model

    torch.set_num_threads(max(1, threads))
    model = load_model(weights, device=device, allow_cpu_fallback=device_fallback == "cpu")
    qc = prepare_infant_to_files(image, contrast, pma_weeks, out_mask, out_qc, model, tta=tta)
    print(
        f"{image.name}: {contrast} at {qc['age_months']:.1f} months, brain mask "
        f"{qc['volume_ml']:.0f} mL"
    )
    return 0


def given_recon_mask_step(
    raw: Path,
    image: Path,
    out_mask: Path,
    out_qc: Path,
    *,
    weights: Path | None,
    device: str,
    device_fallback: str,
    threads: int,
) -> int:
    """Brain mask of a fetal reconstruction made outside earlybrain (its own support,
    else the segmentation network)."""
    from earlybrain.io.nifti import ImageError
    from earlybrain.preprocess.given_recon import GivenReconError, mask_given_recon_to_files

    def model():
        import torch

        from earlybrain.segment.inference import load_model

        torch.set_num_threads(max(1, threads))
        return load_model(weights, device=device, allow_cpu_fallback=device_fallback == "cpu")

    try:
        qc = mask_given_recon_to_files(raw, image, out_mask, out_qc, model)
    except (GivenReconError, ImageError) as exc:
        return _fail(exc)
    print(f"{raw.name}: brain mask {qc['volume_ml']:.0f} mL ({qc['method']})")
    return 0


def segment_step(
    atlas_volume: Path,
    atlas_mask: Path,
    subject_volume: Path,
    affine_xfm: Path,
    inverse_warp: Path,
    manifest: Path,
    out_anat: Path,
    prefix: str,
    *,
    atlas_dseg: Path | None,
    settings: dict,
    device: str,
    device_fallback: str,
    threads: int,
) -> int:
    """Tissue labels of a registered reconstruction (atlas + subject space) and volumes."""
    import logging

    from earlybrain.segment.pipeline import segment_to_files

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    qc = segment_to_files(
        atlas_volume,
        atlas_mask,
        subject_volume,
        affine_xfm,
        inverse_warp,
        manifest,
        out_anat,
        prefix,
        weights=settings.get("weights") or None,
        device=device,
        allow_cpu_fallback=device_fallback == "cpu",
        tta=bool(settings.get("tta", False)),
        keep_fraction=float(settings.get("keep_fraction", 0.2)),
        atlas_dseg=atlas_dseg,
        threads=threads,
    )
    vols = qc["volumes_ml"]
    print(
        f"{prefix}: total brain {vols['total_brain']:.1f} mL, intracranial "
        f"{vols['intracranial']:.1f} mL, network {qc['timings']['network_s']:.1f} s "
        f"on {qc['parameters']['device']}"
    )
    return 0


def brainage_step(
    volume: Path,
    mask: Path,
    affine_xfm: Path,
    volumes_tsv: Path,
    age_weeks: float,
    manifest: Path,
    out_anat: Path,
    prefix: str,
    *,
    settings: dict,
    device: str,
    device_fallback: str,
    threads: int,
) -> int:
    """Brain age (deep ensemble + atlas similarity + volumes) and normative z-scores.

    Unusable inputs or weights (BrainAgeError) end the step with one line on stderr, as
    the infant step does."""
    from earlybrain.brainage.ensemble import BrainAgeError
    from earlybrain.brainage.pipeline import brain_age_to_files

    try:
        r = brain_age_to_files(
            volume,
            mask,
            affine_xfm,
            volumes_tsv,
            age_weeks,
            manifest,
            out_anat,
            prefix,
            weights=settings.get("weights") or None,
            norms_file=settings.get("norms") or None,
            device=device,
            allow_cpu_fallback=device_fallback == "cpu",
            threads=threads,
        )
    except BrainAgeError as exc:
        return _fail(f"brain age of {prefix}: BrainAgeError: {exc}")
    print(
        f"{prefix}: brain age {r['predicted_age_weeks']:.1f} ± {r['uncertainty_sd_weeks']:.1f} "
        f"weeks (chronological {age_weeks:g}), gap z {r['brain_age_gap_z']:+.2f}, "
        f"{len(r['flags'])} flag(s)"
    )
    return 0


def infant_brainage_step(
    volume: Path,
    mask: Path,
    contrast: str,
    affine_xfm: Path,
    volumes_tsv: Path,
    age_weeks: float,
    manifest: Path,
    out_anat: Path,
    prefix: str,
    *,
    dseg: Path | None,
    norms: Path | None,
) -> int:
    """Infant brain age (atlas similarity + volumes + myelination, combined) and z-scores.

    Unusable inputs (BrainAgeError) end the step with one line on stderr, which is the
    last line of the job's log and so what a salvaged report shows.
    """
    from earlybrain.brainage.ensemble import BrainAgeError
    from earlybrain.brainage.infant import infant_brain_age_to_files

    try:
        r = infant_brain_age_to_files(
            volume,
            mask,
            contrast,
            affine_xfm,
            volumes_tsv,
            age_weeks,
            manifest,
            out_anat,
            prefix,
            norms,
            dseg=dseg,
        )
    except BrainAgeError as exc:
        return _fail(f"infant brain age of {prefix}: BrainAgeError: {exc}")
    print(
        f"{prefix}: brain age {r['predicted_age_weeks']:.1f} ± {r['uncertainty_sd_weeks']:.1f} "
        f"weeks PMA ({r['predicted_age_months']} months; chronological {age_weeks:g} weeks, "
        f"{r['chronological_age_months']} months), gap z {r['brain_age_gap_z']:+.2f}, "
        f"methods {', '.join(r['methods'])}, {len(r['flags'])} flag(s)"
    )
    return 0


def brainage_figures_step(brainage: Path, zscores: Path, out: Path) -> int:
    """The session's volumes on their normative centile curves, and brain age vs age."""
    from earlybrain.report.brainage import brainage_figure_file

    brainage_figure_file(brainage, zscores, out)
    return 0


def n4_figure_step(
    raw: Path, n4: Path, bias: Path, foreground: Path, brain: Path | None, out: Path
) -> int:
    """One input image: raw with its foreground outline / after N4 (brain mask outlined) /
    relative bias field, as PNG."""
    from earlybrain.io.atomic import write_bytes_atomic
    from earlybrain.report.figures import n4_figure_of_files

    write_bytes_atomic(out, n4_figure_of_files(raw, n4, bias, foreground, brain))
    return 0


def register_figures_step(volume: Path, mask: Path, labels: Path, out: Path) -> int:
    """The reconstruction with the atlas labels warped onto it: the registration check."""
    from earlybrain.io.atomic import write_bytes_atomic
    from earlybrain.report.recon_figures import orthogonal_views

    write_bytes_atomic(out, orthogonal_views(volume, mask, labels))
    return 0


def report_step(
    validation: Path,
    n4: list[Path],
    bias: list[Path],
    masks: list[Path],
    out_html: Path,
    out_stages: Path,
    cohort_link: str,
    *,
    brain_masks: list[Path],
    recon_metrics: Path | None,
    recon_figures: list[Path],
    stack_qc: Path | None = None,
    registration_qc: Path | None = None,
    registration_figure: Path | None = None,
    segmentation_qc: Path | None = None,
    volumes: Path | None = None,
    segmentation_figure: Path | None = None,
    brainage: Path | None = None,
    zscores: Path | None = None,
    brainage_figure: Path | None = None,
    n4_figures: Sequence[Path] = (),
) -> int:
    from earlybrain.report.salvage import salvaged_stages
    from earlybrain.report.subject import build_subject_report

    salvaged_stages(out_stages).unlink(missing_ok=True)  # a failed run's stand-in
    result = build_subject_report(
        validation,
        n4,
        bias,
        masks,
        out_html,
        out_stages,
        cohort_link,
        brain_masks=brain_masks,
        recon_metrics=recon_metrics,
        recon_figures=recon_figures,
        stack_qc=stack_qc,
        registration_qc=registration_qc,
        registration_figure=registration_figure,
        segmentation_qc=segmentation_qc,
        volumes=volumes,
        segmentation_figure=segmentation_figure,
        brainage=brainage,
        zscores=zscores,
        brainage_figure=brainage_figure,
        n4_figures=n4_figures,
    )
    print(f"{result['prefix']}: {result['status']} -> {out_html}")
    return 0


def cohort_step(
    stages: list[Path],
    reports: list[Path],
    out_tsv: Path,
    out_html: Path,
    norms: Path | None,
    infant_norms: Path | None = None,
) -> int:
    from earlybrain.report.cohort import write_cohort

    rows = write_cohort(stages, reports, out_tsv, out_html, norms=norms, infant_norms=infant_norms)
    n_ok = sum(r["status"] == "ok" for r in rows)
    print(f"{len(rows)} session(s), {n_ok} ok -> {out_html}")
    return 0


def dataset_description(bids: Path, out: Path) -> int:
    """BIDS derivative dataset_description.json with GeneratedBy (BIDS >= 1.4)."""
    content = {
        "Name": "earlybrain derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "earlybrain",
                "Version": __version__,
                "Description": "fetal/infant brain MRI pipeline (this version: input "
                "validation, N4 bias correction, intensity normalisation, QC reports)",
            }
        ],
        "SourceDatasets": [{"URL": Path(os.path.abspath(bids)).as_uri()}],
    }
    write_json_atomic(out, content)
    return 0
