"""Deep-ensemble brain age: load the members, predict a mean age and its uncertainty.

The prediction is the mixture of the members' Gaussians: mean of their means; variance =
mean of their variances (aleatoric: what an image leaves open) + variance of their means
(epistemic: where the members, trained alike, still disagree: outside the data they saw).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earlybrain.brainage.frame import Grid
from earlybrain.brainage.network import LOG_VAR_MAX, LOG_VAR_MIN, build_regressor
from earlybrain.device import resolve_device
from earlybrain.weights import float_state, load_payload, read_card, shipped_path

WEIGHTS_NAME = "ensemble_weights.pt"
FORMAT = "earlybrain-brainage-1"


class BrainAgeError(ValueError):
    """Brain age could not be estimated; the message says why."""


def default_weights_path() -> Path:
    """The ensemble that ships with earlybrain (`models/brainage/`)."""
    return shipped_path("brainage", WEIGHTS_NAME)


@dataclass
class Ensemble:
    """Loaded members and how their input and output are scaled."""

    members: list[torch.nn.Module]
    arch: dict[str, Any]
    grid: Grid
    age_centre: float
    age_scale: float
    train_range: tuple[float, float]
    device: torch.device
    path: str = ""
    sha256: str = ""
    card: dict[str, Any] = field(default_factory=dict)


def ensemble_payload(
    members: list[torch.nn.Module],
    arch: dict[str, Any],
    grid: Grid,
    age_centre: float,
    age_scale: float,
    train_range: tuple[float, float],
) -> dict[str, Any]:
    """What a weights file holds (see `earlybrain.weights`)."""
    from earlybrain.weights import half_state

    return {
        "format": FORMAT,
        "arch": arch,
        "grid": {"shape": list(grid.shape), "voxel_mm": grid.voxel_mm},
        "age_centre": float(age_centre),
        "age_scale": float(age_scale),
        "train_range": [float(v) for v in train_range],
        "members": [half_state(m) for m in members],
    }


def load_ensemble(
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    allow_cpu_fallback: bool = True,
) -> Ensemble:
    """Load an ensemble written by `train.save_ensemble` (default: the shipped one)."""
    path = Path(weights) if weights else default_weights_path()
    payload, sha = load_payload(path, FORMAT, BrainAgeError)
    dev = device if isinstance(device, torch.device) else resolve_device(device, allow_cpu_fallback)
    try:
        grid = Grid(
            tuple(int(v) for v in payload["grid"]["shape"]), float(payload["grid"]["voxel_mm"])
        )
        members = []
        for state in payload["members"]:
            net = build_regressor(grid.shape, payload["arch"])
            net.load_state_dict(float_state(state))
            members.append(net.eval().to(dev))
        if not members:
            raise ValueError("no ensemble members")
        lo, hi = (float(v) for v in payload["train_range"])
        return Ensemble(
            members, dict(payload["arch"]), grid, float(payload["age_centre"]),
            float(payload["age_scale"]), (lo, hi), dev, str(path), sha, read_card(path),
        )  # fmt: skip
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise BrainAgeError(f"{path}: not usable brain-age weights ({exc})") from None


@torch.no_grad()
def member_outputs(model: Ensemble, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per member mean and SD in weeks, each (n_members, n) for inputs (n, *grid.shape)."""
    x = torch.from_numpy(np.asarray(inputs, dtype=np.float32))[:, None].to(model.device)
    means, sds = [], []
    for net in model.members:
        out = net(x).float().cpu().numpy()
        means.append(model.age_centre + model.age_scale * out[:, 0])
        sds.append(model.age_scale * np.exp(0.5 * np.clip(out[:, 1], LOG_VAR_MIN, LOG_VAR_MAX)))
    return np.asarray(means), np.asarray(sds)


def combine(means: np.ndarray, sds: np.ndarray) -> dict[str, np.ndarray]:
    """The mixture of the members' Gaussians (axis 0 = members)."""
    aleatoric = np.sqrt(np.mean(sds**2, axis=0))
    epistemic = np.std(means, axis=0)
    return {
        "age_weeks": np.mean(means, axis=0),
        "sd_weeks": np.sqrt(aleatoric**2 + epistemic**2),
        "aleatoric_sd_weeks": aleatoric,
        "epistemic_sd_weeks": epistemic,
    }


def extrapolation_weeks(age_weeks: float, train_range: tuple[float, float]) -> float:
    """How far an age lies outside the training ages (0 inside).

    Members trained on 21-38 weeks saturate at the ends of that range, and they saturate
    alike, so their spread hardly grows beyond it (measured: `card.json`,
    outside_training_range). A subject whose chronological age lies outside the range is
    an extrapolation whatever the image: its uncertainty includes this distance.
    """
    lo, hi = train_range
    return max(0.0, lo - age_weeks, age_weeks - hi)


def predictive_sd(ensemble_sd: float, age_weeks: float, train_range: tuple[float, float]) -> float:
    """The reported uncertainty: the ensemble's SD and the extrapolation distance."""
    return float(np.hypot(ensemble_sd, extrapolation_weeks(age_weeks, train_range)))


def predict(model: Ensemble, inputs: np.ndarray, batch: int = 4) -> dict[str, np.ndarray]:
    """Ensemble prediction for network inputs (n, *grid.shape): mean, SDs, members."""
    parts = [member_outputs(model, inputs[i : i + batch]) for i in range(0, len(inputs), batch)]
    means = np.concatenate([p[0] for p in parts], axis=1)
    sds = np.concatenate([p[1] for p in parts], axis=1)
    return combine(means, sds) | {"member_ages": means.T, "member_sds": sds.T}
