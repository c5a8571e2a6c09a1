"""What several test files share: one quiet CPU trainer factory and one two-process DDP launcher.

Importable as ``helpers`` (``tests/`` is on ``sys.path`` through ``pythonpath`` in ``pyproject.toml``, and the
launcher puts it on the ``PYTHONPATH`` of the DDP scripts it starts).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

TESTS = Path(__file__).resolve().parent

QUIET: dict[str, Any] = {
    "accelerator": "cpu",
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
"""The trainer defaults: one CPU process, nothing written, nothing printed."""


def make_trainer(callbacks: Iterable[pl.Callback] = (), **overrides: Any) -> pl.Trainer:
    """A ``pl.Trainer`` with :data:`QUIET` defaults; every keyword overrides or adds a ``Trainer`` argument."""
    return pl.Trainer(**{**QUIET, "callbacks": list(callbacks), **overrides})


def ddp_trainer(
    callbacks: Iterable[pl.Callback] = (), start_method: str = "spawn", **overrides: Any
) -> pl.Trainer:
    """:func:`make_trainer` on two CPU processes with the gloo backend (``start_method="spawn"``: ``ddp_spawn``)."""
    from pytorch_lightning.strategies import DDPStrategy

    strategy = DDPStrategy(start_method=start_method, process_group_backend="gloo")
    return make_trainer(callbacks, devices=2, strategy=strategy, **overrides)


def run_ddp_script(script: Path, out_dir: Path, *args: str, timeout: float = 300) -> list[dict[str, Any]]:
    """Run ``python SCRIPT OUT_DIR ARGS...`` (a script that trains with :func:`ddp_trainer` and saves
    ``OUT_DIR/rank{0,1}.pt``) with one OpenMP thread and warnings off; return the two ranks' saved dicts.

    A script, not a function: spawned children re-import ``__main__`` by path, so it must be a file."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p),
    }
    result = subprocess.run(
        [sys.executable, str(script), str(out_dir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
