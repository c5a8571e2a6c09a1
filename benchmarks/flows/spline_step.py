"""Training-step time of the spline Boltzmann generator: ours against a stack of normflows's circular spline
couplings of the same size, and the mixing layers against each other (same-run ratios of interleaved rounds).

Steps timed (eager, one torch thread, float32), each with backward and an Adam step:
* **ML step**: ``-log q`` of a batch of MD frames (mixed transform → flow inverse → base log-density).
* **energy step**: a batch of base samples → flow → mixed-transform inverse → TorchEnergy; loss ``u + log q``.

Variants (same 60 coordinates, 17 of them torsions on the circle, the same transform and energy):
* ``normflows``: ``n`` ``CircularCoupledRationalQuadraticSpline`` layers (alternating masks, ResidualNet of one
  block of ``hidden`` units: 4 linear layers), normflows's ``forward`` for sampling and ``inverse`` for density;
* ``mask``, ``p4inv``, ``lu``: :func:`p4lightning.flows.spline_flow` with conditioners of three hidden layers of
  ``hidden`` (also 4 linear layers) and ``n`` couplings.

normflows is not a dependency of p4lightning: ``pip install --no-deps normflows`` (it needs only torch and numpy).

``--device cuda`` times the steps on a GPU (synchronised around each block); ``--inputs DIR`` reads the OpenMM
``System`` (``system.xml``) and MD frames (``frames.npy``) written by
``python -m p4lightning.experiments.energy_stage_portable --write-inputs DIR``, for a machine without openmmtools
and mdtraj.

Run: ``python -m benchmarks.flows.spline_step --out docs/benchmarks/spline_step``
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks._common import format_ratio, machine, md_positions, ratio_summary, write_report

N_CIRCULAR = 17


def _ours(mixing: str, n: int, hidden: int) -> torch.nn.Module:
    from p4lightning.flows import spline_flow

    return spline_flow(60, N_CIRCULAR, n, (hidden, hidden, hidden), mixing=mixing)


class NormflowsStack(torch.nn.Module):
    """normflows circular couplings in p4lightning's bijection convention: ``forward`` z → x, ``inverse`` x → z."""

    def __init__(self, n: int, hidden: int) -> None:
        super().__init__()
        import normflows as nf

        circ = list(range(60 - N_CIRCULAR, 60))
        bound = torch.tensor([5.0] * (60 - N_CIRCULAR) + [math.pi] * N_CIRCULAR)
        self.layers = torch.nn.ModuleList(
            nf.flows.CircularCoupledRationalQuadraticSpline(
                60, 1, hidden, circ, num_bins=8, tail_bound=bound, reverse_mask=bool(i % 2)
            )
            for i in range(n)
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ladj = z.new_zeros(len(z))
        for layer in self.layers:
            z, ld = layer(z)
            ladj = ladj + ld
        return z, ladj

    def inverse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ladj = x.new_zeros(len(x))
        for layer in reversed(self.layers):
            x, ld = layer.inverse(x)
            ladj = ladj + ld
        return x, ladj


def make_steps(flow: torch.nn.Module, transform: torch.nn.Module, energy: torch.nn.Module, frames: torch.Tensor,
               batch: int, energy_batch: int) -> tuple[Callable[[], None], Callable[[], None]]:  # fmt: skip
    from p4lightning.flows import NormalUniformPrior

    prior = NormalUniformPrior(60, range(60 - N_CIRCULAR, 60)).to(frames.device)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-6)  # tiny: the model stays where it is over the rounds
    g = torch.Generator().manual_seed(0)

    def ml() -> None:
        x = frames[torch.randint(len(frames), (batch,), generator=g)]
        y, ladj_t = transform(x)
        z, ladj_f = flow.inverse(y)
        loss = -(prior.log_prob(z) + ladj_f + ladj_t).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def energy_step() -> None:
        z = prior.sample(energy_batch, g)
        y, ladj_f = flow(z)
        x, ladj_t = transform.inverse(y)
        u = energy(x.reshape(-1, 22, 3))
        loss = (u + prior.log_prob(z) - ladj_f - ladj_t).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return ml, energy_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--couplings", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--energy-batch", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block", type=int, default=3, help="steps per variant per round")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--inputs", type=Path, default=None, help="folder with system.xml and frames.npy")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/spline_step"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from p4lightning.systems.alanine import CARTESIAN_ATOMS, Z_MATRIX_STANDARD
    from p4lightning.systems.mixed import MixedCoordinateTransform
    from p4lightning.systems.torch_energy import TorchEnergy

    device = torch.device(args.device)
    if args.inputs is None:
        from p4lightning.systems.alanine import alanine_dipeptide

        frames, system = md_positions().float(), alanine_dipeptide(600.0).system
    else:
        import numpy as np
        import openmm

        frames = torch.from_numpy(np.load(args.inputs / "frames.npy")).float().reshape(-1, 66)
        system = openmm.XmlSerializer.deserialize((args.inputs / "system.xml").read_text())
    transform = MixedCoordinateTransform.fit(
        frames.reshape(-1, 22, 3).double(), CARTESIAN_ATOMS, Z_MATRIX_STANDARD, circular=True
    ).float().to(device)
    energy = TorchEnergy(system, 600.0).to(device)
    frames = frames.to(device)
    torch.manual_seed(0)
    flows = {"normflows": NormflowsStack(args.couplings, args.hidden)}
    flows.update({m: _ours(m, args.couplings, args.hidden) for m in ("mask", "p4inv", "lu")})
    flows = {k: f.to(device) for k, f in flows.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    params = {k: sum(p.numel() for p in f.parameters()) for k, f in flows.items()}
    steps = {k: make_steps(f, transform, energy, frames, args.batch, args.energy_batch) for k, f in flows.items()}
    times: dict[str, dict[str, list[float]]] = {"ml": {k: [] for k in flows}, "energy": {k: [] for k in flows}}
    for kind, idx in (("ml", 0), ("energy", 1)):
        for fn in steps.values():  # warm-up
            fn[idx]()
        for _ in range(args.rounds):
            for name, fn in steps.items():
                sync()
                start = time.perf_counter()
                for _ in range(args.block):
                    fn[idx]()
                sync()
                times[kind][name].append((time.perf_counter() - start) / args.block)
    ratios = {
        kind: {
            "ours (mask) / normflows": ratio_summary(t["mask"], t["normflows"]),
            "p4inv / mask": ratio_summary(t["p4inv"], t["mask"]),
            "lu / mask": ratio_summary(t["lu"], t["mask"]),
        }
        for kind, t in times.items()
    }
    med = {kind: {k: sorted(v)[len(v) // 2] * 1e3 for k, v in t.items()} for kind, t in times.items()}
    lines = [
        "# Spline BG training step: ours vs normflows, and the mixing layers",
        "",
        f"Command: `python -m benchmarks.flows.spline_step --couplings {args.couplings} --hidden {args.hidden} --batch "
        f"{args.batch} --energy-batch {args.energy_batch} --rounds {args.rounds} --block {args.block} --out {args.out}"
        + ("" if args.device == "cpu" else f" --device {args.device}")
        + ("" if args.inputs is None else f" --inputs {args.inputs}") + "`",
        f"Machine: {machine() if device.type == 'cpu' else torch.cuda.get_device_name(device) + ', torch ' + torch.__version__}; eager, float32. {args.couplings} couplings, 8 bins, conditioners of 4 linear layers of "
        f"{args.hidden}; ML step on {args.batch} MD frames, energy step on {args.energy_batch} samples (TorchEnergy).",
        "",
        "| variant | parameters | ML step (ms, median) | energy step (ms, median) |",
        "|---|---|---|---|",
        *[f"| {k} | {params[k]:,} | {med['ml'][k]:.1f} | {med['energy'][k]:.1f} |" for k in flows],
        "",
        "Same-round ratios, median (quartiles) over rounds:",
        "",
        "| ratio | ML step | energy step |",
        "|---|---|---|",
        *[f"| {r} | {format_ratio(ratios['ml'][r])} | {format_ratio(ratios['energy'][r])} |" for r in ratios["ml"]],
    ]
    write_report(args.out, lines, {"args": vars(args) | {"out": str(args.out), "inputs": str(args.inputs)}, "params": params,
                                   "median_ms": med, "ratios": ratios, "machine": machine()})  # fmt: skip


if __name__ == "__main__":
    main()
