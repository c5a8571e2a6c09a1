r"""Training batches in an order that depends only on (seed, epoch) and resumes exactly mid-epoch.

:class:`EpochSeededSampler` draws a permutation of ``range(n)`` from ``seed + epoch``; :func:`seeded_train_loader`
wires it to a ``Trainer`` so that a run resumed from a checkpoint taken after ``k`` batches of epoch ``e`` sees
exactly the batches the uninterrupted run would have seen (the datamodules of MD trajectories and of the 2-D toy
densities both build their training loader with it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

__all__ = ["EpochSeededSampler", "seeded_train_loader"]


class EpochSeededSampler(Sampler[int]):
    """A random permutation of ``range(n)`` drawn from ``seed + epoch``, resumable in the middle of an epoch.

    Lightning calls :meth:`set_epoch` at the start of every epoch; with ``epoch_source`` (the datamodule passes the
    trainer's ``current_epoch``) the epoch is read from there when iteration starts. The order depends only on the
    epoch, not on how many epochs ran in this process. A run resumed from a checkpoint taken after ``k`` batches of epoch ``e``
    calls :meth:`resume` ``(e, k)``; that epoch then yields only the indices after its first ``k`` batches, so the
    resumed run sees exactly the batches the uninterrupted run would have seen. (Under DDP Lightning substitutes a
    ``DistributedSampler``, which is epoch-seeded the same way but restarts a resumed epoch from its beginning.)
    """

    def __init__(
        self, n: int, seed: int = 0, batch_size: int = 1, epoch_source: Callable[[], int] | None = None
    ) -> None:
        self.n, self.seed, self.batch_size, self.epoch = n, seed, batch_size, 0
        self.epoch_source = epoch_source
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """Skip the first ``batches_done`` batches of epoch ``epoch`` (once)."""
        self.epoch = epoch
        self._resume = (epoch, batches_done) if batches_done > 0 else None

    def __iter__(self) -> Iterator[int]:
        if self.epoch_source is not None:
            # the trainer's epoch counter, not the argument of set_epoch: after a resume from a checkpoint written
            # at validation end, Lightning calls set_epoch with one more than the epoch it then runs
            self.epoch = self.epoch_source()
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g)
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] * self.batch_size :]
            self._resume = None
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.n


def seeded_train_loader(
    data: torch.Tensor, batch_size: int, seed: int, trainer: pl.Trainer | None, num_workers: int = 0
) -> DataLoader:
    """A loader of ``(x,)`` batches of ``data`` ``(n, *)`` in :class:`EpochSeededSampler` order, resumed at the
    trainer's restored position (``trainer`` may be ``None`` outside a fit: then it starts at epoch 0)."""
    sampler = EpochSeededSampler(len(data), seed, batch_size)
    loader = DataLoader(TensorDataset(data), batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    if trainer is not None:
        sampler.epoch_source = lambda: trainer.current_epoch
        # Lightning restores its loop progress before it asks for the loaders: a checkpoint taken after k
        # batches of epoch e resumes at batch k of the same permutation. `processed` (not `completed`)
        # counts the batch whose on_train_batch_end wrote the checkpoint: its optimizer step is in it.
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if 0 < done < len(loader):
            sampler.resume(trainer.current_epoch, done)
    return loader
