r"""Fixed permutations: the channel swap of RealNVP flows (log-determinant 0)."""

from __future__ import annotations

import torch

from p4lightning._validation import check_features, check_positive_int
from p4lightning.bijection import Bijection

__all__ = ["Permutation", "Swap"]


class Permutation(Bijection):
    """``y = x[..., perm]`` for a fixed permutation ``perm`` of ``range(dim)``; ``ladj = 0``."""

    def __init__(self, perm: torch.Tensor | list[int]) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        self.dim = check_positive_int(int(perm.numel()), "len(perm)")
        if perm.dim() != 1 or not torch.equal(torch.sort(perm).values, torch.arange(self.dim)):
            raise ValueError(f"perm must be a permutation of range({self.dim}); got {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(x, self.dim, "x")
        return x[..., self.perm], x.new_zeros(x.shape[:-1])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(y, self.dim, "y")
        return y[..., self.inverse_perm], y.new_zeros(y.shape[:-1])


class Swap(Permutation):
    """Swap the two channels ``(x[:split], x[split:]) -> (x[split:], x[:split])`` (the RealNVP baseline's mixing)."""

    def __init__(self, dim: int, split: int | None = None) -> None:
        split = dim // 2 if split is None else split
        super().__init__(torch.cat([torch.arange(split, dim), torch.arange(split)]))
