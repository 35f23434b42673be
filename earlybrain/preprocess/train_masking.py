"""Train the fetal brain masking networks (localiser and segmenter) on simulated
clinical stacks.

Training data (`masking.training_data`): simulated pregnancies seen by clinical stacks
(whole-uterus fields of view, maternal organs, fetal body, HASTE and bSSFP, 1.5 and
3 T, motion, fold-over, any storage), with fetal brains from the simulator's phantoms
and from real anatomies (Fidon's atlas, its training weeks only), SynthStrip-style
random backgrounds in some scenes, twins in a few, stacks that miss the head, and the
older simulator's head-centred stacks. Nothing of `../shared/data/mial-sub01` is used:
those real clinical stacks are for validation only.

The localiser learns the brain on whole slices at 3 mm, the segmenter on crops around
the head (batches: `masking.training_batches`); both see inputs prepared exactly as
inference prepares them. Subjects come from seeds derived from the training seed, so
one seed gives the same data and, on one device, the same weights; the test suite's
subjects come from other seeds.

    earlybrain train-masking --out models/masking --seed 0
    snakemake train_masking --cores 2          (the same through the workflow)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from earlybrain.device import DEVICES, resolve_device
from earlybrain.io.atomic import write_json_atomic
from earlybrain.preprocess.masking.inference import (
    MASK_DEFINITION,
    WEIGHTS_NAME,
    MaskingGeometry,
    MaskingModel,
    load_model,
    predict_probability,
    save_weights,
)
from earlybrain.preprocess.masking.network import DEFAULT_ARCH, build_network
from earlybrain.preprocess.masking.postprocess import clean_mask
from earlybrain.preprocess.masking.slices import inplane_mm
from earlybrain.preprocess.masking.training_batches import (
    Batches,
    SliceBank,
    localiser_sample,
    segmenter_sample,
)
from earlybrain.preprocess.masking.training_data import (
    DATA_VERSION,
    FINE_CROP,
    SubjectMix,
    simulate_subjects,
)
from earlybrain.shared_data import FIDON_VALIDATION_WEEKS, fidon_split
from earlybrain.training import MaskingRecipe, derived_seeds, software_versions
from earlybrain.weights import CARD_NAME

log = logging.getLogger(__name__)

# seed-derivation codes: training and validation subjects never share a seed
SPLIT_CODES = {"train": 111, "val": 222}
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass(frozen=True)
class TrainConfig(MaskingRecipe):
    """Everything that determines the trained weights (recorded in the card)."""

    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    arch: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCH))
    geometry: MaskingGeometry = field(default_factory=MaskingGeometry)
    mix: SubjectMix = field(default_factory=SubjectMix)
    val_mix: SubjectMix = field(default_factory=lambda: SubjectMix(real_split="val"))
    init: str = ""  # weights to start from (fine-tuning); a stage with 0 steps keeps them
    # share of localiser slices shown already brain-extracted; 0.1 in a localiser-only
    # fine-tune found bare brains but lost clinical stacks (see the README's benchmarks)
    p_brain_only: float = 0.0


def subject_seeds(seed: int, n: int, split: str) -> list[int]:
    """Seeds of the simulated subjects of one split (train / val)."""
    return derived_seeds(seed, SPLIT_CODES[split], n)


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


def train_network(
    bank: SliceBank,
    sample: Callable,
    cfg: TrainConfig,
    steps: int,
    seed: int,
    dev: torch.device,
    workers: int,
    say: Callable[[str], None],
    name: str,
    init: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """One network trained for `steps` batches (AdamW, one-cycle learning rate), from
    scratch or from `init`; 0 steps returns `init` as it is."""
    torch.manual_seed(seed)
    net = build_network(cfg.arch).to(dev)
    if init is not None:
        net.load_state_dict(init.state_dict())
    if steps == 0:
        if init is None:
            raise ValueError(f"{name}: 0 steps needs weights to start from (init)")
        return net.eval(), []
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=steps)
    loader = torch.utils.data.DataLoader(
        Batches(bank, sample, steps, cfg.batch_size, seed),
        batch_size=None,
        shuffle=False,
        num_workers=max(0, workers - 1),
        prefetch_factor=4 if workers > 1 else None,
    )
    history, losses, t0 = [], [], time.time()
    net.train()
    for step, (x, y) in enumerate(loader, start=1):
        loss = dice_bce_loss(net(x.to(dev)), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 250 == 0 or step == steps:
            history.append({"step": step, "loss": float(np.mean(losses))})
            say(
                f"{name} step {step}/{steps}: loss {np.mean(losses):.4f} ({time.time() - t0:.0f} s)"
            )
            losses = []
    return net.eval(), history


def validate(
    model: MaskingModel,
    stacks: list[dict[str, Any]],
    thresholds: Sequence[float] | None = None,
    tta: bool = True,
) -> dict[str, Any]:
    """3D Dice of the full inference path (localise, segment, clean up) per stack.

    With several `thresholds`, each stack's probability is computed once and the
    threshold with the best mean Dice over the brain-bearing stacks is reported (and
    becomes the shipped threshold). A stack without a brain scores 1 when its mask is
    empty and 0 otherwise.
    """
    ths = list(thresholds) if thresholds else [model.threshold]
    rows: dict[float, list[dict[str, Any]]] = {t: [] for t in ths}
    for st in stacks:
        raw = st["raw"]
        prob, loc = predict_probability(raw["data"], raw["affine"], model, tta=tta)
        axis = inplane_mm(raw["affine"])[0]
        for t in ths:
            m = clean_mask(prob >= t, axis)
            info = raw["info"]
            rows[t].append(
                {
                    "seed": st["seed"],
                    "kind": info["kind"],
                    "source": info["source"],
                    "ga_weeks": round(float(info["ga_weeks"]), 2),
                    "brain": bool(raw["mask"].any()),
                    "found_head": loc.chosen is not None,
                    "dice": dice(m, raw["mask"]),
                }
            )

    def mean(rs: list[dict[str, Any]]) -> float:
        d = [r["dice"] for r in rs if r["brain"]]
        return float(np.mean(d)) if d else float("nan")

    means = {t: mean(r) for t, r in rows.items()}
    best = max(ths, key=lambda t: (means[t], -abs(t - 0.5)))
    per = rows[best]
    brain = [r for r in per if r["brain"]]
    d = np.array([r["dice"] for r in brain])

    def group(r: dict[str, Any]) -> str:
        return f"{r['kind']}, {'real anatomy' if r['source'].startswith('real') else 'phantom'}"

    by_kind = {}
    for kind in sorted({group(r) for r in brain}):
        dk = [r["dice"] for r in brain if group(r) == kind]
        by_kind[kind] = {
            "n": len(dk),
            "dice_mean": float(np.mean(dk)),
            "dice_min": float(np.min(dk)),
        }
    empty = [r for r in per if not r["brain"]]
    return {
        "threshold": best,
        "dice_mean": float(d.mean()),
        "dice_min": float(d.min()),
        "dice_median": float(np.median(d)),
        "by_kind": by_kind,
        "dice_mean_by_threshold": {str(t): round(v, 4) for t, v in means.items()},
        "n_stacks": len(brain),
        "stacks_without_brain": len(empty),
        "stacks_without_brain_left_empty": int(sum(r["dice"] == 1.0 for r in empty)),
        "per_stack": per,
    }


def lineage(start: MaskingModel | None) -> list[dict[str, Any]]:
    """The training stages the weights went through before this one (fine-tuning)."""
    if start is None:
        return []
    card = start.card
    keep = ("trained", "seed", "steps", "learning_rate")
    here = {k: card.get(k) for k in keep} | {
        "weights_sha256": start.sha256,
        "n_train_subjects": card.get("training_data", {}).get("n_train_subjects"),
        "n_val_subjects": card.get("training_data", {}).get("n_val_subjects"),
        "data_version": card.get("training_data", {}).get("data_version", 4),
        "validation_dice_mean": card.get("validation", {}).get("dice_mean"),
    }
    return [*card.get("lineage", []), here]


def train_masking(
    out_dir: str | os.PathLike[str],
    cfg: TrainConfig = TrainConfig(),
    device: str = "auto",
    workers: int = 2,
    threads: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Simulate, train both networks, validate; write weights + card.json; return the card."""
    say = report or log.info
    if cfg.n_train_subjects < 1 or cfg.n_val_subjects < 1:
        raise ValueError("need training and validation subjects")
    if min(cfg.localiser_steps, cfg.segmenter_steps) < (0 if cfg.init else 1):
        raise ValueError("each network needs a step (0 only when starting from --init)")
    t_start = time.time()
    torch.set_num_threads(max(1, threads))
    dev = resolve_device(device, allow_cpu_fallback=True)
    geo = cfg.geometry
    train_seeds = subject_seeds(cfg.seed, cfg.n_train_subjects, "train")
    val_seeds = subject_seeds(cfg.seed, cfg.n_val_subjects, "val")
    say(f"simulating {len(train_seeds)} training + {len(val_seeds)} validation subjects")
    train = simulate_subjects(train_seeds, cfg.mix, geo, False, workers, cache_dir)
    val = simulate_subjects(val_seeds, cfg.val_mix, geo, True, workers, cache_dir)
    t_sim = time.time() - t_start
    ctx = int(cfg.arch["context"])
    coarse = SliceBank([(s["coarse"], s["coarse_mask"]) for s in train], ctx)
    fine = SliceBank([(s["fine"], s["fine_mask"]) for s in train], ctx)
    say(f"{len(train)} training stacks: {len(coarse)} slices, {len(fine)} crops ({t_sim:.0f} s)")

    def loc_sample(x, y, rng):
        return localiser_sample(x, y, geo.canvas, rng, cfg.p_brain_only, geo.percentile)

    def seg_sample(x, y, rng):
        return segmenter_sample(x, y, geo.window, rng)

    start = load_model(cfg.init, "cpu") if cfg.init else None
    localiser, loc_hist = train_network(
        coarse, loc_sample, cfg, cfg.localiser_steps, cfg.seed, dev, workers, say, "localiser",
        start.localiser if start else None,
    )  # fmt: skip
    segmenter, seg_hist = train_network(
        fine, seg_sample, cfg, cfg.segmenter_steps, cfg.seed + 1, dev, workers, say, "segmenter",
        start.segmenter if start else None,
    )  # fmt: skip
    model = MaskingModel(localiser, segmenter, cfg.arch, cfg.arch, geo, 0.5, dev)
    final = validate(model, val, thresholds=THRESHOLDS)
    model.threshold = final["threshold"]
    out = Path(out_dir)
    model.localiser, model.segmenter = localiser.cpu(), segmenter.cpu()
    weights = save_weights(out / WEIGHTS_NAME, model)
    card = {
        "model": "earlybrain fetal brain masking: localise (2D U-Net on whole slices at 3 mm), "
        "then segment (2D U-Net on a crop around the head at the stack's resolution)",
        "mask_definition": MASK_DEFINITION,
        "weights_file": WEIGHTS_NAME,
        "weights_size_bytes": weights.stat().st_size,
        "architecture": cfg.arch,
        "parameters_per_network": int(sum(p.numel() for p in localiser.parameters())),
        "input": {
            "geometry": asdict(geo),
            "slices": "along the thickest voxel axis; one neighbour on each side as channels",
            "normalisation": f"divide by the {geo.percentile}th percentile of positive voxels "
            "(localiser: the whole stack; segmenter: its crop), clip to [0, 2]",
            "threshold": final["threshold"],
            "threshold_choice": "best mean Dice on the simulated validation stacks among "
            f"{list(THRESHOLDS)}",
            "postprocessing": "slice consistency, largest 3D component, unimodal area profile, "
            "hole filling",
        },
        "training_data": {
            "source": "earlybrain.simulate.uterus + simulate.clinical: simulated pregnancies "
            "(maternal abdomen, uterus, placenta, amniotic fluid, fetal body) seen by clinical "
            "stacks; earlybrain.simulate.acquisition for head-centred stacks",
            "real_anatomy": "fidon-sb-atlas (CC0), training time points only: "
            + ", ".join(fidon_split("train")),
            "validation_real_anatomy": f"fidon-sb-atlas weeks {list(FIDON_VALIDATION_WEEKS)} "
            "(held out: neighbouring weeks of one atlas are near copies)",
            "not_used": "mial-sub01 (real clinical stacks): validation only, never trained on "
            "and no threshold chosen on it",
            "mix": asdict(cfg.mix),
            "n_train_subjects": cfg.n_train_subjects,
            "n_val_subjects": cfg.n_val_subjects,
            "n_train_stacks": len(train),
            "n_train_slices": len(coarse),
            "fine_crop_px": FINE_CROP,
            "data_version": DATA_VERSION,
            "subject_seeds": "np.random.SeedSequence([seed, 111 (train) | 222 (val), i])",
        },
        "seed": cfg.seed,
        "steps": {"localiser": cfg.localiser_steps, "segmenter": cfg.segmenter_steps},
        "lineage": lineage(start),
        "batch_size": cfg.batch_size,
        "optimiser": f"AdamW lr {cfg.learning_rate} (one-cycle), weight decay {cfg.weight_decay}",
        "learning_rate": cfg.learning_rate,
        "init": cfg.init,
        "loss": "BCE + soft Dice",
        "validation": final | {"test_time_flips": True, "data": "simulated (held-out seeds)"},
        "history": {"localiser": loc_hist, "segmenter": seg_hist},
        "device": str(dev),
        "threads": threads,
        "time_s": {"simulation": round(t_sim, 1), "total": round(time.time() - t_start, 1)},
        "software": software_versions(),
        "trained": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    }
    write_json_atomic(out / CARD_NAME, card)
    say(f"wrote {weights} and {out / CARD_NAME}: validation Dice {final['dice_mean']:.4f}")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    d = TrainConfig()
    ap = argparse.ArgumentParser(
        allow_abbrev=False, prog="earlybrain train-masking", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--out", required=True, help="folder for the weights and card.json")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument(
        "--subjects", type=int, default=d.n_train_subjects, help="simulated training subjects"
    )
    ap.add_argument("--val-subjects", type=int, default=d.n_val_subjects)
    ap.add_argument("--localiser-steps", type=int, default=d.localiser_steps)
    ap.add_argument("--segmenter-steps", type=int, default=d.segmenter_steps)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.learning_rate, help="peak learning rate")
    ap.add_argument("--init", default="", help="start from these weights (fine-tuning)")
    ap.add_argument(
        "--p-brain-only", type=float, default=d.p_brain_only,
        help="share of localiser slices shown brain-extracted (zero outside the brain)",
    )  # fmt: skip
    ap.add_argument("--device", default="auto", choices=DEVICES)
    ap.add_argument(
        "--workers", type=int, default=2, help="processes simulating subjects and batches"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--cache", default=None, help="keep simulated subjects here for re-runs")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig(
        seed=args.seed,
        n_train_subjects=args.subjects,
        n_val_subjects=args.val_subjects,
        localiser_steps=args.localiser_steps,
        segmenter_steps=args.segmenter_steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        init=args.init,
        p_brain_only=args.p_brain_only,
    )
    train_masking(args.out, cfg, args.device, args.workers, args.threads, args.cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
