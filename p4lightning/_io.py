"""File helpers: atomic writes (temporary file in the same folder, then rename) and checkpoint reading."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "load_checkpoint"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error delete it.

    Readers never see a half-written file (as OpenMM's ``safesave``). The suffix is kept so writers that
    choose the format by extension (mdtraj) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # let the writer create it (some refuse to overwrite)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str | Path) -> dict:
    """The dict of a Lightning checkpoint file on the CPU; :class:`InputFileError` naming the file if it is missing,
    empty, truncated or not a checkpoint."""
    import torch

    from p4lightning._validation import InputFileError

    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise InputFileError(f"checkpoint {path} does not exist or is empty")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch/pickle/zip errors of truncated or garbage files
        raise InputFileError(f"checkpoint {path} is not a readable torch checkpoint (truncated or corrupt?)") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputFileError(f"checkpoint {path} holds no state_dict: not a Lightning checkpoint")
    return ckpt
