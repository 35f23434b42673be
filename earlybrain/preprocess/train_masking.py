"""Train the fetal brain masking network on simulated, domain-randomised stacks.

Training data come from the simulator (`earlybrain.simulate`): fetuses of 21-38
weeks, each acquired as thick-slice stacks with a randomised protocol (in-plane
resolution, slice thickness, field of view, noise, bias, planning error, motion,
signal drop-out) and wider per-tissue contrast than the simulator's own per-subject
variation. On top, every slice drawn for training is randomised again
(`masking.augment`: orientation, scale, contrast curves, bias, noise, blur,
surrounding tissue, skull-stripped inputs). Subjects come from seeds derived from
the training seed, so one seed gives the same data and, on one device, the same
weights; the test subjects used by the test suite come from other seeds.

    earlybrain train-masking --out models/masking --seed 0 --epochs 20
    snakemake train_masking --cores 2          (the same through the workflow)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import os
import pickle
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from earlybrain.device import resolve_device
from earlybrain.io.atomic import write_bytes_atomic, write_json_atomic
from earlybrain.preprocess.masking.augment import AugmentConfig, augment_batch
from earlybrain.preprocess.masking.inference import (
    WEIGHTS_NAME,
    MaskingModel,
    predict_probability,
    save_weights,
)
from earlybrain.preprocess.masking.network import DEFAULT_ARCH, build_network
from earlybrain.preprocess.masking.postprocess import clean_mask
from earlybrain.preprocess.masking.slices import normalise_stack, slice_axis, to_slices
from earlybrain.simulate.acquisition import StackProtocol, simulate_stacks
from earlybrain.simulate.labels import FLUID
from earlybrain.simulate.phantom import make_phantom
from earlybrain.training import derived_seeds, software_versions
from earlybrain.weights import CARD_NAME

log = logging.getLogger(__name__)

# eCSF, ventricles, amniotic fluid: the same T2 of water in every scan
WATER_LABELS = (1, 6, 7, FLUID)
# changes whenever simulate_subject changes, so a cache never serves stale subjects
DATA_VERSION = 3

# seed-derivation codes: training and validation subjects never share a seed
SPLIT_CODES = {"train": 101, "val": 202}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (recorded in the card)."""

    seed: int = 0
    epochs: int = 20
    n_train_subjects: int = 40
    n_val_subjects: int = 6
    ga_range: tuple[float, float] = (21.0, 38.0)
    # ages drawn as lo + (hi - lo) * u**ga_power: >1 draws more young (small) brains
    ga_power: float = 1.2
    n_stacks: int = 3
    truth_voxels_mm: tuple[float, ...] = (1.2, 1.6)
    batch_size: int = 16
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    target_mm: float = 1.5
    percentile: float = 99.0
    arch: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCH))
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def subject_seeds(seed: int, n: int, split: str) -> list[int]:
    """Seeds of the simulated subjects of one split (train / val)."""
    return derived_seeds(seed, SPLIT_CODES[split], n)


def random_protocol(rng: np.random.Generator) -> tuple[StackProtocol, str]:
    """A stack protocol and motion level drawn over the range seen in clinical scans."""
    proto = StackProtocol(
        inplane_mm=float(rng.uniform(1.1, 2.2)),
        thickness_mm=float(rng.uniform(2.5, 5.0)),
        fov_margin_mm=float(rng.uniform(8.0, 60.0)),
        interleave=int(rng.choice([1, 2, 3])),
        noise_sigma=float(rng.uniform(4.0, 45.0)),
        bias_amplitude=float(rng.uniform(0.1, 0.45)),
        planning_error_deg=float(rng.uniform(3.0, 15.0)),
        dropout_fraction=float(rng.choice([0.0, 0.0, 0.05, 0.12])),
    )
    motion = str(rng.choice(["none", "moderate", "severe"], p=[0.3, 0.45, 0.25]))
    return proto, motion


