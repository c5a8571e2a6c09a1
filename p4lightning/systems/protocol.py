r"""One energy contract: the reduced energy :math:`u(\mathbf{x}) = E(\mathbf{x}) / k_B T` as an op on positions.

:class:`ReducedEnergy` is what models, metrics and the CLI ask of an energy; :func:`make_energy` is the one place
that knows the two implementations — :class:`~p4lightning.systems.torch_energy.TorchEnergy` (batched torch algebra
on any device) and :class:`~p4lightning.systems.energy.OpenMMEnergy` (OpenMM worker processes) — and
:func:`energies` the one route for evaluating many positions in chunks on the op's device, without a graph.

Evaluation count. Both implementations count the conformations they evaluate in ``num_evaluated``, a 0-d
``torch.long`` buffer of the op incremented inside its own ``forward`` (TorchEnergy: an in-place add under
``torch.no_grad()``, which ``torch.compile`` keeps as a buffer mutation of the compiled graph, no graph break;
OpenMMEnergy: in its autograd function, outside any compiled region). Every route — the training step, the
compiled training step, :func:`energies` — goes through ``forward``, so the one counter sees every call; read it
with ``int(op.num_evaluated)``.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, get_args, runtime_checkable

import torch

from p4lightning.systems.torch_energy import TorchEnergy

__all__ = ["ENERGY_KINDS", "EnergyKind", "ReducedEnergy", "energies", "make_energy"]

#: the implementations :func:`make_energy` builds
EnergyKind = Literal["torch", "openmm"]
ENERGY_KINDS: tuple[str, ...] = get_args(EnergyKind)


@runtime_checkable
class ReducedEnergy(Protocol):
    r"""The reduced potential energy of a molecular system as a differentiable op.

    ``op(x)``: positions ``x`` ``(B, N, 3)`` or ``(B, 3N)`` in nm → :math:`u` ``(B,)`` in k_BT (dimensionless),
    in ``x``'s dtype, differentiable in ``x`` (:math:`\partial u/\partial \mathbf{x} = -\mathbf{F}/k_BT`, nm⁻¹).

    Attributes:
        device: where the op evaluates (positions are moved there by :func:`energies`).
        num_evaluated: conformations evaluated so far, a 0-d integer tensor.
    """

    num_evaluated: torch.Tensor

    @property
    def device(self) -> torch.device: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None:
        """Release what the op holds (worker processes); a no-op for an in-process op."""
        ...


@torch.no_grad()
def energies(op: ReducedEnergy, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Reduced energies ``(B,)`` (k_BT) of positions ``x`` ``(B, N, 3)`` or ``(B, 3N)`` nm, ``chunk`` at a time, no
    graph: each chunk is moved to ``op.device`` and its energies back to ``x``'s device (``x`` may come from the
    CPU — datamodule frames, evaluation sets — while the op lives on the accelerator)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    if len(x) == 0:
        return x.new_zeros(0)
    device = op.device
    return torch.cat([op(x[i : i + chunk].to(device)).to(x.device) for i in range(0, len(x), chunk)])


def make_energy(
    kind: EnergyKind,
    system: Any,
    temperature: float,
    *,
    device: torch.device | str | None = None,
    n_workers: int | None = None,
    platform: str = "CPU",
    **options: Any,
) -> ReducedEnergy:
    """The reduced-energy op of ``system`` (an ``openmm.System``) at ``temperature`` (K).

    Args:
        kind: ``"torch"`` (:class:`~p4lightning.systems.torch_energy.TorchEnergy`, moved to ``device``) or
            ``"openmm"`` (:class:`~p4lightning.systems.energy.OpenMMEnergy` with ``n_workers`` workers on
            ``platform``).
        system: the ``openmm.System``.
        temperature: :math:`T` (K) of :math:`u = E / k_B T`.
        device: the op's device (default: CPU): where a TorchEnergy evaluates; an OpenMMEnergy takes positions
            anywhere and only keeps its counters there.
        n_workers: OpenMM worker processes (default: usable cores); OpenMM only.
        platform: OpenMM platform of the workers; OpenMM only.
        **options: further keyword arguments of the implementation (e.g. ``bonded_float64``, ``timeout_s``).
    """
    if kind == "torch":
        op = TorchEnergy(system, temperature, **options)
        return op.to(device) if device is not None else op
    if kind == "openmm":
        from p4lightning.systems.energy import OpenMMEnergy

        openmm_op = OpenMMEnergy(system, temperature, n_workers, platform, **options)
        return openmm_op.to(device) if device is not None else openmm_op
    raise ValueError(f"energy kind must be one of {ENERGY_KINDS}; got {kind!r}")
