r"""Training batches in an order that depends only on (seed, epoch, rank) and resumes exactly mid-epoch, on one
process or under DDP.

:class:`EpochSeededSampler` draws a permutation of ``range(n)`` from ``seed + epoch`` and gives rank ``r`` of ``w``
processes every ``w``-th index of it from ``r`` (padded, as ``DistributedSampler`` pads, to a multiple of ``w``);
:func:`seeded_train_loader` wires it to a ``Trainer`` so that a run resumed from a checkpoint taken after ``k``
batches of epoch ``e`` sees exactly the batches the uninterrupted run would have seen, on every rank (the datamodules
of MD trajectories and of the 2-D toy densities both build their training loader with it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from p4lightning._validation import ConfigurationError

__all__ = ["EpochSeededSampler", "SeededLoader", "seeded_train_loader"]


class EpochSeededSampler(DistributedSampler):
    """A random permutation of ``range(n)`` drawn from ``seed + epoch``, this rank's share of it, resumable in the
    middle of an epoch.

    With ``num_replicas = w`` processes the permutation is padded with its own first indices to ``w·⌈n/w⌉`` and rank
    ``r`` takes the indices at ``r, r + w, r + 2w, …`` (``⌈n/w⌉`` of them; with ``w = 1`` the whole permutation).
    It is a ``DistributedSampler``, so Lightning uses it as it is under DDP instead of wrapping it in one of its
    own, whose reshuffle would not resume mid-epoch. Lightning calls :meth:`set_epoch` at the start of every
    epoch; with ``epoch_source`` (the loader passes the trainer's ``current_epoch``) the epoch is read from there
    when iteration starts, so the order depends only on the epoch, not on how many epochs ran in this process. A run
    resumed from a checkpoint taken after ``k`` batches of epoch ``e`` calls :meth:`resume` ``(e, k)``; that epoch
    then yields only this rank's indices after its first ``k`` batches.
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        batch_size: int = 1,
        epoch_source: Callable[[], int] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        # rank and world size given: no process group is needed to build it
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.batch_size = batch_size
        self.epoch_source = epoch_source
        self._resume: tuple[int, int] | None = None

    @property
    def n(self) -> int:
        """The number of frames the permutation is drawn over."""
        return len(self.dataset)

    def resume(self, epoch: int, batches_done: int) -> None:
        """Skip this rank's first ``batches_done`` batches of epoch ``epoch`` (once)."""
        self.epoch = epoch
        self._resume = (epoch, batches_done) if batches_done > 0 else None

    def __iter__(self) -> Iterator[int]:
        if self.epoch_source is not None:
            # the trainer's epoch counter, not the argument of set_epoch: after a resume from a checkpoint written
            # at validation end, Lightning calls set_epoch with one more than the epoch it then runs
            self.epoch = self.epoch_source()
        # DistributedSampler's order: randperm(n) seeded by seed + epoch, padded, this rank's every w-th index
        order = list(super().__iter__())
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1] * self.batch_size :]
            self._resume = None
        return iter(order)


class SeededLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSeededSampler` whose ``state_dict`` names its data order (seed, frames,
    batch size, processes), so Lightning stores it in the checkpoint and hands it back on resume.

    The position in the order is restored from the trainer's loop progress when the loader is built (which also
    resumes checkpoints written before the loader had a state); :meth:`load_state_dict` checks that the resumed run
    draws the same order and refuses one that would not (other seed, frame count or batch size), so a resume can
    never silently train on another sequence of batches. Another number of processes is allowed, with a warning:
    the resumed run is then not the uninterrupted one.
    """

    sampler: EpochSeededSampler

    def state_dict(self) -> dict[str, Any]:
        s = self.sampler
        return {"seed": s.seed, "frames": s.n, "batch_size": s.batch_size, "num_replicas": s.num_replicas}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        now = self.state_dict()
        changed = [k for k in ("seed", "frames", "batch_size") if state_dict.get(k) != now[k]]
        if changed:
            raise ConfigurationError(
                "the checkpoint's training data order was "
                + ", ".join(f"{k} {state_dict.get(k)}" for k in changed)
                + "; this run's is "
                + ", ".join(f"{k} {now[k]}" for k in changed)
                + ": a resumed run would not see the batches of the run it continues (resume with the same data, "
                "seed and batch size, or start a new run)"
            )
        if state_dict.get("num_replicas") != now["num_replicas"]:
            warnings.warn(
                f"resuming a run trained on {state_dict.get('num_replicas')} processes on {now['num_replicas']}: "
                "each rank's share of the data order differs from the uninterrupted run's",
                stacklevel=2,
            )


def seeded_train_loader(
    data: torch.Tensor, batch_size: int, seed: int, trainer: pl.Trainer | None, num_workers: int = 0
) -> SeededLoader:
    """A loader of ``(x,)`` batches of ``data`` ``(n, *)`` in :class:`EpochSeededSampler` order (this rank's share
    under DDP), resumed at the trainer's restored position (``trainer`` may be ``None`` outside a fit: then one
    process, starting at epoch 0)."""
    replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = EpochSeededSampler(len(data), seed, batch_size, num_replicas=replicas, rank=rank)
    loader = SeededLoader(TensorDataset(data), batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    if trainer is not None:
        sampler.epoch_source = lambda: trainer.current_epoch
        # Lightning restores its loop progress before it asks for the loaders: a checkpoint taken after k
        # batches of epoch e resumes at batch k of the same permutation. `processed` (not `completed`)
        # counts the batch whose on_train_batch_end wrote the checkpoint: its optimizer step is in it.
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if 0 < done < len(loader):
            sampler.resume(trainer.current_epoch, done)
    return loader
