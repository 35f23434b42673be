"""Command-line entry point: thin; each subcommand calls into the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    )
    bids, truth = simulate_cohort(Path(args.out), spec)
    print(f"BIDS dataset:  {bids}")
    print(f"ground truth:  {truth}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from earlybrain.runner import run_workflow

    return run_workflow(
        bids=Path(args.bids),
        out=Path(args.out),
        cores=args.cores,
        profile=args.profile,
        configfile=Path(args.configfile) if args.configfile else None,
        extra=args.snakemake_args,
    )


def _demo(args: argparse.Namespace) -> int:
    from earlybrain.runner import run_demo

    return run_demo(out=Path(args.out), cores=args.cores)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="earlybrain", description=__doc__)
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
    s.set_defaults(func=_simulate)

    r = sub.add_parser("run", help="run the Snakemake workflow on a BIDS dataset")
    r.add_argument("bids")
    r.add_argument("out")
    r.add_argument("--cores", type=int, default=2)
    r.add_argument("--profile", help="Snakemake profile folder, e.g. profiles/slurm")
    r.add_argument("--configfile", help="YAML overriding config/config.yaml")
    r.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="passed to snakemake")
    r.set_defaults(func=_run)

    d = sub.add_parser("demo", help="simulate a small cohort and run the whole workflow on it")
    d.add_argument("--out", default="demo")
    d.add_argument("--cores", type=int, default=2)
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
