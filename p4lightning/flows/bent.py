r"""The elementwise Bent identity, a smooth bijection of :math:`\mathbb{R}` (paper Sect. 2.5).

.. math::
    B(x) = \frac{\sqrt{x^2 + 1} - 1}{2} + x, \qquad
    B'(x) = 1 + \frac{x}{2\sqrt{x^2 + 1}} \in (\tfrac12, \tfrac32),

so :math:`B` is strictly increasing with slopes bounded away from 0. Solving :math:`y = B(x)` for :math:`x`
with :math:`c = 2y + 1` gives the quadratic :math:`3x^2 - 4cx + c^2 - 1 = 0`, whose root with
:math:`\sqrt{x^2+1} = c - 2x > 0` is

.. math::
    B^{-1}(y) = \frac{2c - \sqrt{c^2 + 3}}{3}.

Neither expression cancels catastrophically for large :math:`|x|` or :math:`|y|`.

References:
    Krämer, Köhler, Noé, arXiv:2010.07033, Sect. 2.5; Gresele et al. 2020 (stacked linear + elementwise
    bijections).
"""

from __future__ import annotations

import torch

from p4lightning._validation import check_features, check_positive_int
from p4lightning.bijection import Bijection, Inverse

__all__ = ["BentIdentity", "InverseBentIdentity", "bent", "bent_inverse"]


def bent(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`B(x)` and :math:`\\ln B'(x)`, elementwise, same shape as ``x``."""
    s = torch.sqrt(x * x + 1.0)
    return (s - 1.0) / 2.0 + x, torch.log1p(x / (2.0 * s))


def bent_inverse(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`B^{-1}(y)` and :math:`\\ln (B^{-1})'(y) = -\\ln B'(B^{-1}(y))`, elementwise."""
    c = 2.0 * y + 1.0
    x = (2.0 * c - torch.sqrt(c * c + 3.0)) / 3.0
    return x, -torch.log1p(x / (2.0 * torch.sqrt(x * x + 1.0)))


class BentIdentity(Bijection):
    r"""Elementwise Bent identity on vectors of size ``dim``; ``ladj`` sums :math:`\ln B'` over the last axis.

    Args:
        dim: feature size.

    Example:
        >>> f = BentIdentity(2)
        >>> y, ladj = f(torch.tensor([[0.0, 1.0]], dtype=torch.float64))
        >>> y
        tensor([[0.0000, 1.2071]], dtype=torch.float64)
        >>> torch.allclose(f.inverse(y)[0], torch.tensor([[0.0, 1.0]], dtype=torch.float64))
        True
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(x, self.dim, "x")
        y, log_d = bent(x)
        return y, log_d.sum(-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(y, self.dim, "y")
        x, log_d = bent_inverse(y)
        return x, log_d.sum(-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def InverseBentIdentity(dim: int) -> Inverse:  # noqa: N802 - reads like a class at call sites
    """:math:`B^{-1}` as a bijection: ``Inverse(BentIdentity(dim))``."""
    return Inverse(BentIdentity(dim))
