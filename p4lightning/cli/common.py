"""What every ``p4lightning`` subcommand shares: one-line errors, checkpoint loading, output-folder checks and
held-out MD loading."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["PROG", "UsageError", "fail", "load_bg", "one_line", "positive", "quiet", "load_reference", "load_reference_replicas", "refuse_overwrite"]


def quiet() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*enablePackrat.*")



class UsageError(Exception):
    """A user's mistake in a ``p4lightning`` command: printed as one line, exit status 2."""


PROG = "p4lightning"


def one_line(message: str) -> str:
    """jsonargparse's multi-line error as one line. A wrapped error ("Does not validate against any of the Union
    subtypes ... Errors: - <item> - Expected a <class 'NoneType'>") becomes its first real item with the lines
    indented under it ("Problem with given class_path '...': Parser key "mixing": Expected ... Got value: glow",
    or a constructor's own message); otherwise the lines are joined, dumps of the given value left out."""
    raw = [line for line in message.strip().splitlines() if line.strip()]
    for i, line in enumerate(raw):
        text = line.lstrip()
        if text.startswith("- ") and not text.startswith("- Expected a "):
            indent, parts = len(line) - len(text), [text[2:]]
            for nxt in raw[i + 1 :]:
                if len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                parts.append(nxt.strip())
            return " ".join(parts)[:600]
    kept = [line.strip() for line in raw if not line.strip().startswith(("Given value", "Subtypes:", "Errors:"))]
    return " ".join(kept)[:600] if kept else "invalid arguments"



def fail(subcommand: str | None, err: BaseException) -> None:
    """Print ``err`` (its first line) as the command's one-line error and exit with status 2 (with
    ``P4LIGHTNING_DEBUG=1`` in the environment: re-raise it with its traceback)."""
    if os.environ.get("P4LIGHTNING_DEBUG"):
        raise err
    text = one_line(str(err)) if str(err).strip() else type(err).__name__
    print(f"{PROG} {subcommand or ''}: error: {text}".replace("  ", " "), file=sys.stderr)
    raise SystemExit(2) from None


def load_bg(path: Path, energy: str | None = None) -> Any:
    """A ``BoltzmannGenerator`` from checkpoint ``path`` with its energy op built; one-line errors for bad files."""
    from p4lightning.models.boltzmann import BoltzmannGenerator

    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise UsageError(f"checkpoint {path} is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = BoltzmannGenerator.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except (KeyError, TypeError) as err:
        raise UsageError(f"checkpoint {path} is not a BoltzmannGenerator checkpoint ({type(err).__name__}: {err})") from err
    except Exception as err:  # torch/pickle/zip errors of truncated or garbage files
        raise UsageError(f"checkpoint {path} is not a readable torch checkpoint (truncated or corrupt?): {err}".split("\n")[0]) from err
    if energy is not None:
        model.hparams.energy = energy
    model.energy = model.make_energy()
    return model.eval()


def refuse_overwrite(out: Path, names: list[str], force: bool) -> None:
    """Refuse ``--out`` before any work: a file, a folder that cannot be written or created, or one holding any of
    ``names`` without ``force``. Creates nothing: the outputs are written as a unit at the end
    (:func:`~p4lightning._io.staged_folder`)."""
    from p4lightning._io import check_output_dir

    try:
        check_output_dir(out, "--out")
    except ValueError as err:
        raise UsageError(str(err)) from None
    existing = [n for n in names if (out / n).exists()]
    if existing and not force:
        raise UsageError(f"--out {out} already holds {', '.join(existing)}; pass --force to overwrite")


def load_reference(trajectories: list[str] | None, topology: str | None, what: str) -> torch.Tensor | None:
    """Frames ``(F, 66)`` nm of the trajectories (files or globs), checked against the topology; None without any."""
    loaded = load_reference_replicas(trajectories, topology, what)
    return None if loaded is None else loaded[0]


def load_reference_replicas(
    trajectories: list[str] | None, topology: str | None, what: str
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(frames (F, 66) nm, replica id (F,))``: each trajectory file is one replica."""
    from p4lightning.data.md_datamodule import expand_trajectories, load_positions
    from p4lightning.systems.alanine import N_ATOMS

    if not trajectories:
        return None
    if not topology:
        raise UsageError(f"{what} needs --topology")
    from p4lightning.systems.alanine import check_topology

    try:
        files = expand_trajectories(trajectories)
        check_topology(topology, f"topology {topology}")
        parts = [torch.from_numpy(load_positions([f], topology, N_ATOMS)).reshape(-1, 3 * N_ATOMS) for f in files]
        ids = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(parts)])
        return torch.cat(parts), ids
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from err


def positive(value: int, flag: str) -> int:
    if value < 1:
        raise UsageError(f"{flag} must be >= 1; got {value}")
    return value

