r"""``LinearDataModule``: pairs :math:`(\mathbf{x}, \mathbf{T}\mathbf{x})` for the paper's linear problems."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from p4lightning._validation import check_choice, check_nonnegative_int, check_positive_int
from p4lightning.data.linear import LINEAR_TARGETS, linear_target

__all__ = ["LinearDataModule"]


class LinearDataModule(pl.LightningDataModule):
    r"""A fixed pool of :math:`\mathbf{x} \sim \mathcal{N}(0, \mathbf{I})` and targets :math:`\mathbf{y} = \mathbf{T}\mathbf{x}`.

    Args:
        target: ``"positive_definite"``, ``"special_orthogonal"`` or ``"negative_identity"``.
        dim: matrix size (default: the paper's 32, 128, 101).
        batch_size: samples per optimizer step.
        steps_per_epoch: batches per epoch (the pool holds ``batch_size * steps_per_epoch`` samples).
        shuffle: reshuffle the pool every epoch.
        seed: seed of the target matrix, the pool and the shuffling.
        dtype: ``"float32"`` or ``"float64"``.
    """

    def __init__(
        self,
        target: str = "positive_definite",
        dim: int | None = None,
        batch_size: int = 64,
        steps_per_epoch: int = 100,
        shuffle: bool = True,
        seed: int = 0,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.target_name = check_choice(target, LINEAR_TARGETS, "target")
        self.dim = None if dim is None else check_positive_int(dim, "dim")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.shuffle = bool(shuffle)
        self.seed = check_nonnegative_int(seed, "seed")
        self.dtype = getattr(torch, check_choice(dtype, ("float32", "float64"), "dtype"))
        self.target: torch.Tensor | None = None
        self._train: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        self.target = linear_target(self.target_name, self.dim, seed=self.seed).to(self.dtype)
        g = torch.Generator().manual_seed(self.seed + 1)
        x = torch.randn(
            self.batch_size * self.steps_per_epoch, self.target.shape[0], generator=g, dtype=torch.float64
        )
        x = x.to(self.dtype)
        self._train = TensorDataset(x, x @ self.target.T)

    def train_dataloader(self) -> DataLoader:
        if self._train is None:
            raise RuntimeError("LinearDataModule.setup() must run before train_dataloader()")
        g = torch.Generator().manual_seed(self.seed + 2)
        return DataLoader(
            self._train, batch_size=self.batch_size, shuffle=self.shuffle, generator=g, drop_last=True
        )
