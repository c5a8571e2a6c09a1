r"""A bijection applied to the leading coordinates only: :math:`(\mathbf{x}_a, \mathbf{x}_b) \mapsto (f(\mathbf{x}_a), \mathbf{x}_b)`.

Mixed coordinates hold a Euclidean block first and angles last (see
:class:`~p4lightning.systems.mixed.MixedCoordinateTransform`): a dense linear map — P⁴Inv, an LU layer — is a
bijection of the Euclidean block but no map of the torus, so it acts on the leading block only. The
log-determinant is :math:`f`'s.
"""

from __future__ import annotations

import torch

from p4lightning._validation import check_features, check_positive_int
from p4lightning.bijection import Bijection

__all__ = ["LeadingBlock"]


class LeadingBlock(Bijection):
    r"""Apply ``bijection`` to the first ``bijection.dim`` of ``dim`` coordinates; the rest pass unchanged.

    Args:
        bijection: :math:`f` on :math:`\mathbb{R}^{d_a}`.
        dim: total number of coordinates :math:`d \ge d_a`.

    Example:
        >>> from p4lightning.flows import LULinear
        >>> g = LeadingBlock(LULinear(2), 3)
        >>> g(torch.ones(1, 3))[0]
        tensor([[1., 1., 1.]], grad_fn=<CatBackward0>)
    """

    def __init__(self, bijection: Bijection, dim: int) -> None:
        super().__init__()
        if not isinstance(bijection, Bijection):
            raise TypeError(f"bijection must be a p4lightning Bijection; got {type(bijection).__name__}")
        self.dim = check_positive_int(dim, "dim")
        if bijection.dim > dim:
            raise ValueError(f"bijection.dim = {bijection.dim} exceeds dim = {dim}")
        self.bijection = bijection
        self.split = bijection.dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(x, self.dim, "x")
        y, ladj = self.bijection(x[..., : self.split])
        return torch.cat([y, x[..., self.split :]], dim=-1), ladj

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(y, self.dim, "y")
        x, ladj = self.bijection.inverse(y[..., : self.split])
        return torch.cat([x, y[..., self.split :]], dim=-1), ladj

    def extra_repr(self) -> str:
        return f"dim={self.dim}, leading={self.split}"
