r"""Composition of bijections with summed log-determinants, and the standard normal prior."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from p4lightning._validation import check_positive_int
from p4lightning.bijection import Bijection

__all__ = ["SequentialFlow", "StandardNormal"]


class SequentialFlow(Bijection):
    r""":math:`f = f_K \circ \dots \circ f_1`; ``forward`` applies :math:`f_1` first and sums the ``ladj``.

    Args:
        bijections: the :math:`f_k`, all with the same ``dim``.
    """

    def __init__(self, bijections: Iterable[Bijection]) -> None:
        super().__init__()
        self.bijections = nn.ModuleList(bijections)
        if len(self.bijections) == 0:
            raise ValueError("SequentialFlow needs at least one bijection")
        dims = {b.dim for b in self.bijections}
        for b in self.bijections:
            if not isinstance(b, Bijection):
                raise TypeError(f"every element must be a Bijection; got {type(b).__name__}")
        if len(dims) != 1:
            raise ValueError(f"all bijections must have the same dim; got {sorted(dims)}")
        self.dim = dims.pop()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.new_zeros(x.shape[:-1])
        for b in self.bijections:
            x, ladj = b(x)
            total = total + ladj
        return x, total

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = y.new_zeros(y.shape[:-1])
        for b in reversed(self.bijections):
            y, ladj = b.inverse(y)
            total = total + ladj
        return y, total


class StandardNormal(nn.Module):
    r""":math:`\mathcal{N}(0, \mathbf{I}_d)`: ``log_prob(z)`` of shape ``(*)`` and ``sample(n)`` of shape ``(n, d)``;
    :meth:`energy` is :math:`\tfrac12\|\mathbf{z}\|^2` (the negative log-density up to its constant)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.register_buffer("_anchor", torch.zeros(()))  # follows .to(device/dtype)

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * z.square().sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -self.energy(z) - 0.5 * self.dim * math.log(2 * math.pi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        a = self._anchor
        if generator is not None and generator.device != a.device:  # e.g. a CPU generator for a GPU model
            return torch.randn(n, self.dim, generator=generator, dtype=a.dtype, device=generator.device).to(a.device)
        return torch.randn(n, self.dim, generator=generator, dtype=a.dtype, device=a.device)
