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

Host scalars: on the CPU, :math:`G` and :math:`\bar\ell / G` are Python floats (double precision) instead of
0-d tensors, which saves about eight tiny tensor operations per step; on an accelerator they stay on the
device (a host float would synchronise every step). Both paths are tested against each other.

The backward is itself built of differentiable operations when ``create_graph=True``, so higher-order
gradients are exact.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["rank_one_affine", "rank_one_factor", "rank_one_solve"]


def rank_one_factor(q: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\mathbf{Q}\mathbf{u}, G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u})` in ``q``'s precision:
    shapes ``(n,)`` and ``()``; differentiable in ``u`` and ``v``."""
    qu = q @ u.to(q.dtype)
    return qu, 1.0 + v.to(q.dtype) @ qu


def _ieee_div(a: float, b: float) -> float:
    """``a / b`` with IEEE semantics (``±inf`` or ``nan`` for ``b == 0``), as a tensor division gives."""
    if b != 0.0:
        return a / b
    if a == 0.0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _log_abs(g: float) -> float:
    return math.log(abs(g)) if g != 0.0 else -math.inf


#: The oldest torch whose ``torch.compile`` of these autograd Functions was checked to give eager's gradients.
#: Note [compiled gradients before torch 2.13]: on torch 2.11 (the GPU machine's image), ``torch.compile`` (the
#: aot_eager and inductor backends) of P4Inv's forward and inverse returned eager's values but zero gradients for
#: the input and the bias (tests/p4/test_compile.py, all 9 cases); on 2.13 they agree to 1e-10. 2.12 is unchecked.
#: Compiling them on an older torch is refused rather than trained with silently wrong gradients.
MIN_COMPILE_TORCH = (2, 13)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _scalar_options(x: torch.Tensor, offset_sign: float, host_scalars: bool | None) -> tuple[float, bool]:
    """Validated ``offset_sign`` and the resolved ``host_scalars`` (default: on the CPU, outside compilation);
    refuses compilation on a torch older than :data:`MIN_COMPILE_TORCH` (Note [compiled gradients before torch 2.13])."""
    if torch.compiler.is_compiling() and _torch_version() < MIN_COMPILE_TORCH:
        raise RuntimeError(
            f"torch.compile of P4Inv needs torch >= {'.'.join(map(str, MIN_COMPILE_TORCH))}: on torch 2.11 its "
            f"compiled backward returned zero gradients for the input and bias; this is torch {torch.__version__}. "
            "Upgrade torch or train P4Inv uncompiled"
        )
    if offset_sign != 1.0 and offset_sign != -1.0:
        raise ValueError(f"offset_sign must be 1.0 or -1.0; got {offset_sign!r}")
    if host_scalars is None:
        host_scalars = x.is_cpu and not torch.compiler.is_compiling()
    return float(offset_sign), bool(host_scalars)


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


def _add_scaled(out: torch.Tensor, vec: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """``out += scale * vec`` in place, with ``vec`` possibly in a wider (bookkeeping) dtype."""
    if isinstance(scale, float) and vec.dtype == out.dtype:
        return out.add_(vec, alpha=scale)
    return out.add_((vec * scale).to(out.dtype))


def _log_factor(
    vq: torch.Tensor,
    qu: torch.Tensor,
    offset: torch.Tensor | None,
    offset_sign: float,
    log_sign: float,
    host_scalars: bool,
    like: torch.Tensor,
) -> tuple[torch.Tensor, float | torch.Tensor]:
    r""":math:`G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u}` and ``ladj`` :math:`= s\,d + \sigma\ln|G|` with
    :math:`\sigma` = ``log_sign``, one value per row of ``like``, in ``like``'s dtype.

    Returns ``(ladj, G)``: G a Python float with host scalars, a 0-d tensor without."""
    n_rows = like.shape[0]
    if host_scalars:
        g = 1.0 + float(torch.dot(vq, qu))
        base = 0.0 if offset is None else offset_sign * float(offset)
        value = base + log_sign * _log_abs(g)
        return torch.full((n_rows,), value, dtype=like.dtype, device=like.device), g
    g_tensor = torch.dot(vq, qu).add_(1.0)
    log_g = g_tensor.abs().log().mul_(log_sign)
    if offset is not None:
        log_g = log_g.add_(offset.to(log_g.dtype), alpha=offset_sign)
    return log_g.to(like.dtype).expand(n_rows), g_tensor


def _inverse_g(g: float | torch.Tensor) -> float | torch.Tensor:
    """:math:`1/G` in G's representation (IEEE ``±inf`` for ``G = 0`` either way)."""
    return _ieee_div(1.0, g) if isinstance(g, float) else torch.reciprocal(g)


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
    host_scalars: bool,
    keep_qtv: bool,
) -> tuple[torch.Tensor, ...]:
    """``(y, ladj, xv, Qu, Q^T v or None, G)`` without autograd (G: see :func:`_log_factor`)."""
    xv = torch.mv(x, v)
    y = torch.outer(xv, u) if bias is None else torch.addr(bias, xv, u)
    y.addmm_(x, p.T)
    uq, vq = _as_bookkeeping(q, u, v)
    qu = torch.mv(q, uq)
    qtv = torch.mv(q.T, vq) if keep_qtv else None  # for the backward, while Q is in cache
    ladj, g = _log_factor(vq, qu, offset, offset_sign, 1.0, host_scalars, x)
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
        host_scalars: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, ladj, xv, qu, qtv, g = _affine_forward(
            x, p, q, u, v, bias, offset, offset_sign, host_scalars, keep_qtv=ctx.needs_input_grad[3]
        )
        ctx.g = g  # a float, or a 0-d intermediate tensor (neither an input nor an output)
        ctx.offset_sign = offset_sign
        ctx.save_for_backward(x, p, q, u, v, xv, qu, qtv)
        return y, ladj

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, grad_ladj: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, p, q, u, v, xv, qu, qtv = ctx.saved_tensors
        need_x, _, _, need_u, need_v, need_b, need_offset = ctx.needs_input_grad[:7]
        if torch.is_grad_enabled():  # create_graph=True: differentiable formulas from the inputs
            grads = _differentiable_backward(x, p, q, u, v, grad_y, grad_ladj, ctx.needs_input_grad)
        else:
            grads = [None] * 4
            gl_sum = grad_ladj.sum()
            inv_g = _inverse_g(ctx.g)
            scale = float(gl_sum) * inv_g if isinstance(inv_g, float) else gl_sum.to(inv_g.dtype) * inv_g
            gyu = torch.mv(grad_y, u) if (need_v or need_x) else None
            if need_u:
                grads[1] = _add_scaled(torch.mv(grad_y.T, xv), qtv, scale)
            if need_v:
                grads[2] = _add_scaled(torch.mv(x.T, gyu), qu, scale)
            if need_b:
                grads[3] = grad_y.sum(0)
            if need_x:
                grads[0] = torch.outer(gyu, v).addmm_(grad_y, p)
        grad_x, grad_u, grad_v, grad_b = grads
        grad_offset = ctx.offset_sign * grad_ladj.sum() if need_offset else None
        return grad_x, None, None, grad_u, grad_v, grad_b, grad_offset, None, None


def _differentiable_backward(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    grad_y: torch.Tensor,
    grad_ladj: torch.Tensor,
    needs: tuple[bool, ...],
) -> list[torch.Tensor | None]:
    """The backward of :class:`_RankOneAffine` from differentiable operations (for double backward)."""
    need_x, _, _, need_u, need_v, need_b = needs[:6]
    qu, g = rank_one_factor(q, u, v)
    scale = grad_ladj.sum().to(g.dtype) / g
    gyu = grad_y @ u
    grad_u = grad_y.T @ (x @ v) + (scale * (v.to(q.dtype) @ q)).to(u.dtype) if need_u else None
    grad_v = x.T @ gyu + (scale * qu).to(v.dtype) if need_v else None
    grad_b = grad_y.sum(0) if need_b else None
    grad_x = torch.addr(grad_y @ p, gyu, v) if need_x else None
    return [grad_x, grad_u, grad_v, grad_b]


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
    host_scalars: bool | None = None,
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
        host_scalars: form :math:`G` as a Python float (exact in double precision; the default on the CPU)
            or as a device tensor (the default elsewhere: no host synchronisation).

    Returns:
        ``y`` of shape ``(N, n)`` and ``ladj`` of shape ``(N,)`` in ``x``'s dtype, both differentiable in
        ``x``, ``u``, ``v``, ``bias`` and ``offset``.
    """
    sign, host = _scalar_options(x, offset_sign, host_scalars)
    if not _records_graph(x, u, v, bias, offset):  # inference: no node, no saved tensors, no Q^T v
        return _affine_forward(x, p, q, u, v, bias, offset, sign, host, keep_qtv=False)[:2]
    return _RankOneAffine.apply(x, p, q, u, v, bias, offset, sign, host)


def _solve_forward(
    y: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    offset: torch.Tensor | None,
    offset_sign: float,
    host_scalars: bool,
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
    ladj, g = _log_factor(vq, qu, offset, offset_sign, -1.0, host_scalars, y)
    if bias is None:
        z = torch.mm(y, q_y.T)
    elif q.shape[0] <= y.shape[0]:
        z = torch.addmm(torch.mv(q_y, bias), y, q_y.T, beta=-1.0)
    else:
        z = torch.mm(y - bias, q_y.T)
    s = torch.mv(z, v)  # v^T Q (y - b), per row
    if isinstance(g, float):
        x = z.addr_(s, qu.to(y.dtype), alpha=_ieee_div(-1.0, g))
    else:
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
        host_scalars: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x, ladj, qu, qtv, g = _solve_forward(y, q, u, v, bias, offset, offset_sign, host_scalars, keep_qtv=True)
        ctx.g = g  # a float, or a 0-d intermediate tensor
        ctx.offset_sign = offset_sign
        ctx.save_for_backward(y, bias, q, u, v, x, qu, qtv)
        return x, ladj

    @staticmethod
    def backward(ctx: Any, grad_x: torch.Tensor, grad_ladj: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        y, bias, q, u, v, x, qu, qtv = ctx.saved_tensors
        need_offset = ctx.needs_input_grad[5]
        if torch.is_grad_enabled():  # create_graph=True: x rebuilt differentiably from y and the bias
            yb = y if bias is None else y - bias
            grads = _differentiable_solve_backward(yb, q, u, v, grad_x, grad_ladj, ctx.needs_input_grad)
        else:
            grads = _solve_backward(q, u, v, x, qu, qtv, ctx.g, grad_x, grad_ladj, ctx.needs_input_grad)
        grad_y, grad_u, grad_v, grad_b = grads
        grad_offset = ctx.offset_sign * grad_ladj.sum() if need_offset else None
        return grad_y, None, grad_u, grad_v, grad_b, grad_offset, None, None


def _solve_backward(
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    x: torch.Tensor,
    qu: torch.Tensor,
    qtv: torch.Tensor,
    g: float | torch.Tensor,
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
    inv_g = _inverse_g(g)
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
        coef = gxr * (-inv_g) if isinstance(inv_g, float) else gxr * (-inv_g).to(gxr.dtype)
        grads[0] = torch.outer(coef, qtv.to(grad_x.dtype)).addmm_(grad_x, q_y)
    return grads


def _differentiable_solve_backward(
    yb: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    grad_x: torch.Tensor,
    grad_ladj: torch.Tensor,
    needs: tuple[bool, ...],
) -> list[torch.Tensor | None]:
    """The same backward from differentiable operations on the inputs (for ``create_graph=True``)."""
    need_y, _, need_u, need_v, need_b = needs[:5]
    qd = q.dtype
    qu, g = rank_one_factor(q, u, v)
    qtv = v.to(qd) @ q
    x = yb @ q.to(yb.dtype).T - torch.outer(yb @ qtv.to(yb.dtype), (qu / g).to(yb.dtype))
    gl_sum = grad_ladj.sum().to(qd)

    def m_transpose(a: torch.Tensor) -> torch.Tensor:
        a = a.to(qd)
        return a @ q - qtv * ((qu @ a) / g)

    gxr = grad_x @ qu.to(grad_x.dtype)
    grad_u = -(m_transpose(grad_x.T @ (x @ v)) + qtv * (gl_sum / g)) if need_u else None
    grad_v = -((x.T @ gxr).to(qd) + qu * gl_sum) / g if need_v else None
    grad_b = -m_transpose(grad_x.sum(0)) if need_b else None
    grad_y = (
        grad_x @ q.to(grad_x.dtype) - torch.outer(gxr / g.to(gxr.dtype), qtv.to(grad_x.dtype))
        if need_y
        else None
    )
    return [
        grad_y,
        None if grad_u is None else grad_u.to(u.dtype),
        None if grad_v is None else grad_v.to(v.dtype),
        None if grad_b is None else grad_b.to(u.dtype),
    ]


def rank_one_solve(
    y: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
    *,
    offset_sign: float = 1.0,
    host_scalars: bool | None = None,
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
        host_scalars: as in :func:`rank_one_affine`.

    Returns:
        ``x`` of shape ``(N, n)`` and ``ladj`` of shape ``(N,)`` in ``y``'s dtype.
    """
    sign, host = _scalar_options(y, offset_sign, host_scalars)
    if not _records_graph(y, u, v, bias, offset):
        return _solve_forward(y, q, u, v, bias, offset, sign, host, keep_qtv=False)[:2]
    return _RankOneSolve.apply(y, q, u, v, bias, offset, sign, host)
