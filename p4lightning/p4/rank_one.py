r"""The fused rank-one affine map with its determinant-lemma log-Jacobian: one autograd node.

For a frozen matrix :math:`\mathbf{P}` with tracked inverse :math:`\mathbf{Q} \approx \mathbf{P}^{-1}` and a
trainable rank-one perturbation :math:`\mathbf{u}\mathbf{v}^\top`,

.. math::
    \mathbf{y} = (\mathbf{P} + \mathbf{u}\mathbf{v}^\top)\,\mathbf{x} + \mathbf{c}, \qquad
    \ell = s\,d + \ln|G|,\quad G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u}
    \;=\; \det(\mathbf{P} + \mathbf{u}\mathbf{v}^\top) / \det\mathbf{P},

where :math:`d` is a tracked log-determinant (``offset``) and :math:`s = \pm 1` (``offset_sign``), so that
:math:`\ell` is the layer's log-Jacobian, one value per row. With upstream gradients
:math:`\bar{\mathbf{Y}}` ``(N, n)`` and :math:`\bar{\boldsymbol\ell}` ``(N,)``, :math:`\bar\ell = \sum_k
\bar\ell_k` and rows :math:`\mathbf{x}_k` of :math:`\mathbf{X}` ``(N, n)``, the backward pass is written out
by hand:

.. math::
    \bar{\mathbf{u}} = \bar{\mathbf{Y}}^\top(\mathbf{X}\mathbf{v}) + \frac{\bar\ell}{G}\,\mathbf{Q}^\top\mathbf{v},\quad
    \bar{\mathbf{v}} = \mathbf{X}^\top(\bar{\mathbf{Y}}\mathbf{u}) + \frac{\bar\ell}{G}\,\mathbf{Q}\mathbf{u},\quad
    \bar{\mathbf{c}} = \textstyle\sum_k \bar{\mathbf{y}}_k,\quad
    \bar{\mathbf{X}} = \bar{\mathbf{Y}}\mathbf{P} + (\bar{\mathbf{Y}}\mathbf{u})\mathbf{v}^\top,\quad
    \bar d = s\,\bar\ell.

Why a custom node: the same map composed from ``addmm``, ``addr``, ``mv``, ``dot``, ``abs``, ``log``, ``add``
and ``expand`` records about ten autograd nodes, whose dispatch, not arithmetic, dominates a step at
:math:`n \lesssim 256`. Here the forward is one batch product plus :math:`O(Nn + n^2)` work; the backward a
handful of matrix-vector products; no :math:`n \times n` temporary is ever formed. Both passes over
:math:`\mathbf{Q}` (:math:`\mathbf{Q}\mathbf{u}` and :math:`\mathbf{Q}^\top\mathbf{v}`) are made back to back
in the forward, while :math:`\mathbf{Q}` is in cache.

:math:`G` stays a 0-d tensor in the bookkeeping dtype (never a host float: no synchronisation on an accelerator,
one code path on every device).

Orders of derivatives: the fused nodes are first order (their backward is the fast formulas above, and refuses
``create_graph=True`` with an error naming the alternative). ``higher_order=True`` composes the same map from plain
differentiable operations instead (about ten autograd nodes), which autograd differentiates to any order — the
split :class:`~p4lightning.systems.torch_energy.TorchEnergy` makes between ``potential`` and ``terms_kj``.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["rank_one_affine", "rank_one_factor", "rank_one_solve"]


def rank_one_factor(q: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\mathbf{Q}\mathbf{u}, G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u})` in ``q``'s precision:
    shapes ``(n,)`` and ``()``; differentiable in ``u`` and ``v``."""
    qu = q @ u.to(q.dtype)
    return qu, 1.0 + v.to(q.dtype) @ qu


