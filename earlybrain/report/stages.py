"""The stage table of a session's report: each stage's status and why, from the files
the session's stages wrote (read once, into StageOutputs).

The table is the honest part of a report: stages that this version does not implement
are listed as "not yet available in this version" rather than hidden or faked, and a
session whose inputs failed validation gets a table that names each failure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from earlybrain.io.sidecar import sidecar_path
from earlybrain.report.brainage import brainage_row, ensemble_card
from earlybrain.report.outputs import SessionOutputs
from earlybrain.report.preprocessing_methods import is_precomputed_mask
from earlybrain.report.readers import read_json, read_tsv, recon_sidecar_for
from earlybrain.report.segmentation import card_path, segmentation_row

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


def read_stage_outputs(
    outputs: SessionOutputs, recon_sidecar: PathLike | None = None
) -> StageOutputs:
    """Read every stage output the session has (None: that stage did not run).

    `recon_sidecar` defaults to the one beside the reconstruction's metrics; the
    networks' model cards are read from beside the weights named in the segmentation QC
    and the brain-age JSON, the normative curves from the file the brain-age JSON names.
    """
    o = outputs
    masks, metrics, stack_qc = list(o.brain_masks), o.recon_metrics, o.stack_qc
    if metrics is not None and recon_sidecar is None:
        recon_sidecar = recon_sidecar_for(metrics)
    seg_qc, age = read_json(o.segmentation_qc), read_json(o.brainage)
    return StageOutputs(
        brain_masks=masks,
        brain_mask_sidecars=[read_json(sidecar_path(p)) for p in masks],
        recon_metrics=Output(metrics, read_json(metrics)),
        recon_sidecar=read_json(recon_sidecar),
        stack_qc=Output(stack_qc, read_tsv(stack_qc)),
        stack_qc_sidecar=read_json(sidecar_path(stack_qc)) if stack_qc else {},
        registration_qc=Output(o.registration_qc, read_json(o.registration_qc)),
        segmentation_qc=Output(o.segmentation_qc, seg_qc),
        volumes=read_tsv(o.volumes),
        segmentation_card=read_json(card_path(seg_qc)),
        brainage=Output(o.brainage, age),
        zscores=read_tsv(o.zscores),
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
    how = (
        "its own non-zero region (it came skull-stripped)"
        if side.get("MaskMethod") == "support"
        else "the segmentation network"
    )
    return {
        "status": "done",
        "detail": f"intracranial mask of the {side.get('Contrast', '?')} image by {how}; "
        f"{side.get('BrainVolume_ml', float('nan')):.0f} ml",
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
    out: StageOutputs,
) -> list[dict]:
    """Status of every stage for this session, with a reason where it is not 'done'."""
    kind = validation.get("kind", "fetal")
    passed = validation.get("status") == "pass"
    n_images = len(validation.get("images", []))
    given = bool(validation.get("reconstruction"))
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
