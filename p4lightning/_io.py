"""File helpers: atomic writes (temporary file in the same folder, fsync, then rename), output-folder checks made
before any work, a per-folder lock for work shared by several processes, and checkpoint reading."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "atomic_path", "c_stdout_silenced", "check_output_dir", "folder_lock", "load_checkpoint", "save_figure", "staged_folder", "write_text",
]  # fmt: skip


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on error delete it.

    Readers never see a half-written file (as OpenMM's ``safesave``): the data is flushed to the disk (``fsync``)
    before the rename, so a crash or a full disk leaves the previous file or none under ``path``, never a
    truncated one. The suffix is kept so writers that choose the format by extension (mdtraj) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # let the writer create it (some refuse to overwrite)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def staged_folder(out: str | Path, names: Sequence[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out`` to write the output files ``names`` into; on success they
    replace ``out``'s files as a unit, on error ``out`` is left as it was and the temporary folder removed.

    A new ``out`` is the temporary folder renamed (one atomic step); into an existing ``out`` (``--force``) the
    written files are renamed one by one, each atomic, and every file of ``names`` that this run did not write
    is removed, so the folder never mixes two runs' outputs. Renames need no disk space: the files are complete
    (and fsync-ed) before the first one.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield tmp
        written = [n for n in names if (tmp / n).is_file()]
        for name in written:
            fd = os.open(tmp / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if not out.exists():
            os.replace(tmp, out)
            return
        for name in names:
            if name not in written and (out / name).exists():
                (out / name).unlink()
        for name in written:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def c_stdout_silenced() -> Iterator[None]:
    """Send what C code writes to the process's standard output (file descriptor 1) to ``/dev/null`` inside the
    block: mdtraj's DCD reader prints two ``dcdplugin)`` lines per file from C, which no Python redirect catches.
    Python's own ``sys.stdout`` is flushed first and is left alone."""
    import sys

    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno() if hasattr(sys.stdout, "fileno") else 1
    except (OSError, ValueError):  # a replaced stdout without a descriptor (e.g. io.StringIO)
        fd = 1
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            try:
                yield
            finally:
                os.dup2(saved, fd)
    finally:
        os.close(saved)


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[bool]:
    """Try to hold ``folder``'s lock (an advisory ``flock`` on ``folder/.lock``, creating the folder): yields whether
    this process holds it. A lock dies with its process, so a killed run never leaves a stale one; two processes
    working through the same list of run folders skip each other's."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`); the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def save_figure(fig: object, path: str | Path, dpi: int = 110) -> Path:
    """Save the matplotlib figure ``fig`` to ``path`` atomically (format from the suffix); the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)  # type: ignore[attr-defined]
    return Path(path)


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """Refuse, before any work, an output folder that cannot be written: ``path`` (or, if it does not exist yet, its
    nearest existing parent, where it would be created) must be a writable folder. Creates nothing (a temporary
    probe file is removed at once). Raises ``ValueError`` (one line, naming ``what``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {path} is a file, not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {path} cannot be created: {parent} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".p4lightning-probe.", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        where = "" if parent == path else f" (its existing parent {parent})"
        raise ValueError(f"{what} {path} is not writable{where}: {err.strerror}") from None
    return path


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
