r"""OpenMM potential energy as a differentiable torch operation, and its regularised form for training.

:class:`OpenMMEnergy` maps positions :math:`\mathbf{x}` (nm) of shape ``(B, N, 3)`` or ``(B, 3N)`` to the
reduced energy :math:`u(\mathbf{x}) = E(\mathbf{x}) / k_B T` of shape ``(B,)`` (dimensionless), with
:math:`\partial u / \partial \mathbf{x} = -\mathbf{F}(\mathbf{x}) / k_B T` (nm⁻¹) in the backward pass.
Energies and forces come from an :class:`~p4lightning.systems.workers.EnergyWorkerPool` as float64 arrays; their
precision is the platform's: ``Reference`` computes in double precision, ``CPU`` (the default) in mixed precision
(float32 forces and pair terms, double accumulation: ~1e-7 relative, see :class:`~p4lightning.systems.torch_energy.TorchEnergy`
for a float64 alternative). When the energy is translation invariant, :math:`E(\mathbf{x} + \mathbf{t}) =
E(\mathbf{x})` (:func:`translation_invariant`, read from the System's forces), positions are centred on their
mean per conformation before they are sent: far from the origin float32 round-off would grow with the
coordinates. A System with a force that depends on absolute positions (an external field,
``CustomExternalForce``) or that is not known to be invariant is evaluated at the positions as given. Nothing
is cached (two calls with the same tensor evaluate twice). A conformation that cannot be evaluated gets
:math:`u = \mathrm{NaN}` and zero gradient, and is counted in ``num_failed``.

:func:`regularize_energy` is the usual "linear, then logarithmic, capped" cut that keeps huge energies of
bad samples (overlapping atoms) from dominating a loss or poisoning its gradient:

.. math::
    u_\text{reg} = \begin{cases} u & u < u_\text{high} \\
        u_\text{high} + \ln(1 + u - u_\text{high}) & u \ge u_\text{high} \end{cases},
    \qquad u_\text{reg} \leftarrow \min(u_\text{reg}, u_\text{max}),

with NaN/∞ mapped to :math:`u_\text{max}` (zero gradient there).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import nn

from p4lightning._validation import check_positive_int
from p4lightning.systems.alanine import kt
from p4lightning.systems.observables import as_positions
from p4lightning.systems.workers import DEFAULT_TIMEOUT_S, EnergyWorkerPool

__all__ = ["OpenMMEnergy", "regularize_energy", "translation_invariant"]

#: force classes whose energy depends on the positions only through distances, angles and dihedrals between
#: particles (periodic images included), or that contribute none: unchanged when all particles move by one t
_INVARIANT_FORCES = frozenset(
    {
        "CMMotionRemover",
        "CMAPTorsionForce",
        "CustomAngleForce",
        "CustomBondForce",
        "CustomHbondForce",
        "CustomNonbondedForce",
        "CustomTorsionForce",
        "GBSAOBCForce",
        "HarmonicAngleForce",
        "HarmonicBondForce",
        "NonbondedForce",
        "PeriodicTorsionForce",
        "RBTorsionForce",
    }
)
#: force classes whose expressions may also read absolute coordinates (``x, y, z`` of one particle in a
#: CustomGBForce single-particle term; ``x1, y1, z1, ...`` of a particle or group otherwise): invariant when
#: no expression names one
_COORDINATE_NAMES = {
    "CustomGBForce": re.compile(r"(?<![\w.])[xyz](?!\w)"),
    "CustomCompoundBondForce": re.compile(r"(?<![\w.])[xyz]\d+(?!\w)"),
    "CustomCentroidBondForce": re.compile(r"(?<![\w.])[xyz]\d+(?!\w)"),
    "CustomManyParticleForce": re.compile(r"(?<![\w.])[xyz]\d+(?!\w)"),
}


def translation_invariant(system: Any) -> bool:
    r"""Whether every force of ``system`` (an ``openmm.System``) satisfies :math:`E(\mathbf{x} + \mathbf{t}) =
    E(\mathbf{x})` for every translation :math:`\mathbf{t}` (nm) of all particles.

    Read from the force classes: the bonded, nonbonded and implicit-solvent forces (and their ``Custom*``
    forms) are; a custom force whose expressions name an absolute coordinate (``x``, ``y1``, ...) is not; a
    ``CustomExternalForce`` and any force class not listed here count as not invariant (the safe answer:
    :class:`OpenMMEnergy` then sends the positions as given).
    """
    for force in system.getForces():
        name = type(force).__name__
        if name in _INVARIANT_FORCES:
            continue
        pattern = _COORDINATE_NAMES.get(name)
        if pattern is None:
            return False
        if name == "CustomGBForce":
            single = int(type(force).SingleParticle)
            values = [force.getComputedValueParameters(i) for i in range(force.getNumComputedValues())]
            terms = [force.getEnergyTermParameters(i) for i in range(force.getNumEnergyTerms())]
            expressions = [v[1] for v in values if v[2] == single] + [t[0] for t in terms if t[1] == single]
        else:
            expressions = [force.getEnergyFunction()]
        if any(pattern.search(expression) for expression in expressions):
            return False
    return True


class _ReducedEnergy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: OpenMMEnergy) -> torch.Tensor:  # type: ignore[override]
        energies, forces, failed = module.pool.evaluate(module._as_sent(x))
        module.num_failed += failed
        module.num_evaluated += x.shape[0]
        u = torch.from_numpy(energies / module.kt).to(device=x.device, dtype=x.dtype)
        grad = torch.from_numpy(-forces / module.kt).to(device=x.device, dtype=x.dtype).reshape(x.shape)
        ctx.save_for_backward(grad)
        return u

    @staticmethod
    def backward(ctx: Any, grad_u: torch.Tensor) -> tuple[torch.Tensor, None]:
        (grad,) = ctx.saved_tensors
        shape = (-1,) + (1,) * (grad.dim() - 1)
        g = grad_u.reshape(shape)  # a row of zero weight contributes 0 even if its forces are not finite
        return torch.where(g == 0, 0.0, g * grad), None


class OpenMMEnergy(nn.Module):
    r"""Reduced potential energy :math:`u = E / k_B T` of an OpenMM system as a torch module.

    Args:
        system: an ``openmm.System`` (e.g. ``alanine_dipeptide().system``).
        temperature: :math:`T` in K of the reduced energy.
        n_workers: worker processes (default: one per usable core).
        platform: OpenMM platform of the workers (``"CPU"``, ``"CUDA"``, ...).
        pin: pin each CPU worker to one core.
        timeout_s: seconds a worker may take to start or to answer a batch before
            :class:`~p4lightning.systems.workers.WorkerTimeoutError`; ``None`` waits forever.

    Shapes:
        ``x``: ``(B, N, 3)`` or ``(B, 3N)`` in nm → ``u``: ``(B,)``, same dtype and device as ``x``.

    ``centre_positions`` is :func:`translation_invariant` of the System: only then are positions centred on
    their mean per conformation before OpenMM sees them.

    Counters ``num_evaluated`` and ``num_failed`` are buffers (in ``state_dict``). Call :meth:`close` (or
    use it as a context manager) to stop the workers; they are also stopped at interpreter exit.
    """

    def __init__(
        self,
        system: Any,
        temperature: float,
        n_workers: int | None = None,
        platform: str = "CPU",
        pin: bool = True,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.kt = kt(temperature)
        self.temperature = float(temperature)
        self.n_atoms = check_positive_int(system.getNumParticles(), "number of particles")
        self.centre_positions = translation_invariant(system)
        self.register_buffer("num_evaluated", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_failed", torch.zeros((), dtype=torch.long))
        self.pool = EnergyWorkerPool(
            system, n_workers=n_workers, platform=platform, pin=pin, timeout_s=timeout_s
        )

    def _validate(self, x: torch.Tensor) -> torch.Tensor:
        as_positions(x, self.n_atoms)  # raises naming the expected shapes and the atom count
        return x

    def _as_sent(self, x: torch.Tensor) -> np.ndarray:
        """Positions ``x`` (validated) as the float64 ``(B, N, 3)`` nm array sent to OpenMM: centred on their
        mean per conformation when ``centre_positions`` (the energy is translation invariant), else as
        given."""
        xyz = x.detach().to("cpu", torch.float64).numpy().reshape(x.shape[0], self.n_atoms, 3)
        return xyz - xyz.mean(axis=1, keepdims=True) if self.centre_positions else xyz

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reduced energies ``(B,)`` of positions ``x`` in nm; NaN where OpenMM could not evaluate; ``(0,)`` for
        an empty batch."""
        x = self._validate(x)
        if x.shape[0] == 0:
            return x.new_zeros(0)
        return _ReducedEnergy.apply(x, self)

    @property
    def device(self) -> torch.device:
        """The device of the counters, where :func:`~p4lightning.systems.protocol.energies` sends positions (the
        workers read them on the CPU; energies come back on the positions' device)."""
        return self.num_evaluated.device

    def energies_kj_mol(self, x: torch.Tensor) -> np.ndarray:
        """Energies in kJ/mol as a float64 array (no autograd)."""
        return self.pool.evaluate(self._as_sent(self._validate(x)))[0]

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.close()

    def __enter__(self) -> OpenMMEnergy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("OpenMMEnergy owns worker processes and cannot be pickled; build one per process")

    def extra_repr(self) -> str:
        return f"n_atoms={self.n_atoms}, temperature={self.temperature} K, workers={self.pool.n_workers}"


def regularize_energy(
    u: torch.Tensor, high: float = 1e3, maximum: float = 1e9
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Linear below ``high``, logarithmic above, capped at ``maximum``; NaN/∞ become ``maximum``.

    Args:
        u: reduced energies ``(B,)``.
        high: :math:`u_\text{high}` (k_BT) where the logarithmic branch starts.
        maximum: :math:`u_\text{max}` (k_BT), the cap.

    Returns:
        ``(u_reg, clamped)``: regularised energies ``(B,)`` and a boolean mask ``(B,)`` of the samples that
        were altered (above ``high`` or not finite).
    """
    if not high < maximum:
        raise ValueError(f"regularize_energy needs high < maximum; got high={high}, maximum={maximum}")
    finite = torch.isfinite(u)
    safe = torch.where(finite, u, torch.full_like(u, high))
    logged = high + torch.log1p(torch.clamp(safe - high, min=0.0))
    reg = torch.where(safe < high, safe, logged)
    reg = torch.clamp(reg, max=maximum)
    reg = torch.where(finite, reg, torch.full_like(u, maximum))
    return reg, (~finite) | (u >= high)
