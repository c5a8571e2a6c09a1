r"""The MD settings as one typed value, :class:`MDConfig`, checked before any MD runs.

Unconstrained MD at 1 fs: with ``HBonds`` constraints every X–H bond length in the data is a constant, so their
density is degenerate (a delta) and a flow cannot fit it; the energy model has no constraints either. The largest
step accepted is :data:`MAX_TIMESTEP_FS` (Note [time step without constraints]).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, get_args

from p4lightning._validation import check_choice, check_literal, check_nonnegative_int, check_positive_int

__all__ = ["MAX_TIMESTEP_FS", "PLATFORMS", "MDConfig", "Platform"]

#: An OpenMM platform name.
Platform = Literal["CPU", "CUDA", "OpenCL", "Reference"]
PLATFORMS: tuple[str, ...] = get_args(Platform)

# Note [time step without constraints]
# LangevinMiddle is velocity Verlet with a friction-and-noise step in the middle; on a harmonic mode of angular
# frequency ω = sqrt(k/μ) it is stable only for Δt < 2/ω. Without constraints the stiffest mode of this system
# is the N–H bond stretch (Amber ff96: ω ≈ 621 ps⁻¹, period 10.1 fs), so Δt < 3.2 fs; at 600 K, 3.5 fs and 4 fs
# give NaN coordinates within 1,000 steps. 3 fs is the largest step accepted; the data use 1 fs.

#: The largest integration step accepted, fs (Note [time step without constraints]).
MAX_TIMESTEP_FS = 3.0


@dataclass(frozen=True)
class MDConfig:
    """The settings of a Langevin MD run (one trajectory or every replica), checked when made.

    Args:
        frames: saved frames (per replica).
        save_every: MD steps between saved frames.
        temperature: K (the paper's data: 600 K, to visit all metastable states).
        timestep_fs: integration step in fs, at most :data:`MAX_TIMESTEP_FS` (1 fs: no constraints).
        friction_per_ps: Langevin friction in 1/ps.
        equilibration_steps: steps run (and discarded) before the first saved frame.
        platform: OpenMM platform name (:data:`PLATFORMS`); whether it is usable here is :meth:`check`'s.
        compile: torch engine only: ``torch.compile`` the energy and forces.

    Raises:
        ValueError: a bad setting (the same messages as the arguments of
            :func:`~p4lightning.simulation.simulate`), checked in the order of the arguments, the platform last.
    """

    frames: int = 2000
    save_every: int = 500
    temperature: float = 600.0
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    equilibration_steps: int = 10_000
    platform: Platform = "CPU"
    compile: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.frames, "frames")
        check_positive_int(self.save_every, "save_every")
        check_nonnegative_int(self.equilibration_steps, "equilibration_steps")
        for value, name, unit in (
            (self.temperature, "temperature", "K"),
            (self.friction_per_ps, "friction_per_ps", "1/ps"),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 ({unit}); got {value}")
        if not self.timestep_fs > 0:
            raise ValueError(f"timestep_fs must be > 0 (fs); got {self.timestep_fs}")
        if self.timestep_fs > MAX_TIMESTEP_FS:
            raise ValueError(
                f"timestep_fs must be at most {MAX_TIMESTEP_FS:g} fs: without constraints the N–H stretch (period 10 fs) "
                f"makes the integrator unstable above 2/ω = 3.2 fs (NaN coordinates); got {self.timestep_fs}"
            )
        check_literal(self.platform, Platform, "platform")
        for name in ("temperature", "timestep_fs", "friction_per_ps"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "compile", bool(self.compile))

    def check(self) -> MDConfig:
        """Require the OpenMM platform to be usable here (it needs OpenMM: not done when made); ``self``.

        Raises:
            ValueError: the platform does not open a context here, naming the platforms this OpenMM has.
        """
        _check_platform(self.platform)
        return self

    @property
    def frame_interval_ps(self) -> float:
        """Time between saved frames, ps: ``save_every`` × ``timestep_fs`` × 10⁻³."""
        return self.save_every * self.timestep_fs * 1e-3

    def as_dict(self) -> dict[str, object]:
        """The settings by name (the MD settings of ``replicas.json``)."""
        return asdict(self)


def _check_platform(platform: str) -> None:
    """Require OpenMM's platform ``platform`` to exist here and to open a context (a one-particle system: a
    registered CUDA or OpenCL platform without a usable device fails there)."""
    import openmm

    check_choice(platform, PLATFORMS, "platform")
    try:
        system = openmm.System()
        system.addParticle(1.0)
        openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName(platform))
    except Exception as err:  # openmm.OpenMMException; its text may span lines
        usable = ", ".join(
            openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())
        )
        reason = " ".join(str(err).split())
        raise ValueError(
            f"OpenMM platform {platform} is not usable here ({reason}); this OpenMM has: {usable}"
        ) from None
