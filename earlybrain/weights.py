"""Network weights files: where the shipped ones live, how they are written and read.

Every network of earlybrain ships as one torch file (weights in float16 plus what
inference needs to prepare its inputs, tagged with a format name) and a JSON card
beside it. Writing is atomic, so an interrupted training never leaves a truncated file
that looks complete; reading checks the format tag and names the file when it is not
usable.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from earlybrain import REPO_ROOT

CARD_NAME = "card.json"


def shipped_path(*parts: str) -> Path:
    """A file under `models/` of the checkout earlybrain runs from."""
    return REPO_ROOT / "models" / Path(*parts)


def half_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict on the CPU, floating tensors in float16 (half the size)."""
    return {
        k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
        for k, v in net.state_dict().items()
    }


def float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of `half_state` for loading into a float32 network."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def save_payload(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """torch.save through a temporary file and a rename (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_payload(
    path: Path, fmt: str, error: type[Exception], hint: str = ""
) -> tuple[dict[str, Any], str]:
    """The payload of a weights file of format `fmt` and the file's sha256; `error`
    (naming the file; `hint` says where to get weights) when it is missing, unreadable
    or of another format."""
    if not path.is_file():
        raise error(f"weights not found: {path}" + (f". {hint}" if hint else ""))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != fmt:
            found = payload.get("format") if isinstance(payload, dict) else type(payload)
            raise ValueError(f"format {found!r}, expected {fmt!r}")
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise error(f"{path}: not usable weights ({exc})") from None
    return payload, hashlib.sha256(path.read_bytes()).hexdigest()


def read_card(weights: Path) -> dict[str, Any]:
    """The JSON card beside a weights file ({} when there is none)."""
    card = weights.parent / CARD_NAME
    return json.loads(card.read_text()) if card.is_file() else {}