def simulate_subject(subject_seed: int, cfg: TrainConfig, keep_raw: bool) -> list[dict[str, Any]]:
    """Simulate one randomised fetus and return its stacks as training slices.

    Each item: `slices` (n, h, w) float16 normalised on the network's in-plane grid,
    `masks` (n, h, w) bool, and with `keep_raw` the stack itself (data, affine, mask)
    for validating the whole inference path.
    """
    rng = np.random.default_rng(subject_seed)
    lo, hi = cfg.ga_range
    ga = float(lo + (hi - lo) * rng.uniform() ** cfg.ga_power)
    voxel = float(rng.choice(cfg.truth_voxels_mm))
    phantom = make_phantom(ga, int(rng.integers(2**31)), kind="fetal", voxel_mm=voxel)
    # contrast beyond the simulator's +-5 %: brain tissues +-25 %, skull, scalp and body
    # x0.5-1.5; water (CSF, ventricles, amniotic fluid) stays water: one shared factor
    water = float(rng.uniform(0.85, 1.15))
    factors = {}
    for lab, v in phantom.traits.intensity.items():
        if lab in WATER_LABELS:
            factors[lab] = v * water
        elif lab <= 12:
            factors[lab] = v * float(rng.uniform(0.75, 1.25))
        else:
            factors[lab] = v * float(rng.uniform(0.5, 1.5))
    phantom.traits = replace(phantom.traits, intensity=factors)
    proto, motion = random_protocol(rng)
    session = simulate_stacks(phantom, cfg.n_stacks, motion, int(rng.integers(2**31)), proto)
    out = []
    for st in session.stacks:
        sl, _ = to_slices(st.data, st.affine, cfg.target_mm)
        ms, _ = to_slices(st.mask.astype(np.float32), st.affine, cfg.target_mm)
        item: dict[str, Any] = {
            "slices": normalise_stack(sl, cfg.percentile).astype(np.float16),
            "masks": ms >= 0.5,
            "ga": ga,
            "seed": subject_seed,
        }
        if keep_raw:
            item |= {"data": st.data, "affine": st.affine, "mask": st.mask}
        out.append(item)
    return out


def _simulate_one(args: tuple[int, TrainConfig, bool]) -> list[dict[str, Any]]:
    return simulate_subject(*args)


def _cache_key(cfg: TrainConfig) -> str:
    """What the simulated data depend on (not the training hyper-parameters)."""
    parts = (
        DATA_VERSION,
        cfg.ga_range,
        cfg.ga_power,
        cfg.n_stacks,
        cfg.truth_voxels_mm,
        cfg.target_mm,
    )
    key = f"{parts}|{cfg.percentile}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def simulate_subjects(
    seeds: Sequence[int],
    cfg: TrainConfig,
    keep_raw: bool,
    workers: int,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """All stacks of the given subjects, in seed order (parallel over subjects).

    With `cache_dir`, simulated subjects are kept there (a local pickle cache for
    repeated training runs; the same seed gives the same subject anyway).
    """
    cache = Path(cache_dir) if cache_dir else None
    key = _cache_key(cfg)
    results: dict[int, list[dict[str, Any]]] = {}
    if cache:
        for s in seeds:
            f = cache / f"{key}_{s}_{int(keep_raw)}.pkl"
            if f.is_file():
                results[s] = pickle.loads(f.read_bytes())
    jobs = [(s, cfg, keep_raw) for s in seeds if s not in results]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as ex:
            done = list(ex.map(_simulate_one, jobs))
    else:
        done = [_simulate_one(j) for j in jobs]
    for (s, _, _), res in zip(jobs, done, strict=True):
        results[s] = res
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(cache / f"{key}_{s}_{int(keep_raw)}.pkl", pickle.dumps(res))
    return [stack for s in seeds for stack in results[s]]


class SliceBank:
    """Every slice of every training stack, drawn with its neighbours and masks."""

    def __init__(self, stacks: list[dict[str, Any]], context: int) -> None:
        self.stacks = stacks
        self.context = context
        self.index = [(s, k) for s, st in enumerate(stacks) for k in range(st["slices"].shape[0])]

    def __len__(self) -> int:
        return len(self.index)

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, k = self.index[i]
        st = self.stacks[s]
        n = st["slices"].shape[0]
        idx = np.clip(np.arange(k - self.context, k + self.context + 1), 0, n - 1)
        return st["slices"][idx].astype(np.float32), st["masks"][idx]


