"""Build a spatiotemporal atlas: one groupwise template per week, age-kernel weighted.

How (the way labs build population-specific atlases, e.g. Gholipour et al. 2017):
1. every subject is brought into a standard frame (RAS, origin at the cerebrum's
   centre) rigidly (`atlas.standardise`): from its labels if it has them
   (`atlas.frame`), otherwise by a robust rigid registration to a reference atlas of
   the nearest age;
2. for each week w, subjects get Gaussian weights exp(-(age - w)^2 / 2 sigma^2)
   (sigma ~ 1 week); those above `min_weight` (at most `max_subjects`) take part;
3. the first template is their weighted mean after the rigid standardisation; then,
   `iterations` times, every subject is registered to the template (affine + SyN,
   ANTsPy), the template becomes the weighted mean of the warped subjects, and
   (except after the last round) it is moved against the weighted mean displacement
   so that it sits at the centre of the subjects' shapes (the shape update of
   `ants.build_template` / antsMultivariateTemplateConstruction2, which would
   otherwise keep the arbitrary shape of the first template);
4. labels: the subjects' label maps, warped with the last round's transforms, vote
   with their weights (brain vs background first, then the most weighted label), and
   the brain mask is the voted brain.
Everything is seeded, and the ANTs metrics used are deterministic for a fixed number
of threads, so the same inputs give the same atlas.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from earlybrain.atlas.buildspec import BuildParams, WeekTemplate
from earlybrain.atlas.manifest import AtlasManifest, load_manifest
from earlybrain.atlas.standardise import N_LABELS, AtlasSubject, Prepared, prepare_subject
from earlybrain.atlas.write import write_atlas
from earlybrain.io.nifti import load_nifti
from earlybrain.register import antsio
from earlybrain.register.stages import syn_stage

log = logging.getLogger("earlybrain.atlas")
PathLike = str | os.PathLike[str]


def kernel_weights(ages: Sequence[float], week: float, params: BuildParams) -> np.ndarray:
    """Gaussian age weights; zero below `min_weight` and beyond the `max_subjects` largest."""
    a = np.asarray(ages, dtype=np.float64)
    w = np.exp(-0.5 * ((a - week) / params.sigma_weeks) ** 2)
    w[w < params.min_weight] = 0.0
    if np.count_nonzero(w) > params.max_subjects:
        order = np.argsort(-w, kind="stable")
        w[order[params.max_subjects :]] = 0.0
    return w


def _week_grid(members: list[Prepared], params: BuildParams) -> Any:
    """An empty ants image: axis-aligned RAS grid over the members' brains plus margin."""
    v = params.voxel_mm
    lo = np.floor((np.min([m.lo for m in members], axis=0) - params.margin_mm) / v) * v
    hi = np.ceil((np.max([m.hi for m in members], axis=0) + params.margin_mm) / v) * v
    shape = tuple(int(np.rint((h - low) / v)) + 1 for low, h in zip(lo, hi, strict=True))
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = lo
    return antsio.to_ants(np.zeros(shape, np.float32), affine)


def _register(template: Any, subject: Prepared, params: BuildParams, prefix: str) -> dict[str, Any]:
    """Affine + SyN of a (standardised) subject to the current template."""
    ants = antsio.ants_module()
    n = len(params.affine_iterations)
    aff = ants.registration(
        template,
        subject.image,
        type_of_transform="Affine",
        initial_transform=["Identity"],
        aff_metric=params.linear_metric,
        aff_iterations=tuple(params.affine_iterations),
        aff_shrink_factors=tuple(2**k for k in reversed(range(n))),
        aff_smoothing_sigmas=tuple(reversed(range(n))),
        random_seed=params.random_seed,
        outprefix=prefix + "aff_",
    )
    return syn_stage(template, subject.image, aff["fwdtransforms"], params, prefix + "syn_")


