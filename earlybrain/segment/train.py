"""Train the tissue segmentation network on synthetic images drawn from label maps.

Label maps: simulated fetal heads of 21-38 weeks and infant heads of 0-24 months
(`earlybrain.simulate`, seeds derived from the training seed), the atlas templates'
label maps, and optionally a lab's own label maps (fine-tuning, usually starting from
the shipped weights). Every training sample is a random patch turned into an image
with random intensities per label (`earlybrain.segment.synth`), so the network does
not learn one contrast. Validation uses other seeds rendered with the simulator's own
T2w contrast, then a final check with a contrast no training sample was drawn from,
and on infants rendered with the simulator's T1w and T2w across the first two years
(myelination inverts their grey/white contrast).

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.losses import DiceCELoss

from earlybrain import shared_data
from earlybrain.anatomy.labels import TISSUES
from earlybrain.atlas.manifest import load_manifest
from earlybrain.atlas.templates import load_template
from earlybrain.device import resolve_device
from earlybrain.io.atomic import write_json_atomic
from earlybrain.segment.evaluate import (
    RealVolume,
    fidon_volumes,
    simulated_volume,
    tissue_dice,
)
from earlybrain.segment.inference import (
    WEIGHTS_NAME,
    SegmentationModel,
    load_model,
    predict_tissues,
    save_weights,
)
from earlybrain.segment.labelmaps import SCHEMES, fidon_maps, file_map, phantom_maps, to_grid
from earlybrain.segment.network import DEFAULT_ARCH, build_network
from earlybrain.segment.postprocess import clean_labels, split_hemispheres
from earlybrain.segment.synth import TISSUE_OF, SynthConfig, deform_labels, synthesize
from earlybrain.training import derived_seeds, software_versions
from earlybrain.weights import CARD_NAME

log = logging.getLogger(__name__)

# seed-derivation codes: training and validation subjects never share a seed
SPLIT_CODES = {"train": 303, "val": 404, "infant_train": 313, "infant_val": 414}
VAL_AGES = (22.0, 26.0, 30.0, 34.0, 36.0)
# infant validation: (months, contrast) -- T1w before, isointense during, T2w after the
# inversion of the grey/white contrast
VAL_INFANTS = ((1.0, "T1w"), (7.0, "T2w"), (15.0, "T1w"), (22.0, "T2w"))
VAL_VENTRICLES = 1.8  # ventricle size factor of the ventriculomegaly validation


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (recorded in the card)."""

    seed: int = 0
    epochs: int = 12
    steps_per_epoch: int = 200
    n_train_subjects: int = 40
    n_val_subjects: int = 3
    ga_range: tuple[float, float] = (21.0, 38.0)
    target_mm: float = 1.0
    crop: int = 96  # label crop around the patch centre, before deformation
    batch_size: int = 2
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    percentile: float = 99.0
    p_atlas: float = 0.2  # share of samples from the atlas templates' label maps
    # infant heads (0-24 months): one network for fetal and infant sessions
    n_infant_subjects: int = 12
    infant_months: tuple[float, float] = (0.0, 24.0)
    p_infant: float = 0.2
    # share of simulated subjects with enlarged ventricles, and their size factor range:
    # without them the network labels much of a ventriculomegaly as other tissue
    p_enlarged_ventricles: float = 0.35
    enlarged_ventricles: tuple[float, float] = (1.2, 2.3)
    p_extra: float = 0.5  # share from a lab's own label maps, when given
    p_real: float = 0.5  # share from real fetal anatomies (fidon-sb-atlas), when used
    arch: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ARCH))
    synth: SynthConfig = field(default_factory=SynthConfig)


def subject_seeds(seed: int, n: int, split: str) -> list[int]:
    """Seeds of the simulated subjects of one split (train / val)."""
    return derived_seeds(seed, SPLIT_CODES[split], n)


def subject_ages(seed: int, n: int, ga_range: tuple[float, float]) -> list[float]:
    """Ages of the training subjects: stratified over the range, so every week is seen."""
    rng = np.random.default_rng([seed, 505])
    lo, hi = ga_range
    return [float(lo + (hi - lo) * (i + rng.random()) / n) for i in range(n)]


def subject_ventricles(cfg: TrainConfig, n: int) -> list[float]:
    """Ventricle size factor per training subject (1 = typical), seeded."""
    rng = np.random.default_rng([cfg.seed, 506])
    enlarged = rng.random(n) < cfg.p_enlarged_ventricles
    factors = rng.uniform(*cfg.enlarged_ventricles, n)
    return [round(float(f), 3) if e else 1.0 for e, f in zip(enlarged, factors, strict=True)]