#: The oldest torch whose ``torch.compile`` of these autograd Functions was checked to give eager's gradients.
#: Note [compiled gradients before torch 2.13]: on torch 2.11 (the GPU machine's image), ``torch.compile`` (the
#: aot_eager and inductor backends) of P4Inv's forward and inverse returned eager's values but zero gradients for
#: the input and the bias (tests/p4/test_compile.py, all 9 cases); on 2.13 they agree to 1e-10. 2.12 is unchecked.
#: Compiling them on an older torch is refused rather than trained with silently wrong gradients.
MIN_COMPILE_TORCH = (2, 13)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _checked_sign(offset_sign: float) -> float:
    """Validated ``offset_sign``; refuses compilation on a torch older than :data:`MIN_COMPILE_TORCH`
    (Note [compiled gradients before torch 2.13])."""
    if torch.compiler.is_compiling() and _torch_version() < MIN_COMPILE_TORCH:
        raise RuntimeError(
            f"torch.compile of P4Inv needs torch >= {'.'.join(map(str, MIN_COMPILE_TORCH))}: on torch 2.11 its "
            f"compiled backward returned zero gradients for the input and bias; this is torch {torch.__version__}. "
            "Upgrade torch or train P4Inv uncompiled"
        )
    if offset_sign != 1.0 and offset_sign != -1.0:
        raise ValueError(f"offset_sign must be 1.0 or -1.0; got {offset_sign!r}")
    return float(offset_sign)


def _first_order_only(name: str) -> RuntimeError:
    return RuntimeError(
        f"{name}'s fused autograd node is first order: no gradient of its gradient (create_graph=True). "
        "Pass higher_order=True (P4Inv(..., higher_order=True)) to compose it from plain operations, "
        "which autograd differentiates to any order"
    )


def _records_graph(
    x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, offset: torch.Tensor | None
) -> bool:
    """Whether autograd would record a node for these inputs (grad mode on and one of them needs grad).
    (Written out rather than as ``any(...)`` over a generator: this runs on every layer call.)"""
    return torch.is_grad_enabled() and (
        x.requires_grad
        or u.requires_grad
        or v.requires_grad
        or (bias is not None and bias.requires_grad)
        or (offset is not None and offset.requires_grad)
    )


