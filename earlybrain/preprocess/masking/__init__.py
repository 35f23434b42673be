"""Fetal brain masking: a small 2D U-Net trained on simulated, domain-randomised stacks."""

from earlybrain.preprocess.masking.inference import (
    MaskingError,
    MaskingModel,
    copy_precomputed_mask,
    default_weights_path,
    load_model,
    mask_stack_file,
    predict_mask,
    predict_probability,
)

__all__ = [
    "MaskingError",
    "MaskingModel",
    "copy_precomputed_mask",
    "default_weights_path",
    "load_model",
    "mask_stack_file",
    "predict_mask",
    "predict_probability",
]
