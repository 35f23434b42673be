"""`earlybrain fit-norms`: normative growth curves refitted on a lab's own sessions.

earlybrain fit-norms --volumes sub-*_desc-volumes.tsv --ages 24.1 30.5 ... --out norms.json
snakemake fit_norms --cores 1          (the same for this run's sessions)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from earlybrain.brainage.norms_fit import fit_norms_files


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        allow_abbrev=False, prog="earlybrain fit-norms", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--volumes", nargs="+", required=True, help="volumes TSVs of the cohort")
    ap.add_argument("--ages", nargs="+", type=float, required=True, help="their ages, weeks")
    ap.add_argument("--out", required=True, help="norms JSON to write")
    ap.add_argument("--source", default="a lab's cohort", help="what the cohort is (recorded)")
    a = ap.parse_args(argv)
    if len(a.volumes) != len(a.ages):
        ap.error(f"{len(a.volumes)} volumes files but {len(a.ages)} ages: give one age each")
    norms = fit_norms_files(a.volumes, a.ages, a.out, a.source)
    print(f"fitted on {norms.n_subjects} sessions, {norms.age_range[0]:g}-{norms.age_range[1]:g} "
          f"weeks -> {a.out}")  # fmt: skip
    return 0