def _shape_update(
    template: Any,
    regs: list[dict[str, Any]],
    members: list[Prepared],
    w: np.ndarray,
    params: BuildParams,
    workdir: Path,
) -> Any:
    """Move the template against the weighted mean displacement to the subjects."""
    ants = antsio.ants_module()
    mean = None
    for k, (reg, m, wk) in enumerate(zip(regs, members, w, strict=True)):
        comp = ants.apply_transforms(
            template, m.image, reg["fwdtransforms"], compose=str(workdir / f"comp{k}_")
        )
        field_k = ants.image_read(comp).numpy()
        mean = wk * field_k if mean is None else mean + wk * field_k
    assert mean is not None
    update = ants.from_numpy(
        (-params.gradient_step * mean / w.sum()).astype(np.float32),
        origin=template.origin,
        spacing=template.spacing,
        direction=template.direction,
        has_components=True,
    )
    path = workdir / "shape_update.nii.gz"
    ants.image_write(update, str(path))
    return ants.apply_transforms(template, template, [str(path)], interpolator="linear")


def _vote(
    template: Any, regs: list[dict[str, Any]], members: list[Prepared], w: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weighted vote of the warped label maps (or masks): (mask, labels or None)."""
    ants = antsio.ants_module()
    shape = template.shape
    have_labels = all(m.labels is not None for m in members)
    n = N_LABELS + 1 if have_labels else 2
    acc = np.zeros((n, *shape), dtype=np.float32)
    for reg, m, wk in zip(regs, members, w, strict=True):
        src = m.labels if have_labels else m.mask
        warped = ants.apply_transforms(
            template, src, reg["fwdtransforms"], interpolator="genericLabel"
        ).numpy()
        lab = np.clip(np.rint(warped).astype(np.int64), 0, n - 1)
        for value in range(n):
            acc[value] += wk * (lab == value)
    brain = acc[1:].sum(axis=0) >= 0.5 * w.sum()
    # one connected brain without holes
    comps, ncomp = ndimage.label(brain)
    if ncomp > 1:
        sizes = ndimage.sum(brain, comps, range(1, ncomp + 1))
        brain = comps == (1 + int(np.argmax(sizes)))
    brain = ndimage.binary_fill_holes(brain)
    if not have_labels:
        return brain.astype(np.uint8), None
    dseg = (1 + np.argmax(acc[1:], axis=0)).astype(np.uint8)
    dseg[~brain] = 0
    return brain.astype(np.uint8), dseg


def build_week(
    prepared: list[Prepared], week: float, params: BuildParams, workdir: PathLike
) -> WeekTemplate:
    """The template of one week from the subjects whose ages weigh in."""
    ants = antsio.ants_module()
    if params.iterations < 1:
        raise ValueError("atlas building needs at least one registration round (iterations >= 1)")
    t0 = time.perf_counter()
    weights = kernel_weights([p.age_weeks for p in prepared], week, params)
    members = [p for p, wk in zip(prepared, weights, strict=True) if wk > 0]
    w = weights[weights > 0]
    if not members:
        ages = sorted(p.age_weeks for p in prepared)
        raise ValueError(
            f"week {week:g}: no subject within reach of the age kernel (sigma "
            f"{params.sigma_weeks:g} weeks, min weight {params.min_weight:g}); subject ages: {ages}"
        )
    workdir = Path(workdir)
    grid = _week_grid(members, params)
    template = grid.clone()
    acc = np.zeros(grid.shape, dtype=np.float32)
    for m, wk in zip(members, w, strict=True):
        acc += wk * ants.resample_image_to_target(m.image, grid, interp_type="linear").numpy()
    template = ants.from_numpy(
        acc / w.sum(), origin=grid.origin, spacing=grid.spacing, direction=grid.direction
    )
    regs: list[dict[str, Any]] = []
    for rnd in range(params.iterations):
        regs = [
            _register(template, m, params, str(workdir / f"r{rnd}_s{k}_"))
            for k, m in enumerate(members)
        ]
        acc = np.zeros(grid.shape, dtype=np.float32)
        for reg, wk in zip(regs, w, strict=True):
            acc += wk * reg["warpedmovout"].numpy()
        template = ants.from_numpy(
            acc / w.sum(), origin=grid.origin, spacing=grid.spacing, direction=grid.direction
        )
        if rnd < params.iterations - 1:
            template = _shape_update(template, regs, members, w, params, workdir)
        log.info("week %g: round %d/%d done", week, rnd + 1, params.iterations)
    mask, dseg = _vote(template, regs, members, w)
    img = template.numpy()
    img = np.where(ndimage.binary_dilation(mask > 0, iterations=2), img, 0.0)
    inside = img[mask > 0]
    top = float(np.percentile(inside, params.intensity_percentile)) if inside.size else 1.0
    img = (img * (params.intensity_scale / max(top, 1e-6))).astype(np.float32)
    contributors = [
        {"name": m.name, "age_weeks": round(m.age_weeks, 2), "weight": round(float(wk), 4)}
        for m, wk in zip(members, w, strict=True)
    ]
    return WeekTemplate(
        week=float(week),
        image=img,
        affine=antsio.ras_affine(template),
        mask=mask,
        dseg=dseg,
        contributors=contributors,
        seconds=time.perf_counter() - t0,
    )


def build_templates(
    subjects: Sequence[AtlasSubject],
    weeks: Sequence[float],
    params: BuildParams | None = None,
    reference: AtlasManifest | None = None,
) -> list[WeekTemplate]:
    """Standardise every subject once, then build each week's template (default params:
    `BuildParams()`)."""
    params = params or BuildParams()
    antsio.set_threads(params.threads)
    if not subjects:
        raise ValueError("no subjects to build an atlas from")
    if len({s.name for s in subjects}) != len(subjects):
        subjects = [
            AtlasSubject(s.image, s.affine, s.age_weeks, s.labels, s.mask, s.name or f"subject{i}")
            for i, s in enumerate(subjects, start=1)
        ]
    prepared = []
    for s in subjects:
        prepared.append(prepare_subject(s, params, reference))
        log.info("standardised %s (%g weeks) by %s", s.name, s.age_weeks, prepared[-1].frame)
    out = []
    with tempfile.TemporaryDirectory(prefix="earlybrain-atlas-") as tmp:
        for week in weeks:
            wdir = Path(tmp) / f"week{week:g}"
            wdir.mkdir()
            out.append(build_week(prepared, float(week), params, wdir))
            log.info("week %g: template built in %.0f s", week, out[-1].seconds)
    return out


def _load_subjects(
    volumes: Sequence[PathLike],
    labels: Sequence[PathLike | None] | None,
    ages: Sequence[float],
    masks: Sequence[PathLike | None] | None,
) -> list[AtlasSubject]:
    n = len(volumes)
    if len(ages) != n:
        raise ValueError(f"{n} volumes but {len(ages)} ages: give one age per volume")
    for what, seq in (("label maps", labels), ("masks", masks)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{n} volumes but {len(seq)} {what}: give one per volume (or none)")
    out = []
    for i, vol in enumerate(volumes):
        img = load_nifti(vol)
        data = np.asarray(img.dataobj, dtype=np.float32)
        lab = msk = None
        if labels is not None and labels[i]:
            li = load_nifti(labels[i])  # type: ignore[arg-type]
            if li.shape != img.shape or not np.allclose(li.affine, img.affine, atol=1e-3):
                raise ValueError(f"{labels[i]}: label map grid differs from {vol}")
            lab = np.rint(np.asarray(li.dataobj)).astype(np.int16)
        if masks is not None and masks[i]:
            mi = load_nifti(masks[i])  # type: ignore[arg-type]
            if mi.shape != img.shape or not np.allclose(mi.affine, img.affine, atol=1e-3):
                raise ValueError(f"{masks[i]}: mask grid differs from {vol}")
            msk = np.asarray(mi.dataobj) > 0
        name = Path(vol).name.split(".")[0]
        out.append(AtlasSubject(data, np.asarray(img.affine), float(ages[i]), lab, msk, name))
    return out


def build_atlas(
    volumes: Sequence[PathLike],
    labels: Sequence[PathLike | None] | None,
    ages: Sequence[float],
    out_dir: PathLike,
    weeks: Sequence[float],
    *,
    masks: Sequence[PathLike | None] | None = None,
    params: BuildParams | dict[str, Any] | None = None,
    name: str = "earlybrain-fetal-custom",
    space: str = "earlybrainFetalCustom",
    reference_atlas: PathLike | None = None,
    description: str = "",
    provenance: dict[str, Any] | None = None,
    license_name: str = "unspecified: the terms of the subjects' data apply",
) -> Path:
    """File entry: build an atlas from volumes (+ labels/masks) with ages; returns the manifest.

    Subjects without labels need `reference_atlas` (a manifest) to find their
    orientation, and the atlas then has masks but no label maps. The licence is the
    builder's to state (`license_name`); no licence file is written.
    """
    p = params if isinstance(params, BuildParams) else BuildParams.from_dict(params)
    subjects = _load_subjects(volumes, labels, ages, masks)
    reference = load_manifest(reference_atlas) if reference_atlas else None
    templates = build_templates(subjects, weeks, p, reference)
    prov = {
        "generated_by": "earlybrain.atlas.build",
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "subjects": [
            {
                "name": s.name,
                "age_weeks": s.age_weeks,
                "volume": str(v),
                "labels": str(labels[i]) if labels is not None and labels[i] else None,
            }
            for i, (s, v) in enumerate(zip(subjects, volumes, strict=True))
        ],
        "reference_atlas": str(reference_atlas) if reference_atlas else None,
    } | (provenance or {})
    return write_atlas(
        templates,
        out_dir,
        name=name,
        space=space,
        params=p,
        provenance=prov,
        description=description or f"atlas built by earlybrain from {len(subjects)} subjects",
        license_name=license_name,
        license_text=None,
    )


def _read_cohort(path: Path) -> tuple[list[str], list[str | None], list[float], list[str | None]]:
    """Cohort table: columns volume, age_weeks, and optionally labels, mask."""
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines(), delimiter="\t"))
    if not rows or "volume" not in rows[0] or "age_weeks" not in rows[0]:
        raise ValueError(f"{path}: needs tab-separated columns volume, age_weeks [, labels, mask]")

    def opt(row: dict[str, str], key: str) -> str | None:
        v = (row.get(key) or "").strip()
        return None if v in ("", "n/a") else str((path.parent / v).resolve())

    vols = [str((path.parent / r["volume"]).resolve()) for r in rows]
    return (
        vols,
        [opt(r, "labels") for r in rows],
        [float(r["age_weeks"]) for r in rows],
        [opt(r, "mask") for r in rows],
    )


def parse_weeks(text: Sequence[str]) -> list[float]:
    """'21-38' (every week) or a list of numbers."""
    if len(text) == 1 and "-" in text[0]:
        a, b = (float(x) for x in text[0].split("-"))
        return [float(w) for w in np.arange(a, b + 0.5)]
    return [float(w) for w in text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="earlybrain build-atlas",
        description="Build a spatiotemporal atlas (one template per week) from a cohort.",
    )
    ap.add_argument("--cohort", type=Path, help="TSV with volume, age_weeks [, labels, mask]")
    ap.add_argument("--volumes", nargs="*", default=None)
    ap.add_argument("--labels", nargs="*", default=None)
    ap.add_argument("--masks", nargs="*", default=None)
    ap.add_argument("--ages", nargs="*", type=float, default=None)
    ap.add_argument("--weeks", nargs="+", required=True, help="e.g. 21-38, or 22 26 30")
    ap.add_argument("--out", required=True, help="atlas folder to write")
    ap.add_argument("--name", default="earlybrain-fetal-custom")
    ap.add_argument("--space", default="earlybrainFetalCustom")
    ap.add_argument("--reference-atlas", default=None, help="for subjects without labels")
    ap.add_argument("--params", default=None, help="JSON object of BuildParams fields")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--license", default="unspecified: the terms of the subjects' data apply")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.cohort:
        vols, labs, ages, masks = _read_cohort(args.cohort)
    else:
        if not args.volumes or args.ages is None:
            ap.error("give --cohort, or --volumes and --ages")
        vols, ages = args.volumes, args.ages
        labs = args.labels or None
        masks = args.masks or None
    params = json.loads(args.params) if args.params else {}
    if args.threads:
        params["threads"] = args.threads
    path = build_atlas(
        vols,
        labs if labs and any(labs) else None,
        ages,
        args.out,
        parse_weeks(args.weeks),
        masks=masks if masks and any(masks) else None,
        params=params,
        name=args.name,
        space=args.space,
        reference_atlas=args.reference_atlas,
        provenance={"command": "earlybrain build-atlas " + shlex.join(argv)},
        license_name=args.license,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
