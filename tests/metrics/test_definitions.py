"""The metric definitions on cases with known answers."""

import math

import pytest
import torch

from p4lightning.metrics.definitions import (
    energy_shift,
    energy_statistics,
    energy_w2,
    forward_ess,
    low_energy_fraction,
    nll,
    ramachandran_histogram,
    ramachandran_kl,
    ramachandran_tv,
    reverse_ess,
)


def torsions(n, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, generator=g) * 2 - 1) * math.pi * scale, (torch.rand(n, generator=g) * 2 - 1) * math.pi * scale)


def test_ramachandran_kl_and_tv_zero_for_identical_sets_positive_otherwise():
    h = ramachandran_histogram(*torsions(5000))
    assert ramachandran_kl(h, h) == 0.0 and ramachandran_tv(h, h) == 0.0
    other = ramachandran_histogram(*torsions(5000, seed=1, scale=0.5))
    assert ramachandran_kl(h, other) > 1.0
    assert 0.4 < ramachandran_tv(h, other) <= 1.0


def test_ramachandran_kl_is_fab_definition_on_two_bins():
    """p = (1/2, 1/2) on two bins, q = (1, 0): KL = 1/2 ln(1/2 / 1) + 1/2 ln(1/2 / eps') with densities."""
    bins = 64
    p = torch.zeros(bins, bins)
    q = torch.zeros(bins, bins)
    p[0, 0] = p[1, 0] = 50
    q[0, 0] = 100
    area = (2 * math.pi / bins) ** 2
    dp, dq, eps = 0.5 / area, 1.0 / area, 1e-10
    expected = (dp * math.log((dp + eps) / (dq + eps)) + dp * math.log((dp + eps) / eps)) * area
    assert ramachandran_kl(p, q) == pytest.approx(expected, rel=1e-12)
    assert ramachandran_tv(p, q) == pytest.approx(0.5, rel=1e-12)


def test_histogram_range_and_edges():
    h = ramachandran_histogram(torch.tensor([-math.pi, math.pi, 0.0, float("nan")]), torch.tensor([0.0, 0.0, 0.0, 0.0]))
    assert h.sum() == 3 and h[0, 32] == 1 and h[63, 32] == 1 and h[32, 32] == 1


def test_reverse_ess_known_values_and_clipping():
    assert reverse_ess(torch.full((100,), 3.0)) == pytest.approx(1.0, abs=1e-12)  # q = p
    lw = torch.zeros(10)
    lw[0] = 100.0
    assert reverse_ess(lw) == pytest.approx(0.1, rel=1e-9)  # one weight dominates: 1/N
    w = torch.tensor([1.0, 1.0, 2.0, 4.0])
    assert reverse_ess(w.log()) == pytest.approx(64 / (4 * 22))  # (sum w)^2 / (N sum w^2)
    lw = torch.cat([torch.zeros(20_000), torch.tensor([30.0, 40.0, 50.0])])
    clipped = reverse_ess(lw, clip_fraction=1e-4)  # k = 2: the two largest set to the second largest (40)
    expected_lw = torch.cat([torch.zeros(20_000), torch.tensor([30.0, 40.0, 40.0])])
    assert clipped == pytest.approx(reverse_ess(expected_lw), rel=1e-12)
    assert reverse_ess(torch.tensor([float("nan"), float("-inf")])) == 0.0


def test_forward_ess_known_values():
    assert forward_ess(torch.full((50,), -7.0)) == pytest.approx(1.0, abs=1e-12)  # q ∝ p, any normaliser
    w = torch.tensor([1.0, 2.0, 4.0])
    assert forward_ess(w.log()) == pytest.approx(1 / ((7 / 3) * (1.75 / 3)))
    assert forward_ess(torch.tensor([0.0, float("inf")])) == 0.0


def test_energy_statistics_shift_and_low_energy_fraction():
    u = torch.tensor([1.0, 2.0, 3.0, 4.0, float("inf")])
    s = energy_statistics(u, threshold=3.5)
    assert s["mean"] == 2.5 and s["median"] == 3.0 and s["nonfinite_fraction"] == 0.2
    assert s["low_energy_fraction"] == 0.6 and s["p99"] == math.inf and s["n"] == 5
    assert low_energy_fraction(u, 1.5) == 0.2
    assert energy_shift(u + 2.0, u) == {"mean": 2.0, "median": 2.0}
    assert nll(torch.tensor([-1.0, -3.0])) == 2.0


