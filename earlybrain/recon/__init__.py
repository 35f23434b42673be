"""Slice-to-volume motion correction (SVR) and super-resolution reconstruction (SRR).

Entry points: `reconstruct(stacks, config, device)` for arrays already loaded and
validated with `make_stack`/`load_stacks`, and `run_recon(...)` for files (the
workflow's rule). They are imported on first use: importing the package (for its
workflow step, say) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "ReconConfig": "earlybrain.recon.config",
    "run_recon": "earlybrain.recon.io",
    "ReconResult": "earlybrain.recon.pipeline",
    "reconstruct": "earlybrain.recon.pipeline",
    "ReconInputError": "earlybrain.recon.stacks",
    "Stack": "earlybrain.recon.stacks",
    "load_stacks": "earlybrain.recon.stacks",
    "make_stack": "earlybrain.recon.stacks",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
