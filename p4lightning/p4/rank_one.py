r"""The fused rank-one affine map with its determinant-lemma log-factor: one autograd node.

For a frozen matrix :math:`\mathbf{P}` with tracked inverse :math:`\mathbf{Q} \approx \mathbf{P}^{-1}` and a
trainable rank-one perturbation :math:`\mathbf{u}\mathbf{v}^\top`,

.. math::
    \mathbf{y} = (\mathbf{P} + \mathbf{u}\mathbf{v}^\top)\,\mathbf{x} + \mathbf{c}, \qquad
    \ln|G|,\quad G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u}
    \;=\; \det(\mathbf{P} + \mathbf{u}\mathbf{v}^\top) / \det\mathbf{P}.

The backward pass, with upstream gradients :math:`\bar{\mathbf{Y}}` ``(N, n)`` and :math:`\bar\ell` (0-d)
and rows :math:`\mathbf{x}_k` of :math:`\mathbf{X}` ``(N, n)``, is written out by hand:

.. math::
    \bar{\mathbf{u}} = \bar{\mathbf{Y}}^\top(\mathbf{X}\mathbf{v}) + \frac{\bar\ell}{G}\,\mathbf{Q}^\top\mathbf{v},\quad
    \bar{\mathbf{v}} = \mathbf{X}^\top(\bar{\mathbf{Y}}\mathbf{u}) + \frac{\bar\ell}{G}\,\mathbf{Q}\mathbf{u},\quad
    \bar{\mathbf{c}} = \textstyle\sum_k \bar{\mathbf{y}}_k,\quad
    \bar{\mathbf{X}} = \bar{\mathbf{Y}}\mathbf{P} + (\bar{\mathbf{Y}}\mathbf{u})\mathbf{v}^\top.

Why a custom node: the same map composed from ``addmm``, ``addr``, ``mv``, ``dot``, ``abs`` and ``log``
records about ten autograd nodes, whose dispatch, not arithmetic, dominates a step at :math:`n \lesssim 256`.
Here the forward is one batch product plus :math:`O(Nn + n^2)` work, the backward a handful of
matrix-vector products; no :math:`n \times n` temporary is ever formed. The backward is itself built of
differentiable operations on the inputs, so higher-order gradients (``create_graph=True``) are exact.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["rank_one_affine", "rank_one_factor"]


def rank_one_factor(q: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\mathbf{Q}\mathbf{u}, G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u})` in ``q``'s precision:
    shapes ``(n,)`` and ``()``; differentiable in ``u`` and ``v``."""
    qu = q @ u.to(q.dtype)
    return qu, 1.0 + v.to(q.dtype) @ qu


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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = x @ p.T if bias is None else torch.addmm(bias, x, p.T)
        xv = x @ v
        y.addr_(xv, u)
        qu, g = rank_one_factor(q, u, v)
        ctx.save_for_backward(x, p, q, u, v, xv, qu, g)
        ctx.has_bias = bias is not None
        return y, torch.log(torch.abs(g))

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, grad_log_g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, p, q, u, v, xv, qu, g = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: rebuild the saved intermediates differentiably
            xv = x @ v
            qu, g = rank_one_factor(q, u, v)
        need_x, _, _, need_u, need_v, need_b = ctx.needs_input_grad
        grad_x = grad_u = grad_v = grad_b = None
        gyu = grad_y @ u  # (N,)
        scale = grad_log_g.to(g.dtype) / g  # dℓ/dG · upstream, 0-d
        if need_u:
            grad_u = grad_y.T @ xv + (scale * (v.to(q.dtype) @ q)).to(u.dtype)
        if need_v:
            grad_v = x.T @ gyu + (scale * qu).to(v.dtype)
        if need_x:
            grad_x = torch.addr(grad_y @ p, gyu, v)
        if need_b and ctx.has_bias:
            grad_b = grad_y.sum(0)
        return grad_x, None, None, grad_u, grad_v, grad_b


def rank_one_affine(
    x: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\mathbf{P} + \mathbf{u}\mathbf{v}^\top)\mathbf{x} + \mathbf{c}` and :math:`\ln|1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u}|`.

    Args:
        x: inputs ``(N, n)``.
        p: the frozen matrix ``(n, n)``, same dtype and device as ``x`` (no gradient flows into it).
        q: its tracked inverse ``(n, n)``, in any floating dtype (the bookkeeping precision; :math:`G` is
            computed in it); no gradient flows into it.
        u, v: the perturbation ``(n,)``, dtype of ``x``.
        bias: ``(n,)`` or ``None``.

    Returns:
        ``y`` of shape ``(N, n)`` and the 0-d :math:`\ln|G|` in ``q``'s dtype, both differentiable in
        ``x``, ``u``, ``v`` and ``bias``.
    """
    return _RankOneAffine.apply(x, p, q, u, v, bias)
