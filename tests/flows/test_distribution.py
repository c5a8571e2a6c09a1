"""FlowDistribution: ln q by the change of variables, samples and their ln q, gradients of rsample, and no
second registration of the flow and prior in a model that holds it."""

import math

import torch

from p4lightning.flows.blocks import spline_flow
from p4lightning.flows.distribution import FlowDistribution
from p4lightning.flows.priors import NormalUniformPrior
from p4lightning.flows.sequential import StandardNormal
from p4lightning.models.density import DensityEstimator, small_realnvp_flow


def _spline_distribution():
    flow = spline_flow(4, 1, 2, [8], 4, mixing="mask")
    with torch.no_grad():  # away from the identity initialisation
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return FlowDistribution(flow, NormalUniformPrior(4, [3]))


def test_log_prob_is_the_change_of_variables():
    q = FlowDistribution(small_realnvp_flow(2), StandardNormal(2))
    y = torch.randn(7, 2)
    z, ladj = q.flow.inverse(y)
    expected = -0.5 * z.square().sum(-1) - math.log(2 * math.pi) + ladj
    torch.testing.assert_close(q.log_prob(y), expected)


def test_sample_log_prob_matches_log_prob_of_the_sample_and_is_seeded():
    q = _spline_distribution()
    y, log_q = q.sample(16, torch.Generator().manual_seed(0))
    assert y.shape == (16, 4) and log_q.shape == (16,) and not y.requires_grad
    torch.testing.assert_close(q.log_prob(y), log_q)
    y2, _ = q.sample(16, torch.Generator().manual_seed(0))
    assert torch.equal(y, y2)


def test_rsample_is_differentiable_in_every_flow_parameter():
    q = FlowDistribution(small_realnvp_flow(2), StandardNormal(2))
    y, log_q = q.rsample(32, torch.Generator().manual_seed(1))
    (y.square().sum() + log_q.sum()).backward()
    grads = [p.grad for p in q.flow.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_a_model_holding_it_registers_flow_and_prior_once():
    model = DensityEstimator(flow="realnvp")
    assert model.distribution.flow is model.flow and model.distribution.prior is model.prior
    keys = list(model.state_dict())
    assert all(k.startswith(("flow.", "prior.")) for k in keys)
    assert len(list(model.parameters())) == len(list(model.flow.parameters()))
    model.to(torch.float32)  # a dtype move reaches the distribution's modules: they are the model's
    assert model.sample(3).dtype == torch.float32