def test_energy_w2_known_values():
    a = torch.randn(1000, dtype=torch.float64)
    assert energy_w2(a, a) == 0.0
    assert energy_w2(a + 3.0, a) == pytest.approx(3.0, rel=1e-12)  # a shift moves every quantile
    assert energy_w2(torch.tensor([0.0, 2.0]), torch.tensor([1.0])) == pytest.approx(1.0)  # different sizes
    assert energy_w2(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 2.0])) == pytest.approx(math.sqrt(1 / 3))


def test_phi_positive_fraction_counts_the_right_half_of_the_histogram():
    from p4lightning.metrics.definitions import phi_positive_fraction as _phi_positive

    phi = torch.tensor([-3.0, -1.0, -1e-9, 0.0, 0.5, math.pi], dtype=torch.float64)
    h = ramachandran_histogram(phi, torch.zeros_like(phi))
    assert _phi_positive(h) == pytest.approx(0.5)  # 0, 0.5 and pi of six


def test_weight_concentration_known_cases():
    from p4lightning.metrics.definitions import weight_concentration

    equal = weight_concentration(torch.zeros(100, dtype=torch.float64))
    assert equal["log_weight_std"] == 0.0 and equal["top10_weight_share"] == pytest.approx(0.1)
    one = torch.full((100,), -1e3, dtype=torch.float64)
    one[7] = 0.0
    one[8] = float("nan")  # a failed energy: weight 0
    c = weight_concentration(one)
    assert c["top10_weight_share"] == pytest.approx(1.0) and c["log_weight_std"] > 90


# --- intervals, spread, correlation, reweighted fractions ---------------------------------------------------------
from p4lightning.metrics.definitions import (  # noqa: E402
    log_weight_robust_std,
    replica_bootstrap_fraction,
    reverse_ess_interval,
    reweighted_fraction,
    u_log_q_correlation,
)


def test_reverse_ess_interval_brackets_the_gaussian_truth():
    """For Gaussian log-weights of std σ the normalised ESS tends to exp(-σ²); the interval brackets it and shrinks."""
    g = torch.Generator().manual_seed(0)
    sigma = 0.7
    lw = sigma * torch.randn(50000, generator=g, dtype=torch.float64)
    lo, hi = reverse_ess_interval(lw, 300, torch.Generator().manual_seed(1))
    assert lo < math.exp(-sigma**2) < hi and hi - lo < 0.02
    assert lo <= reverse_ess(lw) <= hi
    assert reverse_ess_interval(torch.full((10,), -math.inf)) == [0.0, 0.0]


def test_robust_std_ignores_outliers_and_correlation_is_minus_one_for_a_perfect_generator():
    g = torch.Generator().manual_seed(0)
    lw = 2.0 * torch.randn(20000, generator=g, dtype=torch.float64)
    lw[:50] = 1e4
    assert abs(log_weight_robust_std(lw) - 2.0) < 0.06
    u = torch.randn(1000, generator=g, dtype=torch.float64)
    assert u_log_q_correlation(u, -u - 3.0) == pytest.approx(-1.0)
    clash = torch.cat([u, torch.tensor([1e6])])  # one clash does not decide a rank correlation
    assert u_log_q_correlation(clash, torch.cat([-u, torch.tensor([50.0])])) < -0.99
    assert math.isnan(u_log_q_correlation(torch.tensor([1.0]), torch.tensor([2.0])))


def test_reweighted_fraction_removes_the_proposals_bias():
    """Samples from q = N(0, 1), target p = N(1, 1): w ∝ exp(x - 1/2); P_p(x ≥ 0) = Φ(1) = 0.8413."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200000, generator=g, dtype=torch.float64)
    out = reweighted_fraction(x >= 0, x - 0.5, 200, torch.Generator().manual_seed(1))
    assert abs(float((x >= 0).double().mean()) - 0.5) < 0.01  # unweighted: q's fraction
    lo, hi = out["interval95"]
    assert lo < 0.8413 < hi and abs(out["value"] - 0.8413) < 0.005


def test_replica_bootstrap_interval_reflects_between_replica_spread():
    a = torch.cat([torch.ones(100), torch.zeros(100), torch.ones(50), torch.zeros(150)]).bool()
    replica = torch.cat([torch.full((100,), 0), torch.full((100,), 1), torch.full((200,), 2)])
    out = replica_bootstrap_fraction(a, replica, 500, torch.Generator().manual_seed(0))
    assert out["value"] == pytest.approx(150 / 400) and out["n_replicas"] == 3
    lo, hi = out["interval95"]
    assert lo <= out["value"] <= hi and lo < 0.2 and hi > 0.5  # three replicas of 1.0, 0.0, 0.25: a wide interval
    with pytest.raises(ValueError, match="same length"):
        replica_bootstrap_fraction(a, replica[:10])
