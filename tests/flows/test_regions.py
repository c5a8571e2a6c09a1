"""Regional compilation: the same map, log-det and gradients as the eager flow, one graph for every region, and
nothing registered twice."""

import pytest
import torch

from p4lightning.flows import SequentialFlow, Swap
from p4lightning.flows.regions import CompiledRegions
from p4lightning.models.density import DensityEstimator, p4inv_bent_flow


def test_compiled_regions_match_the_eager_flow_in_value_log_det_and_gradient():
    torch.manual_seed(0)
    flow = p4inv_bent_flow(n_blocks=3)  # 12 layers: regions of 8 and 4 (two graphs)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    regions = CompiledRegions(flow, 8)
    assert regions.n_regions == 2 and regions.dim == 2
    y = torch.randn(64, 2)
    grads = []
    for f in (flow, regions):
        flow.zero_grad()
        z, ladj = f.inverse(y)
        (z.square().sum() - ladj.sum()).backward()
        grads.append([p.grad.clone() for p in flow.parameters()])
        if f is flow:
            z0, ladj0 = z.detach(), ladj.detach()
    torch.testing.assert_close(z.detach(), z0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ladj.detach(), ladj0, rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        x, ladj_f = regions(z0)
    torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ladj_f, -ladj0, rtol=1e-4, atol=1e-4)


def test_regions_are_views_not_submodules():
    eager = DensityEstimator("p4inv", n_blocks=2)
    compiled = DensityEstimator("p4inv", n_blocks=2, compile_region=4)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert sum(1 for _ in compiled.parameters()) == sum(1 for _ in eager.parameters())
    with pytest.raises(TypeError, match="SequentialFlow"):
        CompiledRegions(Swap(2), 2)
    with pytest.raises(ValueError, match="size"):
        CompiledRegions(SequentialFlow([Swap(2)]), 0)
    with pytest.raises(ValueError, match="compile_region"):
        DensityEstimator("p4inv", n_blocks=2, compile_region=-1)
