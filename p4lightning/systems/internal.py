r"""Internal coordinates: bond lengths, angles, torsions, and placing an atom from them (NeRF).

All functions are batched torch operations on positions of shape ``(*, 3)`` in nm; angles are in radians.
Conventions match mdtraj: the torsion of :math:`(a, b, c, d)` is the angle between the planes
:math:`(a, b, c)` and :math:`(b, c, d)`, in :math:`(-\pi, \pi]`, and is symmetric under reversal
:math:`(d, c, b, a)`.

Placing atom :math:`i` from reference atoms :math:`j` (bonded), :math:`k` (angle) and :math:`l` (torsion)
with :math:`r = |x_i - x_j|`, :math:`\theta = \angle(i, j, k)`, :math:`\varphi = \operatorname{tor}(i, j, k, l)`
is a change to spherical coordinates about :math:`x_j`, so its Jacobian determinant is
:math:`r^2 \sin\theta` (nm³).
"""

from __future__ import annotations

import math

import torch

__all__ = ["angle", "bond", "place", "torsion", "wrap_angle"]


def bond(xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
    """:math:`|x_i - x_j|` (nm), shape ``(*)``."""
    return torch.linalg.vector_norm(xi - xj, dim=-1)


def angle(xi: torch.Tensor, xj: torch.Tensor, xk: torch.Tensor) -> torch.Tensor:
    r"""The angle :math:`\angle(i, j, k)` at :math:`j` in :math:`[0, \pi]`, shape ``(*)`` (atan2 form, stable near 0 and π)."""
    a, b = xi - xj, xk - xj
    return torch.atan2(torch.linalg.vector_norm(torch.cross(a, b, dim=-1), dim=-1), (a * b).sum(-1))


def torsion(xa: torch.Tensor, xb: torch.Tensor, xc: torch.Tensor, xd: torch.Tensor) -> torch.Tensor:
    r"""The torsion :math:`\operatorname{tor}(a, b, c, d)` in :math:`(-\pi, \pi]`, shape ``(*)``."""
    b1, b2, b3 = xb - xa, xc - xb, xd - xc
    n1, n2 = torch.cross(b1, b2, dim=-1), torch.cross(b2, b3, dim=-1)
    y = (torch.cross(n1, n2, dim=-1) * b2).sum(-1) / torch.linalg.vector_norm(b2, dim=-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def wrap_angle(phi: torch.Tensor) -> torch.Tensor:
    r"""Map angles to :math:`[-\pi, \pi)` (exactly: an angle just below :math:`\pi` that rounds onto :math:`\pi` in
    the subtraction goes to :math:`-\pi`)."""
    w = torch.remainder(phi + math.pi, 2 * math.pi) - math.pi
    return torch.where(w >= math.pi, w - 2 * math.pi, w)


def place(
    xj: torch.Tensor,
    xk: torch.Tensor,
    xl: torch.Tensor,
    r: torch.Tensor,
    theta: torch.Tensor,
    phi: torch.Tensor,
) -> torch.Tensor:
    r"""Position of atom :math:`i` with :math:`|x_i - x_j| = r`, :math:`\angle(i, j, k) = \theta`,
    :math:`\operatorname{tor}(i, j, k, l) = \varphi`; ``x*`` of shape ``(*, 3)``, ``r, theta, phi`` of shape ``(*)``."""
    bc = xj - xk
    bc = bc / torch.linalg.vector_norm(bc, dim=-1, keepdim=True)
    n = torch.cross(xk - xl, bc, dim=-1)
    n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    m = torch.cross(n, bc, dim=-1)
    d_bc = -r * torch.cos(theta)
    d_m = r * torch.sin(theta) * torch.cos(phi)
    d_n = r * torch.sin(theta) * torch.sin(phi)
    return xj + d_bc.unsqueeze(-1) * bc + d_m.unsqueeze(-1) * m + d_n.unsqueeze(-1) * n
