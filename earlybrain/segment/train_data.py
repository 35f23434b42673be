"""What the tissue segmentation network is trained and validated on, apart from the
training itself: which simulated subjects each split gets (seeds, ages, ventricle
sizes), the random patches drawn from the label-map pools, and the simulated
validation volumes.

Kept out of `earlybrain.segment.train` so the data of a run can be reasoned about and
tested without the optimiser: training and validation subjects never share a seed, and
batch i of an epoch depends only on (seed, epoch, i), whatever the number of loader
workers. `TrainConfig` lives here because the data are drawn from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from earlybrain.anatomy.labels import TISSUES
from earlybrain.atlas.manifest import load_manifest
from earlybrain.atlas.templates import load_template
from earlybrain.segment.evaluate import simulated_volume
from earlybrain.segment.labelmaps import to_grid
from earlybrain.segment.network import DEFAULT_ARCH
from earlybrain.segment.synth import TISSUE_OF, SynthConfig, deform_labels, synthesize
from earlybrain.training import SegmentationRecipe, derived_seeds

# seed-derivation codes: training and validation subjects never share a seed
SPLIT_CODES = {"train": 303, "val": 404, "infant_train": 313, "infant_val": 414}
VAL_AGES = (22.0, 26.0, 30.0, 34.0, 36.0)
# infant validation: (months, contrast) -- T1w before, isointense during, T2w after the
# inversion of the grey/white contrast
VAL_INFANTS = ((1.0, "T1w"), (7.0, "T2w"), (15.0, "T1w"), (22.0, "T2w"))
VAL_VENTRICLES = 1.8  # ventricle size factor of the ventriculomegaly validation


@dataclass(frozen=True)
class TrainConfig(SegmentationRecipe):
    """Everything that determines the trained weights (recorded in the card)."""

    ga_range: tuple[float, float] = (21.0, 38.0)
    target_mm: float = 1.0
    crop: int = 96  # label crop around the patch centre, before deformation
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    percentile: float = 99.0
    p_atlas: float = 0.2  # share of samples from the atlas templates' label maps
    # infant heads (n_infant_subjects of them): their ages and share of the samples
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
