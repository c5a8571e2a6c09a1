r"""``P4MergeCallback``: Algorithm 1 of the P⁴ paper for every P⁴ module of any LightningModule.

:class:`~p4lightning.p4.schedule.MergeSchedule` (plain torch, also usable from your own loop) owns Algorithm 1:
which optimizer steps end with a merge round, which rounds are forced (every :math:`N_\text{force}`-th) or
corrected (every :math:`N_\text{correct}`-th), and the round itself (merge every P⁴ module, reset the optimizer
state of reset perturbations). The callback connects it to the ``Trainer``: it calls the schedule after every
optimizer step with the trainer's step count, hands it the trainer's optimizers, logs the rounds, keeps the
schedule's state in checkpoints and keeps DDP ranks identical.

Correctness notes:

* **Gradient accumulation.** Rounds are gated on ``trainer.global_step`` (optimizer steps, not batches)
  and never run twice for one step, so ``accumulate_grad_batches=k`` merges every ``every_n_steps``
  optimizer steps, i.e. every ``k * every_n_steps`` batches.
* **Resume.** Counters and the random generator that re-draws the perturbations are in
  :meth:`P4MergeCallback.state_dict` (saved in the checkpoint); P⁴ state is in the model's buffers. A run
  resumed from a checkpoint taken between merges reproduces the uninterrupted one.
* **DDP.** Every rank runs the same schedule with the same seed on identical (all-reduced) parameters, so
  it draws the same perturbations and makes the same decisions. To make that bit-exact even where a
  backend's reductions are not, after every round rank 0's P⁴ state (buffers, perturbation, schedule
  counters and generator) is broadcast to all ranks — :math:`O(n^2)` per module every ``every_n_steps`` steps.

References:
    Krämer, Köhler, Noé, arXiv:2010.07033, Algorithm 1, Appendices B, F, H.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from p4lightning._validation import ConfigurationError, check_positive_int
from p4lightning.p4.protocol import MergeStatus, P4Module, find_p4_modules
from p4lightning.p4.schedule import MergeReport, MergeSchedule, OptimizerStatePolicy

__all__ = ["P4MergeCallback"]


def _sharding_strategies() -> tuple[type, ...]:
    """Lightning's strategies that shard parameters across ranks (a rank cannot merge a whole perturbation)."""
    from pytorch_lightning import strategies

    names = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")
    return tuple(getattr(strategies, n) for n in names if hasattr(strategies, n))


