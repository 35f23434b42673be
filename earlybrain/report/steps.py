"""Workflow steps of the reports: each stage's figures, the session report, the cohort."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from earlybrain.report.outputs import SessionOutputs
from earlybrain.stepkit import Input, Output, Param, step


@step("n4-figure", rule="n4_figures", target="raw")
def n4_figure_step(
    raw: Annotated[Path, Input("the input image")],
    n4: Annotated[Path, Input("its N4-corrected, normalised image")],
    bias: Annotated[Path, Input("its bias field")],
    foreground: Annotated[Path, Input("its foreground mask (N4's)")],
    out: Annotated[Path, Output("PNG")],
    brain: Annotated[Path | None, Input("a brain mask on its grid")] = None,
) -> int:
    """One input image before/after N4 (PNG): raw with its foreground outline / after N4
    (brain mask outlined) / relative bias field."""
    from earlybrain.io.atomic import write_bytes_atomic
    from earlybrain.report.figures import n4_figure_of_files

    write_bytes_atomic(out, n4_figure_of_files(raw, n4, bias, foreground, brain))
    return 0


@step("recon-figures", rule="recon_figures", target="volume")
def recon_figures_step(
    volume: Annotated[Path, Input("the reconstruction")],
    mask: Annotated[Path, Input("its brain mask")],
    slices: Annotated[Path, Input("per-slice poses and weights (TSV)")],
    metrics: Annotated[Path, Input("QC metrics (JSON)")],
    views: Annotated[Path, Output("three views (PNG)")],
    motion: Annotated[Path, Output("per-slice motion and weights (PNG)")],
) -> int:
    """PNG figures of one reconstruction (embedded by the report, usable on their own)."""
    from earlybrain.io.atomic import write_bytes_atomic
    from earlybrain.report.recon_figures import motion_figure, orthogonal_views

    reject_weight = json.loads(metrics.read_text())["reject_weight"]
    write_bytes_atomic(views, orthogonal_views(volume, mask))
    write_bytes_atomic(motion, motion_figure(slices, reject_weight))
    return 0


@step("register-figures", rule="register_figures", target="volume")
def register_figures_step(
    volume: Annotated[Path, Input("the reconstruction (or infant image)")],
    mask: Annotated[Path, Input("its brain mask")],
    labels: Annotated[Path, Input("labels on its grid (atlas or network)")],
    out: Annotated[Path, Output("PNG")],
) -> int:
    """Labels outlined over the volume (PNG): the registration or segmentation check."""
    from earlybrain.io.atomic import write_bytes_atomic
    from earlybrain.report.recon_figures import orthogonal_views

    write_bytes_atomic(out, orthogonal_views(volume, mask, labels))
    return 0


@step("brainage-figures", rule="brainage_figures", target="brainage")
def brainage_figures_step(
    brainage: Annotated[Path, Input("desc-brainage.json")],
    zscores: Annotated[Path, Input("desc-zscores.tsv")],
    out: Annotated[Path, Output("PNG")],
) -> int:
    """Normative chart of a session (PNG): its volumes on their centile curves, and
    brain age vs age."""
    from earlybrain.report.brainage import brainage_figure_file

    brainage_figure_file(brainage, zscores, out)
    return 0


@step("report", rule="report", target="validation")
def report_step(
    outputs: Annotated[SessionOutputs, Input("what the session's stages wrote")],
    html: Annotated[Path, Output("the session's HTML report")],
    stages: Annotated[Path, Output("its stage status JSON (the cohort table's row)")],
    cohort_link: Annotated[str, Param("link to the cohort page")] = "group/cohort.html",
) -> int:
    """Subject/session HTML report + stage status JSON, also for failed sessions."""
    from earlybrain.report.salvage import salvaged_stages
    from earlybrain.report.subject import build_subject_report

    salvaged_stages(stages).unlink(missing_ok=True)  # a failed run's stand-in
    result = build_subject_report(outputs, html, stages, cohort_link)
    print(f"{result['prefix']}: {result['status']} -> {html}")
    return 0


@step("cohort", rule="cohort", target="tsv")
def cohort_step(
    stages: Annotated[list[Path], Input("every session's stage status JSON")],
    reports: Annotated[list[Path], Input("every session's HTML report")],
    tsv: Annotated[Path, Output("cohort table")],
    html: Annotated[Path, Output("cohort page")],
    norms: Annotated[Path | None, Input("fetal normative curves JSON")] = None,
    infant_norms: Annotated[Path | None, Input("infant normative curves JSON")] = None,
) -> int:
    """Cohort TSV + HTML from the sessions' stage JSONs."""
    from earlybrain.report.cohort import write_cohort

    rows = write_cohort(stages, reports, tsv, html, norms=norms, infant_norms=infant_norms)
    n_ok = sum(r["status"] == "ok" for r in rows)
    print(f"{len(rows)} session(s), {n_ok} ok -> {html}")
    return 0
