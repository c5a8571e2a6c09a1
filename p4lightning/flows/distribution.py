r"""A flow with its prior: the density :math:`q` of :math:`\mathbf{y} = f(\mathbf{z})`, :math:`\mathbf{z} \sim p`.

.. math::
    \ln q(\mathbf{y}) = \ln p\big(f^{-1}(\mathbf{y})\big) + \ln\big|\det J_{f^{-1}}(\mathbf{y})\big|
    = \ln p(\mathbf{z}) - \ln\big|\det J_f(\mathbf{z})\big|.

One object for every model that evaluates or samples a flow (zuko's flow-with-base): the Boltzmann generator
(with its coordinate transform on top) and the 2-D density estimator.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from p4lightning.bijection import Bijection

__all__ = ["FlowDistribution", "Prior"]


class Prior(Protocol):
    """A base density: ``log_prob(z)`` ``(*, d)`` → ``(*)`` and ``sample(n, generator)`` → ``(n, d)``."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor: ...

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor: ...


class FlowDistribution(nn.Module):
    r"""The distribution of :math:`\mathbf{y} = f(\mathbf{z})`, :math:`\mathbf{z} \sim p`, for a flow :math:`f` and a
    prior :math:`p`.

    Args:
        flow: the bijection :math:`f` (``forward(z) -> (y, ladj)``, ``inverse(y) -> (z, ladj)``).
        prior: the base density :math:`p` (e.g. :class:`~p4lightning.flows.sequential.StandardNormal` or
            :class:`~p4lightning.flows.priors.NormalUniformPrior`), an ``nn.Module``.

    ``flow`` and ``prior`` are held by reference: a model may keep them as its own submodules (their
    ``state_dict`` keys stay ``flow.…``, ``prior.…``) and hold this object outside its module tree, so nothing is
    registered twice.

    Example:
        >>> from p4lightning.flows.permutation import Swap
        >>> from p4lightning.flows.sequential import SequentialFlow, StandardNormal
        >>> q = FlowDistribution(SequentialFlow([Swap(2)]), StandardNormal(2))
        >>> y, log_q = q.sample(5, torch.Generator().manual_seed(0))
        >>> torch.allclose(q.log_prob(y), log_q)
        True
    """

    def __init__(self, flow: Bijection, prior: nn.Module) -> None:
        super().__init__()
        if not isinstance(prior, nn.Module) or not hasattr(prior, "log_prob") or not hasattr(prior, "sample"):
            raise TypeError(
                f"prior must be an nn.Module with log_prob and sample; got {type(prior).__name__}"
            )
        self.flow = flow
        self.prior = prior

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\ln q(\mathbf{y}) = \ln p(f^{-1}(\mathbf{y})) + \ln|\det J_{f^{-1}}(\mathbf{y})|` of points ``y``
        ``(B, d)``, shape ``(B,)``."""
        z, ladj = self.flow.inverse(y)
        return self.prior.log_prob(z) + ladj

    def rsample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``n`` points ``y`` ``(n, d)`` and :math:`\ln q(\mathbf{y})` ``(n,)``, both differentiable with respect to
        the flow's parameters (reparametrised: the prior draw does not depend on them), as reverse-KL training
        needs. ``generator``: the prior's random numbers."""
        z = self.prior.sample(n, generator)
        y, ladj = self.flow(z)
        return y, self.prior.log_prob(z) - ladj

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""As :meth:`rsample`, without an autograd graph: ``y`` ``(n, d)``, :math:`\ln q(\mathbf{y})` ``(n,)``."""
        return self.rsample(n, generator)
