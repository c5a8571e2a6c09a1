r"""``FinalStepCheckpoint``: Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is always the final step.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it saves a checkpoint (after
validation, or every ``every_n_train_steps``); its ``on_train_end`` writes one only if none was ever written.
So a 1000-step run validated every 5 epochs of 48 steps ends with ``last.ckpt`` of step 960. This subclass also
writes ``last.ckpt`` at the batch that reaches ``max_steps`` (inside the batch loop, where Lightning's progress
counters still name the running epoch: a checkpoint written later, in ``on_train_end``, already counts the
interrupted epoch as finished, and a resume from it would draw the next epoch's data order), and, for other
ends of training (``max_epochs``, ``max_time``, early stopping), at the end of training if no checkpoint holds the
last step. So ``last.ckpt`` is the final model, and a resume from it continues where the run stopped.

``AtomicCheckpointIO``: Lightning's ``TorchCheckpointIO`` writing each checkpoint to a temporary file in the same
folder, ``fsync``-ing it and renaming it onto its name, so a full disk or a killed process leaves the previous
checkpoint or none under a name, never a truncated one. ``FinalStepCheckpoint`` and the ``p4lightning`` command
install it on their trainer (:func:`use_atomic_checkpoints`); with a plain ``Trainer`` pass
``plugins=[AtomicCheckpointIO()]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from typing_extensions import override

from p4lightning._io import atomic_path

__all__ = ["AtomicCheckpointIO", "FinalStepCheckpoint", "use_atomic_checkpoints"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local checkpoint files are written atomically (temporary file, fsync, rename:
    :func:`p4lightning._io.atomic_path`); remote paths are left to Lightning's writer."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or get_filesystem(path).protocol not in ("file", ("file", "local")):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)


def use_atomic_checkpoints(trainer: pl.Trainer) -> None:
    """Give ``trainer`` an :class:`AtomicCheckpointIO` if it has Lightning's default writer (a user's own
    ``CheckpointIO`` plugin is kept)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


class FinalStepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) that also saves ``last.ckpt`` at the end of training, and writes every
    checkpoint atomically (:func:`use_atomic_checkpoints`)."""

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        use_atomic_checkpoints(trainer)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if (
            self.save_last
            and 0 < trainer.max_steps <= trainer.global_step
            and self._last_global_step_saved != trainer.global_step
            and not self._should_skip_saving_checkpoint(trainer)
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if (
            self.save_last
            and not trainer.fast_dev_run
            and not trainer.sanity_checking
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = trainer.global_step
