r"""One draw of samples from a Boltzmann generator: positions, :math:`\ln q` and reduced energies together.

``p4lightning sample`` (what it writes), ``p4lightning evaluate`` and the figures callback (what they score) and
the model's validation sample metrics all take their samples from :func:`draw`, so what is written is what is
scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from p4lightning.systems.protocol import energies

__all__ = ["Draw", "draw"]


@dataclass(frozen=True)
class Draw:
    r"""``n`` samples of a model.

    Attributes:
        x: positions ``(n, 66)`` in nm, on the model's device, in its dtype.
        log_q: :math:`\ln q(\mathbf{x})` ``(n,)`` (float64) under the model (60-d conformation space).
        u: reduced energies :math:`u = E / k_B T` ``(n,)`` (float64, dimensionless), on ``x``'s device.
        out_of_branch: ``(n,)`` bool on the CPU: samples placed from a torsion outside its principal branch.
    """

    x: torch.Tensor
    log_q: torch.Tensor
    u: torch.Tensor
    out_of_branch: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@torch.no_grad()
def draw(
    model: Any, n: int, generator: torch.Generator | None = None, chunk: int = 2048, energy_chunk: int = 4096
) -> Draw:
    r"""Draw ``n`` samples from ``model`` and evaluate their reduced energies, without a graph.

    Args:
        model: a Boltzmann generator with its energy op built (a ``BoltzmannGenerator`` after ``setup``, or
            anything with ``sample_with_coordinates(n, generator) -> (x, log_q, y)``, ``transform.out_of_branch``
            and ``energy``, a :class:`~p4lightning.systems.protocol.ReducedEnergy`).
        n: number of samples.
        generator: the random numbers of the prior (``None``: the global generator).
        chunk: samples drawn per pass of the flow (part of the draw: the prior draws its numbers chunk by chunk).
        energy_chunk: positions per energy evaluation (:func:`~p4lightning.systems.protocol.energies`).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    if getattr(model, "energy", None) is None:
        raise RuntimeError("draw needs the model's energy op; call setup() or set model.energy first")
    xs, lqs, oob = [], [], []
    for start in range(0, n, chunk):
        x, log_q, y = model.sample_with_coordinates(min(chunk, n - start), generator)
        xs.append(x)
        lqs.append(log_q.double())
        oob.append(model.transform.out_of_branch(y).cpu())
    x = torch.cat(xs)
    u = energies(model.energy, x.double(), energy_chunk).double()
    return Draw(x=x, log_q=torch.cat(lqs), u=u, out_of_branch=torch.cat(oob))
