r"""P⁴Inv: an invertible affine layer trained through rank-one perturbations with tracked inverse and log-det.

The layer computes :math:`\mathbf{y} = \tilde{\mathbf{A}}\mathbf{x} + \mathbf{b}` with
:math:`\tilde{\mathbf{A}} = \mathbf{A} + \mathbf{u}\mathbf{v}^\top`. The frozen :math:`\mathbf{A}`, its inverse
:math:`\mathbf{A}^{-1}`, :math:`\ln|\det\mathbf{A}|` and :math:`\operatorname{sign}\det\mathbf{A}` are
buffers; :math:`\mathbf{u}, \mathbf{v}, \mathbf{b}` are parameters. With
:math:`G = 1 + \mathbf{v}^\top\mathbf{A}^{-1}\mathbf{u}`,

.. math::
    \tilde{\mathbf{A}}^{-1} = \mathbf{A}^{-1} - \frac{\mathbf{A}^{-1}\mathbf{u}\,\mathbf{v}^\top\mathbf{A}^{-1}}{G}
    \quad\text{(Sherman–Morrison, eq. 3)},\qquad
    \ln|\det\tilde{\mathbf{A}}| = \ln|\det\mathbf{A}| + \ln|G| \quad\text{(determinant lemma, eq. 4)}.

Forward, inverse, log-det and merge cost :math:`O(n^2)` plus the batch product; nothing is ever inverted
or factorised after construction (only :meth:`P4Inv.correct_inverse`, called rarely, is :math:`O(n^3)`).

With ``parametrization="inverse"`` the rank-one perturbation acts on :math:`\mathbf{A}^{-1}` instead
(paper Sect. 4.1, "through the inverses of P⁴Inv updates"): :math:`\tilde{\mathbf{A}}^{-1} = \mathbf{A}^{-1}
+ \mathbf{u}\mathbf{v}^\top` and the forward pass uses Sherman–Morrison.

References:
    Krämer, Köhler, Noé, arXiv:2010.07033, Sect. 2.2–2.4, Algorithm 2, Appendices A and B.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

from p4lightning._validation import (
    all_finite,
    check_literal,
    check_positive_int,
    check_square_matrix,
)
from p4lightning.bijection import Bijection
from p4lightning.p4.bounds import LogBounds
from p4lightning.p4.inversion import hyperpower_step
from p4lightning.p4.protocol import MergeOutcome, MergeStatus, P4Module
from p4lightning.p4.rank_one import rank_one_affine, rank_one_factor, rank_one_solve

__all__ = ["P4Inv", "initial_matrix", "inverse_residual"]

InitName = Literal["identity", "reverse"]
InitSpec = InitName | torch.Tensor
Parametrization = Literal["matrix", "inverse"]

#: Largest accepted condition number of an explicit ``init`` matrix (checked in float64).
MAX_INIT_CONDITION = 1e12


def inverse_residual(matrix: torch.Tensor, inverse: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    r""":math:`\max_k \|\mathbf{P}(\mathbf{Q}\mathbf{r}_k) - \mathbf{r}_k\| / \|\mathbf{r}_k\|` for probes
    ``(k, n)``: an :math:`O(kn^2)` lower bound of :math:`\|\mathbf{P}\mathbf{Q} - \mathbf{I}\|_2` (0-d)."""
    err = (probes @ inverse.T) @ matrix.T - probes
    return (err.norm(dim=-1) / probes.norm(dim=-1)).max()


def initial_matrix(dim: int, init: InitSpec, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""The initial :math:`\mathbf{A}` of shape ``(dim, dim)``.

    Args:
        dim: the feature size :math:`n`.
        init: ``"identity"`` (:math:`\mathbf{I}`), ``"reverse"`` (:math:`A_{ij} = \delta_{i,n-1-j}`, the
            paper's Boltzmann-generator initialisation) or an explicit invertible ``(dim, dim)`` tensor.
        dtype: dtype of the result.
    """
    if isinstance(init, torch.Tensor):
        check_square_matrix(init, dim, "init")
        return init.detach().to(dtype=dtype, copy=True)
    check_literal(init, InitName, "init")
    eye = torch.eye(dim, dtype=dtype)
    return eye if init == "identity" else eye.flip(0)


