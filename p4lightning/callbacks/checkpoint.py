r"""``FinalStepCheckpoint``: Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is always the final step.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it saves a checkpoint (after
validation, or every ``every_n_train_steps``); its ``on_train_end`` writes one only if none was ever written.
So a 1000-step run validated every 5 epochs of 48 steps ends with ``last.ckpt`` of step 960. This subclass also
writes ``last.ckpt`` at the batch that reaches ``max_steps`` (inside the batch loop, where Lightning's progress
counters still name the running epoch: a checkpoint written later, in ``on_train_end``, already counts the
interrupted epoch as finished, and a resume from it would draw the next epoch's data order), and, for other
ends of training (``max_epochs``, ``max_time``, early stopping), at the end of training if no checkpoint holds the
last step. So ``last.ckpt`` is the final model, and a resume from it continues where the run stopped.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from typing_extensions import override

__all__ = ["FinalStepCheckpoint"]


class FinalStepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (same arguments) that also saves ``last.ckpt`` at the end of training."""

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
