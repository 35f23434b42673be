"""Subject (session) report: what was given, what was checked, what ran, what did not.

The stage table (earlybrain.report.stages) heads it; figures of each stage, the stack
quality table and the Methods follow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain import __version__
from earlybrain.io.atomic import write_json_atomic, write_text_atomic
from earlybrain.io.nifti import ImageError
from earlybrain.io.provenance import resolve_reference
from earlybrain.io.sidecar import sidecar_path
from earlybrain.io.validate import slice_axis
from earlybrain.report import figures
from earlybrain.report.brainage import brainage_html, chart_caption, stage_values, summary_line
from earlybrain.report.html import Section, status_cell, subject_page, table, td
from earlybrain.report.methods import build_methods, methods_html
from earlybrain.report.outputs import SessionOutputs
from earlybrain.report.readers import read_json
from earlybrain.report.segmentation import FIGURE_CAPTION, segmentation_html
from earlybrain.report.stages import Output, PathLike, StageOutputs, read_stage_outputs, stage_table


def _mask_per_image(
    images: list[dict[str, Any]], out: StageOutputs, kind: str
) -> list[Path | None]:
    """The brain mask to outline on each input image: one per stack for a fetus; an
    infant's one mask on the image of the contrast it was computed on (same grid)."""
    if kind == "fetal":
        return list(out.brain_masks) or [None] * len(images)
    contrast = out.brain_mask_sidecars[0].get("Contrast") if out.brain_mask_sidecars else None
    brains: list[Path | None] = [None] * len(images)
    for i, info in enumerate(images):
        if contrast and out.brain_masks and info["name"].split(".")[0].endswith(f"_{contrast}"):
            brains[i] = out.brain_masks[0]
            break
    return brains


RECON_CAPTIONS = {
    "views": "The reconstruction (SVR + SRR) through the centre of the brain: sagittal, "
    "coronal and axial planes in the reconstruction's own voxel grid, no resampling.",
    "motion": "Per input stack, slice by slice in acquisition order: rotation and translation "
    "of each slice relative to the stack's median pose (x red, y green, z blue), and the "
    "slice's robust weight (dashed: rejection threshold; red crosses and bars: rejected "
    "slices, down-weighted because they disagree with the other stacks).",
}


def _recon_section(
    metrics: Output[dict[str, Any]], figure_paths: Sequence[PathLike]
) -> list[Section]:
    """The SVR/SRR figures (made by their own rule) with captions, when they exist."""
    figs = []
    for path in map(Path, figure_paths):
        if not path.is_file():
            continue
        kind = path.stem.rsplit("_", 1)[-1]
        figs.append((RECON_CAPTIONS.get(kind, path.name), path.read_bytes()))
    if metrics.path is None or not figs:
        return []
    return [Section("Slice-to-volume reconstruction", figs)]


STACK_QC_COLUMNS = (
    ("rank", "rank"),
    ("stack", "stack"),
    ("score", "score"),
    ("ncc_adjacent", "inter-slice NCC"),
    ("dropout_fraction", "drop-out"),
    ("centroid_jitter_mm", "jumps (mm)"),
    ("mask_volume_ml", "brain (ml)"),
    ("volume_ratio", "vs median"),
    ("kept", "kept"),
    ("reason", "reason"),
)


def stack_qc_table(rows: list[dict[str, str]]) -> str:
    """The stack quality ranking as an HTML table (best first), with exclusion reasons."""
    if not rows:
        return '<p class="muted">stack quality table not available</p>'
    body = []
    for r in rows:
        r = r | {"stack": Path(r.get("stack", "")).name}
        cells = [td(r.get(k, "")) for k, _ in STACK_QC_COLUMNS[:-2]]
        cells.append(status_cell("kept" if r.get("kept") == "true" else "excluded"))
        cells.append(td(r.get("reason", "")))
        body.append(cells)
    header = [label for _, label in STACK_QC_COLUMNS]
    return "<h3>Stack quality ranking</h3>" + table(header, body)


def _registration_section(
    qc: Output[dict[str, Any]], figure_path: PathLike | None
) -> list[Section]:
    if qc.path is None or figure_path is None or not Path(figure_path).is_file():
        return []
    tpl = qc.content.get("template", {})
    caption = (
        f"Registration check: the labels of the {tpl.get('age_weeks')}-week template of atlas "
        f"{tpl.get('atlas')}, warped to the reconstruction through the inverse of the "
        "rigid + affine + SyN registration, outlined on it (one colour per structure). "
        "Outlines that follow the ventricles, cortex and cerebellum mean the registration "
        "found the anatomy; outlines offset or crossing structures mean it did not."
    )
    return [Section("Atlas registration", [(caption, Path(figure_path).read_bytes())])]


