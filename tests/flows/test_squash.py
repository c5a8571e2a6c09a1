"""AngleSquash: a bijection of the reals onto (-π, π) for the trailing angle coordinates, exact in its tails."""

import math

import pytest
import torch

from p4lightning.flows import AngleSquash


def test_angles_land_inside_the_open_branch_with_the_exact_log_derivative_in_the_tails():
    f = AngleSquash(3, 2)
    t = torch.tensor([[7.0, -0.3, 1.0], [-7.0, 12.0, -15.0]], dtype=torch.float64)
    y, ladj = f(t)
    assert torch.equal(y[:, 0], t[:, 0])  # the leading coordinate is untouched
    assert bool((y[:, 1:].abs() < math.pi).all())
    # ln(π sech² t) summed over the angles, by the textbook formula where it does not underflow
    expected = (math.log(math.pi) + torch.log(1 / torch.cosh(t[:, 1:]) ** 2)).sum(-1)
    torch.testing.assert_close(ladj, expected, rtol=1e-12, atol=1e-12)
    far = torch.tensor([[0.0, 0.0, 400.0]], dtype=torch.float64)  # sech² underflows to 0; the ladj stays exact
    assert float(f(far)[1]) == pytest.approx(2 * math.log(math.pi) + 2 * (math.log(2) - 400.0), rel=1e-14)


def test_an_angle_of_exactly_pi_has_a_finite_preimage():
    f = AngleSquash(1, 1)
    x, ladj = f.inverse(torch.tensor([[math.pi], [-math.pi]], dtype=torch.float64))
    assert bool(torch.isfinite(x).all() & torch.isfinite(ladj).all()) and float(x[0, 0]) > 15
