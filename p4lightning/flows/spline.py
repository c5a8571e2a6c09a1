r"""Rational-quadratic spline couplings (Durkan et al. 2019) with circular splines on angles (Rezende et al. 2020).

A coupling splits the coordinates into a conditioning set :math:`c` and a transformed set :math:`t`. Each
transformed coordinate :math:`x_i` goes through a monotonic rational-quadratic spline with :math:`K` bins whose
knots come from a dense network of the conditioning coordinates:

.. math::
    y_t = s_{\theta(x_c)}(x_t), \qquad y_c = x_c, \qquad
    \ln|\det J| = \textstyle\sum_{i \in t} \ln s'_{\theta_i(x_c)}(x_i).

* **Euclidean coordinates**: a spline on :math:`[-B, B]` (the knots' bound, ``bound``) with unit slope at
  :math:`\pm B` and the identity outside (identity tails): unbounded inputs stay valid.
* **Circular coordinates** (angles in :math:`[-\pi, \pi)`): a spline on :math:`[-\pi, \pi]` with equal (unit) slope
  at both ends, which fixes :math:`\pm\pi`, so it is a diffeomorphism of the circle and the density is equal at
  :math:`-\pi` and :math:`\pi`. The conditioner sees circular inputs as :math:`(\cos x, \sin x)`, a continuous
  function on the circle.

The spline mathematics (knots from unconstrained widths, heights and derivatives; the forward map, its
log-derivative and its inverse) is zuko's :class:`zuko.transforms.MonotonicRQSTransform`. The network's last
layer is zero-initialised: uniform bins and unit derivatives, so a fresh coupling is the identity.

References:
    C. Durkan et al., Neural Spline Flows, arXiv:1906.04032. D. J. Rezende et al., Normalizing Flows on Tori
    and Spheres, arXiv:2002.02428.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from p4lightning._validation import check_features, check_positive_int
from p4lightning.bijection import Bijection
from p4lightning.flows.coupling import dense_net

__all__ = ["SplineCoupling"]

#: smallest slope of a spline (zuko's default): bounds |ln s'| by ln(1e3) per layer and coordinate
MIN_SLOPE = 1e-3


def _indices(values: Sequence[int], dim: int, name: str) -> list[int]:
    out = [int(v) for v in values]
    if len(set(out)) != len(out) or any(not 0 <= v < dim for v in out):
        raise ValueError(f"{name} must be distinct indices in range({dim}); got {list(values)}")
    return out


class SplineCoupling(Bijection):
    r"""A rational-quadratic spline coupling on ``dim`` coordinates, some of them angles.

    Args:
        dim: number of coordinates :math:`d`.
        transformed: indices of the coordinates the splines act on (the others condition them).
        circular: indices (of all ``dim``) that are angles in :math:`[-\pi, \pi)`.
        hidden: hidden layer sizes of the conditioner.
        bins: number of spline bins :math:`K`.
        bound: the Euclidean splines' interval :math:`[-B, B]` (identity outside).
        activation: ``"relu"``, ``"silu"``, ``"gelu"`` or ``"tanh"`` after every hidden layer.

    Inputs and outputs have shape ``(*, d)``; ``ladj`` has shape ``(*)``.

    Example:
        >>> f = SplineCoupling(4, transformed=[0, 3], circular=[3], hidden=[16]).double()
        >>> x = torch.tensor([[0.3, -1.0, 2.0, 3.0]], dtype=torch.float64)
        >>> torch.equal(f(x)[0], x)  # the identity at initialisation
        True
    """

    def __init__(
        self,
        dim: int,
        transformed: Sequence[int],
        circular: Sequence[int] = (),
        hidden: Sequence[int] = (256, 256),
        bins: int = 8,
        bound: float = 5.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim", minimum=2)
        self.bins = check_positive_int(bins, "bins", minimum=2)
        if not (isinstance(bound, (int, float)) and bound > 0 and math.isfinite(bound)):
            raise ValueError(f"bound must be a finite float > 0; got {bound!r}")
        acts = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}; got {activation!r}")
        t = _indices(transformed, dim, "transformed")
        circ = set(_indices(circular, dim, "circular"))
        if not 0 < len(t) < dim:
            raise ValueError(f"transformed must name between 1 and {dim - 1} of the {dim} coordinates; got {len(t)}")
        c = [i for i in range(dim) if i not in set(t)]
        c_circ = [i for i in c if i in circ]
        self.register_buffer("_t", torch.tensor(t, dtype=torch.long), persistent=False)
        self.register_buffer("_c", torch.tensor(c, dtype=torch.long), persistent=False)
        # positions, within the conditioning coordinates, of the plain inputs and of the angles (fed as cos, sin)
        self.register_buffer(
            "_c_plain_pos", torch.tensor([p for p, i in enumerate(c) if i not in circ], dtype=torch.long),
            persistent=False,
        )  # fmt: skip
        self.register_buffer(
            "_c_angle_pos", torch.tensor([p for p, i in enumerate(c) if i in circ], dtype=torch.long),
            persistent=False,
        )  # fmt: skip
        self.register_buffer(
            "_bounds", torch.tensor([math.pi if i in circ else float(bound) for i in t]).unsqueeze(-1), persistent=False
        )  # (T, 1): each transformed coordinate's spline interval
        self.register_buffer("_t_circular", torch.tensor([i in circ for i in t]), persistent=False)
        self.transformed, self.circular = tuple(t), tuple(sorted(circ))
        self.n_params = 3 * self.bins - 1  # widths K, heights K, inner derivatives K - 1
        n_in = len(c) + len(c_circ)  # circular conditioning inputs as (cos, sin)
        self.net = dense_net(n_in, len(t) * self.n_params, hidden, acts[activation])

    def _spline(self, x_c: torch.Tensor):  # noqa: ANN202 - a zuko transform
        """The splines of the transformed coordinates given the conditioning ones ``x_c`` ``(*, |c|)``."""
        from zuko.transforms import MonotonicRQSTransform

        angles = x_c[..., self._c_angle_pos]
        feats = torch.cat([x_c[..., self._c_plain_pos], torch.cos(angles), torch.sin(angles)], dim=-1)
        theta = self.net(feats).unflatten(-1, (len(self.transformed), self.n_params))
        k = self.bins
        w, h, d = theta[..., :k], theta[..., k : 2 * k], theta[..., 2 * k :]
        return MonotonicRQSTransform(w, h, d, bound=self._bounds.to(theta.dtype), slope=MIN_SLOPE)

    def _wrap(self, y: torch.Tensor) -> torch.Tensor:
        """Circular outputs rounded onto π are moved to -π: outputs stay in [-π, π)."""
        return torch.where(self._t_circular & (y >= math.pi), y - 2 * math.pi, y)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(x, self.dim, "x")
        spline = self._spline(x[..., self._c])
        y_t, ladj = spline.call_and_ladj(x[..., self._t])
        y = x.clone()
        y[..., self._t] = self._wrap(y_t)
        return y, ladj.sum(-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(y, self.dim, "y")
        spline = self._spline(y[..., self._c])
        x_t = spline.inv(y[..., self._t])
        _, ladj = spline.call_and_ladj(x_t)
        x = y.clone()
        x[..., self._t] = self._wrap(x_t)
        return x, -ladj.sum(-1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, transformed={len(self.transformed)}, circular={len(self.circular)}, bins={self.bins}"
