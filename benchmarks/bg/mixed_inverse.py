r"""``MixedCoordinateTransform.inverse`` (the generating direction): level-by-level placement against atom by atom.

The shipped inverse places the 17 Z-matrix atoms of alanine dipeptide in 3 dependency levels, one batched NeRF
call each, with index tensors precomputed once. The alternative is the previous implementation: 17 NeRF calls,
one atom at a time, with ``.tolist()`` of the index buffers on every call (a device→host read per batch on a
GPU). Both run on the same fitted transform (float32, batch 256, one torch thread), forward only and forward +
backward (the energy phase differentiates through it), in interleaved rounds; each ratio is the median over
rounds of the ratio of two blocks of the same round (this machine is shared and noisy).

Run: ``python -m benchmarks.bg.mixed_inverse --rounds 15 --block 50 --out docs/benchmarks/mixed_inverse``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks._common import format_ratio, machine, md_positions, ratio_summary, write_report


def atom_by_atom(t: object, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous ``inverse``: one NeRF call per Z-matrix atom, index buffers read to the host per call."""
    from p4lightning.systems.internal import place

    b = z.shape[0]
    zc, zi = z[:, : t.n_cartesian_dims], z[:, t.n_cartesian_dims :]
    cart = (zc * torch.sqrt(t.pca_values)) @ t.pca_vectors.T + t.pca_mean
    r, th, ph = (zi.reshape(b, 3, -1) * t.ic_std + t.ic_mean).unbind(1)
    atoms: list[torch.Tensor | None] = [None] * t.n_atoms
    for a, pos in zip(t.cartesian.tolist(), cart.reshape(b, -1, 3).unbind(1), strict=True):
        atoms[a] = pos
    for row, (i, j, k, t_) in enumerate(t.z_matrix.tolist()):
        atoms[i] = place(atoms[j], atoms[k], atoms[t_], r[:, row], th[:, row], ph[:, row])
    x = torch.stack(atoms, dim=1).reshape(b, 3 * t.n_atoms)
    ladj = t._constant_ladj() + (2 * torch.log(torch.abs(r)) + torch.log(torch.abs(torch.sin(th)))).sum(-1)
    return x, ladj


def block(fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], zs: list[torch.Tensor], grad: bool) -> float:
    t0 = time.perf_counter()
    for z in zs:
        if grad:
            z = z.detach().requires_grad_(True)
            x, ladj = fn(z)
            (x.square().sum() + ladj.sum()).backward()
        else:
            with torch.no_grad():
                fn(z)
    return (time.perf_counter() - t0) / len(zs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=int, default=50, help="calls per variant and round")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/mixed_inverse"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from p4lightning.systems.alanine import CARTESIAN_ATOMS, Z_MATRIX_BACKBONE
    from p4lightning.systems.mixed import MixedCoordinateTransform

    xyz = md_positions().reshape(-1, 22, 3)
    t = MixedCoordinateTransform.fit(xyz.double(), CARTESIAN_ATOMS, Z_MATRIX_BACKBONE).float()
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(args.batch, t.dim, generator=g) for _ in range(args.block)]
    torch.testing.assert_close(t.inverse(zs[0])[0], atom_by_atom(t, zs[0])[0], atol=1e-5, rtol=0)
    variants = {"levelled": t.inverse, "atom by atom": lambda z: atom_by_atom(t, z)}
    result: dict[str, object] = {"batch": args.batch, "rounds": args.rounds, "block": args.block}
    for grad in (False, True):
        times: dict[str, list[float]] = {k: [] for k in variants}
        for fn in variants.values():
            block(fn, zs[:5], grad)  # warm-up
        for _ in range(args.rounds):
            for name, fn in variants.items():
                times[name].append(block(fn, zs, grad))
        result["forward + backward" if grad else "forward"] = {
            "us": {k: 1e6 * statistics.median(v) for k, v in times.items()},
            "levelled / atom by atom": ratio_summary(times["levelled"], times["atom by atom"]),
        }
    result["machine"] = machine()
    lines = [
        f"# MixedCoordinateTransform.inverse, float32, batch {args.batch}, one torch thread",
        "",
        f"Command: `python -m benchmarks.bg.mixed_inverse --rounds {args.rounds} --block {args.block} --batch {args.batch}`."
        " Medians over rounds of per-round ratios (quartiles in brackets).",
        "",
        "| pass | levelled (µs) | atom by atom (µs) | levelled / atom by atom |",
        "|---|---|---|---|",
    ]
    for key in ("forward", "forward + backward"):
        r = result[key]
        lines.append(
            f"| {key} | {r['us']['levelled']:.0f} | {r['us']['atom by atom']:.0f} | "
            f"{format_ratio(r['levelled / atom by atom'])} |"
        )
    write_report(args.out, lines, result)


if __name__ == "__main__":
    main()
