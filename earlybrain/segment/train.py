"""Train the tissue segmentation network on synthetic images drawn from label maps.

Label maps: simulated fetal heads of 21-38 weeks and infant heads of 0-24 months
(`earlybrain.simulate`, seeds derived from the training seed), the atlas templates'
label maps, and optionally a lab's own label maps (fine-tuning, usually starting from
the shipped weights). Every training sample is a random patch turned into an image
with random intensities per label (`earlybrain.segment.synth`), so the network does
not learn one contrast. Validation uses other seeds rendered with the simulator's own
T2w contrast, then a final check with a contrast no training sample was drawn from,
and on infants rendered with the simulator's T1w and T2w across the first two years
(myelination inverts their grey/white contrast). The subjects, patches and validation
volumes a run sees come from `earlybrain.segment.train_data`; this module is the
optimisation, the validation and the card.

    earlybrain train-segmentation --out models/segmentation --seed 0
    snakemake train_segmentation --cores 2          (the same through the workflow)
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss

from earlybrain import shared_data
from earlybrain.anatomy.labels import TISSUES
from earlybrain.device import DEVICES, resolve_device
from earlybrain.io.atomic import write_json_atomic
from earlybrain.segment.evaluate import RealVolume, fidon_volumes, tissue_dice
from earlybrain.segment.inference import (
    WEIGHTS_NAME,
    SegmentationModel,
    load_model,
    predict_tissues,
    save_weights,
)
from earlybrain.segment.labelmaps import (
    DEFAULT_SCHEME,
    SCHEMES,
    fidon_maps,
    file_map,
    phantom_maps,
)
from earlybrain.segment.network import build_network
from earlybrain.segment.postprocess import clean_labels, split_hemispheres
from earlybrain.segment.train_data import (
    VAL_AGES,
    VAL_INFANTS,
    VAL_VENTRICLES,
    EpochBatches,
    PatchSampler,
    TrainConfig,
    atlas_maps,
    infant_validation_volumes,
    subject_ages,
    subject_seeds,
    subject_ventricles,
    validation_volumes,
)
from earlybrain.training import software_versions
from earlybrain.weights import CARD_NAME

log = logging.getLogger(__name__)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a loader worker shares the cores with the training step


def validate(model: SegmentationModel, volumes: list, tta: bool = False) -> dict[str, Any]:
    """Dice per tissue (mean over subjects) and the mean over tissues."""
    per_subject = []
    for v in volumes:
        tissues = predict_tissues(v.image, v.affine, model, tta)
        labels = clean_labels(split_hemispheres(tissues, v.affine, 0.0))
        per_subject.append(tissue_dice(labels, v.labels))
    per_tissue = {t: float(np.mean([d[t] for d in per_subject])) for t in TISSUES.values()}
    return {
        "dice_per_tissue": {k: round(v, 4) for k, v in per_tissue.items()},
        "dice_mean": round(float(np.mean(list(per_tissue.values()))), 4),
        "subjects": [
            {
                "age_weeks": v.age_weeks,
                **({"time_point": v.name} if isinstance(v, RealVolume) else {"seed": v.seed}),
                "dice_mean": round(float(np.mean(list(d.values()))), 4),
            }
            for v, d in zip(volumes, per_subject, strict=True)
        ],
    }


def _train_epochs(
    model: SegmentationModel,
    sampler: PatchSampler,
    cfg: TrainConfig,
    val_volumes: list,
    real_val: list,
    workers: int,
    say: Callable[[str], None],
    t_start: float,
) -> list[dict[str, Any]]:
    """The optimisation: `cfg.epochs` epochs of `model.net` on synthetic batches (AdamW,
    one-cycle learning rate), validated after each; returns the per-epoch history."""
    net, dev, epochs = model.net, model.device, cfg.epochs
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total = epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=total)
    # Dice over the batch, no numerator smoothing: a tissue absent from every patch of a
    # batch adds a constant, not a push to predict it nowhere (per-patch Dice with
    # smoothing taught the network to never predict the small tissues)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=0.0)
    history = []
    for epoch in range(epochs):
        net.train()
        losses = []
        loader = torch.utils.data.DataLoader(
            EpochBatches(sampler, cfg, epoch),
            batch_size=None,
            num_workers=max(0, workers - 1),
            worker_init_fn=_one_thread,
        )
        for x, y in loader:
            loss = loss_fn(net(x.to(dev)), y[:, None].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        net.eval()
        val = validate(model, val_volumes)
        real = validate(model, real_val) if real_val else {"dice_mean": float("nan")}
        history.append(
            {
                "epoch": epoch + 1,
                "loss": round(float(np.mean(losses)), 4),
                "val_dice_mean": val["dice_mean"],
                "val_real_dice_mean": real["dice_mean"],
            }
        )
        say(
            f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, validation Dice "
            f"{val['dice_mean']:.4f} {val['dice_per_tissue']}, real images "
            f"{real['dice_mean']:.4f} {real.get('dice_per_tissue')}, {time.time() - t_start:.0f} s"
        )
    return history


def train_segmentation(
    out_dir: str | os.PathLike[str],
    seed: int = TrainConfig.seed,
    epochs: int = TrainConfig.epochs,
    steps_per_epoch: int = TrainConfig.steps_per_epoch,
    n_train_subjects: int = TrainConfig.n_train_subjects,
    n_val_subjects: int = TrainConfig.n_val_subjects,
    n_infant_subjects: int = TrainConfig.n_infant_subjects,
    atlas_manifest: str | os.PathLike[str] | None = None,
    label_maps: Sequence[str | os.PathLike[str]] = (),
    label_scheme: str = DEFAULT_SCHEME,
    real_anatomy: bool = False,
    p_real: float = TrainConfig.p_real,
    init_weights: str | os.PathLike[str] | None = None,
    p_t2_prior: float | None = None,
    device: str = "auto",
    workers: int = 2,
    threads: int = 2,
    cache_dir: str | os.PathLike[str] | None = None,
    report: Callable[[str], None] | None = None,
    batch_size: int = TrainConfig.batch_size,
) -> dict[str, Any]:
    """Simulate label maps, train, validate; write weights + card.json into `out_dir`."""
    say = report or log.info
    if epochs < 1 or steps_per_epoch < 1 or n_val_subjects < 1:
        raise ValueError("need at least one epoch, one step and one validation subject")
    t_start = time.time()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    dev = resolve_device(device, allow_cpu_fallback=True)
    cfg = TrainConfig(
        seed=seed,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        n_train_subjects=n_train_subjects,
        n_val_subjects=n_val_subjects,
        n_infant_subjects=n_infant_subjects,
        batch_size=batch_size,
        p_real=p_real,
    )
    if p_t2_prior is not None:
        cfg = replace(cfg, synth=replace(cfg.synth, p_t2_prior=float(p_t2_prior)))
    if cfg.synth.patch != int(cfg.arch["patch"]):
        raise ValueError("the training patch must equal the inference window (arch patch)")
    train_seeds = subject_seeds(seed, n_train_subjects, "train")
    ages = subject_ages(seed, n_train_subjects, cfg.ga_range)
    ventricles = subject_ventricles(cfg, n_train_subjects)
    infant_seeds = subject_seeds(seed, cfg.n_infant_subjects, "infant_train")
    infant_months = subject_ages(seed + 1, cfg.n_infant_subjects, cfg.infant_months)
    say(
        f"simulating {n_train_subjects} fetal and {cfg.n_infant_subjects} infant label maps "
        f"at {cfg.target_mm} mm"
    )
    pools = {
        "simulated": phantom_maps(ages, train_seeds, cfg.target_mm, workers, cache_dir, ventricles),
        "infant": phantom_maps(
            infant_months, infant_seeds, cfg.target_mm, workers, cache_dir, kind="infant"
        ),
        "atlas": atlas_maps(atlas_manifest, cfg.target_mm) if atlas_manifest else [],
        "extra": [file_map(p, cfg.target_mm, label_scheme) for p in label_maps],
    }
    real_names, pools["real"] = fidon_maps("train", cfg.target_mm) if real_anatomy else ([], [])
    p_infant = cfg.p_infant if cfg.n_infant_subjects else 0.0
    weights = {
        "simulated": 1.0 - cfg.p_atlas - p_infant,
        "infant": p_infant,
        "atlas": cfg.p_atlas,
        "extra": 0.0,
    }
    for pool, share in (("real", cfg.p_real), ("extra", cfg.p_extra)):
        if pools[pool]:
            weights = {k: v * (1 - share) for k, v in weights.items()} | {pool: share}
        else:
            weights[pool] = 0.0
    sampler = PatchSampler(pools, weights, cfg.crop)
    val_volumes = validation_volumes(seed, n_val_subjects, cfg.target_mm)
    # real images held out by weeks: reported every epoch, never used to pick anything
    real_val = fidon_volumes("val") if shared_data.dataset(shared_data.FIDON) else []
    t_data = time.time() - t_start
    say(f"label maps: {', '.join(f'{k} {len(v)}' for k, v in pools.items())} ({t_data:.0f} s)")

    init_card: dict[str, Any] = {}
    if init_weights:
        start = load_model(init_weights, dev)
        net, arch, init_card = start.net.train(), start.arch, start.card
        if start.target_mm != cfg.target_mm or int(arch["patch"]) != cfg.synth.patch:
            raise ValueError(f"{init_weights}: trained on another grid or patch; cannot fine-tune")
    else:
        net, arch = build_network(cfg.arch).to(dev), cfg.arch
    total = epochs * steps_per_epoch
    model = SegmentationModel(net, arch, cfg.target_mm, cfg.percentile, dev)
    history = _train_epochs(model, sampler, cfg, val_volumes, real_val, workers, say, t_start)
    net.eval()
    final = validate(model, val_volumes, tta=True)
    unseen = validate(
        model, validation_volumes(seed, n_val_subjects, cfg.target_mm, True), tta=True
    )
    enlarged = validate(
        model,
        validation_volumes(seed, n_val_subjects, cfg.target_mm, ventricle_factor=VAL_VENTRICLES),
        tta=True,
    )
    real_final = (
        validate(model, real_val, tta=True)
        if real_val
        else {"dice_mean": float("nan"), "note": f"{shared_data.FIDON} not found"}
    )
    # the training weeks' real images: their labels were trained on, never their images
    real_train = validate(model, fidon_volumes("train"), tta=True) if real_anatomy else None
    n_val_infants = min(len(VAL_INFANTS), n_val_subjects) if cfg.n_infant_subjects else 0
    infant = (
        validate(model, infant_validation_volumes(seed, n_val_infants, cfg.target_mm), tta=True)
        if n_val_infants
        else {"dice_mean": float("nan"), "note": "no infant label maps in training"}
    )
    out = Path(out_dir)
    wpath = save_weights(out / WEIGHTS_NAME, net.cpu(), arch, cfg.target_mm, cfg.percentile)
    card = {
        "model": f"earlybrain {'fetal and infant' if p_infant else 'fetal'} tissue "
        "segmentation: 3D U-Net, background + 7 FeTA tissues",
        "weights_file": WEIGHTS_NAME,
        "weights_size_bytes": wpath.stat().st_size,
        "weights_dtype": "float16 (loaded as float32)",
        "architecture": arch,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "classes": {"0": "background", **{str(k): v for k, v in TISSUES.items()}},
        "input": {
            "space": "atlas space (a registered reconstruction), any voxel size",
            "working_grid_mm": cfg.target_mm,
            "normalisation": f"divide by the {cfg.percentile}th percentile of positive voxels, "
            "clip to [0, 2]",
            "inference": "sliding windows of the training patch, Gaussian blending; optional "
            "left-right mirror averaging (test-time augmentation)",
            "postprocessing": "hemispheres split at the atlas midsagittal plane, largest "
            "component per label (others kept when >= 20 % of it), holes filled",
        },
        "training_data": {
            "label_maps": {k: len(v) for k, v in pools.items()},
            "sampling_weights": weights,
            "simulated": {
                "source": "earlybrain.simulate.make_phantom (head with skull, scalp, body, fluid)",
                "ga_weeks_range": list(cfg.ga_range),
                "seeds": train_seeds,
                "ages_weeks": [round(a, 2) for a in ages],
                "ventricle_factors": ventricles,
                "subject_seeds": "np.random.SeedSequence([seed, 303, i])",
            },
            "infant": {
                "source": "earlybrain.simulate.make_phantom(kind='infant')",
                "months_range": list(cfg.infant_months),
                "seeds": infant_seeds,
                "ages_months": [round(a, 2) for a in infant_months],
                "subject_seeds": "np.random.SeedSequence([seed, 313, i])",
            },
            "atlas": str(atlas_manifest) if atlas_manifest else None,
            "extra_label_maps": [str(p) for p in label_maps],
            "real_anatomy": {
                "source": f"{shared_data.FIDON} parcellations (Fidon et al. 2021, CC0), "
                "Fidon labels mapped to the 7 tissues (corpus callosum -> WM)",
                "time_points": real_names,
                "split": f"training: all weeks but {list(shared_data.FIDON_VALIDATION_WEEKS)}, "
                "which are held out for validation (a contiguous block: neighbouring weeks "
                "of one atlas are near copies)",
            },
            "label_scheme": label_scheme,
            "synthesis": asdict(cfg.synth),
            "crop": cfg.crop,
        },
        "init_weights": str(init_weights) if init_weights else None,
        "init_card": init_card or None,
        "seed": seed,
        "epochs": epochs,
        "steps": total,
        "batch_size": cfg.batch_size,
        "optimiser": f"AdamW lr {cfg.learning_rate} (one-cycle), weight decay {cfg.weight_decay}",
        "loss": "soft Dice (over the batch) + cross-entropy",
        "validation": final
        | {
            "contrast": "simulator fetal T2w",
            "ages_weeks": list(VAL_AGES[:n_val_subjects]),
            "subject_seeds": "np.random.SeedSequence([seed, 404, i])",
            "test_time_mirror": True,
        },
        "validation_unseen_contrast": unseen
        | {"contrast": "earlybrain.segment.evaluate.UNSEEN_CONTRAST"},
        "validation_real": real_final
        | {
            "data": f"{shared_data.FIDON} srr.nii.gz (real T2w, masked) of the held-out weeks "
            f"{list(shared_data.FIDON_VALIDATION_WEEKS)} against their parcellations; "
            "spina bifida (Chiari II) anatomy",
            "test_time_mirror": True,
        },
        "validation_real_training_weeks": None
        if real_train is None
        else real_train
        | {
            "data": f"{shared_data.FIDON} srr.nii.gz of the training weeks: their "
            "parcellations were training label maps, the images were never seen",
            "test_time_mirror": True,
        },
        "validation_enlarged_ventricles": enlarged | {"ventricle_factor": VAL_VENTRICLES},
        "validation_infant": infant
        | {
            "cases_months_contrast": [list(c) for c in VAL_INFANTS[:n_val_infants]],
            "subject_seeds": "np.random.SeedSequence([seed, 414, i])",
        },
        "history": history,
        "device": str(dev),
        "threads": threads,
        "time_s": {"label_maps": round(t_data, 1), "total": round(time.time() - t_start, 1)},
        "software": software_versions(),
        "trained": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    }
    write_json_atomic(out / CARD_NAME, card)
    say(
        f"wrote {wpath} and {out / CARD_NAME}: validation Dice {final['dice_mean']:.4f}, "
        f"real images {real_final['dice_mean']:.4f}, "
        f"unseen contrast {unseen['dice_mean']:.4f}, infants {infant['dice_mean']:.4f}, "
        "enlarged ventricles "
        f"{enlarged['dice_per_tissue']['ventricles']:.4f} (ventricle Dice)"
    )
    return card


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="earlybrain train-segmentation",
        description=__doc__.splitlines()[0],
    )
    d = TrainConfig()
    ap.add_argument("--out", required=True, help="folder for the weights and card.json")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch)
    ap.add_argument(
        "--subjects", type=int, default=d.n_train_subjects, help="simulated training label maps"
    )
    ap.add_argument("--val-subjects", type=int, default=d.n_val_subjects)
    ap.add_argument(
        "--infant-subjects", type=int, default=d.n_infant_subjects,
        help="simulated infant label maps (0: none)",
    )  # fmt: skip
    ap.add_argument("--atlas", default=None, help="atlas manifest whose label maps join training")
    ap.add_argument("--label-maps", nargs="*", default=[], help="a lab's own label maps")
    ap.add_argument("--label-scheme", default=DEFAULT_SCHEME, choices=list(SCHEMES))
    ap.add_argument(
        "--real-anatomy", action="store_true",
        help=f"add the training weeks of {shared_data.FIDON} (../shared/data) as label maps",
    )  # fmt: skip
    ap.add_argument(
        "--p-real", type=float, default=d.p_real,
        help="share of samples from the real anatomies (with --real-anatomy)",
    )  # fmt: skip
    ap.add_argument("--init-weights", default=None, help="fine-tune these weights")
    ap.add_argument(
        "--p-t2-prior", type=float, default=None,
        help="share of samples with a jittered fetal-T2-like contrast (default 0.7; the rest "
        "random): lower it to stress contrast independence, e.g. when fine-tuning",
    )  # fmt: skip
    ap.add_argument("--device", default="auto", choices=DEVICES)
    ap.add_argument("--workers", type=int, default=2, help="processes simulating label maps")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--cache", default=None, help="cache folder for simulated label maps")
    ap.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="patches per step (GPU: more)"
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    train_segmentation(
        a.out,
        seed=a.seed,
        epochs=a.epochs,
        steps_per_epoch=a.steps_per_epoch,
        n_train_subjects=a.subjects,
        n_val_subjects=a.val_subjects,
        n_infant_subjects=a.infant_subjects,
        atlas_manifest=a.atlas,
        label_maps=a.label_maps,
        label_scheme=a.label_scheme,
        real_anatomy=a.real_anatomy,
        p_real=a.p_real,
        init_weights=a.init_weights,
        p_t2_prior=a.p_t2_prior,
        device=a.device,
        workers=a.workers,
        threads=a.threads,
        cache_dir=a.cache,
        batch_size=a.batch_size,
    )
    return 0
