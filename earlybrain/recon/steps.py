"""Workflow step of the reconstruction: SVR + SRR of one fetal session."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Annotated

from earlybrain.stepkit import Compute, Input, Output, Param, fail, step


def kept_stacks(stack_qc: Path, stacks: list[Path], masks: list[Path]) -> tuple[list, list]:
    """The stacks (and their masks) that stack QC kept, best first: the first is the
    reconstruction's reference."""
    with open(stack_qc, newline="") as fh:
        rows = {Path(r["stack"]).name: r for r in csv.DictReader(fh, delimiter="\t")}
    missing = [p.name for p in stacks if p.name not in rows]
    if missing:
        raise ValueError(f"{stack_qc}: no row for {', '.join(missing)}")
    kept = [(int(rows[p.name]["rank"]), p, m) for p, m in zip(stacks, masks, strict=True)]
    kept = sorted(k for k in kept if rows[k[1].name]["kept"] == "true")
    return [p for _, p, _ in kept], [m for _, _, m in kept]


@step("recon", rule="recon", target="volume")
def recon_step(
    stacks: Annotated[list[Path], Input("bias-corrected stacks")],
    masks: Annotated[list[Path], Input("brain mask per stack, same order")],
    volume: Annotated[Path, Output("the reconstruction")],
    mask: Annotated[Path, Output("its brain mask")],
    slices: Annotated[Path, Output("per-slice poses and weights (TSV)")],
    metrics: Annotated[Path, Output("QC metrics (JSON)")],
    stack_qc: Annotated[Path | None, Input("stack quality TSV: use its kept stacks")] = None,
    params: Annotated[dict | None, Param("config recon (ReconConfig fields)")] = None,
    compute: Annotated[Compute, Param()] = Compute(),
) -> int:
    """SVR + SRR of one fetal session (torch, CPU/CUDA); progress goes to the job log.

    With `stack_qc` (the stack-quality TSV) only the stacks it kept are used."""
    from earlybrain.device import resolve_device
    from earlybrain.recon.io import run_recon
    from earlybrain.recon.stacks import ReconInputError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dev = resolve_device(compute.device, allow_cpu_fallback=compute.cpu_fallback)
    reference = None
    if stack_qc is not None:
        stacks, masks = kept_stacks(stack_qc, stacks, masks)
        reference = 0  # ranked first by stack QC
    try:
        result = run_recon(
            stacks,
            masks,
            volume,
            slices,
            metrics,
            params={"threads": compute.threads, **(params or {})},
            device=dev,
            out_mask=mask,
            reference=reference,
        )
    except ReconInputError as exc:
        return fail(exc)
    m = result.metrics
    print(
        f"{volume.name}: {m['n_stacks']} stack(s), reference stack {m['reference_stack']}"
        f" ({m['reference_reason']}), {m['rejected_slices']} of {m['slices_with_brain']}"
        f" slices rejected, NCC observed/simulated {m['ncc_observed_simulated']:.3f},"
        f" {m['seconds']:.0f} s on {m['device']}"
    )
    return 0
