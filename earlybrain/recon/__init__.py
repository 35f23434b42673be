"""Slice-to-volume motion correction (SVR) and super-resolution reconstruction (SRR).

Entry points: `reconstruct(stacks, config, device)` for arrays already loaded and
validated with `make_stack`/`load_stacks`, and `run_recon(...)` for files (the
workflow's rule).
"""

from earlybrain.recon.config import ReconConfig
from earlybrain.recon.io import run_recon
from earlybrain.recon.pipeline import ReconResult, reconstruct
from earlybrain.recon.stacks import ReconInputError, Stack, load_stacks, make_stack

__all__ = [
    "ReconConfig",
    "ReconInputError",
    "ReconResult",
    "Stack",
    "load_stacks",
    "make_stack",
    "reconstruct",
    "run_recon",
]
