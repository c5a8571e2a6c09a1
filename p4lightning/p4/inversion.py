r"""Iterative refinement of an approximate matrix inverse (paper Sect. 2.4, "Iterative Inversion").

Given :math:`\mathbf{P}` and an approximate inverse :math:`\mathbf{Q} \approx \mathbf{P}^{-1}` with residual
:math:`\mathbf{E} = \mathbf{I} - \mathbf{P}\mathbf{Q}`, one step of the order-:math:`p` hyperpower iteration

.. math::
    \mathbf{Q}' = \mathbf{Q}\,(\mathbf{I} + \mathbf{E} + \mathbf{E}^2 + \dots + \mathbf{E}^{p-1})
    \quad\Longrightarrow\quad \mathbf{I} - \mathbf{P}\mathbf{Q}' = \mathbf{E}^{p}

raises the residual to the :math:`p`-th power. This is the family of Schulz-type iterations
(:math:`p = 2` is Newton–Schulz) from which Soleymani (2014) derives fast high-order solvers; like the
paper we apply one step every :math:`N_\text{correct}` merges. For :math:`p = 2^k` the sum factorises as
:math:`\prod_{j<k}(\mathbf{I} + \mathbf{E}^{2^j})`: with the residual, :math:`2k = 2\log_2 p` matrix products
(one for :math:`\mathbf{E}`, two per factor after the first, one for :math:`\mathbf{Q}` times the product) —
:math:`O(n^3)` but highly parallel, and rare.

References:
    F. Soleymani. A fast convergent iterative solver for approximate inverse of matrices.
    Numer. Linear Algebra Appl. 21(3):439–452, 2014. Krämer et al., arXiv:2010.07033, Sect. 2.4.
"""

from __future__ import annotations

import torch

from p4lightning._validation import check_positive_int

__all__ = ["hyperpower_step"]


def hyperpower_step(
    matrix: torch.Tensor,
    approx_inverse: torch.Tensor,
    order: int = 4,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""One order-``order`` hyperpower step towards ``matrix``:sup:`-1`.

    Args:
        matrix: :math:`\mathbf{P}` with shape ``(n, n)``.
        approx_inverse: :math:`\mathbf{Q}` with shape ``(n, n)``; converges if
            :math:`\rho(\mathbf{I} - \mathbf{P}\mathbf{Q}) < 1`.
        order: :math:`p`, a power of two ``>= 2``.
        residual: :math:`\mathbf{E} = \mathbf{I} - \mathbf{P}\mathbf{Q}` if the caller already formed it
            (saves one of the :math:`2\log_2 p` matrix products).

    Returns:
        :math:`\mathbf{Q}'` with shape ``(n, n)``, residual :math:`\mathbf{E}^p`.

    Example:
        >>> p = torch.eye(3, dtype=torch.float64) * 2
        >>> q = torch.eye(3, dtype=torch.float64) * 0.45   # residual 0.1
        >>> residual = (torch.eye(3) - p @ hyperpower_step(p, q, order=4)).abs().max()
        >>> round(float(residual), 12)  # 0.1 ** 4
        0.0001
    """
    check_positive_int(order, "order", minimum=2)
    if order & (order - 1):
        raise ValueError(f"order must be a power of two (2, 4, 8, ...); got {order}")
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    if residual is None:
        residual = eye - matrix @ approx_inverse
    factor = eye + residual
    power = residual
    while order > 2:
        power = power @ power
        factor = factor + factor @ power  # factor @ (I + E^{2^j})
        order //= 2
    return approx_inverse @ factor
