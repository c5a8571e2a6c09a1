"""The battery of mathematical checks every bijection of p4lightning passes — usable on your own bijections.

Each check raises :class:`AssertionError` with the measured discrepancy; :func:`check_bijection` runs them
all. Use float64 inputs: tolerances are set for double precision.

Example:
    >>> from p4lightning.flows import BentIdentity
    >>> check_bijection(BentIdentity(3), torch.randn(4, 3, dtype=torch.float64))
"""

from __future__ import annotations

import copy
import io

import torch
from torch.autograd.functional import jacobian

from p4lightning.bijection import Bijection

__all__ = [
    "check_bijection",
    "check_gradients",
    "check_inverse_ladj",
    "check_ladj_against_jacobian",
    "check_round_trip",
    "check_shapes",
    "check_state_dict_round_trip",
]


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float, rtol: float) -> None:
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol):
        err = (actual - expected).abs().max().item()
        raise AssertionError(f"{what}: max abs error {err:.3e} exceeds atol={atol:g}, rtol={rtol:g}")


def check_shapes(bij: Bijection, x: torch.Tensor) -> None:
    """``forward``/``inverse`` keep the shape ``(*, d)`` and return ``ladj`` of shape ``(*)`` for several ``*``."""
    d = x.shape[-1]
    for batch in [(), (3,), (2, 3)]:
        xb = x.reshape(-1, d)[:1].expand(*batch, d).clone() if batch else x.reshape(-1, d)[0].clone()
        for fn in (bij.forward, bij.inverse):
            out, ladj = fn(xb)
            if out.shape != xb.shape or ladj.shape != xb.shape[:-1]:
                raise AssertionError(
                    f"{fn.__name__}: input {tuple(xb.shape)} gave output {tuple(out.shape)} and ladj "
                    f"{tuple(ladj.shape)}; expected {tuple(xb.shape)} and {tuple(xb.shape[:-1])}"
                )


def check_round_trip(bij: Bijection, x: torch.Tensor, atol: float = 1e-9, rtol: float = 1e-7) -> None:
    """``inverse(forward(x)) == x`` and ``forward(inverse(x)) == x``."""
    with torch.no_grad():
        _close(bij.inverse(bij.forward(x)[0])[0], x, "inverse(forward(x)) vs x", atol, rtol)
        _close(bij.forward(bij.inverse(x)[0])[0], x, "forward(inverse(x)) vs x", atol, rtol)


def check_ladj_against_jacobian(bij: Bijection, x: torch.Tensor, atol: float = 1e-8, num: int = 3) -> None:
    """``ladj`` of both directions equals ``torch.linalg.slogdet`` of the autograd Jacobian, per sample."""
    for fn, name in ((bij.forward, "forward"), (bij.inverse, "inverse")):
        for xi in x.reshape(-1, x.shape[-1])[:num]:
            jac = jacobian(lambda z, fn=fn: fn(z)[0], xi)
            _, logabsdet = torch.linalg.slogdet(jac)
            with torch.no_grad():
                ladj = fn(xi)[1]
            _close(ladj, logabsdet, f"{name} ladj vs slogdet(autograd Jacobian)", atol, 1e-8)


def check_inverse_ladj(bij: Bijection, x: torch.Tensor, atol: float = 1e-8) -> None:
    """``ladj`` of the inverse at ``y = f(x)`` is minus ``ladj`` of the forward at ``x``."""
    with torch.no_grad():
        y, ladj_f = bij.forward(x)
        _, ladj_i = bij.inverse(y)
    _close(ladj_i, -ladj_f, "inverse ladj at f(x) vs -forward ladj at x", atol, 1e-8)


def check_gradients(bij: Bijection, x: torch.Tensor) -> None:
    """Every trainable parameter and the input receive finite gradients from ``forward`` and from
    ``inverse``; buffers (frozen state) never require gradients."""
    for fn in (bij.forward, bij.inverse):
        bij.zero_grad(set_to_none=True)
        xg = x.detach().clone().requires_grad_(True)
        out, ladj = fn(xg)
        (out.square().sum() + ladj.sum()).backward()
        if xg.grad is None or not bool(torch.isfinite(xg.grad).all()):
            raise AssertionError(f"{fn.__name__}: the input got gradient {xg.grad}")
        for name, p in bij.named_parameters():
            if p.requires_grad and (p.grad is None or not bool(torch.isfinite(p.grad).all())):
                raise AssertionError(f"{fn.__name__}: parameter {name!r} got gradient {p.grad}")
        bij.zero_grad(set_to_none=True)
    for name, b in bij.named_buffers():
        if b.requires_grad:
            raise AssertionError(f"buffer {name!r} requires grad: frozen state must not be trained")


def check_state_dict_round_trip(bij: Bijection, x: torch.Tensor) -> None:
    """A deep copy with freshly re-drawn state, loaded from a serialised ``state_dict``, computes the same."""
    buffer = io.BytesIO()
    torch.save(bij.state_dict(), buffer)
    clone = copy.deepcopy(bij)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(torch.randn_like(p))
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        for fn_a, fn_b in ((bij.forward, clone.forward), (bij.inverse, clone.inverse)):
            ya, la = fn_a(x)
            yb, lb = fn_b(x)
            if not (torch.equal(ya, yb) and torch.equal(la, lb)):
                raise AssertionError(f"{fn_a.__name__}: state_dict round trip changed the output")


def check_bijection(bij: Bijection, x: torch.Tensor) -> None:
    """Run every check of this module on ``bij`` at inputs ``x`` of shape ``(B, d)``."""
    check_shapes(bij, x)
    check_round_trip(bij, x)
    check_ladj_against_jacobian(bij, x)
    check_inverse_ladj(bij, x)
    check_gradients(bij, x)
    check_state_dict_round_trip(bij, x)
