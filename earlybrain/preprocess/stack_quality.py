"""Stack quality: score, rank and exclude the stacks of one fetal session.

A stack is worth reconstructing when its slices agree with each other. Three
measures, each computed inside the stack's brain mask:
- inter-slice consistency: NCC of every slice with the mean of its two neighbours.
  Interleaved neighbours are acquired seconds apart, so fetal motion between them
  breaks the continuity that anatomy alone gives (the measure `recon` uses to choose
  its reference stack). Its level also depends on anatomy and slice thickness, so
  it is complemented by
- in-plane jumps: the brain mask's centroid moves smoothly from slice to slice in a
  still head; the median second difference of the centroid path (mm) is about
  0.5 mm without motion and ten times that with marked motion;
- signal drop-out: slices whose median brain intensity falls well below their
  neighbours' (spin-history or flow artefacts), which NCC does not see because it
  ignores scale;
- mask plausibility: the brain-mask volume against the median of the session's
  stacks (a mask that missed half the brain, or swallowed the eyes and neck, means
  the stack is off-centre or the masking failed), and the smoothness of the mask's
  area from slice to slice (jumps mean motion or a broken mask).

The score is the product of the consistency and the penalties; stacks are ranked by
it, and the best one is the reference. Motion lowers the score (the stack moves down
the ranking) but never excludes a stack: motion is the reconstruction's job, which
rejects slices, not stacks (as NeSVoR and SVRTK do). A stack is excluded, with its
reason in the log and the TSV, only when it cannot help: no brain, too few brain
slices, signal drop-out in too many slices, or a mask volume far from the other
stacks' (the mask failed or the brain is not covered). Fewer usable stacks than
`min_stacks` is a `MinimumStacksError` that lists every stack and why it was excluded.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from earlybrain.io.atomic import write_text_atomic
from earlybrain.io.nifti import load_nifti, voxel_sizes
from earlybrain.io.provenance import source_reference
from earlybrain.io.sidecar import sidecar_path, write_sidecar
from earlybrain.recon.stacks import dark_slices

log = logging.getLogger(__name__)


class MinimumStacksError(RuntimeError):
    """Too few usable stacks for a reconstruction; the message lists every exclusion."""


@dataclass(frozen=True)
class QualityRules:
    """Thresholds of the exclusion rules (config `stack_quality`)."""

    min_stacks: int = 2
    min_volume_ml: float = 1.0  # below: no brain in this stack
    volume_ratio_range: tuple[float, float] = (0.6, 1.6)  # vs the median of the stacks
    min_brain_slices: int = 3  # slices with >= 20 brain pixels
    max_dropout_fraction: float = 0.25
    jitter_scale_mm: float = 5.0  # ranking only: score factor 1 / (1 + jitter / scale)


@dataclass
class StackQuality:
    """Measures of one stack; `score` is 0 (unusable) .. 1 (slices fully consistent)."""

    stack: str
    mask: str
    n_slices: int
    brain_slices: int
    mask_volume_ml: float
    ncc_adjacent: float
    dropout_slices: int
    dropout_fraction: float
    area_roughness: float
    centroid_jitter_mm: float
    volume_ratio: float = 1.0
    score: float = 0.0
    rank: int = 0
    kept: bool = True
    reason: str = ""


def slice_consistency(data: np.ndarray, mask: np.ndarray, min_pixels: int = 30) -> np.ndarray:
    """NCC of each slice (axis 2) with the mean of its neighbours inside the brain; NaN where
    a slice has fewer than `min_pixels` brain pixels shared with its neighbours."""
    d = np.asarray(data, dtype=np.float64)
    m = ndimage.binary_dilation(mask > 0, np.ones((5, 5, 1), bool))
    nz = d.shape[2]
    out = np.full(nz, np.nan)
    for k in range(nz):
        nbs = [j for j in (k - 1, k + 1) if 0 <= j < nz]
        sel = m[..., k].copy()
        for j in nbs:
            sel &= m[..., j]
        if sel.sum() < min_pixels:
            continue
        a = d[..., k][sel]
        b = np.mean([d[..., j][sel] for j in nbs], axis=0)
        a, b = a - a.mean(), b - b.mean()
        den = float(np.sqrt((a * a).sum() * (b * b).sum()))
        if den > 0:
            out[k] = float((a * b).sum()) / den
    return out


def area_roughness(mask: np.ndarray) -> float:
    """How jagged the brain area is from slice to slice (0 = smooth).

    The area of a head cut in parallel slices rises and falls smoothly; the second
    difference of the area profile, relative to the mean area, measures departures.
    """
    area = (np.asarray(mask) > 0).sum(axis=(0, 1)).astype(np.float64)
    inside = np.nonzero(area)[0]
    if inside.size < 3:
        return 0.0
    a = area[inside[0] : inside[-1] + 1]
    return float(np.abs(np.diff(a, 2)).mean() / max(a.mean(), 1.0))


def centroid_jitter_mm(mask: np.ndarray, affine: np.ndarray, min_pixels: int = 20) -> float:
    """Median in-plane jump of the brain centroid between slices (second difference, mm)."""
    m = np.asarray(mask) > 0
    spacing = voxel_sizes(affine)[:2]
    ks = np.nonzero(m.sum(axis=(0, 1)) >= min_pixels)[0]
    if ks.size < 3:
        return 0.0
    c = np.array([ndimage.center_of_mass(m[..., k]) for k in ks]) * spacing
    return float(np.median(np.linalg.norm(c[2:] - 2 * c[1:-1] + c[:-2], axis=1)))


def measure_stack(
    data: np.ndarray, mask: np.ndarray, affine: np.ndarray, stack: str = "", mask_name: str = ""
) -> StackQuality:
    """Quality measures of one stack (slices along axis 2, as acquired)."""
    data = np.asarray(data, dtype=np.float32)
    mask = np.asarray(mask) > 0
    if data.shape != mask.shape:
        raise ValueError(f"{stack}: mask shape {mask.shape} differs from stack shape {data.shape}")
    vox_ml = float(np.prod(voxel_sizes(affine))) / 1000.0
    brain_slices = int((mask.sum(axis=(0, 1)) >= 20).sum())
    ncc = slice_consistency(data, mask)
    weights = mask.sum(axis=(0, 1)).astype(np.float64)
    ok = np.isfinite(ncc)
    ncc_mean = float(np.average(ncc[ok], weights=weights[ok])) if ok.any() else 0.0
    dark = dark_slices(data, mask)
    n_dark = int(dark.sum())
    return StackQuality(
        stack=stack,
        mask=mask_name,
        n_slices=int(data.shape[2]),
        brain_slices=brain_slices,
        mask_volume_ml=float(mask.sum() * vox_ml),
        ncc_adjacent=max(ncc_mean, 0.0),
        dropout_slices=n_dark,
        dropout_fraction=n_dark / max(brain_slices, 1),
        area_roughness=area_roughness(mask),
        centroid_jitter_mm=centroid_jitter_mm(mask, affine),
    )


def score_and_rank(
    qs: list[StackQuality], rules: QualityRules, no_brain: dict[str, str] | None = None
) -> list[StackQuality]:
    """Fill in volume ratio, score, rank and the exclusion decision of every stack (in
    place). `no_brain`: why the masking step left a stack's mask empty, by stack."""
    no_brain = no_brain or {}
    vols = np.array([q.mask_volume_ml for q in qs])
    present = vols >= rules.min_volume_ml
    median = float(np.median(vols[present])) if present.any() else 0.0
    lo, hi = rules.volume_ratio_range
    for q in qs:
        q.volume_ratio = q.mask_volume_ml / median if median > 0 else 0.0
        # 1 inside the allowed range, falling off as ratio / bound outside it
        r = max(q.volume_ratio, 1e-6)
        vol_term = 1.0 if lo <= r <= hi else (r / lo if r < lo else hi / r)
        q.score = (
            q.ncc_adjacent
            * (1.0 - min(q.dropout_fraction, 1.0))
            / (1.0 + q.area_roughness)
            / (1.0 + q.centroid_jitter_mm / rules.jitter_scale_mm)
            * vol_term
        )
    for q in qs:
        reasons = []
        if q.mask_volume_ml < rules.min_volume_ml:
            why = no_brain.get(q.stack)
            reasons.append(
                f"no brain in the mask ({q.mask_volume_ml:.2f} ml)" + (f": {why}" if why else "")
            )
        elif len(qs) >= 3 and not lo <= q.volume_ratio <= hi:
            reasons.append(
                f"brain mask volume {q.mask_volume_ml:.1f} ml is {q.volume_ratio:.2f} x the "
                f"median of the stacks ({median:.1f} ml; allowed {lo}-{hi}): brain not fully "
                "covered or mask failed"
            )
        elif q.brain_slices < rules.min_brain_slices:
            reasons.append(
                f"brain in only {q.brain_slices} slice(s) (< {rules.min_brain_slices}): "
                "the stack misses the head"
            )
        if q.dropout_fraction > rules.max_dropout_fraction:
            reasons.append(
                f"signal drop-out in {q.dropout_slices} of {q.brain_slices} brain slices "
                f"({q.dropout_fraction:.0%} > {rules.max_dropout_fraction:.0%})"
            )
        q.kept = not reasons
        q.reason = "; ".join(reasons)
    order = sorted(range(len(qs)), key=lambda i: (-qs[i].score, qs[i].stack))
    for r, i in enumerate(order, start=1):
        qs[i].rank = r
    return qs


