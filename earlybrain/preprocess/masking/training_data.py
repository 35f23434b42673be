"""Training and validation stacks for the masking networks, and what each network sees.

A subject is one simulated pregnancy (`simulate.uterus`) with a fetal head from the
simulator's phantoms or from a real anatomy (Fidon's atlas, training weeks only),
acquired as clinical stacks (`simulate.clinical`): whole-uterus fields of view, any
orientation, HASTE or bSSFP, 1.5 or 3 T, motion, fold-over, stored as scanners store
images. Some subjects have twins; some stacks miss the head (the localiser must find
nothing there); some subjects are the head-centred stacks of the older simulator
(`simulate.acquisition`), so both kinds of input keep working.

From each stack, exactly what inference computes (`inference.coarse_input`,
`inference.fine_input`): whole slices at 3 mm for the localiser, and a crop around
the head at the segmenter's spacing, centred with the error a localiser makes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from earlybrain.io.atomic import write_bytes_atomic
from earlybrain.preprocess.masking.inference import MaskingGeometry, coarse_input, fine_input
from earlybrain.preprocess.masking.slices import crop_slices, inplane_mm, to_slices
from earlybrain.shared_data import FIDON, dataset, fidon_split
from earlybrain.simulate.acquisition import StackProtocol, simulate_stacks
from earlybrain.simulate.clinical import ClinicalProtocol, simulate_clinical_stack
from earlybrain.simulate.fetal_head import FetalHead, phantom_head, real_head
from earlybrain.simulate.phantom import make_phantom
from earlybrain.simulate.uterus import SceneConfig, UterusScene

REALISTIC_DEFAULT = SceneConfig()  # the full randomisation of training scenes

# changes whenever what a subject holds changes, so a cache never serves stale subjects
DATA_VERSION = 5
FINE_CROP = 224  # stored crop; training windows (geometry.window) are cut from it
NEGATIVE_SLICES_MM = 30.0  # crops also of the slices this far beyond the head


@dataclass(frozen=True)
class SubjectMix:
    """What kinds of subjects a set is drawn from."""

    ga_range: tuple[float, float] = (21.0, 38.0)
    p_real_anatomy: float = 0.45  # else a phantom brain
    p_head_centred: float = 0.12  # the older simulator's small head-centred stacks
    p_twins: float = 0.04
    p_missed_head: float = 0.12  # an extra stack planned away from the head
    stacks: int = 2
    real_split: str = "train"
    scene: SceneConfig = REALISTIC_DEFAULT


def _head(rng: np.random.Generator, mix: SubjectMix, anatomies: Sequence[Path]) -> FetalHead:
    if anatomies and rng.random() < mix.p_real_anatomy:
        folder = anatomies[int(rng.integers(len(anatomies)))]
        return real_head(folder, rng, float(rng.uniform(0.88, 1.12)))
    lo, hi = mix.ga_range
    return phantom_head(float(rng.uniform(lo, hi)), int(rng.integers(2**31)))


def real_anatomies(split: str) -> list[Path]:
    """Fidon time points of one split, or [] where the shared data are not available."""
    root = dataset(FIDON)
    return [root / t for t in fidon_split(split)] if root else []


def _head_centred(seed: int, rng: np.random.Generator, mix: SubjectMix) -> list[dict[str, Any]]:
    """Stacks of the older simulator: field of view hugging the head, uniform fluid."""
    lo, hi = mix.ga_range
    ga = float(rng.uniform(lo, hi))
    phantom = make_phantom(ga, int(rng.integers(2**31)), kind="fetal", voxel_mm=1.2)
    proto = StackProtocol(
        inplane_mm=float(rng.uniform(1.0, 1.8)),
        thickness_mm=float(rng.uniform(2.5, 5.0)),
        fov_margin_mm=float(rng.uniform(8.0, 60.0)),
        interleave=int(rng.choice([1, 2, 3])),
        noise_sigma=float(rng.uniform(4.0, 45.0)),
        bias_amplitude=float(rng.uniform(0.1, 0.45)),
        planning_error_deg=float(rng.uniform(3.0, 15.0)),
    )
    motion = str(rng.choice(["none", "moderate", "severe"], p=[0.3, 0.45, 0.25]))
    session = simulate_stacks(phantom, mix.stacks, motion, int(rng.integers(2**31)), proto)
    info = {"kind": "head-centred", "ga_weeks": ga, "source": "phantom"}
    return [
        {"data": st.data, "affine": st.affine, "mask": st.mask, "info": dict(info)}
        for st in session.stacks
    ]


def simulate_subject_stacks(
    seed: int, mix: SubjectMix, anatomies: Sequence[Path]
) -> list[dict[str, Any]]:
    """Raw stacks of one simulated subject: data, affine, true mask, info."""
    rng = np.random.default_rng(seed)
    if rng.random() < mix.p_head_centred:
        return _head_centred(seed, rng, mix)
    heads = [_head(rng, mix, anatomies)]
    if rng.random() < mix.p_twins:
        heads.append(_head(rng, mix, ()))
    scene = UterusScene(heads, rng, mix.scene)
    out = []
    n_stacks = mix.stacks + (1 if rng.random() < mix.p_missed_head else 0)
    for i in range(n_stacks):
        missed = i >= mix.stacks  # the slab lies beside the head: no brain in it
        st = simulate_clinical_stack(scene, rng, ClinicalProtocol(miss_head=missed))
        info = {"kind": "clinical", "ga_weeks": heads[0].ga_weeks, "source": heads[0].source}
        info |= {"twins": len(heads) > 1, "missed_head": missed, **st.info}
        out.append({"data": st.data, "affine": st.affine, "mask": st.mask, "info": info})
    return out


def network_views(
    stack: dict[str, Any], geo: MaskingGeometry, rng: np.random.Generator
) -> dict[str, Any]:
    """What the two networks see of one raw stack (float16 inputs, bool targets)."""
    data, affine, mask = stack["data"], stack["affine"], stack["mask"]
    coarse, _ = coarse_input(data, affine, geo)
    cmask, _ = to_slices(mask.astype(np.float32), affine, geo.coarse_mm)
    out: dict[str, Any] = {
        "coarse": coarse.astype(np.float16),
        "coarse_mask": cmask >= 0.5,
        "info": stack["info"],
    }
    axis, inplane = inplane_mm(affine)
    m = np.moveaxis(mask > 0, axis, 0)
    spacing = geo.fine_spacing(inplane)
    if m.any():
        k = np.flatnonzero(m.any(axis=(1, 2)))
        idx = np.argwhere(m)[:, 1:]
        centre = (idx.min(0) + idx.max(0)) / 2.0  # box centre, as the localiser gives it
        first, last = int(k[0]), int(k[-1]) + 1
    else:  # no head: a crop somewhere in the stack teaches the segmenter to find nothing
        centre = np.array([rng.uniform(0.2, 0.8) * n for n in m.shape[1:]])
        first, last = 0, m.shape[0]
    jitter = rng.normal(0, 8.0, 2) / np.array(inplane)  # the localiser's centring error
    # slices beyond the head too (neck, body, maternal tissue), which the segmenter sees
    margin = int(np.ceil(NEGATIVE_SLICES_MM / float(np.linalg.norm(affine[:3, axis]))))
    sl = (max(0, first - margin), min(m.shape[0], last + margin))
    cz = tuple(float(c) for c in centre + jitter)
    shape = (FINE_CROP, FINE_CROP)
    crop, _ = fine_input(data, affine, cz, shape, sl, geo)
    fmask, _ = crop_slices(mask.astype(np.float32), affine, cz, shape, spacing, sl)
    out["fine"] = crop.astype(np.float16)
    out["fine_mask"] = fmask >= 0.5
    return out


def _cache_key(mix: SubjectMix, geo: MaskingGeometry, keep_raw: bool) -> str:
    key = f"{DATA_VERSION}|{mix}|{geo}|{FINE_CROP}|{int(keep_raw)}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _one(
    args: tuple[int, SubjectMix, MaskingGeometry, bool, tuple[str, ...]],
) -> list[dict[str, Any]]:
    seed, mix, geo, keep_raw, anatomies = args
    stacks = simulate_subject_stacks(seed, mix, [Path(a) for a in anatomies])
    rng = np.random.default_rng([seed, 17])
    out = []
    for st in stacks:
        views = network_views(st, geo, rng)
        views["seed"] = seed
        if keep_raw:
            views["raw"] = st
        out.append(views)
    return out


def simulate_subjects(
    seeds: Sequence[int],
    mix: SubjectMix,
    geo: MaskingGeometry,
    keep_raw: bool,
    workers: int,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Network views (and with `keep_raw` the raw stacks) of every stack of the given
    subjects, in seed order; parallel over subjects, optionally cached on disk."""
    anatomies = tuple(str(p) for p in real_anatomies(mix.real_split))
    cache = Path(cache_dir) if cache_dir else None
    key = _cache_key(mix, geo, keep_raw) + ("" if anatomies else "-noreal")
    results: dict[int, list[dict[str, Any]]] = {}
    if cache:
        for s in seeds:
            f = cache / f"{key}_{s}.pkl"
            if f.is_file():
                results[s] = pickle.loads(f.read_bytes())
    jobs = [(s, mix, geo, keep_raw, anatomies) for s in seeds if s not in results]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as ex:
            done = list(ex.map(_one, jobs, chunksize=1))
    else:
        done = [_one(j) for j in jobs]
    for job, res in zip(jobs, done, strict=True):
        results[job[0]] = res
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(cache / f"{key}_{job[0]}.pkl", pickle.dumps(res))
    return [stack for s in seeds for stack in results[s]]