class P4MergeCallback(pl.Callback):
    r"""Merge, force, correct and reset P⁴ perturbations during ``Trainer.fit``.

    Args:
        every_n_steps: :math:`N`, optimizer steps between merge rounds (paper App. H: 100).
        force_every_n_merges: :math:`N_\text{force}` (paper: 10); 0 never forces.
        correct_every_n_merges: :math:`N_\text{correct}` (paper: 50); 0 never corrects.
        reset_optimizer_state: what a merge does to the optimizer state of the reset perturbations, for any
            ``torch.optim`` optimizer: ``"redrawn"`` (default, the reference implementation's: drop the state of the
            parameters re-drawn from noise, P⁴Inv's ``v``; ``u`` keeps its moments), ``"all"`` (drop ``u``'s too)
            or ``"none"``. See :class:`~p4lightning.p4.schedule.MergeSchedule`; saved in the checkpoint and
            checked on resume.
        seed: seed of the generator that re-draws perturbations (identical on all ranks).
        log_merges: log merge statistics through ``pl_module.log`` after every round.
        probe_inverse: also log every module's :meth:`~p4lightning.p4.protocol.P4Module.diagnostics` (for
            P⁴Inv an :math:`O(n^2)` probe of :math:`\|\mathbf{A}\mathbf{A}^{-1} - \mathbf{I}\|`), the maximum
            over modules of each as ``p4/<name>``.
        warn_refused_fraction: warn (rank zero) when more than this fraction of merges was refused over
            the last ``warn_window`` rounds; ``1.0`` disables the warning.
        warn_window: rounds the refusal fraction is measured over.

    Example:
        >>> cb = P4MergeCallback(every_n_steps=100)
        >>> cb.schedule.every_n_steps
        100
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        force_every_n_merges: int = 10,
        correct_every_n_merges: int = 50,
        reset_optimizer_state: OptimizerStatePolicy = "redrawn",
        seed: int = 0,
        log_merges: bool = True,
        probe_inverse: bool = True,
        warn_refused_fraction: float = 0.9,
        warn_window: int = 20,
    ) -> None:
        super().__init__()
        self.schedule = MergeSchedule(
            every_n_steps, force_every_n_merges, correct_every_n_merges, seed, reset_optimizer_state
        )
        self.log_merges = bool(log_merges)
        self.probe_inverse = bool(probe_inverse)
        if not 0.0 < warn_refused_fraction <= 1.0:
            raise ValueError(f"warn_refused_fraction must be in (0, 1]; got {warn_refused_fraction}")
        self.warn_refused_fraction = float(warn_refused_fraction)
        self.warn_window = check_positive_int(warn_window, "warn_window")
        self._recent_refused: deque[float] = deque(maxlen=self.warn_window)
        self._modules: list[tuple[str, P4Module]] = []
        self.last_report: MergeReport | None = None

    @property
    def state_key(self) -> str:
        # One key whatever the settings: a key that named them (Lightning's default for callbacks with arguments)
        # made a resume with a changed every_n_steps find no saved state and silently restart the schedule;
        # with one key the saved schedule is found, and MergeSchedule.load_state_dict refuses settings that differ.
        return "P4MergeCallback"

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get("callbacks", {})
        if self.state_key not in saved:  # a checkpoint written before the key was fixed: find it by its prefix
            older = [k for k in saved if k.startswith("P4MergeCallback")]
            if older:
                self.load_state_dict(saved[older[0]])

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning restores callback state after setup, in every stage; only fitting merges
        self._fitting = stage == "fit"
        self._modules = find_p4_modules(pl_module)
        if not self._modules:
            raise ConfigurationError(
                f"P4MergeCallback: {type(pl_module).__name__} contains no P4Module (P4Inv, P4Orth, ...); "
                "remove the callback or add a P4 layer"
            )
        if isinstance(trainer.strategy, _sharding_strategies()):
            raise ConfigurationError(
                f"P4MergeCallback does not support strategy {type(trainer.strategy).__name__}: it shards "
                "parameters, so a rank cannot merge a whole perturbation. Use a data-parallel strategy (ddp, "
                "ddp_spawn, single device)."
            )

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step  # optimizer steps completed: correct under gradient accumulation
        if not self.schedule.should_merge(step):
            return
        report = self.schedule.merge_now(self._modules, step, trainer.optimizers)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            self._broadcast_from_rank_zero(trainer)
        self.last_report = report
        self._track_refusals(report, step)
        if self.log_merges:
            self._log(pl_module, report)

    # ----------------------------------------------------------------------------------------------
    def _broadcast_from_rank_zero(self, trainer: pl.Trainer) -> None:
        with torch.no_grad():
            for _, module in self._modules:
                for tensor in (*module.buffers(), *module.perturbation_parameters()):
                    dist.broadcast(tensor.data, src=0)
        state = trainer.strategy.broadcast(self.schedule.state_dict(), src=0)
        self.schedule.load_state_dict(state)

    def _track_refusals(self, report: MergeReport, step: int) -> None:
        total = len(report.outcomes)
        refused = sum(not o.accepted for o in report.outcomes.values())
        self._recent_refused.append(refused / total)
        window_full = len(self._recent_refused) == self.warn_window
        if self.warn_refused_fraction < 1.0 and window_full:
            fraction = sum(self._recent_refused) / self.warn_window
            if fraction > self.warn_refused_fraction:
                rank_zero_warn(
                    f"P4MergeCallback: {fraction:.0%} of merges refused over the last {self.warn_window} rounds "
                    f"(step {step}); the perturbations keep growing without being merged. Consider a penalty "
                    "(P4Inv(penalty_weight=...)), a smaller learning rate or a shorter every_n_steps.",
                    category=RuntimeWarning,
                )
                self._recent_refused.clear()

    def _log(self, pl_module: pl.LightningModule, report: MergeReport) -> None:
        totals = self.schedule.totals
        metrics: dict[str, float] = {
            "p4/merges_accepted": float(totals[MergeStatus.ACCEPTED.value]),
            "p4/merges_forced": float(totals[MergeStatus.FORCED.value]),
            "p4/merges_refused": float(
                sum(
                    totals[s.value]
                    for s in MergeStatus
                    if s not in (MergeStatus.ACCEPTED, MergeStatus.FORCED)
                )
            ),
            "p4/round_accepted_fraction": sum(o.accepted for o in report.outcomes.values())
            / len(report.outcomes),
        }
        log_gs = [o.log_abs_g for o in report.outcomes.values() if math.isfinite(o.log_abs_g)]
        if log_gs:
            metrics["p4/log_abs_g_min"] = min(log_gs)
            metrics["p4/log_abs_g_max"] = max(log_gs)
        if self.probe_inverse:
            for _, module in self._modules:
                for name, value in module.diagnostics().items():
                    key = f"p4/{name}"
                    metrics[key] = max(metrics.get(key, -math.inf), float(value))
        # every rank holds identical values (broadcast above), so no cross-rank reduction is needed
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, sync_dist=False, rank_zero_only=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state_dict(), "recent_refused": list(self._recent_refused)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not getattr(self, "_fitting", True):
            return  # validate/test never merge: the checkpoint's schedule (and a changed one) does not matter
        self.schedule.load_state_dict(state_dict["schedule"])
        self._recent_refused = deque(state_dict.get("recent_refused", []), maxlen=self.warn_window)
