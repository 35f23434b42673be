"""What the networks' training entry points share: seeds of simulated subjects and the
software record of a model card."""

from __future__ import annotations

import platform

import numpy as np


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
