r"""An invertible linear layer in LU form (Glow, Kingma & Dhariwal 2018; nflows' and zuko's ``LULinear``).

.. math::
    \mathbf{y} = \mathbf{L}\mathbf{U}\mathbf{x} + \mathbf{b}, \qquad
    \ln|\det J| = \textstyle\sum_i s_i,

with :math:`\mathbf{L}` unit lower-triangular, :math:`\mathbf{U}` upper-triangular with diagonal
:math:`e^{s_i} > 0`. All of :math:`\mathbf{L}`, :math:`\mathbf{U}`, :math:`\mathbf{s}`, :math:`\mathbf{b}` are
trained directly by the optimizer; the inverse is two triangular solves, :math:`O(n^2)` per sample. It is the
alternative a Glow, nflows or zuko user would pick where p4lightning uses P⁴Inv: the same map class
(invertible affine maps with positive determinant), parametrised instead of perturbed and merged.

References:
    D. P. Kingma, P. Dhariwal, Glow, arXiv:1807.03039.
"""

from __future__ import annotations

import torch
from torch import nn

from p4lightning._validation import check_features, check_positive_int
from p4lightning.bijection import Bijection

__all__ = ["LULinear"]


class LULinear(Bijection):
    r"""``y = L U x + b`` on ``(*, dim)``, identity at initialisation.

    Args:
        dim: number of features :math:`n`.
        bias: learn :math:`\mathbf{b}` (else 0).

    Example:
        >>> f = LULinear(3).double()
        >>> x = torch.randn(4, 3, dtype=torch.float64)
        >>> torch.equal(f(x)[0], x)
        True
    """

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.register_buffer("_strict_lower", torch.tril(torch.ones(dim, dim, dtype=torch.bool), -1), persistent=False)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L, U)``, each ``(n, n)``: unit lower-triangular and upper-triangular with positive diagonal."""
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.where(self._strict_lower, self.lower, 0.0) + eye
        upper = torch.where(self._strict_lower.T, self.upper, 0.0) + torch.diag(torch.exp(self.log_diag))
        return lower, upper

    def weight(self) -> torch.Tensor:
        """:math:`\\mathbf{L}\\mathbf{U}` ``(n, n)``."""
        lower, upper = self.factors()
        return lower @ upper

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(x, self.dim, "x")
        y = x @ self.weight().T
        if self.bias is not None:
            y = y + self.bias
        return y, self.log_diag.sum().expand(x.shape[:-1])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(y, self.dim, "y")
        lower, upper = self.factors()
        if self.bias is not None:
            y = y - self.bias
        flat = y.reshape(-1, self.dim).T  # (n, B): solve L U X = Y
        x = torch.linalg.solve_triangular(lower, flat, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, x, upper=True)
        return x.T.reshape(y.shape), -self.log_diag.sum().expand(y.shape[:-1])
