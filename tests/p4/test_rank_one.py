"""The fused rank-one affine op against the same map composed from plain torch operations."""

from __future__ import annotations

import pytest
import torch

from p4lightning.p4.rank_one import rank_one_affine


def _inputs(n: int = 5, batch: int = 7, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(n)
    p = torch.eye(n, dtype=dtype) + 0.3 * torch.randn(n, n, generator=gen, dtype=dtype)
    q = torch.linalg.inv(p)
    x = torch.randn(batch, n, generator=gen, dtype=dtype, requires_grad=True)
    u = (0.5 * torch.randn(n, generator=gen, dtype=dtype)).requires_grad_()
    v = torch.randn(n, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(n, generator=gen, dtype=dtype, requires_grad=True)
    return x, p, q, u, v, b


def _reference(x, p, q, u, v, b):  # noqa: ANN001, ANN202
    y = x @ (p + torch.outer(u, v)).T + b
    return y, torch.linalg.slogdet(p + torch.outer(u, v))[1] - torch.linalg.slogdet(p)[1]


def test_values_match_dense_matrix_and_slogdet() -> None:
    x, p, q, u, v, b = _inputs()
    y, log_g = rank_one_affine(x, p, q, u, v, b)
    y_ref, log_g_ref = _reference(x, p, q, u, v, b)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_g, log_g_ref, rtol=1e-12, atol=1e-12)


def test_gradients_match_autograd_of_the_dense_map() -> None:
    x, p, q, u, v, b = _inputs()
    w = torch.randn(7, 5, dtype=torch.float64)
    y, log_g = rank_one_affine(x, p, q, u, v, b)
    grads = torch.autograd.grad((w * y).sum() + 3.0 * log_g, (x, u, v, b))
    y_ref, log_g_ref = _reference(x, p, q, u, v, b)
    grads_ref = torch.autograd.grad((w * y_ref).sum() + 3.0 * log_g_ref, (x, u, v, b))
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_and_second_order(bias: bool) -> None:
    x, p, q, u, v, b = _inputs(n=4, batch=3)
    b = b if bias else None
    args = (x, p, q, u, v, b)
    assert torch.autograd.gradcheck(rank_one_affine, args)
    assert torch.autograd.gradgradcheck(rank_one_affine, args)


def test_only_requested_gradients_are_computed() -> None:
    x, p, q, u, v, b = _inputs()
    x = x.detach()
    y, log_g = rank_one_affine(x, p, q, u, v, None)
    (y.sum() + log_g).backward()
    assert x.grad is None and u.grad is not None and v.grad is not None


def test_float64_bookkeeping_with_float32_data() -> None:
    """G is formed in the inverse's precision; gradients come back in the parameters' dtype."""
    x, p, q, u, v, b = _inputs()
    x32, u32, v32, b32 = (t.detach().float().requires_grad_() for t in (x, u, v, b))
    y, log_g = rank_one_affine(x32, p.float(), q, u32, v32, b32)
    assert y.dtype == torch.float32 and log_g.dtype == torch.float64
    (y.sum() + log_g).backward()
    assert u32.grad.dtype == v32.grad.dtype == torch.float32
    _, log_g_ref = _reference(x, p, q, u, v, b)
    torch.testing.assert_close(log_g, log_g_ref.detach(), rtol=1e-6, atol=1e-6)
