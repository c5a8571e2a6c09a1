r"""The ``p4lightning`` command.

* ``p4lightning fit|validate|test --config configs/...yaml [--section.key value ...]`` — LightningCLI: every
  ``__init__`` argument of the model, datamodule, trainer and callbacks is an option, ``--help`` is generated
  from their type hints and docstrings, ``--print_config`` shows the resolved config.
* ``p4lightning sample --ckpt RUN.ckpt --n 5000 --out samples/`` — load a Boltzmann-generator checkpoint, draw
  samples with their reduced energies and log importance weights, write them as an mdtraj-readable DCD
  trajectory (+ PDB topology) and ``samples.npz``; with ``--trajectory/--topology`` of reference MD data
  also the evaluation (figures and the metric table).
* ``p4lightning evaluate --ckpt A.ckpt B.ckpt --trajectory 'data/.../replica_03[6-9].dcd' --topology ... --out DIR``
  — score checkpoints against held-out MD with the field's metrics (``p4lightning.metrics``): one JSON table,
  energy violins and Ramachandran histograms.

The MD data are made by a command of their own, ``p4lightning-md`` (:mod:`p4lightning.cli.md`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["evaluate_main", "main", "sample_main"]

# Loaded on first use: importing one subcommand's module (e.g. p4lightning.cli.md, in every MD worker process)
# must not load Lightning and matplotlib through this package.
_LAZY = {"evaluate_main": "p4lightning.cli.evaluate", "main": "p4lightning.cli.app", "sample_main": "p4lightning.cli.sample"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # looked up once
    return value
