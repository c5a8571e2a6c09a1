r"""P⁴Orth: an orthogonal affine layer trained through double-Householder perturbations.

With the Householder reflection :math:`\mathbf{H}(\mathbf{w}) = \mathbf{I} - 2\mathbf{w}\mathbf{w}^\top/
\|\mathbf{w}\|^2` the layer computes :math:`\mathbf{y} = \mathbf{H}(\mathbf{w}_1)\mathbf{H}(\mathbf{w}_2)
\mathbf{A}\mathbf{x} + \mathbf{b}` with a frozen orthogonal :math:`\mathbf{A}`. A product of two reflections
is a rotation, orthogonal for every :math:`\mathbf{w}_1, \mathbf{w}_2`, and the identity when
:math:`\mathbf{w}_1 = \mathbf{w}_2` — so the perturbation is reset by drawing both vectors equal. The
log-determinant is 0 and the inverse is the transpose. A merge,
:math:`\mathbf{A} \leftarrow \mathbf{H}_1\mathbf{H}_2\mathbf{A}`, is two rank-one updates (:math:`O(n^2)`).
This is the second P⁴ of the paper's Sect. 2.1, proving the protocol does not depend on invertibility
bookkeeping.

References:
    Krämer, Köhler, Noé, arXiv:2010.07033, Sect. 2.1 ("orthogonal matrices can be cheaply perturbed into
    other orthogonal matrices using double Householder transforms").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from p4lightning.bijection import Bijection
from p4lightning.p4.inv import initial_matrix
from p4lightning.p4.protocol import MergeOutcome, MergeStatus, P4Module

__all__ = ["P4Orth", "householder"]

#: Largest accepted ‖AᵀA − I‖_max of an explicit ``init`` (checked in float64).
ORTHOGONALITY_TOLERANCE = 1e-6
#: A Householder vector with ‖w‖² below this (relative to n) is degenerate and refused at merge.
MIN_SQUARED_NORM = 1e-12


def householder(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathbf{H}(\mathbf{w})\mathbf{x} = \mathbf{x} - 2\mathbf{w}(\mathbf{w}^\top\mathbf{x})/\|\mathbf{w}\|^2`
    for ``x`` of shape ``(*, n)`` and ``w`` of shape ``(n,)``; O(n) per vector."""
    return x - (2.0 * (x @ w) / (w @ w)).unsqueeze(-1) * w


