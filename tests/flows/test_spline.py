"""Spline couplings, circular splines, the LU layer and the spline flow: the mathematics the battery does not cover."""

import math

import pytest
import torch

from p4lightning import P4Inv
from p4lightning.flows import NormalUniformPrior, SplineCoupling, spline_flow
from p4lightning.flows.spline import MIN_SLOPE
from p4lightning.p4.protocol import find_p4_modules


def _randomised(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn_like(p))
    return module


def test_spline_passes_through_its_knots_with_their_derivatives():
    """The RQS spline (zuko's) interpolates the knots (x_k, y_k) with slope d_k at each: check with finite differences."""
    f = _randomised(SplineCoupling(2, [1], hidden=(4,), bins=6, bound=2.0))
    cond = torch.tensor([[0.3]])
    spline = f._spline(cond)
    xs, ys, ds = spline.horizontal[0, 0], spline.vertical[0, 0], spline.derivatives[0, 0]
    assert torch.all(torch.diff(xs) > 0) and torch.all(torch.diff(ys) > 0)
    torch.testing.assert_close(xs[[0, -1]], torch.tensor([-2.0, 2.0]))
    torch.testing.assert_close(ys[[0, -1]], torch.tensor([-2.0, 2.0]))
    inner = xs[1:-1]
    y, ladj = f(torch.stack([cond[0, 0].expand(len(inner)), inner], dim=-1))
    torch.testing.assert_close(y[:, 1], ys[1:-1], atol=1e-12, rtol=0)
    torch.testing.assert_close(ladj.exp(), ds[1:-1], atol=1e-10, rtol=1e-8)
    assert float(ds.detach().min()) >= MIN_SLOPE


def test_euclidean_spline_is_the_identity_outside_its_bound():
    f = _randomised(SplineCoupling(3, [0, 2], hidden=(8,), bound=1.5))
    x = torch.tensor([[2.0, 0.1, -7.0], [-1.6, 3.0, 1.6]])
    y, ladj = f(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ladj, torch.zeros(2))


def test_circular_spline_keeps_angles_on_the_circle_with_equal_density_at_plus_minus_pi():
    f = _randomised(SplineCoupling(3, [1, 2], circular=[0, 2], hidden=(16,), bins=8), 1.0)
    x = torch.rand(2000, 3) * 2 * math.pi - math.pi
    x[:10, 2] = -math.pi
    y, _ = f(x)
    assert float(y[:, 2].min()) >= -math.pi and float(y[:, 2].max()) < math.pi
    # the map fixes ±π with unit slope on both sides: the same density at -π and at π (a continuous circle map)
    cond = torch.rand(50, 1) * 2 * math.pi - math.pi
    eps = 1e-12
    lo = torch.cat([cond, torch.zeros(50, 1), torch.full((50, 1), -math.pi)], dim=-1)
    hi = torch.cat([cond, torch.zeros(50, 1), torch.full((50, 1), math.pi - eps)], dim=-1)
    l_lo = f._spline(lo[:, [0]]).call_and_ladj(lo[:, [1, 2]])[1][:, 1]
    l_hi = f._spline(hi[:, [0]]).call_and_ladj(hi[:, [1, 2]])[1][:, 1]
    torch.testing.assert_close(l_lo, torch.zeros(50), atol=1e-12, rtol=0)
    torch.testing.assert_close(l_hi, torch.zeros(50), atol=1e-7, rtol=0)
    # and the conditioner sees angles through (cos, sin): conditioning angles -π and π give the same spline
    a = torch.tensor([[-math.pi, 0.2, 0.5]])
    b = torch.tensor([[math.pi, 0.2, 0.5]])
    torch.testing.assert_close(f(a)[0][:, 1:], f(b)[0][:, 1:], atol=1e-12, rtol=0)


def test_every_mixing_is_the_identity_at_initialisation_and_the_same_couplings():
    x = torch.randn(5, 10)
    x[:, 7:] = torch.rand(5, 3) * 2 * math.pi - math.pi
    flows = {m: spline_flow(10, 3, n_couplings=4, hidden=(8,), mixing=m) for m in ("p4inv", "mask", "lu")}
    for flow in flows.values():
        y, ladj = flow(x)
        torch.testing.assert_close(y, x)
        torch.testing.assert_close(ladj, torch.zeros(5))
    masks = {m: [c.transformed for c in f.bijections if isinstance(c, SplineCoupling)] for m, f in flows.items()}
    assert masks["p4inv"] == masks["mask"] == masks["lu"] and len(masks["mask"]) == 4
    # complementary halves per pair: every coordinate transformed once per pair
    for pair in range(2):
        both = sorted(masks["mask"][2 * pair] + masks["mask"][2 * pair + 1])
        assert both == list(range(10))
    p4 = [m for _, m in find_p4_modules(flows["p4inv"])]
    assert len(p4) == 3 and all(isinstance(m, P4Inv) and m.dim == 7 for m in p4)


def test_spline_flow_refuses_bad_options():
    with pytest.raises(ValueError, match="n_couplings must be even"):
        spline_flow(10, 3, n_couplings=3)
    with pytest.raises(ValueError, match="mixing"):
        spline_flow(10, 3, mixing="swap")
    with pytest.raises(ValueError, match="at least 2 Euclidean"):
        spline_flow(4, 3)
    with pytest.raises(ValueError, match="transformed"):
        SplineCoupling(4, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="distinct indices"):
        SplineCoupling(4, [0, 0])


def test_normal_uniform_prior_is_a_normalised_density_on_the_box():
    prior = NormalUniformPrior(3, circular=[1])
    z = prior.sample(20000, torch.Generator().manual_seed(0))
    assert float(z[:, 1].min()) >= -math.pi and float(z[:, 1].max()) < math.pi
    assert abs(float(z[:, 0].std()) - 1) < 0.03 and abs(float(z[:, 1].std()) - math.pi / math.sqrt(3)) < 0.03
    expected = -0.5 * (z[:, 0] ** 2 + z[:, 2] ** 2) - math.log(2 * math.pi) - math.log(2 * math.pi)
    torch.testing.assert_close(prior.log_prob(z), expected)
    assert prior.log_prob(torch.tensor([[0.0, 3.5, 0.0]])).item() == -math.inf
    # Monte Carlo normalisation over the box [-4, 4] x [-π, π) x [-4, 4]
    u = (torch.rand(200000, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1) * torch.tensor([4, math.pi, 4])
    volume = 8 * 2 * math.pi * 8
    assert abs(float(prior.log_prob(u).exp().mean()) * volume - 1) < 0.02
