"""Bent identity: values, monotonicity, exact inverse far in the tails."""

import pytest
import torch

from p4lightning.flows.bent import BentIdentity, bent, bent_inverse


def test_known_values():
    x = torch.tensor([0.0, 1.0, -1.0])
    y, log_d = bent(x)
    s2 = 2.0**0.5
    torch.testing.assert_close(y, torch.tensor([0.0, (s2 - 1) / 2 + 1, (s2 - 1) / 2 - 1]))
    torch.testing.assert_close(log_d, torch.log(torch.tensor([1.0, 1 + 1 / (2 * s2), 1 - 1 / (2 * s2)])))


def test_derivative_bounds_and_monotone():
    x = torch.linspace(-1e4, 1e4, 100001)
    y, log_d = bent(x)
    assert bool((y[1:] > y[:-1]).all())
    assert bool((log_d > torch.log(torch.tensor(0.5))).all() & (log_d < torch.log(torch.tensor(1.5))).all())


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3, 1e6])
def test_inverse_is_exact_in_the_tails(scale):
    x = scale * torch.randn(1000)
    x_back, log_d_inv = bent_inverse(bent(x)[0])
    torch.testing.assert_close(x_back, x, atol=1e-12 * scale, rtol=1e-12)
    torch.testing.assert_close(log_d_inv, -bent(x)[1], atol=1e-12, rtol=0)


def test_ladj_sums_over_features():
    f = BentIdentity(3)
    x = torch.randn(2, 3)
    torch.testing.assert_close(f(x)[1], bent(x)[1].sum(-1))
