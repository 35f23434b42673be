"""Subject (session) report: what was given, what was checked, what ran, what did not.

The stage table is the honest part: stages that this version does not implement are
listed as "not yet available in this version" rather than hidden or faked, and a
session whose inputs failed validation gets a report that names each failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from earlybrain import __version__
from earlybrain.io.atomic import write_json_atomic, write_text_atomic
from earlybrain.io.nifti import ImageError
from earlybrain.io.sidecar import sidecar_path
from earlybrain.io.validate import slice_axis
from earlybrain.report import figures
from earlybrain.report.brainage import (
    brainage_html,
    brainage_row,
    chart_caption,
    ensemble_card,
    stage_values,
    summary_line,
)
from earlybrain.report.html import Section, status_cell, subject_page, table, td
from earlybrain.report.methods import (
    build_methods,
    is_precomputed_mask,
    methods_html,
    read_json,
    read_tsv,
    recon_sidecar_for,
)
from earlybrain.report.outputs import SessionOutputs
from earlybrain.report.segmentation import (
    FIGURE_CAPTION,
    card_path,
    segmentation_html,
    segmentation_row,
)

NOT_YET = "not yet available in this version"

# (key, label, kinds it applies to). Order = data flow (see ARCHITECTURE.md).
STAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("inputs", "Input discovery and validation", ("fetal", "infant")),
    ("n4", "Foreground mask, N4 bias correction, intensity normalisation", ("fetal", "infant")),
    ("brain_mask", "Brain masking", ("fetal", "infant")),
    ("stack_qc", "Stack quality ranking / rejection", ("fetal",)),
    ("svr_srr", "Slice-to-volume reconstruction (SVR/SRR)", ("fetal",)),
    ("atlas_registration", "Atlas registration", ("fetal", "infant")),
    ("segmentation", "Tissue segmentation and volumetry", ("fetal", "infant")),
    ("brain_age", "Brain age estimation", ("fetal", "infant")),
)


T = TypeVar("T")
PathLike = str | os.PathLike[str]
SKIPPED_INVALID = {"status": "skipped", "detail": "inputs failed validation"}


@dataclass(frozen=True)
class Output(Generic[T]):
    """One optional stage output, read once. `path` None: the stage did not run for this
    session; empty `content`: it ran but its file is missing or unreadable."""

    path: Path | None
    content: T


@dataclass(frozen=True)
class StageOutputs:
    """What the session's stages wrote, each file read once: the stage table, the figure
    sections and the Methods all take their content from here."""

    brain_masks: list[Path]
    brain_mask_sidecars: list[dict[str, Any]]
    recon_metrics: Output[dict[str, Any]]
    recon_sidecar: dict[str, Any]
    stack_qc: Output[list[dict[str, str]]]
    stack_qc_sidecar: dict[str, Any]
    registration_qc: Output[dict[str, Any]]
    segmentation_qc: Output[dict[str, Any]]
    volumes: list[dict[str, str]]
    segmentation_card: dict[str, Any]
    brainage: Output[dict[str, Any]]
    zscores: list[dict[str, str]]
    brainage_card: dict[str, Any]
    brainage_norms: dict[str, Any]


def _path(p: PathLike | None) -> Path | None:
    return Path(p) if p is not None else None


def read_stage_outputs(
    brain_masks: Sequence[PathLike] = (),
    recon_metrics: PathLike | None = None,
    recon_sidecar: PathLike | None = None,
    stack_qc: PathLike | None = None,
    registration_qc: PathLike | None = None,
    segmentation_qc: PathLike | None = None,
    volumes: PathLike | None = None,
    brainage: PathLike | None = None,
    zscores: PathLike | None = None,
) -> StageOutputs:
    """Read every stage output given for the session (None: that stage did not run).

    `recon_sidecar` defaults to the one beside `recon_metrics`; the networks' model cards
    are read from beside the weights named in the segmentation QC and the brain-age JSON,
    the normative curves from the file the brain-age JSON names.
    """
    masks = [Path(p) for p in brain_masks]
    metrics, stack_qc = _path(recon_metrics), _path(stack_qc)
    if metrics is not None and recon_sidecar is None:
        recon_sidecar = recon_sidecar_for(metrics)
    seg_qc, age = read_json(segmentation_qc), read_json(brainage)
    return StageOutputs(
        brain_masks=masks,
        brain_mask_sidecars=[read_json(sidecar_path(p)) for p in masks],
        recon_metrics=Output(metrics, read_json(metrics)),
        recon_sidecar=read_json(recon_sidecar),
        stack_qc=Output(stack_qc, read_tsv(stack_qc)),
        stack_qc_sidecar=read_json(sidecar_path(stack_qc)) if stack_qc else {},
        registration_qc=Output(_path(registration_qc), read_json(registration_qc)),
        segmentation_qc=Output(_path(segmentation_qc), seg_qc),
        volumes=read_tsv(volumes),
        segmentation_card=read_json(card_path(seg_qc)),
        brainage=Output(_path(brainage), age),
        zscores=read_tsv(zscores),
        brainage_card=ensemble_card(age),
        brainage_norms=read_json(age.get("norms", {}).get("file")),
    )


def _not_run(passed: bool, output: Output[Any], rule: str) -> dict[str, str] | None:
    """The row of a stage without content (skipped, or failed: no output); None otherwise."""
    if not passed:
        return SKIPPED_INVALID
    if output.path is None:
        return {"status": "skipped", "detail": "not run for this session"}
    if not output.content:
        return {"status": "failed", "detail": f"no output ({output.path.name}); see logs/{rule}"}
    return None


def _recon_row(passed: bool, metrics: Output[dict[str, Any]]) -> dict:
    if row := _not_run(passed, metrics, "recon"):
        return row
    m = metrics.content
    moves = [s.get("max_displacement_mm") for s in m.get("per_stack", [])]
    moves = [v for v in moves if v is not None]
    motion = f"; slices moved up to {max(moves):.1f} mm (motion)" if moves else ""
    warnings = _grouped_warnings(m.get("acquisition_notes", []))
    detail = (
        f"{m.get('n_stacks')} stack(s), reference stack {m.get('reference_stack')} "
        f"({m.get('reference_reason')}); {m.get('rejected_slices')} of "
        f"{m.get('slices_with_brain')} slices rejected{motion}; observed vs simulated slice "
        f"NCC {m.get('ncc_observed_simulated', float('nan')):.3f}; "
        f"{m.get('seconds', float('nan')):.0f} s on {m.get('device')}"
    )
    if warnings:  # acquisition parameters that were present but unusable
        return {"status": "flagged", "detail": detail + "; check: " + "; ".join(warnings)}
    return {"status": "done", "detail": detail}


def _grouped_warnings(notes: list[str]) -> list[str]:
    """ "warning: <stack>: <what>" notes, one line per <what> naming its stacks: a session
    whose every sidecar has the same gap is told once, not once per stack."""
    stacks: dict[str, list[str]] = {}
    for note in notes:
        if note.startswith("warning: "):
            name, _, what = note.removeprefix("warning: ").partition(": ")
            stacks.setdefault(what or name, []).append(name if what else "")
    return [
        f"warning: {what} ({', '.join(n for n in names if n)})" if any(names) else what
        for what, names in stacks.items()
    ]


def _mask_row(passed: bool, brain_masks: list[Path], sides: list[dict[str, Any]]) -> dict:
    if not passed:
        return SKIPPED_INVALID
    if not brain_masks:
        return {"status": "skipped", "detail": "not run for this session"}
    missing = [p.name for p in brain_masks if not p.is_file()]
    if missing:
        return {"status": "failed", "detail": "no output: " + ", ".join(missing)}
    given = sum(map(is_precomputed_mask, sides))
    volumes = [s["BrainVolume_ml"] for s in sides if s.get("BrainVolume_ml")]
    how = [f"{len(sides) - given} by the masking network"] if len(sides) > given else []
    how += [f"{given} precomputed (masks_dir)"] if given else []
    vol = f"; brain {min(volumes):.0f}-{max(volumes):.0f} ml" if volumes else ""

    def flagged(key: str) -> list[tuple[str, Any]]:
        """(stack, value) of the stacks whose mask sidecar has `key`."""
        pairs = zip(brain_masks, sides, strict=False)
        return [(_stack_name(p), s[key]) for p, s in pairs if s.get(key)]

    notes = []
    if fallback := flagged("MasksDirMiss"):
        names = ", ".join(n for n, _ in fallback)
        notes.append(f"no mask in masks_dir for {names}: masked by the network")
    if empty := flagged("NoBrainReason"):
        notes.append("empty mask: " + "; ".join(f"{n} ({why})" for n, why in empty))
    if twins := flagged("LocalisationNote"):
        names = ", ".join(n for n, _ in twins)
        notes.append(f"several fetal brains found in {names} (see the log)")
    detail = f"{len(sides)} stack(s): {', '.join(how)}{vol}" + "".join(f". {n}" for n in notes)
    return {"status": "done", "detail": detail}


def _stack_name(mask: Path) -> str:
    """`sub-1_run-2_desc-brainT2w_mask.nii.gz` -> `sub-1_run-2_T2w`: the stack a mask is of."""
    name = mask.name.replace(".nii.gz", "").replace("_mask", "")
    return name.replace("_desc-brain", "_")


def _infant_mask_row(passed: bool, brain_masks: list[Path], sides: list[dict[str, Any]]) -> dict:
    if not passed:
        return SKIPPED_INVALID
    missing = [p.name for p in brain_masks if not p.is_file()]
    if not brain_masks or missing:
        return {"status": "failed", "detail": "no output; see logs/infant_prep"}
    side = sides[0] if sides else {}
    return {
        "status": "done",
        "detail": f"intracranial mask of the {side.get('Contrast', '?')} image by the "
        f"segmentation network; {side.get('BrainVolume_ml', float('nan')):.0f} ml",
    }


def _given_mask_row(passed: bool, validation: dict[str, Any], out: StageOutputs) -> dict:
    if not passed:
        return SKIPPED_INVALID
    if not out.brain_masks or not out.brain_masks[0].is_file():
        return {"status": "failed", "detail": "no output; see logs/given_recon_mask"}
    side = out.brain_mask_sidecars[0] if out.brain_mask_sidecars else {}
    method = side.get("Parameters", {}).get("method", "?")
    return {
        "status": "done",
        "detail": f"brain mask of the given reconstruction: {method}; "
        f"{side.get('BrainVolume_ml', float('nan')):.0f} ml",
    }


def _given_recon_row(passed: bool, validation: dict[str, Any], out: StageOutputs) -> dict:
    """Where the reconstruction came from: the file, its label, what its sidecar says."""
    images = validation.get("images") or [{}]
    name = Path(images[0].get("path", "?")).name
    made_by = images[0].get("made_by")
    return {
        "status": "not applicable",
        "detail": f"reconstruction given: {name} (rec-{validation['reconstruction']}, made "
        "outside earlybrain" + (f" by {made_by}" if made_by else "") + ")",
    }


def _given_stack_qc_row(passed: bool, validation: dict[str, Any], out: StageOutputs) -> dict:
    return {"status": "not applicable", "detail": "no stacks: the session brought its own "
            "reconstruction"}  # fmt: skip


# stages whose row differs for a fetal session that brought its own reconstruction
GIVEN_ROWS = {
    "brain_mask": _given_mask_row,
    "stack_qc": _given_stack_qc_row,
    "svr_srr": _given_recon_row,
}


def _stack_qc_row(passed: bool, stack_qc: Output[list[dict[str, str]]]) -> dict:
    if row := _not_run(passed, stack_qc, "stack_qc"):
        return row
    rows = stack_qc.content
    kept = [r for r in rows if r.get("kept") == "true"]
    out = [
        f"{Path(r['stack']).name.split('_desc-')[0]} ({r['reason']})" for r in rows if r not in kept
    ]
    detail = f"{len(kept)} of {len(rows)} stack(s) kept"
    return {"status": "done", "detail": detail + (("; excluded: " + "; ".join(out)) if out else "")}


def _registration_row(passed: bool, registration_qc: Output[dict[str, Any]]) -> dict:
    if row := _not_run(passed, registration_qc, "register_atlas"):
        return row
    qc = registration_qc.content
    tpl = qc.get("template", {})
    detail = (
        f"{tpl.get('age_weeks')}-week template of {tpl.get('atlas')} (space {tpl.get('space')}); "
        f"NCC {qc.get('ncc', float('nan')):.3f}, warped atlas mask Dice "
        f"{qc.get('mask_dice', float('nan')):.3f}; initial pose "
        f"{qc.get('initialisation', {}).get('chosen', {}).get('name', '?')}"
    )
    if qc.get("qc_pass"):
        return {"status": "done", "detail": detail}
    return {
        "status": "flagged",
        "detail": detail + "; check: " + "; ".join(qc.get("qc_warnings", [])),
    }


def _segmentation_stage_row(passed: bool, segmentation_qc: Output[dict[str, Any]]) -> dict:
    return _not_run(passed, segmentation_qc, "segment") or segmentation_row(segmentation_qc.content)


def stage_table(
    validation: dict,
    n4_outputs: list[Path],
    n4_missing: list[str],
    outputs: StageOutputs | None = None,
) -> list[dict]:
    """Status of every stage for this session, with a reason where it is not 'done'."""
    kind = validation.get("kind", "fetal")
    passed = validation.get("status") == "pass"
    n_images = len(validation.get("images", []))
    given = bool(validation.get("reconstruction"))
    out = outputs or read_stage_outputs()
    rows: list[dict[str, str]] = []
    for key, label, kinds in STAGES:
        row = {"key": key, "stage": label}
        if kind not in kinds:
            row |= {"status": "not applicable", "detail": f"not used for {kind} scans"}
        elif key == "inputs":
            errs = validation.get("errors", [])
            row |= (
                {"status": "done", "detail": f"{n_images} image(s) passed all checks"}
                if passed
                else {"status": "failed", "detail": f"{len(errs)} problem(s): " + "; ".join(errs)}
            )
        elif key == "n4":
            if not passed:
                row |= SKIPPED_INVALID
            elif n4_missing:
                row |= {"status": "failed", "detail": "missing output(s): " + ", ".join(n4_missing)}
            else:
                row |= {"status": "done", "detail": f"{len(n4_outputs)} image(s) corrected"}
        elif given and key in GIVEN_ROWS:
            row |= GIVEN_ROWS[key](passed, validation, out)
        elif key == "brain_mask" and kind == "fetal":
            row |= _mask_row(passed, out.brain_masks, out.brain_mask_sidecars)
        elif key == "brain_mask":
            row |= _infant_mask_row(passed, out.brain_masks, out.brain_mask_sidecars)
        elif key == "stack_qc":
            row |= _stack_qc_row(passed, out.stack_qc)
        elif key == "svr_srr":
            row |= _recon_row(passed, out.recon_metrics)
        elif key == "atlas_registration":
            row |= _registration_row(passed, out.registration_qc)
        elif key == "segmentation":
            row |= _segmentation_stage_row(passed, out.segmentation_qc)
        elif key == "brain_age":
            rule = "brainage_infant" if kind == "infant" else "brainage"
            row |= _not_run(passed, out.brainage, rule) or brainage_row(out.brainage.content)
        else:
            row |= {"status": NOT_YET, "detail": ""}
        rows.append(row)
    return rows


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
        cells.append(status_cell("done" if r.get("kept") == "true" else "failed"))
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
    out = read_stage_outputs(
        o.brain_masks,
        o.recon_metrics,
        recon_sidecar,
        o.stack_qc,
        o.registration_qc,
        o.segmentation_qc,
        o.volumes,
        o.brainage,
        o.zscores,
    )
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
                figs.append((caption, figures.n4_figure_of_files(info["path"], n4p, bp, mp, brain)))
        notes.append(
            "The orange outline is a rough foreground mask (Otsu threshold of a smoothed image) "
            "used to fit the bias field; it is not a brain mask. The cyan outline is the "
            "brain mask (Brain masking in the stage table)."
        )
    else:
        heading = "Input images (not processed)"
        for info in images:
            try:
                raw = figures.image_data(info["path"])
            except ImageError:
                continue  # the validation table already names the problem
            if raw.ndim != 3 or raw.size == 0 or not np.all(np.isfinite(raw)):
                continue
            axis = slice_axis(raw.shape, np.asarray(info.get("voxel_sizes_mm", [1, 1, 1])))
            figs.append((f"{info['name']} (input, not processed)", figures.input_figure(raw, axis)))

    age = validation.get("age_weeks")
    age_txt = (
        f"{age:.1f} weeks {validation.get('age_measure', '')} (column "
        f"'{validation.get('age_column')}' in {Path(validation.get('age_source') or '').name})"
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
