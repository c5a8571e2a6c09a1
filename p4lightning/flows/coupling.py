r"""RealNVP affine coupling (Dinh et al. 2016) on vectors split into two channels.

With :math:`\mathbf{x} = (\mathbf{x}_1, \mathbf{x}_2)`, :math:`\mathbf{x}_1 \in \mathbb{R}^{d_1}`:

.. math::
    \mathbf{y}_1 = \mathbf{x}_1, \qquad
    \mathbf{y}_2 = \mathbf{x}_2 \odot \exp(\mathbf{s}(\mathbf{x}_1)) + \mathbf{t}(\mathbf{x}_1), \qquad
    \ln|\det J| = \textstyle\sum_i s_i(\mathbf{x}_1),

with :math:`\mathbf{s}` and :math:`\mathbf{t}` dense networks (paper App. H: two hidden layers of 60; ReLU
for :math:`\mathbf{t}`, tanh for :math:`\mathbf{s}`). The inverse is
:math:`\mathbf{x}_2 = (\mathbf{y}_2 - \mathbf{t}(\mathbf{y}_1)) \odot \exp(-\mathbf{s}(\mathbf{y}_1))`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from p4lightning._validation import check_choice, check_features, check_positive_int
from p4lightning.bijection import Bijection

__all__ = ["RealNVPCoupling", "dense_net"]


def dense_net(d_in: int, d_out: int, hidden: Sequence[int], activation: type[nn.Module]) -> nn.Sequential:
    """``d_in → hidden... → d_out`` with ``activation`` after every hidden layer; last layer initialised to 0."""
    layers: list[nn.Module] = []
    sizes = [d_in, *hidden]
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), activation()]
    last = nn.Linear(sizes[-1], d_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class RealNVPCoupling(Bijection):
    r"""Affine coupling: the second channel is scaled and shifted conditioned on the first.

    Args:
        dim: total size :math:`d`.
        split: size :math:`d_1` of the conditioning channel (default :math:`\lfloor d/2 \rfloor`).
        hidden: hidden layer sizes of both networks (App. H: ``(60, 60)``).
        shift_activation: activation of the :math:`\mathbf{t}` network, ``"relu"`` (App. H) or ``"tanh"`` (App. G).
        scale_activation: activation of the :math:`\mathbf{s}` network (``"tanh"`` in the paper).

    The last layers are zero-initialised, so a fresh coupling is the identity.
    """

    def __init__(
        self,
        dim: int,
        split: int | None = None,
        hidden: Sequence[int] = (60, 60),
        shift_activation: str = "relu",
        scale_activation: str = "tanh",
    ) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim", minimum=2)
        self.split = check_positive_int(split if split is not None else dim // 2, "split")
        if self.split >= dim:
            raise ValueError(f"split must be < dim = {dim}; got {self.split}")
        d1, d2 = self.split, dim - self.split
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh}
        check_choice(shift_activation, acts, "shift_activation")
        check_choice(scale_activation, acts, "scale_activation")
        self.shift = dense_net(d1, d2, hidden, acts[shift_activation])
        self.log_scale = dense_net(d1, d2, hidden, acts[scale_activation])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(x, self.dim, "x")
        x1, x2 = x[..., : self.split], x[..., self.split :]
        s = self.log_scale(x1)
        return torch.cat([x1, x2 * torch.exp(s) + self.shift(x1)], dim=-1), s.sum(-1)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_features(y, self.dim, "y")
        y1, y2 = y[..., : self.split], y[..., self.split :]
        s = self.log_scale(y1)
        return torch.cat([y1, (y2 - self.shift(y1)) * torch.exp(-s)], dim=-1), -s.sum(-1)
