r"""``DensityEstimator``: maximum-likelihood flows on 2D toy densities (paper Sect. 4.2, App. G).

* ``flow="p4inv"``: 100 blocks of ``P4Inv(2) → Bent → P4Inv(2) → Bent⁻¹`` (1,200 P⁴ parameters counting
  ``u``, ``v`` and biases), identity-initialised, trained with :class:`~p4lightning.P4MergeCallback`
  (N = 10, N_force = 10, N_correct = 50, no penalty);
* ``flow="realnvp"``: 5 blocks of ``coupling → swap → coupling → swap`` with conditioner networks of two hidden
  layers of 6 and tanh (1,220 parameters; the paper reports 1,230).

:math:`\ln q(\mathbf{x}) = \ln \mathcal{N}(f^{-1}(\mathbf{x}); 0, \mathbf{I}) + \ln|\det J_{f^{-1}}(\mathbf{x})|`, in nats.
"""

from __future__ import annotations

from typing import Literal

import torch

from p4lightning._validation import (
    check_features,
    check_literal,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)
from p4lightning.bijection import Bijection
from p4lightning.flows.bent import BentIdentity, InverseBentIdentity
from p4lightning.flows.coupling import RealNVPCoupling
from p4lightning.flows.distribution import FlowDistribution
from p4lightning.flows.permutation import Swap
from p4lightning.flows.regions import CompiledRegions
from p4lightning.flows.sequential import SequentialFlow, StandardNormal
from p4lightning.models.compile_safe import CompileSafeLightningModule
from p4lightning.p4.inv import P4Inv

__all__ = ["DensityEstimator", "p4inv_bent_flow", "small_realnvp_flow"]

DensityFlow = Literal["p4inv", "realnvp"]


def p4inv_bent_flow(n_blocks: int = 100, dim: int = 2) -> SequentialFlow:
    """``n_blocks`` × (P⁴Inv → Bent → P⁴Inv → Bent⁻¹), P⁴Inv with bias and identity initialisation."""
    layers: list[Bijection] = []
    for _ in range(check_positive_int(n_blocks, "n_blocks")):
        layers += [
            P4Inv(dim, check_inputs=False),
            BentIdentity(dim),
            P4Inv(dim, check_inputs=False),
            InverseBentIdentity(dim),
        ]
    return SequentialFlow(layers)


def small_realnvp_flow(n_blocks: int = 5, dim: int = 2, hidden: tuple[int, ...] = (6, 6)) -> SequentialFlow:
    """``n_blocks`` × (coupling → swap → coupling → swap) with tanh conditioners (App. G)."""
    layers: list[Bijection] = []
    for _ in range(check_positive_int(n_blocks, "n_blocks")):
        for _ in range(2):
            layers += [
                RealNVPCoupling(dim, hidden=hidden, shift_activation="tanh", scale_activation="tanh"),
                Swap(dim),
            ]
    return SequentialFlow(layers)


class DensityEstimator(CompileSafeLightningModule):
    """Fit a flow to samples by maximum likelihood.

    Args:
        flow: ``"p4inv"`` (P⁴Inv + Bent identity stack) or ``"realnvp"``.
        n_blocks: blocks of the chosen flow (paper: 100 and 5).
        lr: initial Adam learning rate (paper: 5e-3).
        lr_halving_steps: halve the learning rate every this many optimizer steps (paper: every epoch of 20,000).
        compile_region: ``0``: train eagerly; ``k > 0``: the training pass runs the flow as regions of ``k`` layers,
            each through ``torch.compile`` (:class:`~p4lightning.flows.regions.CompiledRegions`: one compiled graph
            for all regions of the same structure; the P⁴Inv stack's step is measured in
            ``docs/benchmarks/toy2d_step.md``). Testing and sampling stay eager (other batch sizes).
    """

    def __init__(
        self,
        flow: DensityFlow = "p4inv",
        n_blocks: int | None = None,
        lr: float = 5e-3,
        lr_halving_steps: int = 20_000,
        compile_region: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_literal(flow, DensityFlow, "flow")
        self.lr_halving_steps = check_positive_int(lr_halving_steps, "lr_halving_steps")
        check_positive(lr, "lr")
        self.flow = p4inv_bent_flow(n_blocks or 100) if flow == "p4inv" else small_realnvp_flow(n_blocks or 5)
        self.prior = StandardNormal(2)
        # flow + prior as one distribution, held outside the module tree: state_dict keys stay flow.…, prior.…
        object.__setattr__(self, "distribution", FlowDistribution(self.flow, self.prior))
        self.compile_region = check_nonnegative_int(compile_region, "compile_region")
        train_flow = CompiledRegions(self.flow, compile_region) if compile_region else self.flow
        object.__setattr__(self, "_train_distribution", FlowDistribution(train_flow, self.prior))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`\\ln q(\\mathbf{x})` of points ``(B, 2)``, shape ``(B,)``."""
        check_features(x, 2, "x")
        return self.distribution.log_prob(x)

    def sample(self, n: int) -> torch.Tensor:
        """``n`` points ``(n, 2)`` from the model (no graph)."""
        return self.distribution.sample(n)[0]

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        check_features(batch[0], 2, "x")
        nll = -self._train_distribution.log_prob(batch[0]).mean()
        self.log("train/nll", nll, prog_bar=True)
        return nll

    def test_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> None:
        self.log("test/log_likelihood", self.log_prob(batch[0]).mean(), batch_size=len(batch[0]))

    def configure_optimizers(self) -> dict[str, object]:
        # fused: one kernel for all 600 small tensors of the P⁴Inv stack (docs/benchmarks/toy2d_step.md)
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, fused=True)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.lr_halving_steps, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