class PatchSampler:
    """Random label crops from a pool of label maps, centred on a voxel of a tissue drawn
    uniformly from the 7: small tissues (brainstem, deep grey matter) are as often at
    a patch centre as white matter, or a network learns to never predict them."""

    def __init__(self, pools: dict[str, list[np.ndarray]], weights: dict[str, float], crop: int):
        self.pools = {k: v for k, v in pools.items() if v}
        w = np.array([weights[k] for k in self.pools], dtype=float)
        self.names, self.p = list(self.pools), w / w.sum()
        self.crop = crop
        # per map: the voxels of each tissue present (int16: maps are < 32k voxels a side)
        self.voxels = {k: [self._tissue_voxels(m) for m in maps] for k, maps in self.pools.items()}

    @staticmethod
    def _tissue_voxels(labels: np.ndarray) -> list[np.ndarray]:
        tissues = TISSUE_OF[labels]
        out = [np.argwhere(tissues == t).astype(np.int16) for t in TISSUES]
        return [v for v in out if len(v)]

    def _crop(self, labels: np.ndarray, centre: np.ndarray) -> np.ndarray:
        c = self.crop
        out = np.zeros((c, c, c), dtype=np.uint8)
        lo = centre - c // 2
        src = tuple(slice(max(a, 0), min(a + c, n)) for a, n in zip(lo, labels.shape, strict=True))
        dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, lo, strict=True))
        out[dst] = labels[src]
        return out

    def sample(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        crops = []
        for _ in range(n):
            name = self.names[rng.choice(len(self.names), p=self.p)]
            i = int(rng.integers(len(self.pools[name])))
            per_tissue = self.voxels[name][i]
            voxels = per_tissue[int(rng.integers(len(per_tissue)))]
            centre = voxels[int(rng.integers(len(voxels)))].astype(np.int64)
            crops.append(self._crop(self.pools[name][i], centre))
        return torch.from_numpy(np.stack(crops))[:, None]


class EpochBatches(torch.utils.data.Dataset):
    """One epoch of synthetic batches; batch i depends only on (seed, epoch, i), so the
    data are the same with any number of loader workers."""

    def __init__(self, sampler: PatchSampler, cfg: TrainConfig, epoch: int):
        self.sampler, self.cfg, self.epoch = sampler, cfg, epoch

    def __len__(self) -> int:
        return self.cfg.steps_per_epoch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.cfg.seed, 606, self.epoch, i])
        crops = self.sampler.sample(rng, self.cfg.batch_size)
        return synthesize(deform_labels(crops, rng, self.cfg.synth), rng, self.cfg.synth)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # a loader worker shares the cores with the training step


def atlas_maps(manifest_path: str | os.PathLike[str], voxel_mm: float) -> list[np.ndarray]:
    """The templates' label maps (earlybrain labels) on the working grid."""
    manifest = load_manifest(manifest_path)
    maps = []
    for entry in manifest.templates:
        tpl = load_template(manifest, entry, manifest.contrasts[0])
        if tpl.dseg is not None:
            maps.append(to_grid(tpl.dseg, tpl.affine, voxel_mm))
    return maps


def validation_volumes(
    seed: int, n: int, voxel_mm: float, unseen: bool = False, ventricle_factor: float = 1.0
) -> list:
    seeds = subject_seeds(seed, n, "val")
    ages = [VAL_AGES[i % len(VAL_AGES)] for i in range(n)]
    return [
        simulated_volume(a, s, voxel_mm, unseen_contrast=unseen, ventricle_factor=ventricle_factor)
        for a, s in zip(ages, seeds, strict=True)
    ]


def infant_validation_volumes(seed: int, n: int, voxel_mm: float) -> list:
    seeds = subject_seeds(seed, n, "infant_val")
    cases = [VAL_INFANTS[i % len(VAL_INFANTS)] for i in range(n)]
    return [
        simulated_volume(m, s, voxel_mm, kind="infant", contrast=c)
        for (m, c), s in zip(cases, seeds, strict=True)
    ]


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
    label_scheme: str = "earlybrain",
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
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.learning_rate, total_steps=total)
    # Dice over the batch, no numerator smoothing: a tissue absent from every patch of a
    # batch adds a constant, not a push to predict it nowhere (per-patch Dice with
    # smoothing taught the network to never predict the small tissues)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=0.0)
    model = SegmentationModel(net, arch, cfg.target_mm, cfg.percentile, dev)
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
    ap.add_argument("--label-scheme", default="earlybrain", choices=list(SCHEMES))
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
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
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
