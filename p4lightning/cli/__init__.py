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

from p4lightning.cli.evaluate import evaluate_main
from p4lightning.cli.main import main
from p4lightning.cli.sample import sample_main

__all__ = ["evaluate_main", "main", "sample_main"]