def _log_factor(
    vq: torch.Tensor,
    qu: torch.Tensor,
    offset: torch.Tensor | None,
    offset_sign: float,
    log_sign: float,
    like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u}` (0-d, in ``qu``'s dtype) and ``ladj``
    :math:`= s\,d + \sigma\ln|G|` with :math:`\sigma` = ``log_sign``, one value per row of ``like``, in
    ``like``'s dtype. Returns ``(ladj, G)``."""
    g = torch.dot(vq, qu).add_(1.0)
    log_g = g.abs().log().mul_(log_sign)
    if offset is not None:
        log_g = log_g.add_(offset.to(log_g.dtype), alpha=offset_sign)
    return log_g.to(like.dtype).expand(like.shape[0]), g


def _as_bookkeeping(q: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (u, v) if q.dtype == u.dtype else (u.to(q.dtype), v.to(q.dtype))


def _affine_forward(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    offset: torch.Tensor | None,
    offset_sign: float,
    keep_qtv: bool,
) -> tuple[torch.Tensor, ...]:
    """``(y, ladj, xv, Qu, Q^T v or None, G)`` without autograd (G: see :func:`_log_factor`)."""
    xv = torch.mv(x, v)
    y = torch.outer(xv, u) if bias is None else torch.addr(bias, xv, u)
    y.addmm_(x, p.T)
    uq, vq = _as_bookkeeping(q, u, v)
    qu = torch.mv(q, uq)
    qtv = torch.mv(q.T, vq) if keep_qtv else None  # for the backward, while Q is in cache
    ladj, g = _log_factor(vq, qu, offset, offset_sign, 1.0, x)
    return y, ladj, xv, qu, qtv, g


class _RankOneAffine(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        p: torch.Tensor,
        q: torch.Tensor,
        u: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        offset: torch.Tensor | None,
        offset_sign: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, ladj, xv, qu, qtv, g = _affine_forward(
            x, p, q, u, v, bias, offset, offset_sign, keep_qtv=ctx.needs_input_grad[3]
        )
        ctx.offset_sign = offset_sign
        ctx.save_for_backward(x, p, q, u, v, xv, qu, qtv, g)
        return y, ladj

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, grad_ladj: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise _first_order_only("rank_one_affine")
        x, p, q, u, v, xv, qu, qtv, g = ctx.saved_tensors
        need_x, _, _, need_u, need_v, need_b, need_offset = ctx.needs_input_grad[:7]
        grad_x = grad_u = grad_v = grad_b = grad_offset = None
        gl_sum = grad_ladj.sum()
        scale = gl_sum.to(g.dtype) / g  # ℓ̄ / G, 0-d in the bookkeeping dtype
        gyu = torch.mv(grad_y, u) if (need_v or need_x) else None
        if need_u:
            grad_u = torch.mv(grad_y.T, xv).add_((qtv * scale).to(u.dtype))
        if need_v:
            grad_v = torch.mv(x.T, gyu).add_((qu * scale).to(v.dtype))
        if need_b:
            grad_b = grad_y.sum(0)
        if need_x:
            grad_x = torch.outer(gyu, v).addmm_(grad_y, p)
        if need_offset:
            grad_offset = ctx.offset_sign * gl_sum
        return grad_x, None, None, grad_u, grad_v, grad_b, grad_offset, None


def _affine_plain(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    offset: torch.Tensor | None,
    offset_sign: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rank_one_affine` from plain differentiable operations (derivatives of any order)."""
    y = torch.addr(x @ p.T, x @ v, u)
    if bias is not None:
        y = y + bias
    _, g = rank_one_factor(q, u, v)
    ladj = torch.log(torch.abs(g))
    if offset is not None:
        ladj = ladj + offset_sign * offset.to(ladj.dtype)
    return y, ladj.to(x.dtype).expand(x.shape[0])


def rank_one_affine(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    *,
    offset_sign: float = 1.0,
    higher_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\mathbf{P} + \mathbf{u}\mathbf{v}^\top)\mathbf{x} + \mathbf{c}` and
    :math:`\ell = s\,d + \ln|1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u}|` per row.

    Args:
        x: inputs ``(N, n)``.
        p: the frozen matrix ``(n, n)``, same dtype and device as ``x`` (no gradient flows into it).
        q: its tracked inverse ``(n, n)``, in any floating dtype (the bookkeeping precision; :math:`G` is
            computed in it); no gradient flows into it.
        u, v: the perturbation ``(n,)``, dtype of ``x``.
        bias: :math:`\mathbf{c}` of shape ``(n,)``, or ``None``.
        offset: :math:`d`, a 0-d tensor (a tracked :math:`\ln|\det|`), or ``None`` for 0.
        offset_sign: :math:`s`, ``1.0`` or ``-1.0``.
        higher_order: compose the map from plain differentiable operations (derivatives of any order) instead of
            the fused first-order node.

    Returns:
        ``y`` of shape ``(N, n)`` and ``ladj`` of shape ``(N,)`` in ``x``'s dtype, both differentiable in
        ``x``, ``u``, ``v``, ``bias`` and ``offset``.
    """
    sign = _checked_sign(offset_sign)
    if not _records_graph(x, u, v, bias, offset):  # inference: no node, no saved tensors, no Q^T v
        return _affine_forward(x, p, q, u, v, bias, offset, sign, keep_qtv=False)[:2]
    if higher_order:
        return _affine_plain(x, p, q, u, v, bias, offset, sign)
    return _RankOneAffine.apply(x, p, q, u, v, bias, offset, sign)


