"""The ANTs stages of one registration (rigid -> affine -> SyN), tried from several
starts, and what happens when one of them fails.

Why: ANTs stops with "Registration failed with error code 1" on an exception inside
antsRegistration (for instance when, from a poor start, the template's samples fall
outside the moving image). Two real infant scans of 1 and 4 months met it where none
of our simulated ones did, and the job ended on that line. So:
- when the rigid or affine stage fails from the chosen start, they run from the same
  orientation before its refinement and from the next best distinct orientations, and
  the start whose affine result agrees best with the template is kept; every start
  and failure is recorded in the QC;
- a SyN stage that fails leaves the affine alignment, written with an identity warp so
  that every output keeps its place, and the QC flags it;
- a start from which the image ends up outside the template (ANTs only warns that no
  sample was found) counts as failed;
- when no start completes, `RegistrationError` names the stage, the image and what to
  try.

The chosen start, when it completes, is kept as before: its quality is judged by the
QC measures. No floor on the image's agreement with the template tells a failure from
anatomy: inside the brain (a 4 mm rim left out), a real spina-bifida brain (Fidon et
al. 2021, 23 weeks) correlated less with our template after the affine stage (NCC
0.10) than noise in a brain-shaped mask (0.13).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain.register import antsio
from earlybrain.register.init import Candidate, InitResult

log = logging.getLogger("earlybrain.register")

# two starts closer than this (degrees of rotation between them) are one start
DISTINCT_START_DEG = 20.0


class RegistrationError(RuntimeError):
    """No start got through the linear stages; the message names the stage, the image
    and what to try."""


@dataclass
class Alignment:
    """The affine stage's result from one start, and the SyN stage when it ran."""

    start: str
    affine: dict[str, Any]
    syn: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    syn_error: str | None = None
    linear_s: float = 0.0  # every start's rigid + affine stages
    syn_s: float = 0.0


def linear_stage(
    kind: str,
    fixed: Any,
    moving: Any,
    initial: list[str],
    its: tuple[int, ...],
    p: Any,
    prefix: str,
) -> dict[str, Any]:
    """A rigid or affine ANTs stage; `p` has the linear_* fields and random_seed."""
    n = len(its)
    return antsio.ants_module().registration(
        fixed,
        moving,
        type_of_transform=kind,
        initial_transform=initial,
        aff_metric=p.linear_metric,
        aff_iterations=tuple(its),
        aff_shrink_factors=tuple(p.linear_shrink[-n:]),
        aff_smoothing_sigmas=tuple(p.linear_sigmas_vox[-n:]),
        random_seed=p.random_seed,
        outprefix=prefix,
    )


