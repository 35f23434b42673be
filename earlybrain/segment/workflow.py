"""Helpers for workflow/rules/segment.smk (Snakemake lint wants no functions in rule files)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from earlybrain.io.paths import RECON, Derivatives, bids_name
from earlybrain.segment.pipeline import segmentation_paths

SETTINGS_KEYS = ("weights", "tta", "keep_fraction")


def rule_outputs(deriv: Derivatives, space: str, entity: str = RECON) -> dict[str, str]:
    """Outputs of `segment` for the volume `{prefix}_{entity}` (wildcards allowed)."""
    paths = segmentation_paths(deriv.folder("anat"), bids_name(deriv.prefix, entity, ext=""), space)
    return {k: str(v) for k, v in paths.items()}


def inference_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of config `segmentation` that inference uses (training keys left out, so
    changing them does not re-run every subject's segmentation)."""
    return {k: section[k] for k in SETTINGS_KEYS if k in section}


def infant_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """Inference settings of infant sessions: those of config `segmentation`, with the
    infant network (`infant_weights`, empty: the shipped one) as the weights."""
    from earlybrain.segment.inference import default_infant_weights_path

    weights = section.get("infant_weights") or str(default_infant_weights_path())
    return inference_settings(section) | {"weights": weights}


def _files(value: Any) -> list[str]:
    if not value:
        return []
    return [str(value)] if isinstance(value, str) else [str(v) for v in value]


def train_options(wildcards: Any, input: Any) -> str:
    """Optional arguments of `earlybrain train-segmentation` from the rule's inputs."""
    args: list[str] = []
    for key, flag in (
        ("atlas", "--atlas"),
        ("label_maps", "--label-maps"),
        ("init", "--init-weights"),
    ):
        files = _files(input.get(key))
        if files:
            args += [flag, *files]
    return " ".join(shlex.quote(a) for a in args)
