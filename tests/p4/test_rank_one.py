"""The rank-one affine op and its Sherman–Morrison solve against dense references (``slogdet``, ``solve``).

Every test runs both paths: the fused first-order node (the default) and the composition from plain operations
(``higher_order=True``, derivatives of any order).
"""

from __future__ import annotations

import math

import pytest
import torch

from p4lightning.p4.rank_one import rank_one_affine, rank_one_solve

PATHS = pytest.mark.parametrize("higher_order", [False, True], ids=["fused", "plain"])


def _inputs(n: int = 5, batch: int = 7, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(n)
    p = torch.eye(n, dtype=dtype) + 0.3 * torch.randn(n, n, generator=gen, dtype=dtype)
    q = torch.linalg.inv(p)
    x = torch.randn(batch, n, generator=gen, dtype=dtype, requires_grad=True)
    u = (0.5 * torch.randn(n, generator=gen, dtype=dtype)).requires_grad_()
    v = torch.randn(n, generator=gen, dtype=dtype, requires_grad=True)
    b = torch.randn(n, generator=gen, dtype=dtype, requires_grad=True)
    return x, p, q, u, v, b


def _reference(x, p, q, u, v, b, offset=None, sign=1.0):  # noqa: ANN001, ANN202
    y = x @ (p + torch.outer(u, v)).T + b
    log_g = torch.linalg.slogdet(p + torch.outer(u, v))[1] - torch.linalg.slogdet(p)[1]
    ladj = log_g if offset is None else sign * offset + log_g
    return y, ladj.expand(x.shape[0])


@PATHS
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_values_match_dense_matrix_and_slogdet(higher_order: bool, sign: float) -> None:
    x, p, q, u, v, b = _inputs()
    offset = torch.tensor(0.7, dtype=torch.float64)
    y, ladj = rank_one_affine(x, p, q, u, v, b, offset, offset_sign=sign, higher_order=higher_order)
    y_ref, ladj_ref = _reference(x, p, q, u, v, b, offset, sign)
    assert ladj.shape == (7,)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj, ladj_ref, rtol=1e-12, atol=1e-12)


@PATHS
def test_gradients_match_autograd_of_the_dense_map(higher_order: bool) -> None:
    x, p, q, u, v, b = _inputs()
    offset = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, dtype=torch.float64)
    c = torch.randn(7, dtype=torch.float64)
    y, ladj = rank_one_affine(x, p, q, u, v, b, offset, offset_sign=-1.0, higher_order=higher_order)
    grads = torch.autograd.grad((w * y).sum() + (c * ladj).sum(), (x, u, v, b, offset))
    y_ref, ladj_ref = _reference(x, p, q, u, v, b, offset, -1.0)
    grads_ref = torch.autograd.grad((w * y_ref).sum() + (c * ladj_ref).sum(), (x, u, v, b, offset))
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


@PATHS
def test_only_requested_gradients_are_computed(higher_order: bool) -> None:
    x, p, q, u, v, b = _inputs()
    x = x.detach()
    y, ladj = rank_one_affine(x, p, q, u, v, None, higher_order=higher_order)
    (y.sum() + ladj.sum()).backward()
    assert x.grad is None and u.grad is not None and v.grad is not None
    u.grad = v.grad = None
    u_frozen = u.detach()
    y, ladj = rank_one_affine(x, p, q, u_frozen, v, b, higher_order=higher_order)
    (y.square().sum() + ladj.sum()).backward()
    assert u.grad is None and v.grad is not None and b.grad is not None