def _solve_forward(
    y: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    offset: torch.Tensor | None,
    offset_sign: float,
    keep_qtv: bool,
) -> tuple[torch.Tensor, ...]:
    r"""``(x, ladj, Qu, Q^T v or None, G)`` without autograd (G: see :func:`_log_factor`).

    :math:`\mathbf{z} = \mathbf{Q}(\mathbf{y} - \mathbf{c})` is one batch product (the bias enters it as
    :math:`-\mathbf{Q}\mathbf{c}` when :math:`n \le N`, an O(n²) product instead of an O(Nn) subtraction), then
    :math:`\mathbf{x} = \mathbf{z} - \mathbf{Q}\mathbf{u}\,(\mathbf{v}^\top\mathbf{z}) / G` in place."""
    uq, vq = _as_bookkeeping(q, u, v)
    q_y = q if q.dtype == y.dtype else q.to(y.dtype)
    qu = torch.mv(q, uq)  # Q u
    qtv = torch.mv(q.T, vq) if keep_qtv else None  # Q^T v for the backward, while Q is in cache
    ladj, g = _log_factor(vq, qu, offset, offset_sign, -1.0, y)
    if bias is None:
        z = torch.mm(y, q_y.T)
    elif q.shape[0] <= y.shape[0]:
        z = torch.addmm(torch.mv(q_y, bias), y, q_y.T, beta=-1.0)
    else:
        z = torch.mm(y - bias, q_y.T)
    s = torch.mv(z, v)  # v^T Q (y - b), per row
    x = z.addr_(s, torch.div(qu, g).neg_().to(y.dtype))
    return x, ladj, qu, qtv, g


