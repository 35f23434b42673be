"""Train the brain-age deep ensemble on simulated fetuses (and a lab's own cohort).

Each member is the same small MONAI regressor trained from its own initialisation and
sample order (seeds derived from the training seed and the member's index) on the same
data: simulated fetuses of 21-38 weeks put on the network grid as `frame` prepares a
subject, with augmentation per batch. A lab's own reconstructions with their ages from
participants.tsv join the training data (or replace the simulated ones). Validation:
simulated fetuses of other seeds inside the age range (error, calibration, the spread
of the brain-age gap used for its z-score) and outside it (the uncertainty must grow).

    earlybrain train-brainage --out models/brainage --seed 0
    snakemake train_brainage --cores 2          (the same through the workflow)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earlybrain.brainage.data import Augment, augment, simulated_bank
from earlybrain.brainage.ensemble import (
    WEIGHTS_NAME,
    Ensemble,
    ensemble_payload,
    predict,
)
from earlybrain.brainage.frame import GRID
from earlybrain.brainage.network import DEFAULT_ARCH, build_regressor, member_loss
from earlybrain.device import DEVICES, resolve_device
from earlybrain.io.atomic import write_json_atomic
from earlybrain.training import BrainAgeRecipe, derived_seeds, software_versions
from earlybrain.weights import CARD_NAME, save_payload

log = logging.getLogger(__name__)

# seed-derivation codes: no subject is shared between splits or with other networks
SPLIT_CODES = {"train": 701, "val": 702, "outside": 703}
OUTSIDE_AGES = (18.0, 18.5, 19.0, 40.5, 41.0, 42.0)  # the simulator spans 18-42 w


@dataclass(frozen=True)
class TrainConfig(BrainAgeRecipe):
    """Everything that determines the trained ensemble (recorded in the card)."""

    ga_range: tuple[float, float] = (21.0, 38.0)
    sim_voxel_mm: float = 1.5
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    p_cohort: float = 0.5  # share of samples from a lab's cohort, when given
    arch: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCH))
    augment: Augment = field(default_factory=Augment)


def stratified_ages(seed: int, code: int, n: int, ga_range: tuple[float, float]) -> list[float]:
    """Ages spread over the range (one per 1/n of it, jittered): every week is seen."""
    rng = np.random.default_rng([seed, code, 1])
    lo, hi = ga_range
    return [float(lo + (hi - lo) * (i + rng.random()) / n) for i in range(n)]


def _member_seed(seed: int, member: int) -> int:
    return derived_seeds(seed, 710, member + 1)[member]


def train_member(
    data: np.ndarray,
    ages: np.ndarray,
    cohort: tuple[np.ndarray, np.ndarray] | None,
    cfg: TrainConfig,
    member: int,
    device: torch.device,
    centre: float,
    scale: float,
    say: Any = log.info,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """One ensemble member (loss: `network.member_loss`)."""
    mseed = _member_seed(cfg.seed, member)
    torch.manual_seed(mseed)
    rng = np.random.default_rng(mseed)
    net = build_regressor(GRID.shape, cfg.arch).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=cfg.steps)
    # bagging: each member draws from its own bootstrap sample of the subjects, so the
    # members differ in the data too, not only in initialisation and order
    sources = [(data, ages)] + ([cohort] if cohort is not None else [])
    pools = [(x, a, rng.integers(len(a), size=len(a))) for x, a in sources if len(a)]
    history, losses = [], []
    net.train()
    for step in range(cfg.steps):
        use_cohort = len(pools) == 2 and rng.random() < cfg.p_cohort
        pool, pool_ages, boot = pools[-1] if use_cohort or len(pools) == 1 else pools[0]
        idx = boot[rng.integers(len(boot), size=cfg.batch_size)]
        x = torch.from_numpy(pool[idx].astype(np.float32))[:, None].to(device)
        x = augment(x, rng, cfg.augment)
        y = torch.from_numpy(((pool_ages[idx] - centre) / scale).astype(np.float32))
        out = net(x)
        y = y.to(device)
        loss = member_loss(out, y)
        opt.zero_grad()
        loss.backward()
        # a confident member's likelihood gradients are steep: bound the step
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0 or step + 1 == cfg.steps:
            history.append({"step": step + 1, "loss": round(float(np.mean(losses)), 4)})
            say(f"member {member + 1}: step {step + 1}/{cfg.steps}, loss {np.mean(losses):.4f}")
            losses = []
    return net.eval(), history


def evaluate(model: Ensemble, inputs: np.ndarray, ages: np.ndarray) -> dict[str, Any]:
    """Error, calibration and uncertainty of the ensemble on volumes of known age."""
    p = predict(model, inputs)
    err = p["age_weeks"] - ages
    member_mae = np.mean(np.abs(p["member_ages"] - ages[:, None]), axis=0)
    return {
        "n": len(ages),
        "mae_weeks": round(float(np.mean(np.abs(err))), 3),
        "bias_weeks": round(float(np.mean(err)), 3),
        "error_sd_weeks": round(float(np.std(err, ddof=1)), 3) if len(err) > 1 else None,
        "mean_sd_weeks": round(float(np.mean(p["sd_weeks"])), 3),
        "mean_epistemic_sd_weeks": round(float(np.mean(p["epistemic_sd_weeks"])), 3),
        "coverage_95": round(float(np.mean(np.abs(err) <= 1.96 * p["sd_weeks"])), 3),
        "member_mae_weeks": [round(float(v), 3) for v in member_mae],
        "per_subject": [
            {
                "age_weeks": round(float(a), 2),
                "predicted": round(float(m), 2),
                "sd": round(float(s), 2),
            }
            for a, m, s in zip(ages, p["age_weeks"], p["sd_weeks"], strict=True)
        ],
    }


def train_brainage(
    out_dir: str | Path,
    cfg: TrainConfig = TrainConfig(),
    cohort: tuple[np.ndarray, np.ndarray] | None = None,
    cohort_sources: Sequence[str] = (),
    simulated: bool = True,
    device: str = "auto",
    threads: int = 2,
    cache_dir: str | Path | None = None,
    say: Any = log.info,
    workers: int | None = None,
) -> dict[str, Any]:
    """Train, validate and write `ensemble_weights.pt` + `card.json` in `out_dir`.

    `workers` processes simulate the volumes (default: `threads`)."""
    workers = workers or threads
    torch.set_num_threads(threads)
    dev = resolve_device(device, allow_cpu_fallback=True)
    t_start = time.time()
    if not simulated and cohort is None:
        raise ValueError("nothing to train on: no simulated subjects and no cohort")
    n_sim = cfg.n_train_subjects if simulated else 0
    train_seeds = derived_seeds(cfg.seed, SPLIT_CODES["train"], n_sim)
    train_ages = stratified_ages(cfg.seed, SPLIT_CODES["train"], n_sim, cfg.ga_range)
    data = simulated_bank(train_ages, train_seeds, cfg.sim_voxel_mm, GRID, cache_dir, workers)
    ages = np.asarray(train_ages, dtype=np.float64)
    val_ages = stratified_ages(cfg.seed, SPLIT_CODES["val"], cfg.n_val_subjects, cfg.ga_range)
    val_seeds = derived_seeds(cfg.seed, SPLIT_CODES["val"], cfg.n_val_subjects)
    val = simulated_bank(val_ages, val_seeds, cfg.sim_voxel_mm, GRID, cache_dir, workers)
    out_seeds = derived_seeds(cfg.seed, SPLIT_CODES["outside"], len(OUTSIDE_AGES))
    outside = simulated_bank(
        list(OUTSIDE_AGES), out_seeds, cfg.sim_voxel_mm, GRID, cache_dir, workers
    )
    t_data = time.time() - t_start
    say(f"{n_sim} simulated training volumes ready in {t_data:.0f} s")
    all_ages = np.concatenate([ages, cohort[1]]) if cohort is not None else ages
    centre = float(np.mean(cfg.ga_range)) if simulated else float(np.mean(all_ages))
    scale = float((cfg.ga_range[1] - cfg.ga_range[0]) / 3.5) if simulated else 5.0
    train_range = (float(all_ages.min()), float(all_ages.max()))
    members, histories = [], []
    for m in range(cfg.members):
        net, hist = train_member(data, ages, cohort, cfg, m, dev, centre, scale, say)
        alone = Ensemble([net], cfg.arch, GRID, centre, scale, (0.0, 0.0), dev)
        mae = evaluate(alone, val.astype(np.float32), np.asarray(val_ages))["mae_weeks"]
        say(f"member {m + 1}: validation MAE {mae} weeks")
        members.append(net)
        histories.append(hist)
    model = Ensemble(members, cfg.arch, GRID, centre, scale, train_range, dev)
    inside = evaluate(model, val.astype(np.float32), np.asarray(val_ages))
    beyond = evaluate(model, outside.astype(np.float32), np.asarray(OUTSIDE_AGES))
    out = Path(out_dir)
    wpath = save_payload(
        out / WEIGHTS_NAME,
        ensemble_payload([m.cpu() for m in members], cfg.arch, GRID, centre, scale, train_range),
    )
    card = {
        "model": "earlybrain fetal brain age: deep ensemble of 3D CNN regressors "
        "(mean and variance per member)",
        "weights_file": WEIGHTS_NAME,
        "weights_size_bytes": wpath.stat().st_size,
        "weights_dtype": "float16 (loaded as float32)",
        "architecture": cfg.arch,
        "members": cfg.members,
        "parameters_per_member": int(sum(p.numel() for p in members[0].parameters())),
        "input": {
            "grid": {"shape": list(GRID.shape), "voxel_mm": GRID.voxel_mm},
            "frame": "atlas orientation (rotation of the registration's affine), the "
            "brain's own size, centred on its brain-mask centroid; masked, low-pass "
            "filtered to the grid, 99th percentile of the brain = 1",
        },
        "output": "age in weeks GA: mixture of the members' Gaussians",
        "age_scaling": {"centre": centre, "scale": scale},
        "training_range_weeks": list(train_range),
        "training_data": {
            "simulated": {
                "n": n_sim,
                "ga_weeks_range": list(cfg.ga_range),
                "voxel_mm": cfg.sim_voxel_mm,
                "subject_seeds": f"np.random.SeedSequence([seed, {SPLIT_CODES['train']}, i])",
            },
            "cohort": {
                "n": 0 if cohort is None else len(cohort[1]),
                "sources": list(cohort_sources),
            },
            "augmentation": asdict(cfg.augment),
        },
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("arch", "augment")},
        "loss": "squared error on the mean + Gaussian NLL of the variance (mean detached)",
        "optimiser": f"AdamW lr {cfg.learning_rate} (one-cycle), weight decay "
        f"{cfg.weight_decay}, gradient norm clipped at {cfg.max_grad_norm}",
        "validation": inside
        | {"subject_seeds": f"np.random.SeedSequence([seed, {SPLIT_CODES['val']}, i])"},
        "outside_training_range": beyond
        | {"subject_seeds": f"np.random.SeedSequence([seed, {SPLIT_CODES['outside']}, i])"},
        # the brain-age gap of healthy validation subjects: its SD scales the gap z-score
        "gap_sd_weeks": inside["error_sd_weeks"],
        "history": histories,
        "device": str(dev),
        "threads": threads,
        "time_s": {"data": round(t_data, 1), "total": round(time.time() - t_start, 1)},
        "software": software_versions(),
        "trained": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    }
    write_json_atomic(out / CARD_NAME, card)
    say(
        f"wrote {wpath}: validation MAE {inside['mae_weeks']} w (SD {inside['mean_sd_weeks']}), "
        f"outside the range MAE {beyond['mae_weeks']} w (SD {beyond['mean_sd_weeks']})"
    )
    return card


def cohort_data(
    volumes: Sequence[str], masks: Sequence[str], affines: Sequence[str], ages: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """A lab's reconstructions (with their registrations' affines) as network inputs."""
    from earlybrain.brainage.pipeline import load_subject_input

    if not len(volumes) == len(masks) == len(affines) == len(ages):
        raise ValueError("give one mask, affine and age per cohort volume")
    x = np.stack(
        [load_subject_input(v, m, a) for v, m, a in zip(volumes, masks, affines, strict=True)]
    )
    return x.astype(np.float16), np.asarray(ages, dtype=np.float64)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        allow_abbrev=False, prog="earlybrain train-brainage", description=__doc__.splitlines()[0]
    )
    d = TrainConfig()
    ap.add_argument("--out", required=True, help="folder for ensemble_weights.pt and card.json")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--members", type=int, default=d.members, help="ensemble members (>= 2)")
    ap.add_argument("--steps", type=int, default=d.steps, help="training steps per member")
    ap.add_argument("--subjects", type=int, default=d.n_train_subjects, help="simulated fetuses")
    ap.add_argument("--val-subjects", type=int, default=d.n_val_subjects)
    ap.add_argument("--no-simulated", action="store_true", help="train on the cohort only")
    ap.add_argument("--cohort-volumes", nargs="*", default=[], help="a lab's reconstructions")
    ap.add_argument("--cohort-masks", nargs="*", default=[], help="their brain masks")
    ap.add_argument("--cohort-affines", nargs="*", default=[], help="their atlas affines (.mat)")
    ap.add_argument("--cohort-ages", nargs="*", type=float, default=[], help="their ages, weeks")
    ap.add_argument("--device", default="auto", choices=DEVICES)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--workers", type=int, default=None, help="processes simulating volumes")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--cache", default=None, help="cache folder for simulated volumes")
    a = ap.parse_args(argv)
    if a.members < 2:
        ap.error("--members: an ensemble needs at least 2 members to measure disagreement")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cohort = (
        cohort_data(a.cohort_volumes, a.cohort_masks, a.cohort_affines, a.cohort_ages)
        if a.cohort_volumes
        else None
    )
    cfg = TrainConfig(
        seed=a.seed, members=a.members, steps=a.steps, n_train_subjects=a.subjects,
        n_val_subjects=a.val_subjects, batch_size=a.batch_size,
    )  # fmt: skip
    train_brainage(
        a.out,
        cfg,
        cohort,
        a.cohort_volumes,
        not a.no_simulated,
        a.device,
        a.threads,
        a.cache,
        workers=a.workers,
    )
    return 0
