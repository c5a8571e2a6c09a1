"""P⁴Orth: identity at reset, merges keep the function and orthogonality, refusals, errors."""

import math

import pytest
import torch

from p4lightning import MergeStatus, P4Orth


def test_reset_perturbation_is_the_identity():
    layer = P4Orth(6, bias=False)
    x = torch.randn(5, 6)
    torch.testing.assert_close(layer(x)[0], x, atol=1e-13, rtol=0)


def test_merge_keeps_function_and_orthogonality_over_many_merges():
    n = 32
    layer = P4Orth(n, init="reverse")
    x = torch.randn(8, n)
    g = torch.Generator().manual_seed(0)
    for _ in range(2000):
        with torch.no_grad():
            layer.w1.add_(0.5 * torch.randn(n, generator=g))
        y = layer(x)[0].detach()
        assert layer.merge(generator=g).status is MergeStatus.ACCEPTED
        torch.testing.assert_close(layer(x)[0], y, atol=1e-11, rtol=1e-11)
    a = layer.matrix
    assert (a.T @ a - torch.eye(n)).abs().max() < 1e-12
    assert abs(float(torch.linalg.slogdet(a)[1])) < 1e-12


def test_float32_orthogonality_drift_is_removed_by_reorthogonalize():
    n = 64
    layer = P4Orth(n, dtype=torch.float32)
    for _ in range(3000):
        with torch.no_grad():
            layer.w1.add_(torch.randn(n))
        layer.merge()
    a = layer.matrix.double()
    drift = (a.T @ a - torch.eye(n)).abs().max()
    assert drift < 1e-4  # orthogonal to float32 precision after 3000 merges
    reported = layer.reorthogonalize()
    a = layer.matrix.double()
    assert (a.T @ a - torch.eye(n)).abs().max() < max(1e-6, float(drift))
    assert float(reported) > 0


@pytest.mark.parametrize("bad", ["nan", "zero"])
def test_degenerate_perturbation_is_refused_even_forced(bad):
    layer = P4Orth(4)
    before = layer.matrix.clone()
    with torch.no_grad():
        if bad == "nan":
            layer.w2[0] = math.nan
        else:
            layer.w1.zero_()
    outcome = layer.merge(force=True)
    assert outcome.status is MergeStatus.NON_FINITE
    assert torch.equal(layer.matrix, before)
    assert torch.equal(layer.w1, layer.w2) and bool(torch.isfinite(layer.w1).all())


def test_non_orthogonal_init_is_rejected():
    with pytest.raises(ValueError, match="init must be an orthogonal matrix"):
        P4Orth(3, init=2 * torch.eye(3))


def test_penalty_is_zero_with_a_graph():
    layer = P4Orth(3)
    assert float(layer.penalty().detach()) == 0.0


def test_zero_householder_vector_is_refused_naming_it():
    import pytest
    import torch

    from p4lightning import P4Orth

    layer = P4Orth(4)
    with torch.no_grad():
        layer.w2.zero_()
    with pytest.raises(ValueError, match="P4Orth.w2 is the zero vector"):
        layer(torch.randn(3, 4))
    with pytest.raises(ValueError, match="P4Orth.w2 is the zero vector"):
        layer.inverse(torch.randn(3, 4))


@pytest.mark.parametrize(
    ("layer_dtype", "input_dtype"), [(torch.float64, torch.float32), (torch.float32, torch.float64)]
)
def test_input_dtype_is_followed_as_p4inv_does(layer_dtype, input_dtype):
    """P⁴Inv's rule: ``y``, ``x`` and ``ladj`` come in the input's dtype (the layer's tensors cast to it)."""
    from p4lightning import P4Inv

    g = torch.Generator().manual_seed(0)
    layer = P4Orth(5, dtype=layer_dtype)
    with torch.no_grad():
        layer.w1.add_(0.3 * torch.randn(5, generator=g, dtype=layer_dtype))
        layer.bias.normal_(generator=g)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64)
    y, ladj = layer(x.to(input_dtype))
    assert y.dtype == ladj.dtype == input_dtype
    torch.testing.assert_close(y.double(), layer(x.to(layer_dtype))[0].double(), rtol=1e-5, atol=1e-5)
    back, inverse_ladj = layer.inverse(y)
    assert back.dtype == inverse_ladj.dtype == input_dtype
    torch.testing.assert_close(back, x.to(input_dtype), rtol=1e-5, atol=1e-5)
    y_inv, ladj_inv = P4Inv(5, dtype=layer_dtype)(x.to(input_dtype))
    assert y_inv.dtype == ladj_inv.dtype == input_dtype
