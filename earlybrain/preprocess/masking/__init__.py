"""Fetal brain masking of stacks as they come off the scanner: a localiser finds the
fetal head in the whole field of view, a segmenter masks a crop around it (two small 2D
U-Nets trained on simulated clinical stacks).

The entry points are imported on first use: importing the package (for a constant of
`localise`, say, as the configuration schema does) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_INFERENCE = "earlybrain.preprocess.masking.inference"
_HOMES = {
    name: _INFERENCE
    for name in (
        "MaskResult",
        "MaskingError",
        "MaskingModel",
        "copy_precomputed_mask",
        "default_weights_path",
        "load_model",
        "mask_stack",
        "mask_stack_file",
        "predict_mask",
        "predict_probability",
    )
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