def _segmentation_section(
    qc: Output[dict[str, Any]], volumes: list[dict[str, str]], figure_path: PathLike | None
) -> list[Section]:
    """The labels outlined on the reconstruction, the volumes, timing and agreement."""
    if not qc.content:
        return []
    figure = Path(figure_path) if figure_path is not None else None
    figs = [(FIGURE_CAPTION, figure.read_bytes())] if figure and figure.is_file() else []
    return [Section("Segmentation", figs, segmentation_html(qc.content, volumes))]


def _brainage_section(
    result: Output[dict[str, Any]], zscores: list[dict[str, str]], figure_path: PathLike | None
) -> list[Section]:
    """The normative chart, the flags, the age estimates and the z-scores."""
    if not result.content:
        return []
    figure = Path(figure_path) if figure_path is not None else None
    caption = chart_caption(result.content)
    figs = [(caption, figure.read_bytes())] if figure and figure.is_file() else []
    return [Section("Brain age", figs, brainage_html(result.content, zscores))]


def build_subject_report(
    outputs: SessionOutputs,
    out_html: str | os.PathLike[str],
    out_stages: str | os.PathLike[str],
    cohort_link: str | None = "group/cohort.html",
    *,
    failures: Sequence[str] = (),
    recon_sidecar: PathLike | None = None,
) -> dict:
    """Write the HTML report and a stage-status JSON (read by the cohort step).

    `outputs.n4_figures` are the n4_figures rule's PNGs; one not given or missing is
    drawn here instead. `failures` describe jobs of this session that failed (see
    earlybrain.report.salvage); they head the report. `recon_sidecar` (default: derived
    from `recon_metrics`) gives the Methods section the reconstruction's parameters.
    Each file is read once.
    """
    o = outputs
    validation_path, bias_paths, mask_paths = o.validation, o.bias, o.mask
    n4_paths = [Path(p) for p in o.n4]
    validation = json.loads(Path(validation_path).read_text())
    images = validation.get("images", [])
    passed = validation.get("status") == "pass"
    if passed and not (len(n4_paths) == len(bias_paths) == len(mask_paths) == len(images)):
        raise ValueError(
            f"{validation_path}: {len(images)} validated image(s) but {len(n4_paths)} N4, "
            f"{len(bias_paths)} bias and {len(mask_paths)} mask path(s) were given"
        )
    missing = [p.name for p in n4_paths if not p.exists()]
    n4_sidecars = [read_json(sidecar_path(p)) for p in n4_paths] if passed else []
    out = read_stage_outputs(o, recon_sidecar)
    stages = stage_table(validation, n4_paths, missing, out)

    figs: list[tuple[str, bytes]] = []
    notes = list(validation.get("notes", []))
    if passed and not missing:
        heading = "Bias-field correction and brain masks (per input image)"
        brains = _mask_per_image(images, out, validation.get("kind", "fetal"))
        drawn = list(o.n4_figures) or [None] * len(images)
        for info, n4p, side, bp, mp, brain, png in zip(
            images, n4_paths, n4_sidecars, bias_paths, mask_paths, brains, drawn, strict=True
        ):
            scale = side.get("Normalisation", {})
            used = side.get("N4", {})
            caption = (
                f"{info['name']}: input with the foreground outline (orange) / after N4 and "
                "normalisation / bias field relative to its median in the foreground (red: "
                "brighter, blue: darker than average). Shrink factor "
                f"{used.get('shrink_factor_used', '?')}, spline distance "
                f"{used.get('spline_distance_mm_used', '?')} mm; intensities "
                f"{scale.get('lower_value', float('nan')):.4g}-"
                f"{scale.get('upper_value', float('nan')):.4g} mapped to 0-1."
            )
            if png is not None and Path(png).is_file():
                figs.append((caption, Path(png).read_bytes()))
            else:
                try:
                    raw_path = resolve_reference(info["path"])
                except KeyError:  # a report rebuilt outside the workflow that made it
                    continue
                figs.append((caption, figures.n4_figure_of_files(raw_path, n4p, bp, mp, brain)))
        notes.append(
            "The orange outline is a rough foreground mask (Otsu threshold of a smoothed image) "
            "used to fit the bias field; it is not a brain mask. The cyan outline is the "
            "brain mask (Brain masking in the stage table)."
        )
    else:
        heading = "Input images (not processed)"
        for info in images:
            try:
                raw = figures.image_data(resolve_reference(info["path"]))
            except (ImageError, KeyError):
                continue  # the validation table already names the problem
            if raw.ndim != 3 or raw.size == 0 or not np.all(np.isfinite(raw)):
                continue
            axis = slice_axis(raw.shape, np.asarray(info.get("voxel_sizes_mm", [1, 1, 1])))
            figs.append((f"{info['name']} (input, not processed)", figures.input_figure(raw, axis)))

    age = validation.get("age_weeks")
    table = Path((validation.get("age_source") or "").rsplit(":", 1)[-1]).name  # a BIDS URI
    age_txt = (
        f"{age:.1f} weeks {validation.get('age_measure', '')} (column "
        f"'{validation.get('age_column')}' in {table})"
        if age is not None
        else "unknown"
    )
    prefix = validation["prefix"]
    failed = [s for s in stages if s["status"] == "failed"]
    overall = "failed" if failed or failures else "ok"
    summary = [
        ("subject", f"sub-{validation['subject']}"),
        ("session", validation.get("session") or "-"),
        ("kind", validation.get("kind", "?")),
        ("age", age_txt),
        ("input images", str(len(images))),
        *([("brain age", summary_line(out.brainage.content))] if out.brainage.content else []),
        ("status", overall if not failed else f"failed at: {failed[0]['stage']}"),
    ]
    image_rows = [
        [
            info["name"],
            "x".join(str(s) for s in info.get("shape", [])) or "-",
            " x ".join(f"{v:g}" for v in info.get("voxel_sizes_mm", [])) or "-",
            str(info.get("n_slices", "-")),
            "pass" if info.get("ok") else "fail",
        ]
        for info in images
    ]
    methods = build_methods(
        stages,
        n4_sidecars=n4_sidecars,
        recon_sidecar=out.recon_sidecar,
        recon_metrics=out.recon_metrics.content,
        brain_mask_sidecars=out.brain_mask_sidecars,
        stack_qc_sidecar=out.stack_qc_sidecar,
        stack_qc_rows=out.stack_qc.content,
        registration_qc=out.registration_qc.content,
        segmentation_qc=out.segmentation_qc.content,
        segmentation_card=out.segmentation_card,
        brainage=out.brainage.content,
        brainage_card=out.brainage_card,
        brainage_norms=out.brainage_norms,
    )
    html_text = subject_page(
        title=f"earlybrain report: {prefix}",
        summary=summary,
        validation_status=validation.get("status", "fail"),
        errors=validation.get("errors", []),
        notes=notes,
        image_rows=image_rows,
        stages=stages,
        sections=[
            Section(heading, figs),
            *_recon_section(out.recon_metrics, o.recon_figures),
            *_registration_section(out.registration_qc, o.registration_figure),
            *_segmentation_section(out.segmentation_qc, out.volumes, o.segmentation_figure),
            *_brainage_section(out.brainage, out.zscores, o.brainage_figure),
        ],
        details=[stack_qc_table(out.stack_qc.content)] if out.stack_qc.path is not None else [],
        version=__version__,
        cohort_link=cohort_link,
        failures=failures,
        appendix=[methods_html(methods)],
    )
    write_text_atomic(out_html, html_text)
    result = {
        "prefix": prefix,
        "subject": validation["subject"],
        "session": validation.get("session"),
        "kind": validation.get("kind"),
        "age_weeks": age,
        "age_measure": validation.get("age_measure"),
        "age_column": validation.get("age_column"),
        "n_images": len(images),
        "status": overall,
        "failed_stage": failed[0]["stage"] if failed else ("a job" if failures else ""),
        "reason": (failed[0]["detail"] if failed else "")
        + "".join(f" | {f.splitlines()[0]}" for f in failures),
        "stages": stages,
        "volumes_ml": out.segmentation_qc.content.get("volumes_ml", {}),
        "report": Path(out_html).name,
        "methods": methods.as_dict(),
        **stage_values(out.brainage.content, out.zscores),
    }
    write_json_atomic(out_stages, result)
    return result
