r"""Batched Langevin dynamics in torch: many independent replicas of one molecule, one force call per step.

The integrator is OpenMM's ``LangevinMiddleIntegrator`` (the "LFMiddle" scheme of Zhang et al. 2019), per
replica, with positions :math:`x` (nm), leap-frog velocities :math:`v` (nm/ps), masses :math:`m` (g/mol),
forces :math:`F = -\nabla E` (kJ mol⁻¹ nm⁻¹), step :math:`\Delta t` (ps), friction :math:`\gamma` (1/ps):

.. math::
    v \leftarrow v + \Delta t\, F(x)/m,\quad x \leftarrow x + \tfrac{\Delta t}2 v,\quad
    v \leftarrow a v + \sqrt{(1 - a^2)\, k_B T / m}\; \xi,\quad x \leftarrow x + \tfrac{\Delta t}2 v,

with :math:`a = e^{-\gamma \Delta t}` and :math:`\xi \sim \mathcal N(0, 1)` drawn from each replica's own
generator (so a replica's trajectory depends only on its own seed, not on which replicas share its batch).
Like OpenMM's ``CMMotionRemover`` (frequency 1) the centre-of-mass velocity is removed before every step.
Units are OpenMM's MD units, in which :math:`F/m` is in nm/ps² and :math:`k_BT/m` in nm²/ps².

References: Zhang, Liu & Li, J. Phys. Chem. B 123, 6235 (2019) (LFMiddle); Krämer, Köhler & Noé,
arXiv:2010.07033 (the MD data of the Boltzmann generator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["BatchedLangevin"]


class BatchedLangevin:
    r"""LangevinMiddle dynamics of ``R`` independent replicas in one batch.

    Args:
        force: maps positions ``(R, N, 3)`` nm to forces ``(R, N, 3)`` kJ mol⁻¹ nm⁻¹.
        masses: ``(N,)`` atomic masses in g/mol.
        temperature: K.
        timestep: ps.
        friction: 1/ps.
        seeds: one integer seed per replica (their noise streams).

    Attributes:
        x: positions ``(R, N, 3)`` nm. v: velocities ``(R, N, 3)`` nm/ps. steps: steps taken.
    """

    def __init__(
        self,
        force: Callable[[torch.Tensor], torch.Tensor],
        masses: torch.Tensor,
        temperature: float,
        timestep: float,
        friction: float,
        seeds: Sequence[int],
    ) -> None:
        from p4lightning.systems.alanine import kt

        if not timestep > 0 or not friction > 0:
            raise ValueError(f"timestep and friction must be > 0; got {timestep} ps, {friction} /ps")
        if masses.dim() != 1 or not bool((masses > 0).all()):
            raise ValueError(f"masses must be a (N,) tensor of positive values; got shape {tuple(masses.shape)}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct; got {list(seeds)}")
        self.force = force
        self.kt = kt(temperature)
        self.dt = float(timestep)
        self.a = math.exp(-friction * timestep)
        self.m = masses.to(torch.float64)[None, :, None]  # (1, N, 1)
        self.noise_scale = torch.sqrt((1 - self.a**2) * self.kt / self.m)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.x: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.steps = 0

    def set_state(self, x: torch.Tensor, v: torch.Tensor | None = None) -> None:
        """Positions ``(R, N, 3)`` nm; velocities drawn from Maxwell–Boltzmann (each replica's generator) if not given."""
        if x.dim() != 3 or x.shape[0] != len(self.generators) or x.shape[1] != self.m.shape[1]:
            raise ValueError(
                f"x must have shape ({len(self.generators)}, {self.m.shape[1]}, 3); got {tuple(x.shape)}"
            )
        self.x = x.to(torch.float64).clone()
        if v is None:
            v = torch.sqrt(self.kt / self.m) * self._noise(x.shape)
            v = v - self._com_velocity(v)
        self.v = v.to(torch.float64).clone()

    def _noise(self, shape: torch.Size) -> torch.Tensor:
        return torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float64) for g in self.generators])

    def _com_velocity(self, v: torch.Tensor) -> torch.Tensor:
        return (self.m * v).sum(1, keepdim=True) / self.m.sum()

    def step(self, n: int = 1) -> None:
        """Advance every replica ``n`` steps."""
        if self.x is None or self.v is None:
            raise RuntimeError("call set_state() before step()")
        x, v, dt = self.x, self.v, self.dt
        for _ in range(n):
            v = v - self._com_velocity(v)
            v = v + dt * self.force(x) / self.m
            x = x + 0.5 * dt * v
            v = self.a * v + self.noise_scale * self._noise(x.shape)
            x = x + 0.5 * dt * v
        self.x, self.v = x, v
        self.steps += n

    def kinetic_temperature(self) -> torch.Tensor:
        """Instantaneous temperature of each replica (K), with 3N − 3 degrees of freedom, shape ``(R,)``."""
        from p4lightning.systems.alanine import MOLAR_GAS_CONSTANT

        if self.v is None:
            raise RuntimeError("call set_state() first")
        ke = 0.5 * (self.m * self.v.square()).sum((1, 2))
        dof = 3 * self.m.shape[1] - 3
        return 2 * ke / (dof * MOLAR_GAS_CONSTANT)
