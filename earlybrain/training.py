"""What the networks' training entry points share: the settings a lab may change from
the workflow configuration, seeds of simulated subjects and the software record of a
model card.

Each trainer's `TrainConfig` extends its recipe here with what only the code sets
(architecture, augmentation, learning rates). The recipes live here, free of torch, so
that the workflow's configuration schema takes its `*.train` defaults from them
(earlybrain.config_schema) without loading a network: the trainers' command lines and
`snakemake train_*` cannot disagree on a default.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CONFIG_KEY = "config_key"


def config_named(key: str, default: Any) -> Any:
    """A dataclass field that the workflow configuration calls `key`."""
    return field(default=default, metadata={CONFIG_KEY: key})


@dataclass(frozen=True)
class MaskingRecipe:
    """What `masking.train` sets: the masking networks' training run."""

    seed: int = 0
    n_train_subjects: int = config_named("subjects", 400)
    n_val_subjects: int = config_named("val_subjects", 24)
    localiser_steps: int = 2500
    segmenter_steps: int = 5000
    batch_size: int = 16


@dataclass(frozen=True)
class SegmentationRecipe:
    """What `segmentation.train` sets: the tissue network's training run."""

    seed: int = 0
    epochs: int = 12
    steps_per_epoch: int = 200
    n_train_subjects: int = config_named("subjects", 40)
    n_val_subjects: int = config_named("val_subjects", 3)
    batch_size: int = 2
    # infant heads (0-24 months): one network for fetal and infant sessions
    n_infant_subjects: int = config_named("infant_subjects", 12)


@dataclass(frozen=True)
class BrainAgeRecipe:
    """What `brainage.train` sets: the brain-age ensemble's training run."""

    seed: int = 0
    members: int = 3
    steps: int = 1200
    batch_size: int = 8
    n_train_subjects: int = config_named("subjects", 800)
    n_val_subjects: int = config_named("val_subjects", 24)


def derived_seeds(seed: int, code: int, n: int) -> list[int]:
    """`n` subject seeds from a training seed and a split code: splits with different
    codes (training, validation, other networks) never share a subject."""
    return [int(np.random.SeedSequence([seed, code, i]).generate_state(1)[0]) for i in range(n)]


def software_versions() -> dict[str, str]:
    """Versions a model card records (the weights depend on them)."""
    import monai
    import scipy
    import torch

    from earlybrain import __version__

    return {
        "earlybrain": __version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
    }
