"""P⁴ layers under ``torch.compile``: one graph (``fullgraph=True``), the eager values and gradients, merges
seen without recompiling, and the input check kept as an in-graph assertion.

Most cases use the ``aot_eager`` backend (Dynamo's trace and AOTAutograd's joint graph, which is where a
custom autograd node or a host read would break, without a C++ build); one case runs ``inductor``, the
default backend, end to end.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest
import torch

from p4lightning import P4Inv, P4Orth
from p4lightning.p4 import rank_one
from p4lightning.p4.protocol import P4Module

DIM, BATCH = 6, 5


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _perturbed_inv(parametrization: str, check_inputs: bool) -> P4Inv:
    torch.manual_seed(0)
    layer = P4Inv(DIM, parametrization=parametrization, check_inputs=check_inputs, dtype=torch.float64)
    a = torch.eye(DIM, dtype=torch.float64) + 0.3 * torch.randn(DIM, DIM, dtype=torch.float64)
    with torch.no_grad():
        layer.matrix.copy_(a if parametrization == "matrix" else torch.linalg.inv(a))
        layer.inverse_matrix.copy_(torch.linalg.inv(layer.matrix))
        layer.log_abs_det.copy_(torch.linalg.slogdet(layer.matrix)[1])
        layer.u.normal_(std=0.3)
        layer.bias.normal_()
    return layer


def _objective(layer: P4Module, direction: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A flow-style loss: 0.5 |y|² − ladj, averaged over the batch."""

    def loss(x: torch.Tensor) -> torch.Tensor:
        y, ladj = getattr(layer, direction)(x)
        return 0.5 * y.square().sum(-1).mean() - ladj.mean()

    return loss


def _value_and_grads(
    fn: Callable[[torch.Tensor], torch.Tensor], layer: P4Module, x: torch.Tensor
) -> list[torch.Tensor]:
    x = x.detach().requires_grad_(True)
    layer.zero_grad(set_to_none=True)
    value = fn(x)
    value.backward()
    return [value.detach(), x.grad, *(p.grad for p in layer.parameters())]


def _assert_all_close(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


#: P4Inv compilation is refused on an older torch (Note [compiled gradients before torch 2.13] in p4/rank_one.py)
_COMPILES = pytest.mark.skipif(
    rank_one._torch_version() < rank_one.MIN_COMPILE_TORCH,
    reason=f"P4Inv compilation is refused on torch {torch.__version__} (checked correct from 2.13)",
)


@_COMPILES
@pytest.mark.parametrize("check_inputs", [False, True])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("parametrization", ["matrix", "inverse"])
def test_p4inv_compiles_to_one_graph_with_eager_values_and_grads_across_merges(
    parametrization: str, direction: str, check_inputs: bool
) -> None:
    layer = _perturbed_inv(parametrization, check_inputs)
    eager = _objective(layer, direction)
    compiled = torch.compile(eager, backend="aot_eager", fullgraph=True)
    x = torch.randn(BATCH, DIM, dtype=torch.float64)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):  # the graph reads A, A⁻¹ and ln|det A| as inputs: a merge needs no recompilation
            _assert_all_close(_value_and_grads(compiled, layer, x), _value_and_grads(eager, layer, x))
            with torch.no_grad():
                layer.u.normal_(std=0.3)
                layer.v.normal_()
            assert layer.merge(force=True).accepted


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_p4orth_compiles_to_one_graph_across_merges(direction: str) -> None:
    torch.manual_seed(0)
    layer = P4Orth(DIM, dtype=torch.float64)
    eager = _objective(layer, direction)
    compiled = torch.compile(eager, backend="aot_eager", fullgraph=True)
    x = torch.randn(BATCH, DIM, dtype=torch.float64)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            with torch.no_grad():
                for p in layer.perturbation_parameters():
                    p.add_(0.3 * torch.randn_like(p))
            _assert_all_close(_value_and_grads(compiled, layer, x), _value_and_grads(eager, layer, x))
            assert layer.merge(force=True).accepted


@_COMPILES
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_compiled_input_check_still_refuses_non_finite_input(direction: str) -> None:
    layer = _perturbed_inv("matrix", check_inputs=True)
    compiled = torch.compile(_objective(layer, direction), backend="aot_eager", fullgraph=True)
    x = torch.randn(BATCH, DIM, dtype=torch.float64)
    compiled(x)  # finite input passes
    x[2, 3] = float("nan")
    name = "x" if direction == "forward" else "y"
    with pytest.raises(RuntimeError, match=f"{name} must be finite"):
        compiled(x)


@_COMPILES
@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler"
)
def test_inductor_step_matches_eager_float32() -> None:
    """The default backend end to end, in float32 as benchmarked: values and gradients agree with the eager node
    to float32 rounding."""
    torch.manual_seed(0)
    layer = P4Inv(32, dtype=torch.float32)
    with torch.no_grad():
        layer.u.normal_(std=0.1)
    eager = _objective(layer, "forward")
    compiled = torch.compile(eager, fullgraph=True)
    x = torch.randn(64, 32)
    for g, e in zip(_value_and_grads(compiled, layer, x), _value_and_grads(eager, layer, x), strict=True):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    x[0, 0] = float("inf")
    with pytest.raises(RuntimeError, match="x must be finite"):
        compiled(x)


def test_compiling_p4inv_on_a_torch_older_than_the_checked_one_is_refused(monkeypatch):
    """Note [compiled gradients before torch 2.13]: torch 2.11 compiled P4Inv with zero input/bias gradients; an
    older torch gets an error naming the version instead of silently wrong training (eager stays allowed)."""
    monkeypatch.setattr(rank_one, "_torch_version", lambda: (2, 11))
    layer = _perturbed_inv("matrix", False)
    x = torch.randn(BATCH, DIM, dtype=torch.float64)
    layer(x)  # eager: fine
    torch._dynamo.reset()
    compiled = torch.compile(_objective(layer, "forward"), backend="aot_eager", fullgraph=True)
    with pytest.raises(Exception, match=r"torch.compile of P4Inv needs torch >= 2.13"):
        compiled(x)
    torch._dynamo.reset()