@PATHS
def test_float64_bookkeeping_with_float32_data(higher_order: bool) -> None:
    """G is formed in the inverse's precision; gradients come back in the parameters' dtype."""
    x, p, q, u, v, b = _inputs()
    x32, u32, v32, b32 = (t.detach().float().requires_grad_() for t in (x, u, v, b))
    offset = torch.tensor(1.5, dtype=torch.float64)
    y, ladj = rank_one_affine(x32, p.float(), q, u32, v32, b32, offset, higher_order=higher_order)
    assert y.dtype == ladj.dtype == torch.float32
    (y.sum() + ladj.sum()).backward()
    assert u32.grad.dtype == v32.grad.dtype == torch.float32
    _, ladj_ref = _reference(x, p, q, u, v, b, offset)
    torch.testing.assert_close(ladj, ladj_ref.detach().float(), rtol=1e-6, atol=1e-6)
    grads_ref = torch.autograd.grad(_reference(x, p, q, u, v, b, offset)[1].sum(), (u, v))
    y_ref = _reference(x, p, q, u, v, b)[0]
    grads_ref = [g + h for g, h in zip(grads_ref, torch.autograd.grad(y_ref.sum(), (u, v)), strict=True)]
    torch.testing.assert_close(u32.grad, grads_ref[0].float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v32.grad, grads_ref[1].float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", ["affine", "solve"])
def test_fused_and_plain_paths_agree_in_float32_with_float64_bookkeeping(op: str) -> None:
    x, p, q, u, v, b = (t.detach().float() for t in _inputs(n=16, batch=32))
    q = torch.linalg.inv(p.double())
    offset = torch.tensor(-2.0, dtype=torch.float64)
    out = []
    for plain in (False, True):
        params = [t.clone().requires_grad_() for t in (x, u, v, b)]
        if op == "affine":
            y, ladj = rank_one_affine(params[0], p, q, *params[1:3], params[3], offset, higher_order=plain)
        else:
            y, ladj = rank_one_solve(params[0], q, *params[1:3], params[3], offset, higher_order=plain)
        (y.square().sum() - ladj.sum()).backward()
        out.append([y.detach(), ladj.detach(), *(t.grad for t in params)])
    for a, c in zip(*out, strict=True):
        assert a.dtype == c.dtype == torch.float32
        torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("op", ["affine", "solve"])
def test_the_fused_node_refuses_a_second_derivative_and_names_the_plain_path(op: str) -> None:
    x, p, q, u, v, b = _inputs(n=4, batch=3)
    y, ladj = rank_one_affine(x, p, q, u, v, b) if op == "affine" else rank_one_solve(x, q, u, v, b)
    with pytest.raises(RuntimeError, match="first order.*higher_order=True"):
        torch.autograd.grad(y.square().sum() + ladj.sum(), (u, v), create_graph=True)


@PATHS
def test_singular_perturbation_gives_ieee_values_not_an_exception(higher_order: bool) -> None:
    """G = 0 (the perturbed matrix is singular): ladj = -inf and infinite gradients, as torch's own ops give."""
    n = 3
    p = q = torch.eye(n, dtype=torch.float64)
    u = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    v = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)  # G = 1 + v.u = 0
    x = torch.randn(2, n, dtype=torch.float64)
    y, ladj = rank_one_affine(x, p, q, u, v, higher_order=higher_order)
    assert bool(torch.isneginf(ladj).all())
    ladj.sum().backward()
    assert not math.isfinite(float(u.grad[0])) and not math.isfinite(float(v.grad[0]))


def test_offset_sign_is_validated() -> None:
    x, p, q, u, v, b = _inputs()
    with pytest.raises(ValueError, match="offset_sign"):
        rank_one_affine(x, p, q, u, v, b, offset_sign=2.0)


# ------------------------------------------------------------------------------------------------------
# rank_one_solve: the Sherman–Morrison inverse as one node
# ------------------------------------------------------------------------------------------------------
def _solve_reference(y, p, u, v, b, offset=None, sign=1.0):  # noqa: ANN001, ANN202
    m = p + torch.outer(u, v)
    yb = y if b is None else y - b
    x = torch.linalg.solve(m, yb.T).T
    log_g = torch.linalg.slogdet(m)[1] - torch.linalg.slogdet(p)[1]
    ladj = -log_g if offset is None else sign * offset - log_g
    return x, ladj.expand(y.shape[0])


@PATHS
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_solve_inverts_the_affine_map(higher_order: bool, sign: float) -> None:
    x, p, q, u, v, b = _inputs()
    offset = torch.tensor(0.7, dtype=torch.float64)
    y, ladj_fwd = rank_one_affine(x, p, q, u, v, b, offset, offset_sign=-sign, higher_order=higher_order)
    x_back, ladj_inv = rank_one_solve(y, q, u, v, b, offset, offset_sign=sign, higher_order=higher_order)
    torch.testing.assert_close(x_back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_inv, -ladj_fwd, rtol=1e-12, atol=1e-12)
    x_ref, ladj_ref = _solve_reference(y, p, u, v, b, offset, sign)
    torch.testing.assert_close(x_back, x_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_inv, ladj_ref, rtol=1e-12, atol=1e-12)


@PATHS
@pytest.mark.parametrize("bias", [True, False])
def test_solve_gradients_match_autograd_of_a_dense_solve(higher_order: bool, bias: bool) -> None:
    x, p, q, u, v, b = _inputs()
    y = x.detach().requires_grad_()
    b = b if bias else None
    offset = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, dtype=torch.float64)
    c = torch.randn(7, dtype=torch.float64)
    wrt = [t for t in (y, u, v, b, offset) if t is not None]
    out, ladj = rank_one_solve(y, q, u, v, b, offset, offset_sign=-1.0, higher_order=higher_order)
    grads = torch.autograd.grad((w * out).sum() + (c * ladj).sum(), wrt)
    out_ref, ladj_ref = _solve_reference(y, p, u, v, b, offset, -1.0)
    grads_ref = torch.autograd.grad((w * out_ref).sum() + (c * ladj_ref).sum(), wrt)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-11)


