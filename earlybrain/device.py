"""Choose the torch device for a job, with an actionable message when a GPU is missing.

A job that asked for a GPU but landed on a node (or a SLURM allocation) without one
would otherwise fail deep inside torch with "Found no NVIDIA driver" or silently run
for hours on the CPU. Here the choice is made once, up front: fall back to the CPU with
a warning in the job log when the configuration allows it (``device_fallback: cpu``),
otherwise stop with a message that says how to get a GPU or how to run without one.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when a device is chosen, not for the choices
    import torch

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")  # config `device`, every torch step and trainer
FALLBACKS = ("cpu", "none")  # config `device_fallback`: with no GPU, run on the CPU or fail


class DeviceUnavailableError(RuntimeError):
    """The configured device cannot be used in this job; the message says what to do."""


def _why_no_cuda() -> str:
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    why = f"no CUDA GPU visible to this job (CUDA_VISIBLE_DEVICES={visible})"
    if torch.version.cuda is None:
        why += f"; this torch build ({torch.__version__}) has no CUDA support"
    return why


def resolve_device(requested: str, allow_cpu_fallback: bool) -> torch.device:
    """The device to run on for config ``device`` and ``device_fallback``.

    ``auto`` is CUDA when a GPU is visible, else CPU (no warning: the user did not insist).
    ``cuda`` without a GPU is CPU with a logged warning when ``allow_cpu_fallback``,
    else a DeviceUnavailableError.
    """
    import torch

    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {requested!r}")
    has_cuda = torch.cuda.is_available()
    if requested == "cpu" or (requested == "auto" and not has_cuda):
        return torch.device("cpu")
    if has_cuda:
        return torch.device("cuda")
    if allow_cpu_fallback:
        log.warning(
            "%s: running on the CPU instead (device_fallback: cpu); expect it to be slower",
            _why_no_cuda(),
        )
        return torch.device("cpu")
    raise DeviceUnavailableError(
        f"{_why_no_cuda()}; request one (gpu: 1 in the profile / --gres) or set device: cpu "
        "or device_fallback: cpu in the config"
    )
