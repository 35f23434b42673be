"""The brain-age regressor: a small 3D MONAI CNN giving a mean and a variance.

Each member of the deep ensemble predicts a Gaussian (mean and log-variance of the
age, trained with the Gaussian negative log-likelihood), so it can say how unsure it
is about an image (aleatoric part); members differ by initialisation and sample order,
and their disagreement is the epistemic part, which grows where training had no
data (Lakshminarayanan et al., NeurIPS 2017). Batch normalisation rather than instance
normalisation: a per-image normalisation of the first feature maps would wash out the
amount of brain in view, i.e. its size, the strongest cue to age.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import Regressor

DEFAULT_ARCH: dict[str, Any] = {
    "name": "monai.networks.nets.Regressor",
    "channels": [8, 16, 32, 64],
    "strides": [2, 2, 2, 2],
    "num_res_units": 1,
    "norm": "batch",
    "dropout": 0.1,
}

# bounds of the predicted log-variance (normalised age units): an SD between 0.08 and
# 7 times the age scale (0.4 to 34 weeks); outside them the likelihood's gradients
# explode or vanish
LOG_VAR_MIN, LOG_VAR_MAX = -5.0, 4.0


def build_regressor(in_shape: tuple[int, int, int], arch: dict[str, Any] | None = None):
    """A regressor of (mean, log-variance) from a (1, *in_shape) volume."""
    a = dict(DEFAULT_ARCH if arch is None else arch)
    if a.get("name") != DEFAULT_ARCH["name"]:
        raise ValueError(f"unknown brain-age architecture {a.get('name')!r}")
    return Regressor(
        in_shape=(1, *in_shape),
        out_shape=(2,),
        channels=tuple(int(c) for c in a["channels"]),
        strides=tuple(int(s) for s in a["strides"]),
        num_res_units=int(a["num_res_units"]),
        norm=a["norm"],
        dropout=float(a["dropout"]) or None,
    )


def member_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error of the mean + Gaussian negative log-likelihood of the variance
    N(out[:, 0], exp(out[:, 1])) with the mean detached.

    With the full likelihood the mean's gradient is scaled by 1/variance, and a confident
    member's mean diverges (it did, twice); with this split the mean learns as in plain
    regression and the variance learns how far off the mean is (the beta = 1 case of
    Seitzer et al., ICLR 2022).
    """
    mean, log_var = out[:, 0], out[:, 1].clamp(LOG_VAR_MIN, LOG_VAR_MAX)
    nll = 0.5 * (log_var + (target - mean.detach()) ** 2 * torch.exp(-log_var))
    return ((mean - target) ** 2 + nll).mean()
