r"""Two-dimensional toy densities (Grathwohl et al. 2018, as used in the paper's Sect. 4.2) and a datamodule.

Each sampler returns ``(n, 2)`` float32 points from a seeded generator; the densities are multimodal, which is
where mixing by general linear layers (P⁴Inv + Bent identity) separates modes better than RealNVP.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from p4lightning._validation import check_choice, check_positive_int
from p4lightning.data.sampler import seeded_train_loader

__all__ = ["TOY_DENSITIES", "Toy2DDataModule", "sample_toy"]


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    centers = np.array([(math.cos(a), math.sin(a)) for a in np.arange(8) * math.pi / 4]) * 2.0
    return centers[rng.integers(0, 8, n)] + 0.1 * rng.standard_normal((n, 2))


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) - rng.integers(0, 2, n) * 2.0 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) * 1.0


def _two_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.sqrt(rng.uniform(0, 1, n)) * 540 * (2 * math.pi) / 360
    d1x, d1y = -np.cos(t) * t, np.sin(t) * t
    sign = rng.integers(0, 2, n) * 2 - 1
    x = np.stack([d1x * sign, d1y * sign], axis=1) / 3.0
    return x + 0.1 * rng.standard_normal((n, 2))


def _pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    rads = np.linspace(0, 2 * math.pi, num_classes, endpoint=False)
    features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    labels = rng.integers(0, num_classes, n)
    angles = rads[labels] + rate * np.exp(features[:, 0])
    rot = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], axis=1).reshape(
        -1, 2, 2
    )
    return 2.0 * np.einsum("ti,tij->tj", features, rot)


TOY_DENSITIES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
    "pinwheel": _pinwheel,
}


def sample_toy(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points ``(n, 2)`` float32 from the toy density ``name`` (a key of :data:`TOY_DENSITIES`)."""
    check_choice(name, TOY_DENSITIES, "density")
    check_positive_int(n, "n")
    return torch.from_numpy(TOY_DENSITIES[name](np.random.default_rng(seed), n).astype(np.float32))


class Toy2DDataModule(pl.LightningDataModule):
    """Fixed train / test sets of a toy density; batches are ``(x,)`` with ``x`` of shape ``(B, 2)``.

    Args:
        density: one of :data:`TOY_DENSITIES`.
        n_train: training points.
        n_test: held-out points for the test log-likelihood.
        batch_size: paper App. G: 200.
        seed: seed of the data (test set: ``seed + 1``).
    """

    def __init__(
        self,
        density: str = "8gaussians",
        n_train: int = 50_000,
        n_test: int = 20_000,
        batch_size: int = 200,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.density = check_choice(density, TOY_DENSITIES, "density")
        self.n_train = check_positive_int(n_train, "n_train")
        self.n_test = check_positive_int(n_test, "n_test")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = seed
        self.train: torch.Tensor | None = None
        self.test: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train is None:
            self.train = sample_toy(self.density, self.n_train, self.seed)
            self.test = sample_toy(self.density, self.n_test, self.seed + 1)

    def train_dataloader(self) -> DataLoader:
        if self.train is None:
            raise RuntimeError("Toy2DDataModule.setup() must run before requesting a dataloader")
        # seeded by epoch and resumed mid-epoch from a checkpoint: a resumed run sees the same batches
        return seeded_train_loader(self.train, self.batch_size, self.seed, self.trainer)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.test), batch_size=2000)