def _tsv(qs: list[StackQuality]) -> str:
    names = [f.name for f in fields(StackQuality)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=names, delimiter="\t", lineterminator="\n")
    w.writeheader()
    for q in sorted(qs, key=lambda q: q.rank):
        row = asdict(q)
        for k, v in row.items():
            if isinstance(v, float):
                row[k] = f"{v:.4f}"
            elif isinstance(v, bool):
                row[k] = "true" if v else "false"
        row["reason"] = row["reason"] or "n/a"
        row["stack"], row["mask"] = source_reference(q.stack), source_reference(q.mask)
        w.writerow(row)
    return buf.getvalue()


def rank_stacks(
    stack_paths: list[str | os.PathLike[str]],
    mask_paths: list[str | os.PathLike[str]],
    out_tsv: str | os.PathLike[str],
    min_stacks: int = 2,
    rules: QualityRules | None = None,
) -> list[Path]:
    """Score, rank and filter a session's stacks; write the TSV (+ sidecar).

    Returns the kept stacks, best first. Raises MinimumStacksError after writing the
    TSV when fewer than `min_stacks` are usable, so the report can still show why.
    """
    if len(stack_paths) != len(mask_paths):
        raise ValueError(f"{len(stack_paths)} stacks but {len(mask_paths)} masks")
    rules = replace(rules or QualityRules(), min_stacks=min_stacks)
    qs = []
    no_brain = {}
    for sp, mp in zip(stack_paths, mask_paths, strict=True):
        img, msk = load_nifti(sp), load_nifti(mp)
        data = np.squeeze(np.asanyarray(img.dataobj))
        mask = np.squeeze(np.asanyarray(msk.dataobj))
        qs.append(measure_stack(data, mask, img.affine, str(sp), str(mp)))
        side = sidecar_path(mp)
        if side.is_file():
            why = json.loads(side.read_text()).get("NoBrainReason")
            if why:
                no_brain[str(sp)] = why
    score_and_rank(qs, rules, no_brain)
    for q in qs:
        if not q.kept:
            log.warning("excluded %s: %s", Path(q.stack).name, q.reason)
    out_tsv = Path(out_tsv)
    write_text_atomic(out_tsv, _tsv(qs))
    write_sidecar(
        out_tsv,
        step="stack_quality",
        parameters=asdict(rules),
        sources=[*map(str, stack_paths), *map(str, mask_paths)],
        extra={
            "Columns": {
                "ncc_adjacent": "mean NCC of each slice with its neighbours' mean, in the mask",
                "dropout_fraction": "brain slices much darker than their neighbours",
                "area_roughness": "mean |second difference| of the mask area / mean area",
                "centroid_jitter_mm": "median |second difference| of the mask centroid path",
                "volume_ratio": "mask volume / median mask volume of the session's stacks",
                "score": "ncc x (1 - dropout) / (1 + roughness) / (1 + jitter / scale) x "
                "volume term; higher is better; ranks the stacks (motion lowers it but "
                "never excludes a stack)",
            }
        },
    )
    kept = sorted((q for q in qs if q.kept), key=lambda q: q.rank)
    if len(kept) < rules.min_stacks:
        listing = "; ".join(
            f"{Path(q.stack).name}: {'kept' if q.kept else q.reason}"
            for q in sorted(qs, key=lambda q: q.rank)
        )
        raise MinimumStacksError(
            f"only {len(kept)} of {len(qs)} stacks are usable, at least {rules.min_stacks} "
            f"are needed for a reconstruction ({listing}). Acquire more stacks, lower "
            "stack_quality.min_stacks, or relax the exclusion thresholds (see "
            f"{out_tsv})"
        )
    return [Path(q.stack) for q in kept]