class EpochBatches(torch.utils.data.Dataset):
    """The augmented batches of one epoch; batch i depends only on (seed, epoch, i).

    Augmentation runs in DataLoader worker processes beside the training process, and
    because every batch has its own seed the result does not depend on how many
    workers there are.
    """

    def __init__(
        self, bank: SliceBank, cfg: AugmentConfig, batch_size: int, seed: int, epoch: int
    ) -> None:
        self.bank, self.cfg, self.batch_size = bank, cfg, batch_size
        self.seed, self.epoch = seed, epoch
        rng = np.random.default_rng(np.random.SeedSequence([seed, 303, epoch]))
        self.order = rng.permutation(len(bank))

    def __len__(self) -> int:
        return len(self.bank) // self.batch_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 404, self.epoch, i]))
        ids = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        return augment_batch([self.bank.raw(int(j)) for j in ids], self.cfg, rng)


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE for every pixel plus soft Dice over the batch (brains are a small fraction)."""
    bce = functional.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    dice = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return bce + dice


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    den = a.sum() + b.sum()
    return float(2 * (a & b).sum() / den) if den else 1.0


THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def validate(
    model: MaskingModel,
    stacks: list[dict[str, Any]],
    tta: bool = False,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """3D Dice of the full inference path (resampling, network, clean-up) per stack.

    With several `thresholds`, the probability maps are computed once and the one with
    the best mean Dice is reported (and becomes the shipped threshold).
    """
    ths = list(thresholds) if thresholds else [model.threshold]
    per: dict[float, list[dict[str, Any]]] = {t: [] for t in ths}
    for st in stacks:
        prob = predict_probability(st["data"], st["affine"], model, tta=tta)
        axis = slice_axis(st["affine"])
        for t in ths:
            d = dice(clean_mask(prob >= t, axis), st["mask"])
            per[t].append({"seed": st["seed"], "ga_weeks": round(st["ga"], 2), "dice": d})
    means = {t: float(np.mean([r["dice"] for r in rows])) for t, rows in per.items()}
    best = max(ths, key=lambda t: (means[t], -abs(t - 0.5)))
    d = np.array([r["dice"] for r in per[best]])
    return {
        "threshold": best,
        "dice_mean": float(d.mean()),
        "dice_min": float(d.min()),
        "dice_median": float(np.median(d)),
        "dice_mean_by_threshold": {str(t): round(v, 4) for t, v in means.items()},
        "n_stacks": len(d),
        "per_stack": per[best],
    }


def train_masking(
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    epochs: int = 20,
    n_train_subjects: int = 40,
    n_val_subjects: int = 6,
    device: str = "auto",
    workers: int = 2,
    threads: int = 1,
    batch_size: int = 16,
    cache_dir: str | os.PathLike[str] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate, train, validate; write weights + card.json into `out_dir`; return the card."""
    say = report or log.info
    if epochs < 1 or n_train_subjects < 1 or n_val_subjects < 1:
        raise ValueError("need at least one epoch, one training and one validation subject")
    t_start = time.time()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    dev = resolve_device(device, allow_cpu_fallback=True)
    cfg = TrainConfig(
        seed=seed,
        epochs=epochs,
        n_train_subjects=n_train_subjects,
        n_val_subjects=n_val_subjects,
        batch_size=batch_size,
    )
    if cfg.augment.patch != int(cfg.arch["patch"]):
        raise ValueError("the training patch must equal the inference window (arch patch)")
    train_seeds = subject_seeds(seed, n_train_subjects, "train")
    val_seeds = subject_seeds(seed, n_val_subjects, "val")
    say(f"simulating {n_train_subjects} training + {n_val_subjects} validation subjects")
    train_stacks = simulate_subjects(train_seeds, cfg, False, workers, cache_dir)
    val_stacks = simulate_subjects(val_seeds, cfg, True, workers, cache_dir)
    t_sim = time.time() - t_start
    bank = SliceBank(train_stacks, int(cfg.arch["context"]))
    say(f"{len(train_stacks)} stacks, {len(bank)} training slices ({t_sim:.0f} s)")

    net = build_network(cfg.arch).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(bank) // cfg.batch_size
    total = steps_per_epoch * epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=total)
    model = MaskingModel(net, cfg.arch, cfg.target_mm, cfg.percentile, 0.5, dev)
    history = []
    for epoch in range(epochs):
        net.train()
        batches = EpochBatches(bank, cfg.augment, cfg.batch_size, seed, epoch)
        loader = torch.utils.data.DataLoader(
            batches, batch_size=None, shuffle=False, num_workers=max(0, workers - 1)
        )
        losses = []
        for x, y in loader:
            loss = dice_bce_loss(net(x.to(dev)), y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        net.eval()
        val = validate(model, val_stacks)
        history.append(
            {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice_mean": val["dice_mean"]}
        )
        say(
            f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, validation Dice "
            f"{val['dice_mean']:.4f} (min {val['dice_min']:.4f}), {time.time() - t_start:.0f} s"
        )
    net.eval()
    final = validate(model, val_stacks, tta=True, thresholds=THRESHOLDS)
    out = Path(out_dir)
    weights = save_weights(
        out / WEIGHTS_NAME, net.cpu(), cfg.arch, cfg.target_mm, cfg.percentile, final["threshold"]
    )
    card = {
        "model": "earlybrain fetal brain masking: 2D U-Net on a slice and its neighbours",
        "weights_file": WEIGHTS_NAME,
        "weights_size_bytes": weights.stat().st_size,
        "architecture": cfg.arch,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "input": {
            "slices": "along the thickest voxel axis; neighbours as channels",
            "inplane_mm": cfg.target_mm,
            "normalisation": f"divide by the {cfg.percentile}th percentile of positive voxels, "
            "clip to [0, 2]",
            "threshold": final["threshold"],
            "threshold_choice": f"best validation mean Dice among {list(THRESHOLDS)}",
            "postprocessing": "slice consistency, largest 3D component, unimodal area "
            "profile, hole filling; network applied in windows of the training patch",
        },
        "training_data": {
            "source": "earlybrain.simulate: make_phantom + simulate_stacks (T2w thick-slice "
            "stacks with amniotic fluid, fetal body and maternal tissue)",
            "ga_weeks_range": list(cfg.ga_range),
            "ga_weeks_draw": f"lo + (hi - lo) * u**{cfg.ga_power}, u uniform in [0, 1)",
            "n_train_subjects": n_train_subjects,
            "n_val_subjects": n_val_subjects,
            "stacks_per_subject": cfg.n_stacks,
            "n_train_stacks": len(train_stacks),
            "n_train_slices": len(bank),
            "truth_voxels_mm": list(cfg.truth_voxels_mm),
            "subject_seeds": "np.random.SeedSequence([seed, 101 (train) | 202 (val), i])",
            "protocol_randomisation": "in-plane 1.1-2.2 mm, thickness 2.5-5 mm, FOV margin "
            "8-60 mm, interleave 1-3, Rician noise sigma 4-45 (fluid ~1000), bias 0.1-0.45, "
            "planning error 3-15 deg, motion none/moderate/severe, slice drop-out 0-12 %",
            "contrast_randomisation": "per-tissue intensity x0.75-1.25 (brain tissue), "
            "x0.5-1.5 (skull, scalp, fetal body), one shared x0.85-1.15 for water (CSF, "
            "ventricles, amniotic fluid)",
            "augmentation": asdict(cfg.augment),
        },
        "seed": seed,
        "epochs": epochs,
        "steps": total,
        "batch_size": cfg.batch_size,
        "optimiser": f"AdamW lr {cfg.learning_rate} (one-cycle), weight decay {cfg.weight_decay}",
        "loss": "BCE + soft Dice",
        "validation": final | {"test_time_flips": True},
        "history": history,
        "device": str(dev),
        "threads": threads,
        "time_s": {"simulation": round(t_sim, 1), "total": round(time.time() - t_start, 1)},
        "software": software_versions(),
        "trained": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    }
    write_json_atomic(out / CARD_NAME, card)
    dice_mean = card["validation"]["dice_mean"]
    say(f"wrote {weights} and {out / CARD_NAME}: validation Dice {dice_mean:.4f}")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="earlybrain train-masking", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", required=True, help="folder for the weights and card.json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--subjects", type=int, default=40, help="simulated training subjects")
    ap.add_argument("--val-subjects", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--workers", type=int, default=2, help="processes simulating subjects")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--cache", default=None, help="keep simulated subjects here for re-runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train_masking(
        args.out,
        seed=args.seed,
        epochs=args.epochs,
        n_train_subjects=args.subjects,
        n_val_subjects=args.val_subjects,
        device=args.device,
        workers=args.workers,
        threads=args.threads,
        batch_size=args.batch_size,
        cache_dir=args.cache,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
