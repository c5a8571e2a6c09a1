r"""Algorithm 1 as a plain object, usable from any training loop: when to merge, force and correct, and the round.

Every ``every_n_steps`` optimizer steps all P⁴ modules are merged (one *merge round*); every
``force_every_n_merges``-th round is forced (paper App. B, :math:`N_\text{force}`) and every
``correct_every_n_merges``-th round is followed by :meth:`P4Module.correct` (:math:`N_\text{correct}`).
The random generator that re-draws the perturbations is part of the schedule's state, so a seeded schedule
gives the same perturbations on every rank and after a resume.

Example (a plain PyTorch loop):
    >>> from p4lightning import P4Inv
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = torch.nn.Sequential(P4Inv(3))
    >>> opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    >>> schedule = MergeSchedule(every_n_steps=2, seed=0)
    >>> for step in range(1, 7):
    ...     loss = model(torch.randn(16, 3))[0].square().mean()
    ...     opt.zero_grad(); loss.backward(); opt.step()
    ...     report = schedule.step(model, step, optimizer=opt)
    >>> schedule.rounds, schedule.last_merged_step
    (3, 6)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from p4lightning._validation import (
    ConfigurationError,
    check_literal,
    check_nonnegative_int,
    check_positive_int,
)
from p4lightning.p4.protocol import MergeOutcome, MergeStatus, P4Module, find_p4_modules

__all__ = ["OPTIMIZER_STATE_POLICIES", "MergeReport", "MergeSchedule", "OptimizerStatePolicy", "reset_optimizer_state"]

#: What a merge round does to the optimizer state of the perturbations it reset (see :class:`MergeSchedule`).
OptimizerStatePolicy = Literal["redrawn", "all", "none"]
OPTIMIZER_STATE_POLICIES: tuple[str, ...] = get_args(OptimizerStatePolicy)


def reset_optimizer_state(optimizer: torch.optim.Optimizer, parameters: Iterable[torch.Tensor]) -> int:
    """Forget the optimizer's per-parameter state (moments, momentum, step counts) for ``parameters``.

    Optimizer-agnostic: every ``torch.optim`` optimizer (SGD with momentum, Adam, AdamW, RMSprop, ...)
    initialises a parameter's state lazily when its entry is missing, so dropping the entry restarts it
    exactly as for a freshly created parameter. Hyper-parameters in ``param_groups`` are untouched.

    Returns:
        how many parameters had state that was dropped.
    """
    dropped = 0
    for p in parameters:
        if optimizer.state.pop(p, None) is not None:
            dropped += 1
    return dropped


@dataclass
class MergeReport:
    """What one merge round did.

    Attributes:
        step: the optimizer step after which the round ran.
        forced: whether the round was a forced one.
        corrected: whether :meth:`P4Module.correct` ran after it.
        outcomes: ``{module name: MergeOutcome}``.
    """

    step: int
    forced: bool
    corrected: bool
    outcomes: dict[str, MergeOutcome] = field(default_factory=dict)

    def count(self, status: MergeStatus) -> int:
        """How many modules ended with ``status``."""
        return sum(1 for o in self.outcomes.values() if o.status is status)


class MergeSchedule:
    r"""Decides when to merge, force and correct, and does it for every P⁴ module of a model.

    Args:
        every_n_steps: :math:`N`, optimizer steps between merge rounds (paper: 1–100).
        force_every_n_merges: :math:`N_\text{force}`: every this many rounds the merge is forced (0: never).
        correct_every_n_merges: :math:`N_\text{correct}`: every this many rounds each module's
            :meth:`~P4Module.correct` runs (0: never).
        seed: seed of the generator that re-draws perturbations (identical on all ranks).
        reset_optimizer_state: what a round does to the optimizer state (any ``torch.optim`` optimizer: Adam's
            moments and step count, SGD's momentum, ...) of the perturbations it reset:

            * ``"redrawn"`` (default, the reference implementation's): drop the state of the parameters re-drawn
              from noise (:meth:`~P4Module.redrawn_parameters`: P⁴Inv's :math:`\mathbf{v}`, both of P⁴Orth's
              vectors). P⁴Inv's :math:`\mathbf{u}`, reset to 0, keeps its moments: after the merge its gradient
              direction is still the one Adam's history estimated (:math:`\partial L/\partial\mathbf{u} =
              (\partial L/\partial\tilde{\mathbf{A}})\,\mathbf{v}`, with a new :math:`\mathbf{v}`), so the next
              steps continue at Adam's adapted scale instead of restarting its bias-corrected warm-up.
            * ``"all"``: drop the state of every reset parameter (:math:`\mathbf{u}` and :math:`\mathbf{v}`): each
              round restarts Adam for the perturbation, its first steps of size ~lr in every coordinate.
            * ``"none"``: keep every state (the redrawn :math:`\mathbf{v}` inherits the old one's moments).

            Applied only when :meth:`step` / :meth:`merge_now` get an optimizer. Saved in :meth:`state_dict`; a
            checkpoint with another policy is refused on load.

    All counters and the generator state are in :meth:`state_dict`.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        force_every_n_merges: int = 10,
        correct_every_n_merges: int = 50,
        seed: int = 0,
        reset_optimizer_state: OptimizerStatePolicy = "redrawn",
    ) -> None:
        self.every_n_steps = check_positive_int(every_n_steps, "every_n_steps")
        self.force_every_n_merges = check_nonnegative_int(force_every_n_merges, "force_every_n_merges")
        self.correct_every_n_merges = check_nonnegative_int(correct_every_n_merges, "correct_every_n_merges")
        self.seed = check_nonnegative_int(seed, "seed")
        self.reset_optimizer_state = check_literal(reset_optimizer_state, OptimizerStatePolicy, "reset_optimizer_state")
        self.generator = torch.Generator().manual_seed(seed)
        self.rounds = 0
        self.last_merged_step = -1
        self.totals: dict[str, int] = {s.value: 0 for s in MergeStatus}
        self.corrections = 0

    def should_merge(self, step: int) -> bool:
        """Whether a round is due after optimizer step ``step`` (1-based count of completed steps).

        ``False`` for a step that already had its round, so calling twice for one step merges once.
        """
        return step > 0 and step % self.every_n_steps == 0 and step != self.last_merged_step

    def step(
        self,
        model: nn.Module | Iterable[tuple[str, P4Module]],
        step: int,
        optimizer: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] | None = None,
    ) -> MergeReport | None:
        """Run a merge round if one is due after optimizer step ``step``; otherwise return ``None``.

        Args:
            model: a model (its P⁴ modules are found with :func:`find_p4_modules`) or ``(name, module)`` pairs.
            step: number of optimizer steps completed so far.
            optimizer: optimizer(s) whose state for reset perturbations is dropped as ``reset_optimizer_state``
                says (``None``: keep all state).
        """
        if not self.should_merge(step):
            return None
        return self.merge_now(model, step, optimizer)

    def merge_now(
        self,
        model: nn.Module | Iterable[tuple[str, P4Module]],
        step: int,
        optimizer: torch.optim.Optimizer | Iterable[torch.optim.Optimizer] | None = None,
    ) -> MergeReport:
        """Run one merge round unconditionally (counts towards forcing and correction)."""
        modules = find_p4_modules(model) if isinstance(model, nn.Module) else list(model)
        if not modules:
            raise ValueError("model contains no P4Module: nothing to merge (add a P4Inv or P4Orth layer)")
        self.rounds += 1
        self.last_merged_step = step
        forced = self.force_every_n_merges > 0 and self.rounds % self.force_every_n_merges == 0
        corrected = self.correct_every_n_merges > 0 and self.rounds % self.correct_every_n_merges == 0
        report = MergeReport(step=step, forced=forced, corrected=corrected)
        reset_params: list[torch.Tensor] = []
        for name, module in modules:
            outcome = module.merge(force=forced, generator=self.generator)
            report.outcomes[name] = outcome
            self.totals[outcome.status.value] += 1
            if outcome.perturbation_reset and self.reset_optimizer_state != "none":
                reset_params.extend(
                    module.redrawn_parameters()
                    if self.reset_optimizer_state == "redrawn"
                    else module.perturbation_parameters()
                )
            if corrected:
                module.correct()
        if corrected:
            self.corrections += 1
        if optimizer is not None and reset_params:
            optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
            for opt in optimizers:
                reset_optimizer_state(opt, reset_params)
        return report

    def __getstate__(self) -> dict[str, Any]:
        # torch.Generator does not pickle (ddp_spawn pickles callbacks): carry its state as bytes instead
        state = self.__dict__.copy()
        state["generator"] = bytes(self.generator.get_state().numpy())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        generator_state = torch.frombuffer(bytearray(state["generator"]), dtype=torch.uint8)
        self.__dict__.update(state)
        self.generator = torch.Generator()
        self.generator.set_state(generator_state)

    def state_dict(self) -> dict[str, Any]:
        """Counters, settings and the generator state (a CPU ``ByteTensor``)."""
        return {
            "every_n_steps": self.every_n_steps,
            "force_every_n_merges": self.force_every_n_merges,
            "correct_every_n_merges": self.correct_every_n_merges,
            "seed": self.seed,
            "reset_optimizer_state": self.reset_optimizer_state,
            "rounds": self.rounds,
            "last_merged_step": self.last_merged_step,
            "totals": dict(self.totals),
            "corrections": self.corrections,
            "generator_state": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters and generator; settings must match the ones this schedule was built with."""
        for key in ("every_n_steps", "force_every_n_merges", "correct_every_n_merges"):
            if key in state and state[key] != getattr(self, key):
                raise ConfigurationError(
                    f"checkpointed {key}={state[key]} differs from this schedule's {key}={getattr(self, key)}; "
                    "resuming would shift the merge schedule"
                )
        # a checkpoint written before the policy was saved carries no record of it: nothing to compare
        saved = state.get("reset_optimizer_state", self.reset_optimizer_state)
        if saved != self.reset_optimizer_state:
            raise ConfigurationError(
                f"checkpointed reset_optimizer_state={saved!r} differs from this schedule's "
                f"{self.reset_optimizer_state!r}; resuming would change what merges do to the optimizer state"
            )
        self.rounds = int(state["rounds"])
        self.last_merged_step = int(state["last_merged_step"])
        self.totals = {s.value: int(state["totals"].get(s.value, 0)) for s in MergeStatus}
        self.corrections = int(state["corrections"])
        self.generator.set_state(state["generator_state"])
