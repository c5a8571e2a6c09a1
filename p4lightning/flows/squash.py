r"""``AngleSquash``: the last ``n`` coordinates of a vector mapped from :math:`\mathbb{R}` onto the open interval
:math:`(-\pi, \pi)`, the rest unchanged — how a flow on all of :math:`\mathbb{R}^d` (RealNVP) places torsions on
the circle without aliasing.

.. math::
    \theta = \pi \tanh t, \qquad \ln\frac{d\theta}{dt} = \ln\pi + \ln(1 - \tanh^2 t)
    = \ln\pi + 2\,(\ln 2 - |t| - \operatorname{softplus}(-2|t|)),

the last form exact for large :math:`|t|` (no :math:`1 - 1` cancellation). The inverse is
:math:`t = \operatorname{atanh}(\theta/\pi)` with :math:`\ln\frac{dt}{d\theta} = -\ln\pi - \ln(1 - (\theta/\pi)^2)`.
It is a bijection :math:`\mathbb{R} \to (-\pi, \pi)`, so every angle has exactly one preimage and the flow's
density is the density of the angle (a wrap of an unbounded coordinate would sum over infinitely many preimages,
of which the flow knows one). The density vanishes at :math:`\pm\pi`; with torsions measured from their mean
(:class:`~p4lightning.systems.mixed.MixedCoordinateTransform`) that is the point opposite the mean.

Float limits: :math:`\tanh t` rounds to :math:`\pm 1` for :math:`|t| \gtrsim 9` (float32) or :math:`19` (float64),
so such a sample lands on :math:`\pm\pi` (counted by ``out_of_branch``); the inverse clamps :math:`|\theta/\pi|`
one ulp below 1 so an angle of exactly :math:`\pm\pi` has a finite preimage.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F  # noqa: N812 - torch's convention

from p4lightning._validation import check_features, check_nonnegative_int, check_positive_int
from p4lightning.bijection import Bijection

__all__ = ["AngleSquash"]


class AngleSquash(Bijection):
    r""":math:`\theta = \pi\tanh t` on the last ``n_angles`` of ``dim`` coordinates, identity on the others.

    Args:
        dim: feature size.
        n_angles: trailing coordinates that are angles (0: the identity).

    Example:
        >>> f = AngleSquash(3, 2)
        >>> y, ladj = f(torch.tensor([[5.0, 0.0, 100.0]], dtype=torch.float64))
        >>> y
        tensor([[5.0000, 0.0000, 3.1416]], dtype=torch.float64)
        >>> bool(torch.isfinite(ladj).all())
        True
    """

    def __init__(self, dim: int, n_angles: int) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.n_angles = check_nonnegative_int(n_angles, "n_angles")
        if n_angles > dim:
            raise ValueError(f"n_angles must be <= dim; got {n_angles} > {dim}")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(x, self.dim, "x")
        k = self.dim - self.n_angles
        t = x[..., k:]
        a = t.abs()
        log_d = math.log(math.pi) + 2.0 * (math.log(2.0) - a - F.softplus(-2.0 * a))
        return torch.cat([x[..., :k], math.pi * torch.tanh(t)], dim=-1), log_d.sum(-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(y, self.dim, "y")
        k = self.dim - self.n_angles
        limit = 1.0 - torch.finfo(y.dtype).eps
        s = (y[..., k:] / math.pi).clamp(-limit, limit)
        log_d = -math.log(math.pi) - torch.log1p(-s * s)
        return torch.cat([y[..., :k], torch.atanh(s)], dim=-1), log_d.sum(-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_angles={self.n_angles}"
