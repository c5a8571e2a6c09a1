r"""``MDTrajectoryDataModule``: MD trajectories (mdtraj-readable) as batches of positions ``(B, 3N)`` in nm.

Files are read in :meth:`~MDTrajectoryDataModule.setup` (never in ``__init__``, so constructing the module
from a config is free). MD frames are correlated, and a random split would leak near-duplicates of training
frames into the validation set, so the split is never random:

* ``split="trajectories"`` (independent replicas, e.g. ``p4lightning-md --replicas``): validation and test are
  **whole trajectories** never seen in training (the last files in the sorted list are the test set, the ones
  before them validation);
* ``split="contiguous"`` (one long trajectory): contiguous blocks in time order.

Entries of ``trajectories`` may be glob patterns (``data/ala2_600K_replicas/replica_*.dcd``), expanded in
sorted order. :meth:`~MDTrajectoryDataModule.split_report` gives each split's files, frames and fraction of
frames with :math:`\varphi > 0` (the rare left-handed basins).
"""

from __future__ import annotations

import glob
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from p4lightning._io import c_stdout_silenced
from p4lightning._validation import (
    ConfigurationError,
    InputFileError,
    check_literal,
    check_nonnegative_int,
    check_positive_int,
)
from p4lightning.data.sampler import seeded_train_loader

__all__ = ["MDTrajectoryDataModule", "SplitKind", "load_positions"]

SplitKind = Literal["contiguous", "trajectories"]


def expand_trajectories(trajectories: Sequence[str | Path]) -> list[str]:
    """Expand glob patterns (sorted); plain paths are kept as given. A pattern matching nothing raises."""
    out: list[str] = []
    for entry in trajectories:
        entry = str(entry)
        if glob.has_magic(entry):
            matches = sorted(glob.glob(entry))
            if not matches:
                raise FileNotFoundError(f"trajectory pattern {entry!r} matches no file")
            out.extend(matches)
        else:
            out.append(entry)
    return out


def dcd_header_frames(path: str | Path) -> int | None:
    """The frame count a DCD file's header declares (its NSET field), or ``None`` if ``path`` has no CHARMM/NAMD
    DCD header (then mdtraj's own reader decides)."""
    with open(path, "rb") as f:
        head = f.read(12)
    for order in ("<", ">"):
        if len(head) == 12 and struct.unpack(order + "i", head[:4])[0] == 84 and head[4:8] == b"CORD":
            return int(struct.unpack(order + "i", head[8:12])[0])
    return None