class _RankOneSolve(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        y: torch.Tensor,
        q: torch.Tensor,
        u: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor | None,
        offset: torch.Tensor | None,
        offset_sign: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, ladj, qu, qtv, g = _solve_forward(y, q, u, v, bias, offset, offset_sign, keep_qtv=True)
        ctx.offset_sign = offset_sign
        ctx.save_for_backward(q, u, v, x, qu, qtv, g)
        return x, ladj

    @staticmethod
    def backward(ctx: Any, grad_x: torch.Tensor, grad_ladj: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise _first_order_only("rank_one_solve")
        q, u, v, x, qu, qtv, g = ctx.saved_tensors
        need_offset = ctx.needs_input_grad[5]
        grad_y, grad_u, grad_v, grad_b = _solve_backward(q, u, v, x, qu, qtv, g, grad_x, grad_ladj, ctx.needs_input_grad)
        grad_offset = ctx.offset_sign * grad_ladj.sum() if need_offset else None
        return grad_y, None, grad_u, grad_v, grad_b, grad_offset, None


def _solve_backward(
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    x: torch.Tensor,
    qu: torch.Tensor,
    qtv: torch.Tensor,
    g: torch.Tensor,
    grad_x: torch.Tensor,
    grad_ladj: torch.Tensor,
    needs: tuple[bool, ...],
) -> list[torch.Tensor | None]:
    r"""Backward of :class:`_RankOneSolve` with :math:`\mathbf{M} = (\mathbf{P} + \mathbf{u}\mathbf{v}^\top)^{-1}
    = \mathbf{Q} - \mathbf{r}\mathbf{w}^\top / G`, :math:`\mathbf{r} = \mathbf{Q}\mathbf{u}` (``qu``, as in
    :class:`_RankOneAffine`), :math:`\mathbf{w} = \mathbf{Q}^\top\mathbf{v}` (``qtv``), outputs :math:`\mathbf{X}` and
    :math:`\mathbf{M}\mathbf{u} = \mathbf{r}/G`:

    .. math::
        \bar{\mathbf{u}} = -\mathbf{M}^\top\bigl(\bar{\mathbf{X}}^\top\mathbf{X}\mathbf{v}\bigr) - \frac{\bar\ell}{G}\mathbf{w},\quad
        \bar{\mathbf{v}} = -\frac{1}{G}\Bigl(\mathbf{X}^\top\bar{\mathbf{X}}\mathbf{r} + \bar\ell\,\mathbf{r}\Bigr),\quad
        \bar{\mathbf{Y}} = \bar{\mathbf{X}}\mathbf{M},\quad
        \bar{\mathbf{b}} = -\mathbf{M}^\top\textstyle\sum_k \bar{\mathbf{x}}_k,

    with :math:`\mathbf{M}^\top\mathbf{a} = \mathbf{Q}^\top\mathbf{a} - \mathbf{w}(\mathbf{r}\cdot\mathbf{a})/G`
    (one matrix-vector product each; the :math:`O(Nn^2)` product only for :math:`\bar{\mathbf{Y}}`).
    """
    need_y, _, need_u, need_v, need_b = needs[:5]
    qd = q.dtype
    gl_sum = grad_ladj.sum()
    inv_g = torch.reciprocal(g)  # 0-d, bookkeeping dtype
    grads: list[torch.Tensor | None] = [None] * 4

    def m_transpose(a: torch.Tensor) -> torch.Tensor:  # M^T a in q's precision
        a = a.to(qd)
        return torch.mv(q.T, a).sub_(qtv * (torch.dot(qu, a) * inv_g))

    gxr = torch.mv(grad_x, qu.to(grad_x.dtype)) if (need_v or need_y) else None
    if need_u:
        a = torch.mv(grad_x.T, torch.mv(x, v))
        grads[1] = m_transpose(a).add_(qtv * (gl_sum.to(qd) * inv_g)).neg_().to(u.dtype)
    if need_v:
        grads[2] = (torch.mv(x.T, gxr).to(qd).add_(qu * gl_sum.to(qd)) * (-inv_g)).to(v.dtype)
    if need_b:
        grads[3] = m_transpose(grad_x.sum(0)).neg_().to(u.dtype)
    if need_y:
        q_y = q if qd == grad_x.dtype else q.to(grad_x.dtype)
        coef = gxr * (-inv_g).to(gxr.dtype)
        grads[0] = torch.outer(coef, qtv.to(grad_x.dtype)).addmm_(grad_x, q_y)
    return grads


def _solve_plain(
    y: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    offset: torch.Tensor | None,
    offset_sign: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`rank_one_solve` from plain differentiable operations (derivatives of any order)."""
    qu, g = rank_one_factor(q, u, v)
    z = (y if bias is None else y - bias) @ q.to(y.dtype).T
    x = z - torch.outer(z @ v, (qu / g).to(y.dtype))
    ladj = -torch.log(torch.abs(g))
    if offset is not None:
        ladj = ladj + offset_sign * offset.to(ladj.dtype)
    return x, ladj.to(y.dtype).expand(y.shape[0])


def rank_one_solve(
    y: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    *,
    offset_sign: float = 1.0,
    higher_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\mathbf{P} + \mathbf{u}\mathbf{v}^\top)^{-1}(\mathbf{y} - \mathbf{c})` by Sherman–Morrison and
    :math:`\ell = s\,d - \ln|G|` per row, as one autograd node.

    With :math:`\mathbf{Q} = \mathbf{P}^{-1}`, :math:`\mathbf{r} = \mathbf{Q}\mathbf{u}`,
    :math:`\mathbf{w} = \mathbf{Q}^\top\mathbf{v}`, :math:`G = 1 + \mathbf{v}^\top\mathbf{r}`:
    :math:`\mathbf{x} = \mathbf{Q}(\mathbf{y} - \mathbf{c}) - \mathbf{r}\,\mathbf{w}^\top(\mathbf{y} - \mathbf{c}) / G`
    (paper eq. 3): one batch product with :math:`\mathbf{Q}` and :math:`O(Nn + n^2)` work; the backward is in
    :func:`_solve_backward`.

    Args:
        y: inputs ``(N, n)``.
        q: the tracked inverse :math:`\mathbf{Q}` ``(n, n)`` of the frozen matrix, any floating dtype (the
            bookkeeping precision; :math:`G` is computed in it); no gradient flows into it.
        u, v: the perturbation ``(n,)``, dtype of ``y``.
        bias: :math:`\mathbf{c}` ``(n,)``, subtracted before solving, or ``None``.
        offset: :math:`d`, a 0-d tensor, or ``None`` for 0.
        offset_sign: :math:`s`, ``1.0`` or ``-1.0``.
        higher_order: as in :func:`rank_one_affine`.

    Returns:
        ``x`` of shape ``(N, n)`` and ``ladj`` of shape ``(N,)`` in ``y``'s dtype.
    """
    sign = _checked_sign(offset_sign)
    if not _records_graph(y, u, v, bias, offset):
        return _solve_forward(y, q, u, v, bias, offset, sign, keep_qtv=False)[:2]
    if higher_order:
        return _solve_plain(y, q, u, v, bias, offset, sign)
    return _RankOneSolve.apply(y, q, u, v, bias, offset, sign)
