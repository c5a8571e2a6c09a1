r"""The one interface every invertible layer of p4lightning implements.

A bijection :math:`f: \mathbb{R}^d \to \mathbb{R}^d` acts on the last dimension of its input:

* ``forward(x) -> (y, ladj)`` with ``y = f(x)`` and ``ladj = log|det J_f(x)|``,
* ``inverse(y) -> (x, ladj)`` with ``x = f^{-1}(y)`` and ``ladj = log|det J_{f^{-1}}(y)|``,

where ``x``, ``y`` have shape ``(*, d)`` and ``ladj`` has shape ``(*)``. ("ladj": log-absolute-determinant
of the Jacobian, as in zuko.) The interface lives at the package root, not in :mod:`p4lightning.flows`,
because the core P⁴ layers are bijections too and the core must not import the flow library.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

__all__ = ["Bijection", "Inverse"]


class Bijection(nn.Module, ABC):
    r"""Abstract invertible map on vectors of size ``dim``, with its log-absolute-Jacobian determinant.

    Subclasses implement :meth:`forward` and :meth:`inverse`; both return ``(output, ladj)``.
    """

    dim: int

    @abstractmethod
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Map ``x`` of shape ``(*, dim)`` to ``(y, ladj)``, ``y`` of shape ``(*, dim)``, ``ladj`` ``(*)``."""

    @abstractmethod
    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Map ``y`` of shape ``(*, dim)`` to ``(x, ladj)`` with ``ladj = log|det J_{f^{-1}}(y)|``."""


class Inverse(Bijection):
    r"""The inverse :math:`f^{-1}` of a bijection ``f`` as a bijection of its own.

    ``Inverse(f).forward`` is ``f.inverse`` and vice versa; parameters are shared with ``f``.

    Args:
        bijection: the bijection :math:`f` to invert.

    Example:
        >>> from p4lightning.flows import BentIdentity
        >>> g = Inverse(BentIdentity(3))
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> torch.allclose(g.inverse(g(x)[0])[0], x)
        True
    """

    def __init__(self, bijection: Bijection) -> None:
        super().__init__()
        if not isinstance(bijection, Bijection):
            raise TypeError(f"bijection must be a p4lightning Bijection; got {type(bijection).__name__}")
        self.bijection = bijection
        self.dim = bijection.dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bijection.inverse(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bijection.forward(y)
