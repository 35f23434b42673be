"""Stack quality ranking: corrupted stacks rank last or are excluded, with reasons."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from earlybrain.io.nifti import save_nifti
from earlybrain.preprocess.stack_quality import (
    MinimumStacksError,
    QualityRules,
    StackQuality,
    area_roughness,
    measure_stack,
    rank_stacks,
    score_and_rank,
    slice_consistency,
)
from earlybrain.simulate.acquisition import simulate_stacks
from earlybrain.simulate.cohort import PRESETS
from earlybrain.simulate.phantom import make_phantom


@pytest.fixture(scope="module")
def session():
    """Four motion-free tiny-preset stacks of one fetus (axial, coronal, sagittal, axial)."""
    preset = PRESETS["tiny"]
    phantom = make_phantom(30.0, 4242, kind="fetal", voxel_mm=preset.truth_voxel_mm)
    return simulate_stacks(phantom, 4, "none", 4243, preset.protocol).stacks


def _heavy_motion(data: np.ndarray, mask: np.ndarray, seed: int):
    """Every other slice moved in-plane by 3-6 voxels and 10-25 degrees (interleaved jumps)."""
    rng = np.random.default_rng(seed)
    d, m = data.astype(np.float32).copy(), mask.copy()
    for k in range(1, d.shape[2], 2):
        angle = rng.choice([-1, 1]) * rng.uniform(10, 25)
        shift = rng.choice([-1, 1], 2) * rng.uniform(3, 6, 2)
        for arr, order in ((d, 1), (m, 0)):
            sl = ndimage.rotate(arr[..., k], angle, reshape=False, order=order, mode="nearest")
            arr[..., k] = ndimage.shift(sl, shift, order=order, mode="nearest")
    return d, m


def _dropout(data: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = data.astype(np.float32).copy()
    ks = rng.choice(d.shape[2], round(fraction * d.shape[2]), replace=False)
    d[..., ks] *= 0.3
    return d


def _write(tmp: Path, stacks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    paths, masks = [], []
    for i, (data, mask, affine) in enumerate(stacks, start=1):
        paths.append(save_nifti(data, affine, tmp / f"sub-1_run-{i}_T2w.nii.gz", dtype=np.float32))
        masks.append(save_nifti(mask, affine, tmp / f"sub-1_run-{i}_mask.nii.gz", dtype=np.uint8))
    return paths, masks


def _rows(tsv: Path) -> list[dict[str, str]]:
    with tsv.open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_measures_on_synthetic_arrays() -> None:
    # a ball with in-plane texture that changes slowly across slices: slices agree
    u, v, w = np.mgrid[-20:20, -20:20, -10:10].astype(float)
    mask = np.sqrt(u**2 + v**2 + (2 * w) ** 2) < 16
    texture = 100 + 50 * np.sin(u / 3) * np.cos(v / 4) + 2 * w
    data = np.where(mask, texture, 10).astype(np.float32)
    ncc = slice_consistency(data, mask)
    assert np.nanmean(ncc) > 0.75
    assert area_roughness(mask) < 0.1
    # shuffling slices breaks both
    rng = np.random.default_rng(0)
    perm = rng.permutation(data.shape[2])
    assert np.nanmean(slice_consistency(data[..., perm], mask[..., perm])) < np.nanmean(ncc)
    assert area_roughness(mask[..., perm]) > 3 * area_roughness(mask)


def test_heavy_motion_stack_is_ranked_last_not_excluded(session, tmp_path: Path) -> None:
    """Motion is the reconstruction's job: the moving stack ranks last but is kept."""
    clean = [(s.data, s.mask, s.affine) for s in session]
    moved, moved_mask = _heavy_motion(session[3].data, session[3].mask, 7)
    stacks = [*clean[:3], (moved, moved_mask, session[3].affine)]
    paths, masks = _write(tmp_path, stacks)
    kept = rank_stacks(paths, masks, tmp_path / "quality.tsv", min_stacks=2)
    rows = {Path(r["stack"]).name: r for r in _rows(tmp_path / "quality.tsv")}
    bad = rows[paths[3].name]
    assert bad["kept"] == "true" and int(bad["rank"]) == 4, bad
    assert kept[-1] == paths[3] and len(kept) == 4  # best first
    # the same stack uncorrupted is not the worst of the session
    _, _, aff = clean[3]
    ref = measure_stack(session[3].data, session[3].mask, aff)
    moved_q = measure_stack(moved, moved_mask, aff)
    assert moved_q.ncc_adjacent < ref.ncc_adjacent - 0.1
    assert moved_q.centroid_jitter_mm > 3 * max(ref.centroid_jitter_mm, 1.0)


def test_dropout_stack_is_excluded_with_reason(session, tmp_path: Path) -> None:
    stacks = [(s.data, s.mask, s.affine) for s in session]
    stacks[1] = (_dropout(session[1].data, 0.4, 3), session[1].mask, session[1].affine)
    paths, masks = _write(tmp_path, stacks)
    kept = rank_stacks(paths, masks, tmp_path / "quality.tsv", min_stacks=2)
    assert paths[1] not in kept
    assert len(kept) == 3
    rows = {Path(r["stack"]).name: r for r in _rows(tmp_path / "quality.tsv")}
    bad = rows[paths[1].name]
    assert bad["kept"] == "false" and "drop-out" in bad["reason"]
    assert int(bad["rank"]) == 4
    for name, r in rows.items():
        if name != paths[1].name:
            assert r["kept"] == "true" and r["reason"] == "n/a"
    side = json.loads((tmp_path / "quality.json").read_text())
    assert side["Parameters"]["min_stacks"] == 2 and len(side["Sources"]) == 8


