"""Fetal brain masking of stacks as they come off the scanner: a localiser finds the
fetal head in the whole field of view, a segmenter masks a crop around it (two small 2D
U-Nets trained on simulated clinical stacks)."""

from earlybrain.preprocess.masking.inference import (
    MaskingError,
    MaskingModel,
    MaskResult,
    copy_precomputed_mask,
    default_weights_path,
    load_model,
    mask_stack,
    mask_stack_file,
    predict_mask,
    predict_probability,
)

__all__ = [
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
]
