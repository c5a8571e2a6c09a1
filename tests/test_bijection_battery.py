"""The shared battery: every bijection of p4lightning passes every check of p4lightning.testing."""

import pytest
import torch

from p4lightning import BentIdentity, Inverse, InverseBentIdentity, P4Inv, P4Orth
from p4lightning.flows import (
    AngleSquash,
    LeadingBlock,
    LULinear,
    Permutation,
    RealNVPCoupling,
    SequentialFlow,
    SplineCoupling,
    Swap,
    realnvp_flow,
    spline_flow,
)
from p4lightning.testing import check_bijection


def _perturbed(layer):
    """Give the perturbation and bias non-trivial values, so every term of the map is exercised."""
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.3 * torch.randn_like(p))
    return layer


def _random_init(n):
    return torch.eye(n) + 0.3 * torch.randn(n, n)


BIJECTIONS = {
    "p4inv-identity": lambda: _perturbed(P4Inv(5)),
    "p4inv-reverse": lambda: _perturbed(P4Inv(6, init="reverse")),
    "p4inv-tensor-nobias": lambda: _perturbed(P4Inv(4, init=_random_init(4), bias=False)),
    "p4inv-inverse-parametrization": lambda: _perturbed(
        P4Inv(5, init=_random_init(5), parametrization="inverse")
    ),
    "p4inv-float64-bookkeeping": lambda: _perturbed(P4Inv(5, bookkeeping_dtype=torch.float64)),
    "p4orth": lambda: _perturbed(P4Orth(5)),
    "p4orth-reverse": lambda: _perturbed(P4Orth(4, init="reverse")),
    "bent": lambda: BentIdentity(4),
    "inverse-bent": lambda: InverseBentIdentity(4),
    "inverse-of-p4inv": lambda: Inverse(_perturbed(P4Inv(3))),
    "realnvp-coupling": lambda: _perturbed(RealNVPCoupling(6, hidden=(8, 8))),
    "realnvp-coupling-odd-split": lambda: _perturbed(RealNVPCoupling(5, split=2, hidden=(7,))),
    "swap": lambda: Swap(6),
    "permutation": lambda: Permutation([2, 0, 3, 1]),
    "sequential-bent-p4inv": lambda: SequentialFlow(
        [BentIdentity(4), _perturbed(P4Inv(4)), InverseBentIdentity(4)]
    ),
    "realnvp-flow-p4inv": lambda: _perturbed(realnvp_flow(6, n_blocks=2, hidden=(8,), mixing="p4inv")),
    "realnvp-flow-swap": lambda: _perturbed(realnvp_flow(6, n_blocks=2, hidden=(8,), mixing="swap")),
    "spline-coupling": lambda: _perturbed(SplineCoupling(6, [0, 2, 5], circular=[4, 5], hidden=(8,), bins=5)),
    "spline-coupling-euclidean": lambda: _perturbed(SplineCoupling(5, [1, 3], hidden=(8, 8), bound=3.0)),
    "lu-linear": lambda: _perturbed(LULinear(5)),
    "angle-squash": lambda: AngleSquash(5, 2),
    "realnvp-flow-angles": lambda: _perturbed(realnvp_flow(4, n_blocks=1, hidden=(8,), mixing="p4inv", n_angles=2)),
    "leading-block-lu": lambda: _perturbed(LeadingBlock(LULinear(3), 5)),
    "spline-flow-p4inv": lambda: _perturbed(spline_flow(7, 3, n_couplings=2, hidden=(8,), mixing="p4inv")),
    "spline-flow-mask": lambda: _perturbed(spline_flow(7, 3, n_couplings=4, hidden=(8,), mixing="mask")),
    "spline-flow-lu": lambda: _perturbed(spline_flow(7, 3, n_couplings=2, hidden=(8,), mixing="lu")),
}
#: coordinates that are angles in [-π, π) (inputs are drawn there)
CIRCULAR = {"spline-coupling": [4, 5], "angle-squash": [3, 4], "realnvp-flow-angles": [2, 3], "spline-flow-p4inv": [4, 5, 6], "spline-flow-mask": [4, 5, 6],
            "spline-flow-lu": [4, 5, 6]}  # fmt: skip


def _inputs(name, dim):
    x = 1.5 * torch.randn(7, dim)
    for i in CIRCULAR.get(name, []):
        x[:, i] = torch.remainder(x[:, i] + torch.pi, 2 * torch.pi) - torch.pi
    return x


@pytest.mark.parametrize("name", sorted(BIJECTIONS))
def test_battery(name):
    bij = BIJECTIONS[name]()
    check_bijection(bij, _inputs(name, bij.dim))


@pytest.mark.parametrize("name", sorted(BIJECTIONS))
def test_rejects_wrong_feature_size(name):
    bij = BIJECTIONS[name]()
    with pytest.raises(ValueError, match=rf"shape \(\*, {bij.dim}\); got shape \(2, {bij.dim + 1}\)"):
        bij(torch.randn(2, bij.dim + 1))
    with pytest.raises(ValueError, match="shape"):
        bij.inverse(torch.randn(2, bij.dim + 1))
