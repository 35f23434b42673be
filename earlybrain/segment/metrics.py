"""Agreement of two tissue segmentations: what both the pipeline's QC (network vs atlas
labels) and the evaluations against ground truth measure."""

from __future__ import annotations

import numpy as np

from earlybrain.anatomy.labels import TISSUES, to_tissues
from earlybrain.register.metrics import label_dice


def tissue_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per FeTA tissue of two earlybrain label maps (left/right merged); a tissue
    absent from both counts as agreement (1.0)."""
    per = label_dice(to_tissues(pred), to_tissues(truth), TISSUES)
    return {name: (per[t] if np.isfinite(per[t]) else 1.0) for t, name in TISSUES.items()}
