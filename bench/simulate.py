"""Benchmark the simulator: seconds and peak memory per subject, per preset.

Usage: python bench/simulate.py [--preset full] [--ga 28] [--months 6] [--seed 0]
Prints one JSON line per subject kind.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from earlybrain.simulate.cohort import PRESETS, CohortSpec, simulate_cohort


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS))
    ap.add_argument("--ga", type=float, default=28.0)
    ap.add_argument("--months", type=float, default=6.0)
    ap.add_argument("--stacks", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for kind in ("fetal", "infant"):
        spec = CohortSpec(
            n_fetal=int(kind == "fetal"),
            n_infant=int(kind == "infant"),
            seed=args.seed,
            preset=args.preset,
            n_stacks=args.stacks,
            fetal_ages=(args.ga,) if kind == "fetal" else None,
            infant_ages_months=(args.months,) if kind == "infant" else None,
        )
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            bids, _ = simulate_cohort(Path(tmp), spec)
            seconds = time.perf_counter() - t0
            size_mb = sum(p.stat().st_size for p in bids.rglob("*") if p.is_file()) / 2**20
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "bench": "simulate",
                    "kind": kind,
                    "preset": args.preset,
                    "age": args.ga if kind == "fetal" else args.months,
                    "stacks": args.stacks if kind == "fetal" else 0,
                    "seconds": round(seconds, 2),
                    "peak_mem_mb": round(peak, 1),
                    "bids_mb": round(size_mb, 2),
                }
            )
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
