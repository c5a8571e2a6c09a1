r"""The base density of a flow with angles: :math:`\mathcal{N}(0, \mathbf{I})` on the Euclidean coordinates times
the uniform density on :math:`[-\pi, \pi)` for each circular one.

.. math::
    \ln p(\mathbf{z}) = -\tfrac12 \|\mathbf{z}_E\|^2 - \tfrac{d_E}{2}\ln 2\pi - d_C \ln 2\pi
    \quad (\mathbf{z}_C \in [-\pi, \pi)^{d_C}),

:math:`-\infty` outside the box. The uniform base of the angles is FAB's and TA-BG's choice for torsions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from p4lightning._validation import check_features, check_positive_int

__all__ = ["NormalUniformPrior"]


class NormalUniformPrior(nn.Module):
    r"""Standard normal on ``dim - len(circular)`` coordinates, uniform on :math:`[-\pi, \pi)` on ``circular``.

    Args:
        dim: number of coordinates :math:`d`.
        circular: indices of the angle coordinates.

    ``log_prob(z)``: ``(*, d)`` → ``(*)``; ``sample(n, generator)``: ``(n, d)``.

    Example:
        >>> p = NormalUniformPrior(3, circular=[2])
        >>> z = p.sample(1000, torch.Generator().manual_seed(0))
        >>> bool(z[:, 2].abs().max() <= math.pi)
        True
    """

    def __init__(self, dim: int, circular: Sequence[int] = ()) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        circ = sorted({int(i) for i in circular})
        if len(circ) != len(circular) or any(not 0 <= i < dim for i in circ):
            raise ValueError(f"circular must be distinct indices in range({dim}); got {list(circular)}")
        mask = torch.zeros(dim, dtype=torch.bool)
        mask[circ] = True
        self.register_buffer("_circular", mask, persistent=False)
        self.n_circular = len(circ)
        self._log_norm = -0.5 * (dim - len(circ)) * math.log(2 * math.pi) - len(circ) * math.log(2 * math.pi)
        self.register_buffer("_anchor", torch.zeros(()))  # follows .to(device/dtype)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        check_features(z, self.dim, "z")
        gauss = torch.where(self._circular, 0.0, z).square().sum(-1)
        inside = torch.where(self._circular, (z >= -math.pi) & (z < math.pi), True).all(-1)
        return torch.where(inside, -0.5 * gauss + self._log_norm, -math.inf)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        a = self._anchor
        device = generator.device if generator is not None else a.device
        normal = torch.randn(n, self.dim, generator=generator, dtype=a.dtype, device=device)
        uniform = torch.rand(n, self.dim, generator=generator, dtype=a.dtype, device=device)
        z = torch.where(self._circular.to(device), (2 * uniform - 1) * math.pi, normal)
        return torch.where(z >= math.pi, -math.pi, z).to(a.device)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, circular={self.n_circular}"
