"""Command-line entry point: thin; each subcommand calls into the package."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from pathlib import Path
from types import FrameType

from earlybrain.stepkit import add_parser, call, fail, print_traceback, target_of
from earlybrain.workflow_steps import STEPS


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


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM (scancel, a SLURM time limit, a killed Snakemake) unwinds like Ctrl-C.

    Python's default for SIGTERM is to die on the spot; raising SystemExit instead
    lets the atomic writers remove their temporary files on the way out.
    """
    raise SystemExit(128 + signum)


def _resource_message(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One actionable line for running out of memory or lacking a GPU; None otherwise."""
    declared = STEPS[args.step]
    rule, where = declared.rule, f"{args.step} for {target_of(declared, args)}"
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
    sys.excepthook = lambda _kind, exc, _tb: print_traceback(exc)  # an unexpected crash
    try:
        return _run_step(args)
    except (MemoryError, RuntimeError) as exc:
        message = _resource_message(exc, args)
        if message is None:
            raise
        return fail(message)


def _run_step(args: argparse.Namespace) -> int:
    return call(STEPS[args.step], args)


def _add_step_parsers(sub: argparse._SubParsersAction) -> None:
    """`earlybrain step NAME`: one subcommand per declared step (earlybrain.workflow_steps)."""
    st = sub.add_parser(
        "step",
        help="internal: run one workflow step (what the Snakemake rules call)",
        description="Internal single steps; the Snakemake rules call these.",
    )
    steps = st.add_subparsers(dest="step", required=True)
    for declared in STEPS.values():
        add_parser(steps, declared)
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
