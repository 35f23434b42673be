"""Atomic file writes: a reader never sees a half-written output that looks complete."""

from __future__ import annotations

import glob
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

PART_SUFFIX = ".part"


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename over the target.

    Rename is atomic on POSIX file systems, so an interrupted run leaves either the
    old file or none, never a truncated one with the final name. The temporary name
    (hidden, ``.part``) records host and process, so that the temporary file of a
    writer killed outright (SIGKILL, out-of-memory killer) is removed by the next write
    of the same file instead of piling up.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    prefix = f".{path.name}.{socket.gethostname()}-{os.getpid()}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=PART_SUFFIX, dir=path.parent)
    try:
        # mkstemp creates 0600; outputs are shared in a lab, so honour the umask instead
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_stale_parts(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files of `path` left by writers on this host that no longer run.

    Writers on other hosts (shared file systems) or still running are left alone.
    """
    path = Path(path)
    host = socket.gethostname()
    removed = []
    for part in path.parent.glob(f".{glob.escape(path.name)}.*{PART_SUFFIX}"):
        writer = part.name[len(path.name) + 2 : -len(PART_SUFFIX)].rpartition(".")[0]
        part_host, _, pid = writer.rpartition("-")
        if part_host == host and pid.isdigit() and not _running(int(pid)):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """JSON with sorted keys so identical content gives identical bytes."""
    return write_text_atomic(
        path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"
    )


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