def syn_stage(fixed: Any, moving: Any, initial: list[str], p: Any, prefix: str) -> dict[str, Any]:
    """Deformable (SyN) stage after a linear one; `p` has the syn_* fields and random_seed
    (RegistrationParams, or the atlas builder's BuildParams)."""
    return antsio.ants_module().registration(
        fixed,
        moving,
        type_of_transform="SyNOnly",
        initial_transform=initial,
        syn_metric=p.syn_metric,
        syn_sampling=p.syn_sampling,
        reg_iterations=tuple(p.syn_iterations),
        grad_step=p.syn_grad_step,
        flow_sigma=p.syn_flow_sigma,
        total_sigma=getattr(p, "syn_total_sigma", 0.0),
        random_seed=p.random_seed,
        outprefix=prefix,
    )


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle between the linear parts of two point maps (scale removed)."""
    ra = a[:3, :3] / np.cbrt(abs(np.linalg.det(a[:3, :3])))
    rb = b[:3, :3] / np.cbrt(abs(np.linalg.det(b[:3, :3])))
    cos = (np.trace(ra.T @ rb) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def starts(init: InitResult, n: int) -> list[tuple[str, np.ndarray]]:
    """At most `n` (name, template->subject map) starts: the chosen one; the same
    orientation before its quick refinement; then the next best distinct orientations
    (refined first, then by coarse NCC)."""
    chosen = init.chosen
    out = [(chosen.name, chosen.best_matrix)]
    if chosen.refined_matrix is not None:
        out.append((f"{chosen.name} unrefined", chosen.matrix))

    def rank(c: Candidate) -> tuple[int, float]:
        refined = c.refined_score is not None
        score = c.refined_score if refined else c.score
        return (0 if refined else 1, -float(np.nan_to_num(score, nan=-2.0)))

    for c in sorted(init.candidates, key=rank):
        if all(_angle_deg(c.best_matrix, m) > DISTINCT_START_DEG for _, m in out):
            out.append((c.name, c.best_matrix))
    return out[:n]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def align(
    fixed: Any,
    moving: Any,
    score: Callable[[Any], float],
    init: InitResult,
    p: Any,
    workdir: Path,
    image_name: str,
) -> Alignment:
    """Rigid -> affine, then SyN (the affine alignment alone if SyN fails).

    From the chosen start when the linear stages complete from it (the usual case);
    otherwise from each other start (`starts`, p.max_starts in all), keeping the one
    whose affine result `score`s best. `p` is a RegistrationParams.
    """
    attempts: list[dict[str, Any]] = []
    best: tuple[float, Alignment] | None = None
    t0 = time.perf_counter()
    for i, (name, matrix) in enumerate(starts(init, p.max_starts)):
        tag = f"start{i}_"
        start = antsio.write_matrix_transform(matrix, workdir / f"{tag}init.mat")
        stage = "rigid"
        try:
            rigid = linear_stage(
                "Rigid", fixed, moving, [str(start)], p.rigid_iterations, p,
                str(workdir / f"{tag}rigid_"),
            )  # fmt: skip
            stage = "affine"
            aff = linear_stage(
                "Affine", fixed, moving, rigid["fwdtransforms"], p.affine_iterations, p,
                str(workdir / f"{tag}affine_"),
            )  # fmt: skip
        except RuntimeError as exc:
            attempts.append({"start": name, "failed": stage, "error": _first_line(exc)})
            log.warning("start %s: the %s stage failed (%s)", name, stage, exc)
            continue
        ncc_affine = score(aff["warpedmovout"])
        if not np.isfinite(ncc_affine):  # ANTs warns, finds no sample, returns the start
            error = "the image ends up outside the template: no overlap"
            attempts.append({"start": name, "failed": "affine", "error": error})
            log.warning("start %s: %s", name, error)
            continue
        attempts.append({"start": name, "ncc_affine": round(ncc_affine, 4)})
        if best is None or ncc_affine > best[0]:
            best = (ncc_affine, Alignment(name, aff))
        if i == 0:
            break
    if best is None:
        stages = "/".join(sorted({a["failed"] for a in attempts}))
        raise RegistrationError(
            f"{image_name}: atlas registration failed at the {stages} stage from each of "
            f"{len(attempts)} start(s) ({attempts[-1]['error']}). Check that the brain mask "
            "covers the whole brain and nothing else, that the age picks the right "
            "template and that the image has the template's contrast; then try "
            "register.max_starts (more starts) or register.crop_margin_mm (a larger field "
            "around the brain)"
        )
    done = best[1]
    done.attempts = attempts
    done.linear_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        done.syn = syn_stage(fixed, moving, done.affine["fwdtransforms"], p, str(workdir / "syn_"))
    except RuntimeError as exc:
        done.syn_error = _first_line(exc)
        log.warning("the SyN stage failed (%s): keeping the affine alignment", exc)
    done.syn_s = time.perf_counter() - t0
    return done


def identity_warp(fixed: Any, path: Path) -> str:
    """A zero displacement field on the template grid: the warp of an affine-only result,
    so that the forward and inverse transform lists keep their shape."""
    ants = antsio.ants_module()
    zero = np.zeros((*fixed.shape, 3), dtype=np.float32)
    field_img = ants.from_numpy(
        zero, origin=fixed.origin, spacing=fixed.spacing, direction=fixed.direction,
        has_components=True,
    )  # fmt: skip
    ants.image_write(field_img, str(path))
    return str(path)