def test_mask_volume_outlier_is_excluded(session) -> None:
    qs = [measure_stack(s.data, s.mask, s.affine, f"run-{i}") for i, s in enumerate(session)]
    # a mask that caught only part of the brain
    half = session[2].mask.copy()
    half[: half.shape[0] // 2] = 0
    qs[2] = measure_stack(session[2].data, half, session[2].affine, "run-2")
    score_and_rank(qs, QualityRules())
    assert not qs[2].kept and "volume" in qs[2].reason
    assert all(q.kept for i, q in enumerate(qs) if i != 2)


def test_minimum_stacks_error_lists_reasons(session, tmp_path: Path) -> None:
    stacks = [(s.data, s.mask, s.affine) for s in session[:2]]
    stacks[0] = (_dropout(session[0].data, 0.5, 1), session[0].mask, session[0].affine)
    paths, masks = _write(tmp_path, stacks)
    with pytest.raises(MinimumStacksError) as err:
        rank_stacks(paths, masks, tmp_path / "q.tsv", min_stacks=2)
    msg = str(err.value)
    assert "only 1 of 2 stacks" in msg and "at least 2" in msg and "drop-out" in msg
    assert paths[0].name in msg
    assert (tmp_path / "q.tsv").is_file()  # written before the error, for the report
    # fine with a lower minimum
    assert rank_stacks(paths, masks, tmp_path / "q.tsv", min_stacks=1) == [paths[1]]


def test_empty_mask_is_no_brain(session) -> None:
    empty = np.zeros_like(session[0].mask)
    qs = [measure_stack(s.data, s.mask, s.affine, f"run-{i}") for i, s in enumerate(session)]
    qs[0] = measure_stack(session[0].data, empty, session[0].affine, "run-0")
    score_and_rank(qs, replace(QualityRules(), min_stacks=1))
    assert not qs[0].kept and "no brain" in qs[0].reason and qs[0].rank == 4


def test_mismatched_mask_shape_is_a_clear_error(session) -> None:
    s = session[0]
    with pytest.raises(ValueError, match="mask shape"):
        measure_stack(s.data, s.mask[:-1], s.affine, "run-1")


@pytest.mark.parametrize("motion", ["none", "moderate"])
def test_ordinary_sessions_keep_every_stack(motion: str) -> None:
    """No false exclusions: motion-free and moderately moving fetuses keep all stacks."""
    preset = PRESETS["tiny"]
    for ga, seed in ((23.0, 515), (34.0, 616)):
        phantom = make_phantom(ga, seed, kind="fetal", voxel_mm=preset.truth_voxel_mm)
        stacks = simulate_stacks(phantom, 3, motion, seed + 1, preset.protocol).stacks
        qs = [measure_stack(s.data, s.mask, s.affine, f"run-{i}") for i, s in enumerate(stacks)]
        score_and_rank(qs, QualityRules())
        assert all(q.kept for q in qs), [(q.stack, q.reason) for q in qs]


def test_workflow_step_and_kept_stacks(session, tmp_path: Path, capsys) -> None:
    """`earlybrain step stack-qc` (rule stack_qc) and how recon reads the kept stacks."""
    from earlybrain import cli
    from earlybrain.recon.steps import kept_stacks

    stacks = [(s.data, s.mask, s.affine) for s in session[:3]]
    stacks[1] = (_dropout(session[1].data, 0.5, 1), session[1].mask, session[1].affine)
    paths, masks = _write(tmp_path, stacks)
    tsv = tmp_path / "q.tsv"
    args = ["step", "stack-qc", "--stacks", *map(str, paths), "--masks", *map(str, masks)]
    assert cli.main([*args, "--out-tsv", str(tsv)]) == 0
    assert "2 of 3 stack(s) kept" in capsys.readouterr().out
    assert json.loads(tsv.with_suffix(".json").read_text())["Parameters"]["min_stacks"] == 2
    kept, kept_masks = kept_stacks(tsv, paths, masks)
    # best first (the reconstruction's reference), each stack with its own mask
    assert sorted(kept) == [paths[0], paths[2]]
    assert [masks[paths.index(k)] for k in kept] == kept_masks
    ranks = {Path(r["stack"]).name: int(r["rank"]) for r in _rows(tsv)}
    assert ranks[kept[0].name] < ranks[kept[1].name]
    rules = json.dumps({"min_stacks": 3, "volume_ratio_range": [0.5, 2.0]})
    assert cli.main([*args, "--out-tsv", str(tsv), "--params", rules]) == 1
    err = capsys.readouterr().err
    assert "only 2 of 3 stacks are usable, at least 3" in err and paths[1].name in err
    with pytest.raises(TypeError):  # a misspelt rule (the workflow checks at start-up)
        cli.main([*args, "--out-tsv", str(tsv), "--params", '{"min_stack": 3}'])


def test_motion_ranks_and_never_excludes() -> None:
    """However far below the best a moving stack scores, it stays; a stack with brain in
    too few slices cannot help and goes."""

    def q(name: str, ncc: float, jitter: float = 1.0, brain_slices: int = 12) -> StackQuality:
        return StackQuality(name, "m", 20, brain_slices, 80.0, ncc, 0, 0.0, 0.05, jitter)

    qs = score_and_rank([q("a", 0.8), q("b", 0.75), q("c", 0.1, jitter=34.0)], QualityRules())
    assert [s.kept for s in qs] == [True, True, True] and [s.rank for s in qs] == [1, 2, 3]
    assert qs[2].reason == ""
    few = score_and_rank([q("a", 0.8), q("b", 0.8), q("c", 0.8, brain_slices=2)], QualityRules())
    assert [s.kept for s in few] == [True, True, False]
    assert "brain in only 2 slice(s)" in few[2].reason