class P4Inv(P4Module, Bijection):
    r"""Invertible affine layer :math:`\mathbf{y} = (\mathbf{A} + \mathbf{u}\mathbf{v}^\top)\mathbf{x} + \mathbf{b}`
    with P⁴ merges, tracked :math:`\mathbf{A}^{-1}` and :math:`\ln|\det\mathbf{A}|`.

    Args:
        dim: feature size :math:`n`.
        bias: learn the bias :math:`\mathbf{b}` (directly, not perturbatively).
        init: initial :math:`\mathbf{A}`: ``"identity"``, ``"reverse"`` or an invertible ``(n, n)`` tensor, whose
            inverse and determinant are computed once here (float64).
        parametrization: ``"matrix"`` perturbs :math:`\mathbf{A}` (the paper's P⁴Inv); ``"inverse"`` perturbs
            :math:`\mathbf{A}^{-1}` (the paper's "inverse P⁴Inv" of Sect. 4.1).
        log_g_bounds: :math:`[C^{(0)}_{\min}, C^{(0)}_{\max}]` for :math:`\ln|G|` at merge (App. A: ``(-6, inf)``).
        log_det_bounds: :math:`[C^{(1)}_{\min}, C^{(1)}_{\max}]` for the merged :math:`\ln|\det\mathbf{A}|`
            (App. A: ``(-2.5, 15.5)``).
        penalty_weight: :math:`C_p` of the penalty :math:`g(\mathbf{u},\mathbf{v})`; ``0`` disables it (the
            paper's setting for Boltzmann generators and 2D densities; 0.1 for two linear problems).
        penalty_bounds: :math:`[C_{\min}, C_{\max}]` of the penalty (App. A: ``(-2, 15)``).
        max_inverse_error: a merge — forced or not — is refused (:attr:`MergeStatus.INACCURATE`) when the
            merged pair fails the :math:`O(n^2)` probe :math:`\max_k\|\mathbf{P}'(\mathbf{Q}'\mathbf{r}_k) -
            \mathbf{r}_k\| / \|\mathbf{r}_k\| \le` this, i.e. when an update too ill-conditioned for the
            floating-point precision would leave an inconsistent inverse. ``math.inf`` disables the probe.
        bookkeeping_dtype: dtype of :math:`\mathbf{A}, \mathbf{A}^{-1}, \ln|\det\mathbf{A}|` (e.g.
            ``torch.float64`` while the network runs in float32); ``None`` follows the parameters.
        dtype: dtype of :math:`\mathbf{u}, \mathbf{v}, \mathbf{b}` (default: an explicit ``init`` tensor's dtype,
            else torch's default dtype).
        device: device of all tensors.
        check_inputs: validate the shape and finiteness of every input (one reduction per call).
        higher_order: build the layer's map from plain differentiable operations, so that gradients of gradients
            (``create_graph=True``: gradient penalties, Hessian-vector products) exist; the default fused
            first-order nodes (:mod:`~p4lightning.p4.rank_one`) are faster and refuse a second derivative with
            an error naming this option.

    Shapes:
        ``forward(x)``: ``x`` of shape ``(*, n)`` → ``(y, ladj)`` with ``y`` ``(*, n)``, ``ladj`` ``(*)``.
        ``inverse(y)``: the same shapes, ``ladj`` of the inverse map.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> layer = P4Inv(4, init="reverse", dtype=torch.float64)
        >>> with torch.no_grad():
        ...     layer.u.normal_()
        ...     layer.v.mul_(0.1)
        Parameter...
        >>> x = torch.randn(8, 4, dtype=torch.float64)
        >>> y, ladj = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x)
        True
        >>> layer.merge().accepted and torch.allclose(layer(x)[0], y)
        True
    """

    _bookkeeping_buffers = ("matrix", "inverse_matrix", "log_abs_det", "det_sign")

    def __init__(
        self,
        dim: int,
        *,
        bias: bool = True,
        init: InitSpec = "identity",
        parametrization: Parametrization = "matrix",
        log_g_bounds: LogBounds | tuple[float, float] = (-6.0, math.inf),
        log_det_bounds: LogBounds | tuple[float, float] = (-2.5, 15.5),
        penalty_weight: float = 0.0,
        penalty_bounds: LogBounds | tuple[float, float] = (-2.0, 15.0),
        max_inverse_error: float = 1e-2,
        bookkeeping_dtype: torch.dtype | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        check_inputs: bool = True,
        higher_order: bool = False,
    ) -> None:
        super().__init__()
        param_dtype, state_dtype = self._init_state(dim, init, dtype, bookkeeping_dtype, device, check_inputs)
        if not isinstance(higher_order, bool):
            raise TypeError(f"higher_order must be a bool; got {higher_order!r}")
        self.higher_order = higher_order
        self.parametrization = check_literal(parametrization, Parametrization, "parametrization")
        self.log_g_bounds = LogBounds.coerce(log_g_bounds, "log_g_bounds")
        self.log_det_bounds = LogBounds.coerce(log_det_bounds, "log_det_bounds")
        self.penalty_bounds = LogBounds.coerce(penalty_bounds, "penalty_bounds")
        if (
            isinstance(penalty_weight, bool)
            or not isinstance(penalty_weight, (int, float))
            or penalty_weight < 0
        ):
            raise ValueError(f"penalty_weight must be a float >= 0; got {penalty_weight!r}")
        self.penalty_weight = float(penalty_weight)
        if (
            isinstance(max_inverse_error, bool)
            or not isinstance(max_inverse_error, (int, float))
            or not max_inverse_error > 0
        ):
            raise ValueError(
                f"max_inverse_error must be a float > 0 (math.inf disables the probe); got {max_inverse_error!r}"
            )
        self.max_inverse_error = float(max_inverse_error)

        a = initial_matrix(self.dim, init)  # float64
        sign, log_abs_det = torch.linalg.slogdet(a)
        cond = torch.linalg.cond(a)
        if sign == 0 or not torch.isfinite(log_abs_det) or not cond < MAX_INIT_CONDITION:
            raise ValueError(
                f"init must be an invertible matrix; got one with sign(det) = {float(sign):g}, "
                f"ln|det| = {float(log_abs_det):g}, condition number = {float(cond):.3g} "
                f"(accepted: < {MAX_INIT_CONDITION:g})"
            )
        a_inv = torch.linalg.inv(a)
        kw_state = {"dtype": state_dtype, "device": device}
        self.register_buffer("matrix", a.to(**kw_state))
        self.register_buffer("inverse_matrix", a_inv.to(**kw_state))
        self.register_buffer("log_abs_det", log_abs_det.to(**kw_state))
        self.register_buffer("det_sign", sign.to(**kw_state))
        # Fixed probe vector for the merge accuracy check: drawn once from a private seeded generator, so it
        # is the same on every rank and consumes nothing from the user's random streams.
        probe = torch.randn(self.dim, generator=torch.Generator().manual_seed(self.dim), dtype=torch.float64)
        self.register_buffer("_probe", probe.to(**kw_state), persistent=False)
        self._bookkeeping_buffers = (*self._bookkeeping_buffers, "_probe")

        kw = {"dtype": param_dtype, "device": device}
        self.u = nn.Parameter(torch.zeros(self.dim, **kw))
        self.v = nn.Parameter(torch.empty(self.dim, **kw))
        # registered even when absent, so the hot path can read self._parameters['bias'] (None then)
        self.register_parameter("bias", nn.Parameter(torch.zeros(self.dim, **kw)) if bias else None)
        self.reset_perturbation()

    # ------------------------------------------------------------------------------------------------
    # The perturbed pair: P is the matrix the rank-one update acts on, Q its tracked inverse.
    #   parametrization="matrix":  P = A,    Q = A^-1,  ln|det A| = +ln|det P|
    #   parametrization="inverse": P = A^-1, Q = A,     ln|det A| = -ln|det P|
    # ------------------------------------------------------------------------------------------------
    def _pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, Q)``, read from the buffer dict directly rather than through ``nn.Module.__getattr__``
        (this runs on every call of the layer)."""
        buffers = self._buffers
        if self.parametrization == "matrix":
            return buffers["matrix"], buffers["inverse_matrix"]
        return buffers["inverse_matrix"], buffers["matrix"]

    @property
    def _perturbed(self) -> torch.Tensor:
        return self._pair()[0]

    @property
    def _tracked_inverse(self) -> torch.Tensor:
        return self._pair()[1]

    @property
    def _det_orientation(self) -> float:
        return 1.0 if self.parametrization == "matrix" else -1.0

    def _rank_one_factor(self) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\mathbf{Q}\mathbf{u}, G)` with :math:`G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u}`, in
        bookkeeping precision (differentiable, O(n²); the same helper the fused forward node uses)."""
        return rank_one_factor(self._tracked_inverse, self.u, self.v)

    def log_abs_det_perturbed(self) -> torch.Tensor:
        r""":math:`\ln|\det\tilde{\mathbf{A}}|` of the perturbed matrix, a differentiable scalar (O(n²))."""
        _, g = self._rank_one_factor()
        return self.log_abs_det + self._det_orientation * torch.log(torch.abs(g))

    # ------------------------------------------------------------------------------------------------
    # Bijection interface
    # ------------------------------------------------------------------------------------------------
    def _perturbation(
        self, dtype: torch.dtype, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(u, v, bias)`` cast to ``dtype`` (no operation when they already are), read from the parameter
        dict directly (as in :meth:`_pair`)."""
        params = self._parameters
        u, v = params["u"], params["v"]
        if u.dtype != dtype:
            u, v = u.to(dtype), v.to(dtype)
        if bias is not None and bias.dtype != dtype:
            bias = bias.to(dtype)
        return u, v, bias

    def _apply_perturbed(
        self, x: torch.Tensor, bias: torch.Tensor | None, offset_sign: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\tilde{\mathbf{P}}\mathbf{x} + \mathbf{c} = \mathbf{P}\mathbf{x} + \mathbf{u}(\mathbf{v}^\top\mathbf{x}) + \mathbf{c}`
        (shape ``(*, n)``) and ``ladj`` :math:`= s\ln|\det\mathbf{A}| + \ln|G|` (shape ``(*)``), as one fused
        autograd node (:func:`~p4lightning.p4.rank_one.rank_one_affine`: one batch product, no n × n
        temporary, no tensor operation outside the node when the dtypes already agree)."""
        p, q = self._pair()
        if p.dtype != x.dtype:
            p = p.to(x.dtype)
        u, v, bias = self._perturbation(x.dtype, bias)
        flat = x if x.dim() == 2 else x.reshape(-1, self.dim)
        y, ladj = rank_one_affine(
            flat, p, q, u, v, bias, self._buffers["log_abs_det"], offset_sign=offset_sign,
            higher_order=self.higher_order,
        )
        if x.dim() != 2:
            y, ladj = y.reshape(x.shape), ladj.reshape(x.shape[:-1])
        return y, ladj

    def _apply_perturbed_inverse(
        self, y: torch.Tensor, bias: torch.Tensor | None, offset_sign: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\tilde{\mathbf{P}}^{-1}(\mathbf{y} - \mathbf{c}) = \mathbf{z} - \mathbf{Q}\mathbf{u}\,(\mathbf{v}^\top\mathbf{z})/G`
        with :math:`\mathbf{z} = \mathbf{Q}(\mathbf{y} - \mathbf{c})` (Sherman–Morrison, eq. 3) and ``ladj``
        :math:`= s\ln|\det\mathbf{A}| - \ln|G|`, as one fused autograd node
        (:func:`~p4lightning.p4.rank_one.rank_one_solve`: one batch product with Q, O(n²) besides)."""
        q = self._pair()[1]  # the solve casts Q for its batch product itself
        u, v, bias = self._perturbation(y.dtype, bias)
        flat = y if y.dim() == 2 else y.reshape(-1, self.dim)
        x, ladj = rank_one_solve(
            flat, q, u, v, bias, self._buffers["log_abs_det"], offset_sign=offset_sign, higher_order=self.higher_order
        )
        if y.dim() != 2:
            x, ladj = x.reshape(y.shape), ladj.reshape(y.shape[:-1])
        return x, ladj

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``y = Ã x + b`` and ``ladj = ln|det Ã|`` (shape ``(*)``) for ``x`` of shape ``(*, n)``."""
        if self.check_inputs:
            self._check(x, "x")
        bias = self._parameters["bias"]
        if self.parametrization == "matrix":
            return self._apply_perturbed(x, bias, offset_sign=1.0)
        # Ã = (A^-1 + u v^T)^-1:  ladj = -ln|det(A^-1 + u v^T)| = ln|det A| - ln|G|
        y, ladj = self._apply_perturbed_inverse(x, None, offset_sign=1.0)
        return (y if bias is None else y + bias.to(x.dtype)), ladj

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``x = Ã⁻¹ (y − b)`` and ``ladj = −ln|det Ã|`` (shape ``(*)``) for ``y`` of shape ``(*, n)``."""
        if self.check_inputs:
            self._check(y, "y")
        bias = self._parameters["bias"]
        if self.parametrization == "matrix":  # ladj = -(ln|det A| + ln|G|)
            return self._apply_perturbed_inverse(y, bias, offset_sign=-1.0)
        # x = (A^-1 + u v^T)(y - b);  ladj = ln|det(A^-1 + u v^T)| = ln|G| - ln|det A|
        return self._apply_perturbed(y if bias is None else y - bias.to(y.dtype), None, offset_sign=-1.0)

    def perturbed_matrix(self) -> torch.Tensor:
        r""":math:`\tilde{\mathbf{A}}` as a dense ``(n, n)`` matrix (for inspection and tests; O(n²) or O(n³))."""
        with torch.no_grad():
            eye = torch.eye(self.dim, dtype=self.matrix.dtype, device=self.matrix.device)
            if self.parametrization == "matrix":
                return self.matrix + torch.outer(self.u.to(eye.dtype), self.v.to(eye.dtype))
            return torch.linalg.solve(
                self.inverse_matrix + torch.outer(self.u.to(eye.dtype), self.v.to(eye.dtype)), eye
            )

    # ------------------------------------------------------------------------------------------------
    # P⁴ protocol
    # ------------------------------------------------------------------------------------------------
    def perturbation_parameters(self) -> Iterator[nn.Parameter]:
        """:math:`\\mathbf{u}` and :math:`\\mathbf{v}` (the bias is trained directly, never reset)."""
        yield self.u
        yield self.v

    def redrawn_parameters(self) -> Iterator[nn.Parameter]:
        r""":math:`\mathbf{v}` (re-drawn from noise at a reset; :math:`\mathbf{u}` is set to 0)."""
        yield self.v

    @torch.no_grad()
    def reset_perturbation(self, generator: torch.Generator | None = None) -> None:
        r"""Reset in place to :math:`\mathbf{u} = 0`, :math:`\mathbf{v} \sim \mathcal{N}(0, \mathbf{I}_n)` (Alg. 2).

        ``v`` is drawn on the CPU from ``generator`` and copied, so a seeded generator gives the same ``v`` on
        every device and every rank.
        """
        self.u.zero_()
        self.v.copy_(torch.randn(self.dim, generator=generator, dtype=torch.float64))

    def penalty(self) -> torch.Tensor:
        r"""The penalty :math:`g(\mathbf{u},\mathbf{v})` of App. A, a differentiable scalar (zero if :math:`C_p = 0`)."""
        if self.penalty_weight == 0.0:
            return self.u.new_zeros(())
        _, g = self._rank_one_factor()
        log_g = torch.log(torch.abs(g))
        log_det_new = self.log_abs_det + self._det_orientation * log_g
        total = self.penalty_bounds.squared_violation(log_g) + self.penalty_bounds.squared_violation(
            log_det_new
        )
        return (self.penalty_weight * total).to(self.u.dtype)

    @torch.no_grad()
    def merge(self, force: bool = False, generator: torch.Generator | None = None) -> MergeOutcome:
        r"""Algorithm 2: merge :math:`\mathbf{u}\mathbf{v}^\top` into the tracked pair if sane, then reset.

        Accepted when :math:`\ln|G| \in C^{(0)}` and the merged :math:`\ln|\det\mathbf{A}| \in C^{(1)}`, or
        when ``force`` is set. Never accepted — and the perturbation is reset without merging — when
        :math:`\mathbf{u}`, :math:`\mathbf{v}`, :math:`G` or the merged state is not finite. A refused merge
        leaves :math:`\mathbf{A}`, :math:`\mathbf{A}^{-1}`, :math:`\ln|\det\mathbf{A}|` bit-identical.
        """
        p, q = self._perturbed, self._tracked_inverse
        if not (all_finite(self.u) and all_finite(self.v)):
            return self._refuse_non_finite("u or v contains NaN or inf", generator)
        qu, g_t = self._rank_one_factor()
        u, v = self.u.to(q.dtype), self.v.to(q.dtype)
        g = float(g_t)
        log_g = math.log(abs(g)) if g != 0.0 else -math.inf
        if not math.isfinite(log_g):
            return self._refuse_non_finite(f"G = 1 + v^T Q u = {g:.3g} is zero or not finite", generator)
        new_log_det = float(self.log_abs_det) + self._det_orientation * log_g
        violation = "; ".join(
            s
            for s in (
                self.log_g_bounds.describe_violation(log_g, "ln|G|"),
                self.log_det_bounds.describe_violation(new_log_det, "ln|det A| after merge"),
            )
            if s
        )
        if violation and not force:
            self.merges_refused += 1
            return MergeOutcome(MergeStatus.OUT_OF_BOUNDS, log_g, float(self.log_abs_det), violation)
        # Note [Sherman–Morrison stability]: the new inverse is built out of place and checked before
        # anything is written, so an overflow in a forced, ill-conditioned update cannot corrupt the state.
        # Each of the two updates is one pass over an n x n matrix (addr), no n x n temporary besides.
        new_q = torch.addr(q, qu, torch.mv(q.T, v), alpha=-1.0 / g)
        new_p = torch.addr(p, u, v)
        if not (all_finite(new_q) and all_finite(new_p)):
            return self._refuse_non_finite("the merged matrix or inverse would not be finite", generator)
        if math.isfinite(self.max_inverse_error):
            error = float(inverse_residual(new_p, new_q, torch.stack((self._probe, v))))
            if not error <= self.max_inverse_error:
                self.merges_refused += 1
                reason = f"merged inverse would fail the accuracy probe: error {error:.3g} > {self.max_inverse_error:g}"
                return MergeOutcome(MergeStatus.INACCURATE, log_g, float(self.log_abs_det), reason)
        p.copy_(new_p)
        q.copy_(new_q)
        self.log_abs_det.fill_(new_log_det)
        self.det_sign.mul_(1.0 if g > 0 else -1.0)
        self.merges_accepted += 1
        self.reset_perturbation(generator)
        status = MergeStatus.FORCED if violation else MergeStatus.ACCEPTED
        return MergeOutcome(status, log_g, new_log_det, violation)

    def _refuse_non_finite(self, reason: str, generator: torch.Generator | None) -> MergeOutcome:
        self.merges_refused += 1
        self.reset_perturbation(generator)
        return MergeOutcome(MergeStatus.NON_FINITE, float("nan"), float(self.log_abs_det), reason)

    def correct(self) -> None:
        """Protocol hook: one :meth:`correct_inverse` step with the defaults."""
        self.correct_inverse()

    @torch.no_grad()
    def correct_inverse(self, order: int = 4, refresh_log_det: bool = False) -> torch.Tensor:
        r"""One hyperpower step (:func:`~p4lightning.p4.inversion.hyperpower_step`) on the tracked inverse.

        The matrix the rank-one updates are summed into (:math:`\mathbf{A}`, or :math:`\mathbf{A}^{-1}` with
        ``parametrization="inverse"``) is exact up to summation rounding; its tracked inverse is refined so
        the residual :math:`\mathbf{E} = \mathbf{I} - \mathbf{P}\mathbf{Q}` becomes :math:`\mathbf{E}^{p}`.
        :math:`O(n^3)`: :math:`2\log_2 p - 1` matrix products after the residual, which is formed once (3 for
        ``order=4``).
        The step is skipped (state untouched) unless :math:`\|\mathbf{E}\|_F < 1` — a sufficient condition
        for convergence, since :math:`\rho(\mathbf{E}) \le \|\mathbf{E}\|_2 \le \|\mathbf{E}\|_F`, that
        costs :math:`O(n^2)` where the spectral norm would need an SVD — or if the result is not finite.

        Args:
            order: the order :math:`p` (a power of two).
            refresh_log_det: also recompute :math:`\ln|\det\mathbf{A}|` and its sign exactly (``slogdet``).

        Returns:
            :math:`\|\mathbf{I} - \mathbf{P}\mathbf{Q}\|_F` *before* the step (0-d), an upper bound of the
            spectral norm.
        """
        p, q = self._perturbed, self._tracked_inverse
        residual = torch.eye(self.dim, dtype=p.dtype, device=p.device).sub_(p @ q)
        norm = torch.linalg.vector_norm(residual)
        if bool(norm < 1.0):
            new_q = hyperpower_step(p, q, order, residual=residual)
            if all_finite(new_q):
                q.copy_(new_q)
        if refresh_log_det:
            sign, logabs = torch.linalg.slogdet(p)  # det A = det P or 1 / det P: same sign
            if bool(sign != 0) and bool(torch.isfinite(logabs)):
                self.log_abs_det.copy_(self._det_orientation * logabs)
                self.det_sign.copy_(sign)
        return norm

    @torch.no_grad()
    def inverse_error_probe(
        self, num_probes: int = 4, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        r"""An :math:`O(n^2)` estimate of :math:`\|\mathbf{A}\mathbf{A}^{-1} - \mathbf{I}\|`:
        :math:`\max_k \|\mathbf{A}(\mathbf{A}^{-1}\mathbf{r}_k) - \mathbf{r}_k\| / \|\mathbf{r}_k\|` over random
        :math:`\mathbf{r}_k` (a lower bound of the spectral norm, cheap enough to log every merge).

        With ``generator=None`` the probes come from a private generator with a fixed seed, so probing never
        consumes the global random stream (logging must not change training)."""
        check_positive_int(num_probes, "num_probes")
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        r = torch.randn(num_probes, self.dim, generator=generator, dtype=torch.float64)
        r = r.to(dtype=self.matrix.dtype, device=self.matrix.device)
        return inverse_residual(self.matrix, self.inverse_matrix, r)

    def diagnostics(self) -> dict[str, float]:
        """``{"inverse_error_probe": ...}``: see :meth:`inverse_error_probe` (fixed probes, no global RNG)."""
        return {"inverse_error_probe": float(self.inverse_error_probe())}

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, bias={self.bias is not None}, parametrization={self.parametrization!r}, "
            f"bookkeeping_dtype={self.bookkeeping_dtype}, penalty_weight={self.penalty_weight}, "
            f"max_inverse_error={self.max_inverse_error:g}"
        )
