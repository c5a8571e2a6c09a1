r"""The P⁴ protocol: what a training loop needs to drive property-preserving parameter perturbations.

A P⁴ module holds frozen parameters :math:`\mathbf{A} \in \mathbb{S}` (buffers, never seen by the
optimizer) and a trainable perturbation :math:`\mathbf{B}` (parameters). The network is evaluated with
:math:`R_{\mathbf{B}}(\mathbf{A})`. Every :math:`N` optimizer steps the loop calls :meth:`P4Module.merge`,
which performs (Krämer et al. 2020, eqs. 1–2)

.. math::
    \mathbf{A} \leftarrow R_{\mathbf{B}}(\mathbf{A}), \qquad \mathbf{B} \leftarrow \mathbf{B}_0,

*if* the update is numerically sane, so that :math:`\mathbf{A}` never leaves :math:`\mathbb{S}`. Merging
does not change the function the module computes (up to rounding), only where its state lives.

The loop never needs to know *which* property is kept: it calls :meth:`~P4Module.merge`,
:meth:`~P4Module.correct`, :meth:`~P4Module.penalty` and resets optimizer state of
:meth:`~P4Module.perturbation_parameters`.

References:
    A. Krämer, J. Köhler, F. Noé. Training neural networks with property-preserving parameter
    perturbations. arXiv:2010.07033.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from p4lightning._validation import check_features, check_finite, check_positive_int

__all__ = [
    "MergeOutcome",
    "MergeRefusedError",
    "MergeStatus",
    "P4Module",
    "find_p4_modules",
]


class MergeStatus(enum.Enum):
    """What a call to :meth:`P4Module.merge` did."""

    #: The perturbation was merged into the frozen parameters and reset.
    ACCEPTED = "accepted"
    #: The update was outside the sanity bounds but merged because ``force=True`` (paper App. B, N_force).
    FORCED = "forced"
    #: The update was outside the sanity bounds and not forced: nothing changed, the perturbation stays.
    OUT_OF_BOUNDS = "out_of_bounds"
    #: The perturbation (or the merged state it would produce) was not finite: nothing was merged and the
    #: perturbation was reset, even with ``force=True``.
    NON_FINITE = "non_finite"
    #: The merged inverse would fail the accuracy probe (the update is too ill-conditioned for the
    #: floating-point precision): nothing changed, the perturbation stays, even with ``force=True``.
    INACCURATE = "inaccurate"


@dataclass(frozen=True)
class MergeOutcome:
    """The result of one :meth:`P4Module.merge` call.

    Attributes:
        status: what happened.
        log_abs_g: the change of :math:`\\ln|\\det \\mathbf{A}|` the update makes: :math:`\\ln|G|` for P⁴Inv's
            rank-one update, ``0.0`` for P⁴Orth's orthogonal one; ``nan`` where it was not computed.
        log_abs_det: :math:`\\ln|\\det \\mathbf{A}|` *after* the call (unchanged when refused).
        reason: a human-readable sentence naming the violated bound, empty when accepted.
    """

    status: MergeStatus
    log_abs_g: float = float("nan")
    log_abs_det: float = float("nan")
    reason: str = ""

    @property
    def accepted(self) -> bool:
        """``True`` when the frozen parameters were updated (accepted or forced)."""
        return self.status in (MergeStatus.ACCEPTED, MergeStatus.FORCED)

    @property
    def perturbation_reset(self) -> bool:
        """``True`` when the perturbation was reset (so its optimizer state should be reset too)."""
        return self.status in (MergeStatus.ACCEPTED, MergeStatus.FORCED, MergeStatus.NON_FINITE)

    def raise_if_refused(self) -> MergeOutcome:
        """Return ``self`` if accepted, else raise :class:`MergeRefusedError` carrying this outcome."""
        if not self.accepted:
            raise MergeRefusedError(self)
        return self


class MergeRefusedError(RuntimeError):
    """Raised by :meth:`MergeOutcome.raise_if_refused` for callers that require a merge to happen."""

    def __init__(self, outcome: MergeOutcome) -> None:
        super().__init__(f"merge refused ({outcome.status.value}): {outcome.reason}")
        self.outcome = outcome


class P4Module(nn.Module, ABC):
    r"""Abstract base of every P⁴ layer: frozen state in buffers, a trainable perturbation in parameters.

    Subclasses implement :meth:`merge`, :meth:`reset_perturbation` and :meth:`perturbation_parameters`;
    :meth:`penalty` and :meth:`correct` default to "no penalty" and "nothing to correct".

    Bookkeeping precision: a subclass lists its frozen-state buffers in ``_bookkeeping_buffers`` and may set
    ``bookkeeping_dtype`` (e.g. ``torch.float64``). Those buffers then keep that dtype through
    ``module.float()``/``.half()``/``.to(dtype)`` — they still follow ``.to(device)`` — so the network can run
    in float32 while the tracked matrices accumulate no float32 rounding. See Note [bookkeeping dtype].
    """

    _bookkeeping_buffers: tuple[str, ...] = ()
    bookkeeping_dtype: torch.dtype | None = None
    dim: int
    check_inputs: bool = True

    def _init_state(
        self,
        dim: int,
        init: object,
        dtype: torch.dtype | None,
        bookkeeping_dtype: torch.dtype | None,
        device: torch.device | str | None,
        check_inputs: bool,
    ) -> tuple[torch.dtype, torch.dtype]:
        """The constructor pieces every P⁴ layer shares: ``dim``, ``check_inputs``, the bookkeeping dtype and the
        merge counters (buffers, so they are in the ``state_dict``).

        An explicit floating ``init`` tensor without ``dtype`` keeps its precision. Returns ``(parameter dtype,
        frozen-state dtype)``; the latter is ``bookkeeping_dtype`` when given.
        """
        self.dim = check_positive_int(dim, "dim")
        self.check_inputs = bool(check_inputs)
        if dtype is None and isinstance(init, torch.Tensor) and init.is_floating_point():
            dtype = init.dtype  # an explicit init keeps its precision (the frozen state is formed in it)
        param_dtype = dtype if dtype is not None else torch.get_default_dtype()
        if bookkeeping_dtype is not None and not bookkeeping_dtype.is_floating_point:
            raise TypeError(f"bookkeeping_dtype must be a floating dtype; got {bookkeeping_dtype}")
        self.bookkeeping_dtype = bookkeeping_dtype
        self.register_buffer("merges_accepted", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("merges_refused", torch.zeros((), dtype=torch.long, device=device))
        return param_dtype, bookkeeping_dtype if bookkeeping_dtype is not None else param_dtype

    def diagnostics(self) -> dict[str, float]:
        """Health measures of the frozen state to log after a merge round, ``{name: value}`` (0 is perfect).

        The merge callback logs the maximum of each name over all P⁴ modules as ``p4/<name>``; it needs nothing
        else from a layer. Default: none. Each must cost at most :math:`O(n^2)` and consume no global RNG.
        """
        return {}

    def _check(self, x: torch.Tensor, name: str) -> None:
        """Validate an input of shape ``(*, dim)`` and its finiteness when ``check_inputs`` is set."""
        if self.check_inputs:
            check_features(x, self.dim, name)
            check_finite(x, name)

    @abstractmethod
    def merge(self, force: bool = False, generator: torch.Generator | None = None) -> MergeOutcome:
        r"""Merge the perturbation into the frozen parameters if sane, then reset it.

        Args:
            force: accept an update that is outside the sanity bounds (but never a non-finite one).
            generator: random generator for re-drawing the perturbation (``None``: torch's global one).
                Pass the same seeded generator on every rank to keep DDP replicas identical.
        """

    @abstractmethod
    def reset_perturbation(self, generator: torch.Generator | None = None) -> None:
        """Reset the perturbation to :math:`\\mathbf{B}_0` *in place* (parameters keep their identity)."""

    @abstractmethod
    def perturbation_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters that a merge resets (their optimizer state should be reset with them)."""

    def redrawn_parameters(self) -> Iterator[nn.Parameter]:
        """The perturbation parameters that a reset re-draws from noise (default: all of them). Their optimizer
        history belongs to a vector that no longer exists; the others (e.g. P⁴Inv's ``u``, reset to 0) keep a
        direction that stays meaningful after the merge (see :class:`~p4lightning.p4.schedule.MergeSchedule`)."""
        return self.perturbation_parameters()

    def penalty(self) -> torch.Tensor:
        """A differentiable penalty that keeps the perturbation away from ill-conditioned updates (scalar)."""
        p = next(self.perturbation_parameters())
        return p.new_zeros(())

    def correct(self) -> None:  # noqa: B027 - deliberately a no-op default, not abstract
        """Rectify accumulated rounding in the frozen state (e.g. re-invert, re-orthogonalise)."""

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> P4Module:
        # Note [bookkeeping dtype]: nn.Module._apply casts every floating buffer on .float()/.half()/.to(dtype).
        # For buffers with a fixed bookkeeping dtype we keep the *original* tensor (full precision) and only
        # move it to the device that `fn` chose, so a round trip through float32 cannot lose digits.
        saved = (
            {name: self._buffers[name] for name in self._bookkeeping_buffers}
            if self.bookkeeping_dtype
            else {}
        )
        super()._apply(fn, recurse)
        for name, original in saved.items():
            moved = self._buffers[name]
            if moved is not None and original is not None and moved.dtype != original.dtype:
                self._buffers[name] = original.to(device=moved.device)
        return self


def find_p4_modules(model: nn.Module) -> list[tuple[str, P4Module]]:
    """Every P⁴ module inside ``model`` (including ``model`` itself), with its qualified name.

    Args:
        model: any ``nn.Module``.

    Returns:
        ``[(name, module), ...]`` in ``model.named_modules()`` order (deterministic, so identical on all
        ranks of a distributed run).

    Example:
        >>> from p4lightning import P4Inv
        >>> net = nn.Sequential(nn.Linear(3, 3), P4Inv(3))
        >>> [name for name, _ in find_p4_modules(net)]
        ['1']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return [(name, m) for name, m in model.named_modules() if isinstance(m, P4Module)]