def load_positions(
    trajectories: Sequence[str | Path], topology: str | Path, n_atoms: int | None = None, stride: int = 1
) -> np.ndarray:
    """Load and validate frames ``(F, N, 3)`` float32 in nm from one or more trajectory files.

    Raises:
        FileNotFoundError: a file does not exist.
        InputFileError: (a ValueError) unreadable format, empty, truncated or corrupt file, atom count or topology
            mismatch, non-finite coordinates.
    """
    import mdtraj

    check_positive_int(stride, "stride")
    topology = Path(topology)
    if not topology.is_file():
        raise FileNotFoundError(f"topology file not found: {topology}")
    try:
        top = mdtraj.load_topology(str(topology))
    except Exception as err:
        raise InputFileError(f"topology {topology} is not readable by mdtraj: {err}") from err
    if n_atoms is not None and top.n_atoms != n_atoms:
        raise InputFileError(f"topology {topology} has {top.n_atoms} atoms; the system has {n_atoms}")
    frames = []
    for path in map(Path, trajectories):
        if not path.is_file():
            raise FileNotFoundError(f"trajectory file not found: {path}")
        declared = dcd_header_frames(path) if path.suffix.lower() == ".dcd" else None
        if declared == 0:
            raise InputFileError(f"trajectory {path} has no frames (its DCD header declares 0)")
        try:
            with c_stdout_silenced():  # the DCD plugin's C-level "dcdplugin)" lines
                traj = mdtraj.load(str(path), top=top, stride=stride)
        except Exception as err:  # mdtraj raises many types (IOError, ValueError, struct.error...)
            raise InputFileError(
                f"trajectory {path} is not readable by mdtraj with topology {topology}: {err}"
            ) from err
        if traj.n_atoms != top.n_atoms:
            raise InputFileError(
                f"trajectory {path} has {traj.n_atoms} atoms; topology {topology} has {top.n_atoms}"
            )
        if traj.n_frames == 0:
            raise InputFileError(f"trajectory {path} has no frames")
        if declared is not None and traj.n_frames != -(-declared // stride):
            raise InputFileError(
                f"trajectory {path} is truncated or corrupt: its DCD header declares {declared} frames, "
                f"{traj.n_frames * stride if stride == 1 else f'{traj.n_frames} (stride {stride})'} could be read"
            )
        bad = ~np.isfinite(traj.xyz)
        if bad.any():
            first = int(np.argwhere(bad.any(axis=(1, 2)))[0, 0])
            raise InputFileError(
                f"trajectory {path} has NaN or infinite coordinates in {int(bad.any(axis=(1, 2)).sum())} frames "
                f"(first: frame {first * stride})"
            )
        frames.append(traj.xyz.astype(np.float32))
    return np.concatenate(frames)


class MDTrajectoryDataModule(pl.LightningDataModule):
    r"""Positions from MD trajectories, split into train / val / test by whole trajectories or contiguous blocks.

    Args:
        trajectories: trajectory file(s) or glob patterns, readable by mdtraj (DCD, HDF5, ...), frames in
            time order.
        topology: topology file (PDB).
        n_atoms: expected atom count (22 for alanine dipeptide); ``None`` skips the check.
        stride: keep every ``stride``-th frame.
        split: ``"trajectories"``: validation and test are whole files (fractions of the number of files,
            rounded, at least one file each when the fraction is > 0); ``"contiguous"``: blocks of frames.
        val_fraction: fraction for validation (files, or a contiguous block after the training block).
        test_fraction: fraction for testing (the last files, or the last block).
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
        split: SplitKind = "contiguous",
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
        check_literal(split, SplitKind, "split")
        self.split = split
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
        self.seed = check_nonnegative_int(seed, "seed")
        self.num_workers = check_nonnegative_int(num_workers, "num_workers")
        self.train: torch.Tensor | None = None
        self.val: torch.Tensor | None = None
        self.test: torch.Tensor | None = None
        self.split_files: dict[str, list[str]] = {}
        #: per split, the ``(F,)`` index of each frame's file within the split (replicas: between-replica intervals)
        self.replica_ids: dict[str, torch.Tensor] = {}
        for path in [*expand_trajectories(self.trajectories), self.topology]:  # at configuration time, not in fit
            if not Path(path).is_file():
                kind = "topology" if path == self.topology else "trajectory"
                raise FileNotFoundError(f"{kind} file not found: {path}")

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        files = expand_trajectories(self.trajectories)
        if self.split == "trajectories":
            self._setup_by_trajectories(files)
            return
        self.split_files = {"train": files, "val": files, "test": files}
        xyz = load_positions(files, self.topology, self.n_atoms, self.stride)
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

    def _setup_by_trajectories(self, files: list[str]) -> None:
        n = len(files)
        n_val = max(1, round(n * self.val_fraction)) if self.val_fraction > 0 else 0
        n_test = max(1, round(n * self.test_fraction)) if self.test_fraction > 0 else 0
        n_train = n - n_val - n_test
        if n_train < 1:
            raise ValueError(
                f"{n} trajectories are too few for a split by whole trajectories train/val/test = "
                f"{n_train}/{n_val}/{n_test} (val_fraction {self.val_fraction}, test_fraction {self.test_fraction})"
            )
        self.split_files = {
            "train": files[:n_train],
            "val": files[n_train : n_train + n_val],
            "test": files[n_train + n_val :],
        }
        parts = {}
        for name, group in self.split_files.items():
            if group:
                per_file = [load_positions([f], self.topology, self.n_atoms, self.stride) for f in group]
                parts[name] = torch.cat([torch.from_numpy(xyz.reshape(len(xyz), -1)) for xyz in per_file])
                self.replica_ids[name] = torch.cat(
                    [torch.full((len(xyz),), i, dtype=torch.long) for i, xyz in enumerate(per_file)]
                )
            else:
                parts[name] = torch.empty(0, 3 * (self.n_atoms or 0) if self.n_atoms else 0)
        self.train, self.val, self.test = parts["train"], parts["val"], parts["test"]

    def split_report(self) -> dict[str, dict[str, object]]:
        """Each split's files, number of frames and fraction of frames with φ > 0 (after :meth:`setup`)."""
        from p4lightning.systems.observables import phi_psi

        if self.train is None:
            raise RuntimeError("MDTrajectoryDataModule.setup() must run before split_report()")
        report: dict[str, dict[str, object]] = {}
        for name, data in (("train", self.train), ("val", self.val), ("test", self.test)):
            frames = 0 if data is None else len(data)
            phi = phi_psi(data)[0] if frames else torch.empty(0)
            report[name] = {
                "files": [Path(f).name for f in self.split_files.get(name, [])],
                "frames": frames,
                "phi_positive_fraction": float((phi > 0).double().mean()) if frames else float("nan"),
            }
        return report

    def _loader(self, data: torch.Tensor | None, shuffle: bool) -> DataLoader:
        if data is None:
            raise RuntimeError("MDTrajectoryDataModule.setup() must run before requesting a dataloader")
        if shuffle:
            return seeded_train_loader(data, self.batch_size, self.seed, self.trainer, self.num_workers)
        return DataLoader(TensorDataset(data), batch_size=self.batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train, self.shuffle)

    def val_dataloader(self) -> DataLoader:
        # while fitting, an empty validation split means "no validation"; `validate` needs frames
        if self.val is not None and len(self.val) == 0 and self._stage() == "validate":
            raise ConfigurationError("the validation split is empty (val_fraction 0): nothing to validate on")
        return self._loader(self.val, False)

    def test_dataloader(self) -> DataLoader:
        if self.test is not None and len(self.test) == 0:
            raise ConfigurationError("the test split is empty (test_fraction 0): nothing to test on")
        return self._loader(self.test, False)

    def _stage(self) -> str | None:
        """The attached trainer's stage (``"fit"``, ``"validate"``, ``"test"``, ...), or None."""
        trainer = self.trainer
        return None if trainer is None or trainer.state.fn is None else trainer.state.fn.value
