"""OpenMM's Reference platform as the oracle of the energy tests: per-term energies, totals and forces of a
``System`` on a batch of conformations (what :class:`~p4lightning.systems.torch_energy.TorchEnergy` is validated
against). Needs OpenMM (the ``molecules`` extra)."""

from __future__ import annotations

__all__ = ["OPENMM_TERMS", "openmm_reference"]


#: OpenMM force classes and the TorchEnergy term that evaluates each
OPENMM_TERMS = {
    "HarmonicBondForce": "bond",
    "HarmonicAngleForce": "angle",
    "PeriodicTorsionForce": "torsion",
    "NonbondedForce": "nonbonded",
    "CustomGBForce": "gb",
    "GBSAOBCForce": "gb",
}


def openmm_reference(system: object, xyz: object) -> tuple[dict[str, object], object, object]:
    """OpenMM's Reference platform (float64) on conformations ``xyz`` ``(B, N, 3)`` nm: per-term energies
    (kJ/mol, one force group per force, keyed as :data:`OPENMM_TERMS`), total energies ``(B,)`` and forces
    ``(B, N, 3)`` (kJ mol⁻¹ nm⁻¹) as numpy arrays — what :class:`~p4lightning.systems.torch_energy.TorchEnergy`
    is validated against."""
    import numpy as np
    import openmm

    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    names = []
    for i, f in enumerate(system.getForces()):
        f.setForceGroup(i)
        names.append(type(f).__name__)
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    terms: dict[str, list[float]] = {OPENMM_TERMS[n]: [] for n in names if n in OPENMM_TERMS}
    total, forces = [], []
    for x in xyz:
        ctx.setPositions(x)
        for i, n in enumerate(names):
            if n in OPENMM_TERMS:
                terms[OPENMM_TERMS[n]].append(ctx.getState(getEnergy=True, groups={i}).getPotentialEnergy()._value)
        state = ctx.getState(getEnergy=True, getForces=True)
        total.append(state.getPotentialEnergy()._value)
        forces.append(state.getForces(asNumpy=True)._value)
    return {k: np.array(v) for k, v in terms.items()}, np.array(total), np.array(forces)
