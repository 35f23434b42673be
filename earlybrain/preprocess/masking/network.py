"""The masking networks: small 2D MONAI U-Nets on a slice and its neighbours.

Two of them, one architecture: the localiser (whole slices at 3 mm: where is the
fetal head?) and the segmenter (a crop around the head at the stack's resolution:
which pixels are intracranial?). Small on purpose: they must train on two CPU cores
and ship in the repository. Instance normalisation makes them indifferent to the
overall contrast and brightness of a stack, which vary between scanners far more than
anatomy does.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import UNet

DEFAULT_ARCH: dict[str, Any] = {
    "name": "monai.networks.nets.UNet",
    "spatial_dims": 2,
    "context": 1,  # neighbouring slices on each side, as extra input channels
    "channels": [16, 32, 64, 128, 256],
    "strides": [2, 2, 2, 2],
    "num_res_units": 1,
    "norm": "instance",
    "dropout": 0.0,
}


def in_channels(arch: dict[str, Any]) -> int:
    return 2 * int(arch["context"]) + 1


def divisor(arch: dict[str, Any]) -> int:
    """Input sizes must be multiples of this (the product of the strides)."""
    out = 1
    for s in arch["strides"]:
        out *= int(s)
    return out


def build_network(arch: dict[str, Any] | None = None) -> torch.nn.Module:
    """A U-Net producing one logit per pixel (brain vs not)."""
    a = dict(DEFAULT_ARCH if arch is None else arch)
    if a.get("name", DEFAULT_ARCH["name"]) != DEFAULT_ARCH["name"]:
        raise ValueError(f"unknown masking architecture {a.get('name')!r}")
    return UNet(
        spatial_dims=2,
        in_channels=in_channels(a),
        out_channels=1,
        channels=tuple(int(c) for c in a["channels"]),
        strides=tuple(int(s) for s in a["strides"]),
        num_res_units=int(a["num_res_units"]),
        norm=a["norm"],
        dropout=float(a.get("dropout", 0.0)),
    )
