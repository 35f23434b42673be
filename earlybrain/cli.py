"""Command-line entry point: thin; each subcommand calls into the package."""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType


def _simulate(args: argparse.Namespace) -> int:
    from earlybrain.simulate.cohort import CohortSpec, simulate_cohort

    spec = CohortSpec(
        n_fetal=args.fetal,
        n_infant=args.infant,
        seed=args.seed,
        motion=args.motion,
        n_stacks=args.stacks,
        preset=args.preset,
        fetal_ages=tuple(args.ga) if args.ga else None,
        infant_ages_months=tuple(args.months) if args.months else None,
        write_masks=args.write_masks,
    )
    bids, truth = simulate_cohort(Path(args.out), spec)
    print(f"BIDS dataset:  {bids}")
    print(f"ground truth:  {truth}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from earlybrain.runner import ConfigError, parse_config_overrides, run_workflow

    try:
        overrides = parse_config_overrides(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_workflow(
        bids=Path(args.bids),
        out=Path(args.out),
        cores=args.cores,
        profile=args.profile,
        configfile=Path(args.configfile) if args.configfile else None,
        extra=args.snakemake_args,
        overrides=overrides,
    )


def _demo(args: argparse.Namespace) -> int:
    from earlybrain.runner import run_demo

    return run_demo(out=Path(args.out), cores=args.cores)


# commands whose options are a library module's own parser: name -> (module, help)
PASSTHROUGH: dict[str, tuple[str, str]] = {
    "import-dicom": (
        "earlybrain.io.dicom_import",
        "convert a DICOM study into a de-identified BIDS session (dcm2niix)",
    ),
    "build-atlas": (
        "earlybrain.atlas.build",
        "build a spatiotemporal atlas from a cohort (ANTsPy)",
    ),
    "train-masking": (
        "earlybrain.preprocess.train_masking",
        "train the fetal brain masking network",
    ),
    "train-segmentation": (
        "earlybrain.segment.train",
        "train (or fine-tune) the tissue segmentation network",
    ),
    "train-brainage": (
        "earlybrain.brainage.train",
        "train the brain-age deep ensemble (simulated fetuses and/or a lab's cohort)",
    ),
    "fit-norms": (
        "earlybrain.brainage.fit",
        "fit normative growth curves of the volumes on a cohort (e.g. healthy controls)",
    ),
}


def _passthrough(name: str, argv: list[str]) -> int:
    return int(importlib.import_module(PASSTHROUGH[name][0]).main(argv) or 0)


# step -> (the Snakemake rule that runs it, what it works on), for resource messages
STEP_RULES: dict[str, tuple[str, Callable[[argparse.Namespace], str]]] = {
    "validate": (
        "validate",
        lambda a: f"{a.bids}/sub-{a.subject}" + (f"/ses-{a.session}" if a.session else ""),
    ),
    "n4": ("n4", lambda a: a.input),
    "n4-figure": ("n4_figures", lambda a: a.raw),
    "brain-mask": ("brain_mask", lambda a: a.input),
    "stack-qc": ("stack_qc", lambda a: a.out_tsv),
    "recon": ("recon", lambda a: a.out_volume),
    "recon-figures": ("recon_figures", lambda a: a.volume),
    "infant-prep": ("infant_prep", lambda a: a.image),
    "given-mask": ("given_recon_mask", lambda a: a.raw),
    "register-atlas": ("register_atlas", lambda a: a.volume),
    "register-figures": ("register_figures", lambda a: a.volume),
    "segment": ("segment", lambda a: a.subject_volume),
    "brainage": ("brainage", lambda a: a.volume),
    "infant-brainage": ("brainage_infant", lambda a: a.volume),
    "brainage-figures": ("brainage_figures", lambda a: a.brainage),
    "report": ("report", lambda a: a.validation),
    "cohort": ("cohort", lambda a: a.out_tsv),
    "dataset-description": ("dataset_description", lambda a: a.out),
}


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (scancel, a SLURM time limit, a killed Snakemake) unwinds like Ctrl-C.

    Python's default for SIGTERM is to die on the spot; raising SystemExit instead
    lets the atomic writers remove their temporary files on the way out.
    """
    raise SystemExit(128 + signum)


def _resource_message(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One actionable line for running out of memory or lacking a GPU; None otherwise."""
    rule, target = STEP_RULES[args.step]  # tests/test_reliability.py: every step has one
    where = f"{args.step} for {target(args)}"
    if isinstance(exc, MemoryError):
        return (
            f"out of memory in {where}: raise mem_mb for rule {rule} (set-resources in "
            f"profiles/<profile>/config.yaml, or --set-resources {rule}:mem_mb=<MB>) "
            "or lower the resolution"
        )
    torch = sys.modules.get("torch")  # only a step that imported torch can raise its errors
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return (
            f"GPU out of memory in {where}: lower the resolution, ask for a GPU with more "
            "memory (gpu_model in profiles/slurm/config.yaml) or set device: cpu in the config"
        )
    device = sys.modules.get("earlybrain.device")
    if device is not None and isinstance(exc, device.DeviceUnavailableError):
        return f"{where}: {exc}"
    return None


def _step(args: argparse.Namespace) -> int:
    """Run one step; resource failures become one line on stderr and exit status 1."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _run_step(args)
    except (MemoryError, RuntimeError) as exc:
        message = _resource_message(exc, args)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


def _run_step(args: argparse.Namespace) -> int:
    from earlybrain import steps

    if args.step == "validate":
        return steps.validate_step(
            Path(args.bids),
            args.subject,
            args.session or None,
            Path(args.out),
            tuple(args.fetal_ga_range),
            tuple(args.infant_pma_range),
            args.min_slices,
            reconstructed=args.reconstructed,
        )
    if args.step == "n4":
        return steps.n4_step(
            Path(args.input),
            Path(args.out),
            Path(args.bias),
            Path(args.mask),
            shrink_factor=args.shrink_factor,
            iterations=args.iterations,
            convergence_tol=args.convergence_tol,
            spline_distance_mm=args.spline_distance_mm,
            smoothing_sigma_mm=args.smoothing_sigma_mm,
            min_component_fraction=args.min_component_fraction,
            lower_percentile=args.lower_percentile,
            upper_percentile=args.upper_percentile,
            threads=args.threads,
        )
    if args.step == "brain-mask":
        return steps.brain_mask_step(
            Path(args.input),
            Path(args.out),
            precomputed=Path(args.precomputed) if args.precomputed else None,
            weights=Path(args.weights) if args.weights else None,
            threshold=args.threshold,
            min_volume_ml=args.min_volume_ml,
            device=args.device,
            device_fallback=args.device_fallback,
            masks_dir_miss=args.masks_dir_miss,
        )
    if args.step == "stack-qc":
        return steps.stack_qc_step(
            [Path(p) for p in args.stacks],
            [Path(p) for p in args.masks],
            Path(args.out_tsv),
            json.loads(args.rules),
        )
    if args.step == "register-atlas":
        return steps.register_atlas_step(
            Path(args.volume),
            Path(args.mask),
            args.age,
            Path(args.atlas),
            Path(args.out_anat),
            Path(args.out_xfm),
            args.prefix,
            params=json.loads(args.params),
            threads=args.threads,
            contrast=args.contrast,
        )
    if args.step == "infant-prep":
        return steps.infant_prep_step(
            Path(args.image),
            args.contrast,
            args.age,
            Path(args.out_mask),
            Path(args.out_qc),
            weights=Path(args.weights) if args.weights else None,
            tta=args.tta,
            device=args.device,
            device_fallback=args.device_fallback,
            threads=args.threads,
        )
    if args.step == "given-mask":
        return steps.given_recon_mask_step(
            Path(args.raw),
            Path(args.image),
            Path(args.out_mask),
            Path(args.out_qc),
            weights=Path(args.weights) if args.weights else None,
            device=args.device,
            device_fallback=args.device_fallback,
            threads=args.threads,
        )
    if args.step == "segment":
        return steps.segment_step(
            Path(args.volume),
            Path(args.mask),
            Path(args.subject_volume),
            Path(args.affine),
            Path(args.inverse_warp),
            Path(args.atlas),
            Path(args.out_anat),
            args.prefix,
            atlas_dseg=Path(args.atlas_dseg) if args.atlas_dseg else None,
            settings=json.loads(args.settings),
            device=args.device,
            device_fallback=args.device_fallback,
            threads=args.threads,
        )
    if args.step == "brainage":
        return steps.brainage_step(
            Path(args.volume),
            Path(args.mask),
            Path(args.affine),
            Path(args.volumes),
            args.age,
            Path(args.atlas),
            Path(args.out_anat),
            args.prefix,
            settings=json.loads(args.settings),
            device=args.device,
            device_fallback=args.device_fallback,
            threads=args.threads,
        )
    if args.step == "infant-brainage":
        return steps.infant_brainage_step(
            Path(args.volume),
            Path(args.mask),
            args.contrast,
            Path(args.affine),
            Path(args.volumes),
            args.age,
            Path(args.atlas),
            Path(args.out_anat),
            args.prefix,
            dseg=Path(args.dseg) if args.dseg else None,
            norms=Path(args.norms) if args.norms else None,
        )
    if args.step == "n4-figure":
        return steps.n4_figure_step(
            Path(args.raw),
            Path(args.n4),
            Path(args.bias),
            Path(args.foreground),
            Path(args.brain) if args.brain else None,
            Path(args.out),
        )
    if args.step == "register-figures":
        return steps.register_figures_step(
            Path(args.volume), Path(args.mask), Path(args.labels), Path(args.out)
        )
    if args.step == "recon":
        return steps.recon_step(
            [Path(p) for p in args.stacks],
            [Path(p) for p in args.masks],
            Path(args.out_volume),
            Path(args.out_mask),
            Path(args.out_slices),
            Path(args.out_metrics),
            params=json.loads(args.params),
            device=args.device,
            device_fallback=args.device_fallback,
            threads=args.threads,
            stack_qc=Path(args.stack_qc) if args.stack_qc else None,
        )
    if args.step == "recon-figures":
        return steps.recon_figures_step(
            Path(args.volume),
            Path(args.mask),
            Path(args.slices),
            Path(args.metrics),
            Path(args.out_views),
            Path(args.out_motion),
        )
    if args.step == "report":
        return steps.report_step(
            Path(args.validation),
            [Path(p) for p in args.n4],
            [Path(p) for p in args.bias],
            [Path(p) for p in args.mask],
            Path(args.out_html),
            Path(args.out_stages),
            args.cohort_link,
            brain_masks=[Path(p) for p in args.brain_masks],
            recon_metrics=Path(args.recon_metrics) if args.recon_metrics else None,
            recon_figures=[Path(p) for p in args.recon_figures],
            stack_qc=Path(args.stack_qc) if args.stack_qc else None,
            registration_qc=Path(args.registration_qc) if args.registration_qc else None,
            registration_figure=(
                Path(args.registration_figure) if args.registration_figure else None
            ),
            segmentation_qc=Path(args.segmentation_qc) if args.segmentation_qc else None,
            volumes=Path(args.volumes) if args.volumes else None,
            segmentation_figure=(
                Path(args.segmentation_figure) if args.segmentation_figure else None
            ),
            brainage=Path(args.brainage) if args.brainage else None,
            zscores=Path(args.zscores) if args.zscores else None,
            brainage_figure=Path(args.brainage_figure) if args.brainage_figure else None,
            n4_figures=[Path(p) for p in args.n4_figures],
        )
    if args.step == "cohort":
        return steps.cohort_step(
            [Path(p) for p in args.stages],
            [Path(p) for p in args.reports],
            Path(args.out_tsv),
            Path(args.out_html),
            norms=Path(args.norms) if args.norms else None,
            infant_norms=Path(args.infant_norms) if args.infant_norms else None,
        )
    if args.step == "brainage-figures":
        return steps.brainage_figures_step(Path(args.brainage), Path(args.zscores), Path(args.out))
    if args.step == "dataset-description":
        return steps.dataset_description(Path(args.bids), Path(args.out))
    raise AssertionError(args.step)


def _add_step_parsers(sub: argparse._SubParsersAction) -> None:
    """Internal one-step commands used by the Snakemake rules (see workflow/rules)."""
    st = sub.add_parser(
        "step",
        help="internal: run one workflow step (what the Snakemake rules call)",
        description="Internal single steps; the Snakemake rules call these.",
    )
    steps = st.add_subparsers(dest="step", required=True)

    v = steps.add_parser("validate", help="validate one session's inputs, always write a status")
    v.add_argument("--bids", required=True)
    v.add_argument("--subject", required=True, help="label without sub-")
    v.add_argument("--session", default="", help="label without ses- (empty: no sessions)")
    v.add_argument("--out", required=True, help="validation JSON")
    v.add_argument("--fetal-ga-range", type=float, nargs=2, default=(18.0, 45.0))
    v.add_argument("--infant-pma-range", type=float, nargs=2, default=(37.0, 160.0))
    v.add_argument("--min-slices", type=int, default=3)
    v.add_argument(
        "--reconstructed",
        action="store_true",
        help="a session of one 3D T2w image is a fetal reconstruction made elsewhere",
    )

    n = steps.add_parser("n4", help="foreground mask + N4 + normalisation of one image")
    n.add_argument("--input", required=True)
    n.add_argument("--out", required=True)
    n.add_argument("--bias", required=True)
    n.add_argument("--mask", required=True, help="foreground mask output (not a brain mask)")
    n.add_argument("--shrink-factor", type=int, default=4)
    n.add_argument("--iterations", type=int, nargs="+", default=[100, 100])
    n.add_argument("--convergence-tol", type=float, default=1e-6)
    n.add_argument("--spline-distance-mm", type=float, default=200.0)
    n.add_argument("--smoothing-sigma-mm", type=float, default=2.0)
    n.add_argument("--min-component-fraction", type=float, default=0.05)
    n.add_argument("--lower-percentile", type=float, default=1.0)
    n.add_argument("--upper-percentile", type=float, default=99.0)
    n.add_argument("--threads", type=int, default=1)

    bm = steps.add_parser("brain-mask", help="brain mask of one stack (network or precomputed)")
    bm.add_argument("--input", required=True, help="stack")
    bm.add_argument("--out", required=True, help="mask (uint8 NIfTI + JSON sidecar)")
    bm.add_argument("--precomputed", nargs="?", default="", const="", help="use this mask")
    bm.add_argument(
        "--weights", nargs="?", default="", const="", help="network weights (empty: shipped)"
    )
    bm.add_argument("--threshold", type=float, default=None, help="default: the weights' own")
    bm.add_argument("--min-volume-ml", type=float, default=1.0)
    bm.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bm.add_argument("--device-fallback", choices=["cpu", "none"], default="cpu")
    bm.add_argument(
        "--masks-dir-miss", default="", help="masks_dir had no mask for this stack: why (logged)"
    )

    sq = steps.add_parser("stack-qc", help="score, rank and exclude the stacks of a session")
    sq.add_argument("--stacks", nargs="+", required=True)
    sq.add_argument("--masks", nargs="+", required=True, help="brain mask per stack")
    sq.add_argument("--out-tsv", required=True)
    sq.add_argument("--rules", default="{}", help="JSON object of QualityRules fields")

    ra = steps.add_parser("register-atlas", help="register a volume to its age-matched template")
    ra.add_argument("--volume", required=True)
    ra.add_argument("--mask", required=True, help="brain mask of the volume")
    ra.add_argument("--age", type=float, required=True, help="age in weeks (GA or PMA)")
    ra.add_argument("--atlas", required=True, help="atlas manifest.json")
    ra.add_argument("--out-anat", required=True, help="folder for images")
    ra.add_argument("--out-xfm", required=True, help="folder for transforms")
    ra.add_argument("--prefix", required=True, help="e.g. sub-01_rec-svr")
    ra.add_argument("--params", default="{}", help="JSON object of RegistrationParams fields")
    ra.add_argument("--contrast", default="T2w", choices=["T1w", "T2w"], help="template contrast")
    ra.add_argument("--threads", type=int, default=1)

    ip = steps.add_parser("infant-prep", help="brain mask of an infant's 3D head image")
    ip.add_argument("--image", required=True, help="the N4-corrected T1w or T2w image")
    ip.add_argument("--contrast", required=True, choices=["T1w", "T2w"])
    ip.add_argument("--age", type=float, required=True, help="post-menstrual age, weeks")
    ip.add_argument("--out-mask", required=True)
    ip.add_argument("--out-qc", required=True)
    ip.add_argument("--weights", default=None, help="segmentation weights (default: shipped)")
    ip.add_argument("--tta", action="store_true", help="average with the mirrored image")
    ip.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ip.add_argument("--device-fallback", default="cpu", choices=["cpu", "none"])
    ip.add_argument("--threads", type=int, default=1)

    gm = steps.add_parser("given-mask", help="brain mask of a reconstruction made elsewhere")
    gm.add_argument("--raw", required=True, help="the reconstruction as given")
    gm.add_argument("--image", required=True, help="its N4-corrected version")
    gm.add_argument("--out-mask", required=True)
    gm.add_argument("--out-qc", required=True)
    gm.add_argument(
        "--weights", nargs="?", default="", const="", help="segmentation weights (empty: shipped)"
    )
    gm.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    gm.add_argument("--device-fallback", default="cpu", choices=["cpu", "none"])
    gm.add_argument("--threads", type=int, default=1)

    sg = steps.add_parser("segment", help="tissue labels of a registered reconstruction")
    sg.add_argument("--volume", required=True, help="the reconstruction in atlas space")
    sg.add_argument("--mask", required=True, help="its brain mask in atlas space")
    sg.add_argument("--subject-volume", required=True, help="the reconstruction (its grid)")
    sg.add_argument("--affine", required=True, help="registration affine (subject -> atlas)")
    sg.add_argument("--inverse-warp", required=True, help="registration inverse warp")
    sg.add_argument("--atlas", required=True, help="atlas manifest.json (midsagittal plane)")
    sg.add_argument("--atlas-dseg", default=None, help="atlas labels in subject space (QC)")
    sg.add_argument("--out-anat", required=True)
    sg.add_argument("--prefix", required=True, help="e.g. sub-01_rec-svr")
    sg.add_argument("--settings", default="{}", help="JSON: weights, tta, keep_fraction")
    sg.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    sg.add_argument("--device-fallback", default="cpu", choices=["cpu", "none"])
    sg.add_argument("--threads", type=int, default=1)

    ba = steps.add_parser("brainage", help="brain age and normative z-scores of a session")
    ba.add_argument("--volume", required=True, help="the reconstruction (subject space)")
    ba.add_argument("--mask", required=True, help="its brain mask")
    ba.add_argument("--affine", required=True, help="registration affine (.mat, subject -> atlas)")
    ba.add_argument("--volumes", required=True, help="the segmentation's volumes TSV")
    ba.add_argument("--age", type=float, required=True, help="chronological age, weeks")
    ba.add_argument("--atlas", required=True, help="atlas manifest.json (atlas similarity)")
    ba.add_argument("--out-anat", required=True)
    ba.add_argument("--prefix", required=True, help="e.g. sub-01_rec-svr")
    ba.add_argument("--settings", default="{}", help="JSON: weights, norms")
    ba.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ba.add_argument("--device-fallback", default="cpu", choices=["cpu", "none"])
    ba.add_argument("--threads", type=int, default=1)

    ib = steps.add_parser(
        "infant-brainage", help="brain age and normative z-scores of an infant session"
    )
    ib.add_argument("--volume", required=True, help="the N4-corrected image (registered one)")
    ib.add_argument("--mask", required=True, help="its brain mask (same grid)")
    ib.add_argument("--contrast", required=True, choices=["T1w", "T2w"], help="its contrast")
    ib.add_argument("--affine", required=True, help="registration affine (.mat, atlas -> subject)")
    ib.add_argument("--volumes", required=True, help="the segmentation's volumes TSV")
    ib.add_argument("--dseg", default="", help="its segmentation on the image's grid (myelination)")
    ib.add_argument("--age", type=float, required=True, help="post-menstrual age, weeks")
    ib.add_argument("--atlas", required=True, help="infant atlas manifest.json")
    ib.add_argument("--norms", default="", help="infant norms JSON (default: shipped)")
    ib.add_argument("--out-anat", required=True)
    ib.add_argument("--prefix", required=True, help="e.g. sub-01_mod-T2w")

    nf = steps.add_parser("n4-figure", help="one input image before/after N4 (PNG)")
    nf.add_argument("--raw", required=True, help="the input image")
    nf.add_argument("--n4", required=True, help="its N4-corrected, normalised image")
    nf.add_argument("--bias", required=True, help="its bias field")
    nf.add_argument("--foreground", required=True, help="its foreground mask (N4's)")
    nf.add_argument("--brain", nargs="?", default="", const="", help="a brain mask on its grid")
    nf.add_argument("--out", required=True)

    rg = steps.add_parser("register-figures", help="atlas labels over the reconstruction (PNG)")
    rg.add_argument("--volume", required=True)
    rg.add_argument("--mask", required=True)
    rg.add_argument("--labels", required=True, help="atlas labels warped to the volume")
    rg.add_argument("--out", required=True)

    rc = steps.add_parser("recon", help="SVR + SRR of one fetal session (torch, CPU/CUDA)")
    rc.add_argument("--stacks", nargs="+", required=True, help="bias-corrected stacks")
    rc.add_argument("--masks", nargs="+", required=True, help="brain mask per stack, same order")
    rc.add_argument("--out-volume", required=True)
    rc.add_argument("--out-mask", required=True)
    rc.add_argument("--out-slices", required=True, help="per-slice poses and weights (TSV)")
    rc.add_argument("--out-metrics", required=True, help="QC metrics (JSON)")
    rc.add_argument("--params", default="{}", help="JSON object of recon parameters")
    rc.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    rc.add_argument("--device-fallback", choices=["cpu", "none"], default="cpu")
    rc.add_argument("--threads", type=int, default=1)
    rc.add_argument("--stack-qc", default="", help="stack-quality TSV: use its kept stacks")

    rf = steps.add_parser("recon-figures", help="PNG figures of one reconstruction")
    rf.add_argument("--volume", required=True)
    rf.add_argument("--mask", required=True)
    rf.add_argument("--slices", required=True)
    rf.add_argument("--metrics", required=True)
    rf.add_argument("--out-views", required=True)
    rf.add_argument("--out-motion", required=True)

    r = steps.add_parser("report", help="subject/session HTML report + stage status JSON")
    r.add_argument("--validation", required=True)
    r.add_argument("--n4", nargs="*", default=[])
    r.add_argument("--bias", nargs="*", default=[])
    r.add_argument("--mask", nargs="*", default=[])
    r.add_argument("--n4-figures", nargs="*", default=[], help="n4-figure PNGs, same order")
    r.add_argument("--brain-masks", nargs="*", default=[], help="brain mask per stack")
    r.add_argument(
        "--recon-metrics", nargs="?", default="", const="", help="SVR/SRR QC JSON (fetal)"
    )
    r.add_argument("--recon-figures", nargs="*", default=[], help="SVR/SRR PNG figures")
    r.add_argument("--stack-qc", nargs="?", default="", const="", help="stack quality TSV")
    r.add_argument(
        "--registration-qc", nargs="?", default="", const="", help="atlas registration QC JSON"
    )
    r.add_argument(
        "--registration-figure", nargs="?", default="", const="", help="registration check PNG"
    )
    r.add_argument(
        "--segmentation-qc", nargs="?", default="", const="", help="segmentation QC JSON"
    )
    r.add_argument("--volumes", nargs="?", default="", const="", help="tissue volumes TSV")
    r.add_argument(
        "--segmentation-figure", nargs="?", default="", const="", help="segmentation PNG"
    )
    r.add_argument("--brainage", nargs="?", default="", const="", help="brain-age JSON")
    r.add_argument("--zscores", nargs="?", default="", const="", help="z-scores TSV")
    r.add_argument("--brainage-figure", nargs="?", default="", const="", help="normative chart PNG")
    r.add_argument("--out-html", required=True)
    r.add_argument("--out-stages", required=True)
    r.add_argument("--cohort-link", default="group/cohort.html")

    c = steps.add_parser("cohort", help="cohort TSV + HTML from the stage JSONs")
    c.add_argument("--stages", nargs="+", required=True)
    c.add_argument("--reports", nargs="+", required=True)
    c.add_argument("--out-tsv", required=True)
    c.add_argument("--out-html", required=True)
    c.add_argument("--norms", nargs="?", default="", const="", help="normative curves JSON")
    c.add_argument(
        "--infant-norms", nargs="?", default="", const="", help="infant normative curves JSON"
    )

    bf = steps.add_parser("brainage-figures", help="normative chart of a session (PNG)")
    bf.add_argument("--brainage", required=True, help="desc-brainage.json")
    bf.add_argument("--zscores", required=True, help="desc-zscores.tsv")
    bf.add_argument("--out", required=True)

    d = steps.add_parser("dataset-description", help="derivatives dataset_description.json")
    d.add_argument("--bids", required=True)
    d.add_argument("--out", required=True)
    st.set_defaults(func=_step)


class ExactParser(argparse.ArgumentParser):
    """A parser that takes no abbreviated option: argparse would read `--config` as
    `--configfile` and `--weight` as `--weights`; its subcommand parsers are exact too."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    p = ExactParser(prog="earlybrain", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a synthetic BIDS cohort plus its ground truth")
    s.add_argument("out", help="output folder (gets bids/ and groundtruth/)")
    s.add_argument("--fetal", type=int, default=2, help="number of fetal subjects")
    s.add_argument("--infant", type=int, default=0, help="number of infant subjects")
    s.add_argument("--ga", type=float, nargs="*", help="gestational ages (weeks), one per fetus")
    s.add_argument("--months", type=float, nargs="*", help="infant ages (months), one per infant")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--motion", choices=["none", "moderate", "severe"], default="moderate")
    s.add_argument("--stacks", type=int, default=3, help="stacks per fetal subject")
    s.add_argument(
        "--preset",
        choices=["tiny", "demo", "full"],
        default="demo",
        help="resolution/size preset: tiny for tests, full for realistic 0.8 mm data",
    )
    s.add_argument(
        "--write-masks",
        action="store_true",
        help="also write the true stack masks as bids/derivatives/masks (like manual masks)",
    )
    s.set_defaults(func=_simulate)

    r = sub.add_parser(
        "run",
        help="run the Snakemake workflow on a BIDS dataset",
        usage="earlybrain run BIDS OUT [--cores N] [--profile P] [--configfile F] "
        "[--config KEY=VALUE ...] [-- SNAKEMAKE ARGS...]",
        description="Exits with status 0 only when every session was processed; a failed "
        "session is named on stderr (after the others have finished).",
    )
    r.add_argument("bids")
    r.add_argument("out")
    r.add_argument("--cores", type=int, default=2)
    r.add_argument("--profile", help="Snakemake profile folder, e.g. profiles/slurm")
    r.add_argument("--configfile", help="YAML overriding config/config.yaml")
    r.add_argument(
        "--config",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys (after --configfile); VALUE is YAML; dotted keys are "
        "nested, e.g. --config masks_dir=/data/masks recon.device=cpu",
    )
    r.set_defaults(func=_run)

    d = sub.add_parser("demo", help="simulate a small cohort and run the whole workflow on it")
    d.add_argument("--out", default="demo")
    d.add_argument("--cores", type=int, default=2)
    d.set_defaults(func=_demo)

    # listed for --help; main() hands their arguments to the library modules' own parsers
    for name, (_, text) in PASSTHROUGH.items():
        sub.add_parser(name, help=f"{text} (see {name} --help)", add_help=False)

    _add_step_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `earlybrain run ... -- <snakemake args>`: everything after `--` goes to Snakemake
    # untouched, so our own options may come before or after the two paths.
    passthrough: list[str] = []
    if argv[:1] == ["run"] and "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    if argv and argv[0] in PASSTHROUGH:
        # argparse's REMAINDER drops leading options: hand everything over as it is
        return _passthrough(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "run":
        args.snakemake_args = passthrough
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
