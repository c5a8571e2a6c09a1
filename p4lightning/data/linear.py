r"""Target matrices :math:`\mathbf{T}` of the paper's linear problems (Sect. 4.1, App. F).

Training data are pairs :math:`(\mathbf{x}, \mathbf{y} = \mathbf{T}\mathbf{x})` with
:math:`\mathbf{x} \sim \mathcal{N}(0, \mathbf{I})`; a linear layer initialised at :math:`\mathbf{I}` is fit
by minimising :math:`\|\mathbf{A}\mathbf{x} - \mathbf{y}\|^2`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from p4lightning._validation import check_choice, check_positive_int

__all__ = ["LINEAR_TARGETS", "linear_target", "negative_identity", "positive_definite", "special_orthogonal"]


def positive_definite(dim: int = 32, seed: int = 0, spread: float = 0.5) -> torch.Tensor:
    r"""A symmetric positive definite ``(dim, dim)`` matrix with eigenvalues in ``[1 - spread, 1 + spread]``
    ("eigenvalues close to 1"), :math:`\mathbf{Q}\operatorname{diag}(\lambda)\mathbf{Q}^\top` with a random
    orthogonal :math:`\mathbf{Q}`; float64."""
    check_positive_int(dim, "dim")
    if not 0.0 <= spread < 1.0:
        raise ValueError(f"spread must be in [0, 1) so all eigenvalues are positive; got {spread}")
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    eig = 1.0 + spread * (2.0 * torch.rand(dim, generator=g, dtype=torch.float64) - 1.0)
    return (q * eig) @ q.T


def special_orthogonal(dim: int = 128, seed: int = 0) -> torch.Tensor:
    r"""A Haar-random matrix of :math:`SO(n)` (QR of a Gaussian matrix, signs fixed, det = +1); float64."""
    check_positive_int(dim, "dim")
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def negative_identity(dim: int = 101, seed: int = 0) -> torch.Tensor:
    r""":math:`-\mathbf{I}_n`; for odd :math:`n` its determinant is :math:`-1`, so reaching it from
    :math:`\mathbf{I}` means crossing :math:`\det = 0`. (``seed`` is unused; kept for a uniform signature.)"""
    del seed
    check_positive_int(dim, "dim")
    return -torch.eye(dim, dtype=torch.float64)


LINEAR_TARGETS: dict[str, tuple[Callable[..., torch.Tensor], int]] = {
    "positive_definite": (positive_definite, 32),
    "special_orthogonal": (special_orthogonal, 128),
    "negative_identity": (negative_identity, 101),
}


def linear_target(name: str, dim: int | None = None, seed: int = 0) -> torch.Tensor:
    """The target matrix named ``name`` (a key of :data:`LINEAR_TARGETS`) at ``dim`` (default: the paper's)."""
    check_choice(name, LINEAR_TARGETS, "target")
    fn, default_dim = LINEAR_TARGETS[name]
    return fn(dim if dim is not None else default_dim, seed=seed)