@PATHS
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("op", ["affine", "solve"])
def test_gradcheck_and_second_order(op: str, bias: bool, higher_order: bool) -> None:
    x, p, q, u, v, b = _inputs(n=4, batch=3)
    offset = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def fn(x, u, v, b, offset):  # noqa: ANN001, ANN202
        kw = {"offset_sign": -1.0, "higher_order": higher_order}
        if op == "affine":
            return rank_one_affine(x, p, q, u, v, b, offset, **kw)
        return rank_one_solve(x, q, u, v, b, offset, **kw)

    args = (x, u, v, b if bias else None, offset)
    assert torch.autograd.gradcheck(fn, args)
    if higher_order:  # the fused node is first order (refusal tested above)
        assert torch.autograd.gradgradcheck(fn, args)


@PATHS
def test_solve_with_float64_bookkeeping_and_float32_data(higher_order: bool) -> None:
    x, p, q, u, v, b = _inputs()
    y32, u32, v32, b32 = (t.detach().float().requires_grad_() for t in (x, u, v, b))
    offset = torch.tensor(1.5, dtype=torch.float64)
    out, ladj = rank_one_solve(y32, q, u32, v32, b32, offset, higher_order=higher_order)
    assert out.dtype == ladj.dtype == torch.float32
    (out.sum() + ladj.sum()).backward()
    assert y32.grad.dtype == u32.grad.dtype == v32.grad.dtype == b32.grad.dtype == torch.float32
    out_ref, ladj_ref = _solve_reference(x, p, u, v, b, offset)
    grads_ref = torch.autograd.grad(out_ref.sum() + ladj_ref.sum(), (x, u, v, b))
    torch.testing.assert_close(out, out_ref.detach().float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ladj, ladj_ref.detach().float(), rtol=1e-6, atol=1e-6)
    for g, g_ref in zip((y32.grad, u32.grad, v32.grad, b32.grad), grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref.float(), rtol=1e-4, atol=1e-4)


@PATHS
@pytest.mark.parametrize("op", ["affine", "solve"])
def test_inference_path_records_nothing_and_gives_the_same_values(op: str, higher_order: bool) -> None:
    x, p, q, u, v, b = _inputs()
    offset = torch.tensor(0.7, dtype=torch.float64)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        if op == "affine":
            return rank_one_affine(x, p, q, u, v, b, offset, higher_order=higher_order)
        return rank_one_solve(x, q, u, v, b, offset, higher_order=higher_order)

    out, ladj = call()
    with torch.no_grad():
        out_ng, ladj_ng = call()
    assert out.grad_fn is not None and out_ng.grad_fn is None and not ladj_ng.requires_grad
    tol = 1e-14 if higher_order else 0.0  # the fused node computes exactly what inference computes
    torch.testing.assert_close(out_ng, out.detach(), rtol=tol, atol=tol)
    torch.testing.assert_close(ladj_ng, ladj.detach(), rtol=tol, atol=tol)


@pytest.mark.parametrize("parametrization", ["matrix", "inverse"])
def test_p4inv_with_higher_order_has_exact_second_derivatives_and_without_refuses_them(parametrization: str) -> None:
    from p4lightning.bijection import Inverse
    from p4lightning.p4.inv import P4Inv

    torch.manual_seed(0)
    layer = P4Inv(3, init="reverse", parametrization=parametrization, dtype=torch.float64, higher_order=True)
    with torch.no_grad():
        layer.u.normal_(std=0.3)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    u, v = (t.detach().clone().requires_grad_() for t in (layer.u, layer.v))
    for module, prefix in ((layer, ""), (Inverse(layer), "bijection.")):

        def fn(x, u, v, module=module, prefix=prefix):  # noqa: ANN001, ANN202 - the map as a function of x, u, v
            return torch.func.functional_call(module, {prefix + "u": u, prefix + "v": v}, (x,), strict=False)

        assert torch.autograd.gradgradcheck(fn, (x, u, v))
    layer.higher_order = False
    y, ladj = layer(x)
    with pytest.raises(RuntimeError, match="higher_order=True"):
        torch.autograd.grad(y.square().sum() + ladj.sum(), x, create_graph=True)
    with pytest.raises(TypeError, match="higher_order"):
        P4Inv(3, higher_order="yes")
