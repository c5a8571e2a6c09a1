r"""``MDTrajectoryDataModule``: MD trajectories (mdtraj-readable) as batches of positions ``(B, 3N)`` in nm.

Files are read in :meth:`~MDTrajectoryDataModule.setup` (never in ``__init__``, so constructing the module
from a config is free). Frames are split into train / validation / test by **contiguous blocks** in time
order: MD frames are correlated, and a random split would leak near-duplicates of training frames into
the validation set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from p4lightning._validation import check_positive_int

__all__ = ["EpochSeededSampler", "MDTrajectoryDataModule", "load_positions"]


class EpochSeededSampler(Sampler[int]):
    """A random permutation of ``range(n)`` drawn from ``seed + epoch``.

    Lightning calls :meth:`set_epoch` at the start of every epoch, so the order depends only on the epoch, not on
    how many epochs ran in this process: a run resumed from a checkpoint sees the same batches as one that never
    stopped. (Under DDP Lightning substitutes a ``DistributedSampler``, which is epoch-seeded the same way.)
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):  # noqa: ANN204 - Iterator[int]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def load_positions(
    trajectories: Sequence[str | Path], topology: str | Path, n_atoms: int | None = None, stride: int = 1
) -> np.ndarray:
    """Load and validate frames ``(F, N, 3)`` float32 in nm from one or more trajectory files.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: unreadable format, atom count or topology mismatch, non-finite coordinates.
    """
    import mdtraj

    check_positive_int(stride, "stride")
    topology = Path(topology)
    if not topology.is_file():
        raise FileNotFoundError(f"topology file not found: {topology}")
    try:
        top = mdtraj.load_topology(str(topology))
    except Exception as err:
        raise ValueError(f"topology {topology} is not readable by mdtraj: {err}") from err
    if n_atoms is not None and top.n_atoms != n_atoms:
        raise ValueError(f"topology {topology} has {top.n_atoms} atoms; the system has {n_atoms}")
    frames = []
    for path in map(Path, trajectories):
        if not path.is_file():
            raise FileNotFoundError(f"trajectory file not found: {path}")
        try:
            traj = mdtraj.load(str(path), top=top, stride=stride)
        except Exception as err:  # mdtraj raises many types (IOError, ValueError, struct.error...)
            raise ValueError(
                f"trajectory {path} is not readable by mdtraj with topology {topology}: {err}"
            ) from err
        if traj.n_atoms != top.n_atoms:
            raise ValueError(
                f"trajectory {path} has {traj.n_atoms} atoms; topology {topology} has {top.n_atoms}"
            )
        if traj.n_frames == 0:
            raise ValueError(f"trajectory {path} has no frames")
        bad = ~np.isfinite(traj.xyz)
        if bad.any():
            first = int(np.argwhere(bad.any(axis=(1, 2)))[0, 0])
            raise ValueError(
                f"trajectory {path} has NaN or infinite coordinates in {int(bad.any(axis=(1, 2)).sum())} frames "
                f"(first: frame {first * stride})"
            )
        frames.append(traj.xyz.astype(np.float32))
    return np.concatenate(frames)


class MDTrajectoryDataModule(pl.LightningDataModule):
    r"""Positions from MD trajectories, split by contiguous blocks into train / val / test.

    Args:
        trajectories: trajectory file(s) readable by mdtraj (DCD, HDF5, ...), frames in time order.
        topology: topology file (PDB).
        n_atoms: expected atom count (22 for alanine dipeptide); ``None`` skips the check.
        stride: keep every ``stride``-th frame.
        val_fraction: fraction of frames (a contiguous block after the training block) for validation.
        test_fraction: fraction of frames (the last block) for testing.
        batch_size: batch size of every loader.
        shuffle: shuffle the training frames every epoch.
        seed: seed of the shuffling.
        num_workers: ``DataLoader`` worker processes (0: load in the main process; the data are in memory).

    Batches are ``(positions,)`` with positions ``(B, 3N)`` float32 in nm.
    """

    def __init__(
        self,
        trajectories: list[str],
        topology: str,
        n_atoms: int | None = 22,
        stride: int = 1,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(trajectories, (str, Path)):
            trajectories = [str(trajectories)]
        if not trajectories:
            raise ValueError("trajectories must name at least one file")
        self.trajectories = [str(t) for t in trajectories]
        self.topology = str(topology)
        self.n_atoms = n_atoms
        self.stride = check_positive_int(stride, "stride")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"val_fraction + test_fraction must be < 1; got {val_fraction} + {test_fraction}"
            )
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.shuffle = bool(shuffle)
        self.seed = check_positive_int(seed, "seed", minimum=0)
        self.num_workers = check_positive_int(num_workers, "num_workers", minimum=0)
        self.train: torch.Tensor | None = None
        self.val: torch.Tensor | None = None
        self.test: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        xyz = load_positions(self.trajectories, self.topology, self.n_atoms, self.stride)
        n = len(xyz)
        n_val, n_test = int(round(n * self.val_fraction)), int(round(n * self.test_fraction))
        n_train = n - n_val - n_test
        if n_train < 1 or (self.val_fraction > 0 and n_val < 1) or (self.test_fraction > 0 and n_test < 1):
            raise ValueError(
                f"{n} frames are too few for the split train/val/test = {n_train}/{n_val}/{n_test}"
            )
        flat = torch.from_numpy(xyz.reshape(n, -1))
        self.train, self.val, self.test = (
            flat[:n_train],
            flat[n_train : n_train + n_val],
            flat[n_train + n_val :],
        )

    def _loader(self, data: torch.Tensor | None, shuffle: bool) -> DataLoader:
        if data is None:
            raise RuntimeError("MDTrajectoryDataModule.setup() must run before requesting a dataloader")
        sampler = EpochSeededSampler(len(data), self.seed) if shuffle else None
        return DataLoader(
            TensorDataset(data), batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test, False)