class P4Orth(P4Module, Bijection):
    r"""Orthogonal affine layer :math:`\mathbf{y} = \mathbf{H}(\mathbf{w}_1)\mathbf{H}(\mathbf{w}_2)\mathbf{A}\mathbf{x}
    + \mathbf{b}` with P⁴ merges.

    Args:
        dim: feature size :math:`n`.
        bias: learn the bias :math:`\mathbf{b}` directly.
        init: ``"identity"``, ``"reverse"`` or an orthogonal ``(n, n)`` tensor.
        bookkeeping_dtype: dtype of the frozen :math:`\mathbf{A}` (``None`` follows the parameters).
        dtype: dtype of :math:`\mathbf{w}_1, \mathbf{w}_2, \mathbf{b}`.
        device: device of all tensors.
        check_inputs: validate shape and finiteness of every input.

    Shapes:
        ``forward(x)``: ``x`` of shape ``(*, n)`` → ``(y, ladj)`` with ``y`` ``(*, n)``, ``ladj`` ``(*)``;
        ``inverse(y)`` the same. Outputs come in the input's dtype, the layer's tensors cast to it (P⁴Inv's
        rule: a float64 layer evaluates float32 input in float32).

    Example:
        >>> layer = P4Orth(5, dtype=torch.float64)
        >>> with torch.no_grad():
        ...     layer.w1.add_(0.3)
        Parameter...
        >>> outcome = layer.merge()
        >>> a = layer.matrix
        >>> outcome.accepted, bool(torch.allclose(a.T @ a, torch.eye(5, dtype=a.dtype)))
        (True, True)
    """

    _bookkeeping_buffers = ("matrix",)

    def __init__(
        self,
        dim: int,
        *,
        bias: bool = True,
        init: Literal["identity", "reverse"] | torch.Tensor = "identity",
        bookkeeping_dtype: torch.dtype | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        check_inputs: bool = True,
    ) -> None:
        super().__init__()
        param_dtype, state_dtype = self._init_state(dim, init, dtype, bookkeeping_dtype, device, check_inputs)
        a = initial_matrix(self.dim, init)
        deviation = float((a.T @ a - torch.eye(self.dim, dtype=a.dtype)).abs().max())
        if deviation > ORTHOGONALITY_TOLERANCE:
            raise ValueError(
                f"init must be an orthogonal matrix; got max|A^T A - I| = {deviation:.3g} "
                f"(accepted: <= {ORTHOGONALITY_TOLERANCE:g})"
            )
        self.register_buffer("matrix", a.to(dtype=state_dtype, device=device))
        kw = {"dtype": param_dtype, "device": device}
        self.w1 = nn.Parameter(torch.empty(self.dim, **kw))
        self.w2 = nn.Parameter(torch.empty(self.dim, **kw))
        self.bias = nn.Parameter(torch.zeros(self.dim, **kw)) if bias else None
        self.reset_perturbation()

    def _check_reflections(self) -> None:
        """With ``check_inputs``: a zero Householder vector defines no reflection (0/0): raise naming it."""
        if not self.check_inputs:
            return
        for name in ("w1", "w2"):
            w = getattr(self, name)
            if torch.compiler.is_compiling():
                torch._assert_async((w.square().sum() > 0), f"P4Orth.{name} is the zero vector")
            elif not bool(w.square().sum() > 0):
                raise ValueError(
                    f"P4Orth.{name} is the zero vector: H = I - 2 w w^T / |w|^2 is undefined (reset_perturbation() "
                    "draws a valid one)"
                )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``y = H₁ H₂ A x + b`` for ``x`` of shape ``(*, n)``; ``ladj`` is 0 with shape ``(*)``; both in
        ``x``'s dtype."""
        self._check(x, "x")
        self._check_reflections()
        y = x @ self.matrix.to(x.dtype).T
        y = householder(householder(y, self.w2.to(x.dtype)), self.w1.to(x.dtype))
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y, x.new_zeros(x.shape[:-1])

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``x = Aᵀ H₂ H₁ (y − b)`` (reflections are symmetric involutions); ``ladj`` is 0; both in ``y``'s
        dtype."""
        self._check(y, "y")
        self._check_reflections()
        z = y - self.bias.to(y.dtype) if self.bias is not None else y
        z = householder(householder(z, self.w1.to(y.dtype)), self.w2.to(y.dtype))
        return z @ self.matrix.to(y.dtype), y.new_zeros(y.shape[:-1])

    def perturbation_parameters(self) -> Iterator[nn.Parameter]:
        """:math:`\\mathbf{w}_1` and :math:`\\mathbf{w}_2`."""
        yield self.w1
        yield self.w2

    @torch.no_grad()
    def reset_perturbation(self, generator: torch.Generator | None = None) -> None:
        r"""Draw :math:`\mathbf{w}_1 = \mathbf{w}_2 \sim \mathcal{N}(0, \mathbf{I}_n)` in place (the identity)."""
        w = torch.randn(self.dim, generator=generator, dtype=torch.float64)
        self.w1.copy_(w)
        self.w2.copy_(w)

    @torch.no_grad()
    def merge(self, force: bool = False, generator: torch.Generator | None = None) -> MergeOutcome:
        r""":math:`\mathbf{A} \leftarrow \mathbf{H}(\mathbf{w}_1)\mathbf{H}(\mathbf{w}_2)\mathbf{A}`, then reset.

        Every finite, non-degenerate pair gives an orthogonal update, so there are no bounds and ``force``
        changes nothing; a non-finite or (near-)zero vector is refused and the perturbation reset.
        """
        del force  # always sane when finite
        a = self.matrix
        w1, w2 = self.w1.to(a.dtype), self.w2.to(a.dtype)
        finite = bool(torch.isfinite(w1).all()) and bool(torch.isfinite(w2).all())
        if not finite or min(float(w1 @ w1), float(w2 @ w2)) < MIN_SQUARED_NORM * self.dim:
            self.merges_refused += 1
            self.reset_perturbation(generator)
            return MergeOutcome(MergeStatus.NON_FINITE, 0.0, 0.0, "w1 or w2 is not finite or (near) zero")
        new_a = householder(householder(a.T, w2), w1).T  # columns of A reflected: H1 H2 A
        a.copy_(new_a)
        self.merges_accepted += 1
        self.reset_perturbation(generator)
        return MergeOutcome(MergeStatus.ACCEPTED, 0.0, 0.0, "")

    def correct(self) -> None:
        """Protocol hook: one :meth:`reorthogonalize` step."""
        self.reorthogonalize()

    @torch.no_grad()
    def reorthogonalize(self) -> torch.Tensor:
        r"""One Newton–Schulz step :math:`\mathbf{A} \leftarrow \mathbf{A}(3\mathbf{I} - \mathbf{A}^\top\mathbf{A})/2`
        towards the nearest orthogonal matrix (:math:`O(n^3)`); returns :math:`\|\mathbf{A}^\top\mathbf{A} -
        \mathbf{I}\|_F` before the step."""
        a = self.matrix
        eye = torch.eye(self.dim, dtype=a.dtype, device=a.device)
        gram = a.T @ a
        err = torch.linalg.matrix_norm(gram - eye)
        a.copy_(a @ (3.0 * eye - gram) / 2.0)
        return err

    @torch.no_grad()
    def diagnostics(self) -> dict[str, float]:
        r"""``{"orthogonality_error_probe": max_k |‖A r_k‖ - ‖r_k‖| / ‖r_k‖}`` over four fixed random
        :math:`\mathbf{r}_k` (:math:`O(n^2)`, a private seeded generator: no global RNG)."""
        g = torch.Generator().manual_seed(0)
        r = torch.randn(4, self.dim, generator=g, dtype=torch.float64).to(self.matrix)
        norms = torch.linalg.vector_norm(r, dim=-1)
        err = (torch.linalg.vector_norm(r @ self.matrix.T, dim=-1) - norms).abs() / norms
        return {"orthogonality_error_probe": float(err.max())}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bias={self.bias is not None}, bookkeeping_dtype={self.bookkeeping_dtype}"
