r"""Paper-size Boltzmann-generator step times as ratios measured in one run.

The paper's BG (25 blocks, hidden [60, 60], batch 256, float32, Adam, one torch thread) in four variants —
fixed swaps or P⁴Inv swaps, eager or ``torch.compile``-d density pass (``BoltzmannGenerator(compile=True)``) —
timed in interleaved rounds: each round runs a block of consecutive ML steps (NLL of a data batch, backward,
Adam) of every variant, and every ratio is the median over rounds of the ratio of two blocks *of the same round*
(this machine is shared and noisy). P⁴Inv steps include the merge every 100 steps, amortised (a merge each 100th
step of the block sequence).

With ``--energy`` (or ``--energy-only``), the energy-phase step (ML on 256 frames + the KL term on 256 generated
samples, P⁴Inv model, eager and compiled) with the torch energy (``TorchEnergy``, in-process; also differentiated
by autograd instead of its analytic gradient) against the OpenMM worker pool (2 pinned workers), also in
interleaved rounds (:func:`energy_phase`).

Run: ``python -m benchmarks.bg.bg_step --rounds 12 --block 5 --energy --out docs/benchmarks/bg_step`` and
``python -m benchmarks.bg.bg_step --energy-only --rounds 8 --block 3 --out docs/benchmarks/bg_energy_step``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks._common import (
    expression_energy,
    machine,
    make_bg_model,
    md_positions,
    ratio_summary,
    write_report,
)


def matmul_floor(mixing: str, batch: int = 256, dim: int = 60, n_blocks: int = 25) -> Callable[[torch.Tensor], None]:
    """Only the step's matrix products, at the shapes of the paper BG: every coupling layer's forward product and
    its two backward products (input and weight gradients), and for P⁴Inv the batch product with Q forward and
    backward — no elementwise work, no optimizer. The time this CPU's GEMM needs, whatever the framework."""
    g = torch.Generator().manual_seed(0)
    half = dim // 2
    shapes = [(half, 60), (60, 60), (60, half)] * 2 * 2 * n_blocks  # 2 nets x 2 couplings per block
    weights = [torch.randn(i, o, generator=g) for i, o in shapes]
    inputs = [torch.randn(batch, i, generator=g) for i, _ in shapes]
    grads = [torch.randn(batch, o, generator=g) for _, o in shapes]
    q = torch.randn(dim, dim, generator=g)
    y = torch.randn(batch, dim, generator=g)
    n_mixers = 2 * n_blocks if mixing == "p4inv" else 0

    def step(_: torch.Tensor) -> None:
        for w, x, gy in zip(weights, inputs, grads, strict=True):
            torch.mm(x, w)
            torch.mm(gy, w.T)
            torch.mm(x.T, gy)
        for _ in range(n_mixers):
            torch.mm(y, q.T)
            torch.mm(y, q)

    return step


def timed_block(step: Callable[[torch.Tensor], None], data: torch.Tensor, n: int, g: torch.Generator) -> float:
    batches = [data[torch.randint(0, len(data), (256,), generator=g)] for _ in range(n)]
    t = time.perf_counter()
    for x in batches:
        step(x)
    return (time.perf_counter() - t) / n


def ml_phase(data: torch.Tensor, rounds: int, block: int) -> dict:
    variants = {(m, c): None for m in ("swap", "p4inv") for c in (False, True, "Adam for-loop", "matmul floor")}
    compile_s = {}
    for key in variants:
        if key[1] == "matmul floor":
            variants[key] = matmul_floor(key[0])
            continue
        _, step = make_bg_model(key[0], key[1] is True, data, adam_for_loop=key[1] == "Adam for-loop")
        t = time.perf_counter()
        step(data[:256])  # compiles (compiled variants); warm-up
        step(data[256:512])
        compile_s[_label(key)] = time.perf_counter() - t
        variants[key] = step
    g = torch.Generator().manual_seed(1)
    times: dict[tuple[str, bool], list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for key, step in variants.items():
            times[key].append(timed_block(step, data, block, g))

    def ratio(a: tuple[str, bool], b: tuple[str, bool]) -> dict[str, float]:
        return ratio_summary(times[a], times[b])

    return {
        "ms": {_label(k): 1e3 * statistics.median(v) for k, v in times.items()},
        "first_two_steps_s": compile_s,
        "ratios": {
            "p4inv / swap, eager": ratio(("p4inv", False), ("swap", False)),
            "p4inv / swap, compiled": ratio(("p4inv", True), ("swap", True)),
            "p4inv / swap, matmul floor": ratio(("p4inv", "matmul floor"), ("swap", "matmul floor")),
            "p4inv compiled / p4inv eager": ratio(("p4inv", True), ("p4inv", False)),
            "swap compiled / swap eager": ratio(("swap", True), ("swap", False)),
            "p4inv compiled / p4inv eager with Adam for-loop": ratio(("p4inv", True), ("p4inv", "Adam for-loop")),
            "swap compiled / swap eager with Adam for-loop": ratio(("swap", True), ("swap", "Adam for-loop")),
            "p4inv eager / p4inv eager with Adam for-loop": ratio(("p4inv", False), ("p4inv", "Adam for-loop")),
            "p4inv compiled / p4inv matmul floor": ratio(("p4inv", True), ("p4inv", "matmul floor")),
            "swap compiled / swap matmul floor": ratio(("swap", True), ("swap", "matmul floor")),
        },
    }


def _label(key: tuple[str, bool | str]) -> str:
    mixing, how = key
    return mixing + {False: "", True: " compiled"}.get(how, f" ({how})")  # type: ignore[call-overload]


def energy_phase(data: torch.Tensor, rounds: int, block: int) -> dict:
    """The energy-phase step of the paper-size P⁴Inv BG with each energy, in interleaved rounds.

    Variants: the 2-worker OpenMM pool (before TorchEnergy); TorchEnergy differentiated by autograd through its
    energy expressions (``terms_kj``: TorchEnergy before its analytic gradient); TorchEnergy as trained (its
    analytic gradient); each with the eager model, and the pool and TorchEnergy with the model as
    ``compile=True`` trains it (density pass compiled; TorchEnergy's forward compiled too).
    """
    from p4lightning.systems.alanine import alanine_dipeptide
    from p4lightning.systems.energy import OpenMMEnergy, regularize_energy
    from p4lightning.systems.torch_energy import TorchEnergy

    ala2 = alanine_dipeptide(600.0)
    model, _ = make_bg_model("p4inv", False, data)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    torch_energy = TorchEnergy(ala2.system, 600.0)
    pool = OpenMMEnergy(ala2.system, 600.0, n_workers=2)

    def by_autograd(x: torch.Tensor) -> torch.Tensor:
        return expression_energy(torch_energy, x) / torch_energy.kt

    compiled_density = torch.compile(model.log_density)
    variants: dict[str, tuple[Callable, Callable]] = {
        "openmm pool, eager model": (model.log_density, pool),
        "torch, autograd gradient, eager model": (model.log_density, by_autograd),
        "torch, eager model": (model.log_density, torch_energy),
        "openmm pool, compiled model": (compiled_density, pool),
        "torch, compiled model": (compiled_density, torch.compile(torch_energy.forward)),
    }
    g = torch.Generator().manual_seed(2)

    def step(density: Callable, energy: Callable, x: torch.Tensor) -> None:
        loss = -density(x).mean()
        xg, log_q = model.sample(256, g)
        u = energy(xg.reshape(-1, 22, 3)).to(xg.dtype)
        loss = loss + 0.05 * (regularize_energy(u)[0] + log_q).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {k: [] for k in variants}
    try:
        for density, energy in variants.values():
            step(density, energy, data[:256])  # compiles; warm-up
            step(density, energy, data[256:512])
        for _ in range(rounds):
            for name, (density, energy) in variants.items():
                times[name].append(timed_block(lambda x, d=density, e=energy: step(d, e, x), data, block, g))
    finally:
        pool.close()
    pairs = {
        "torch / openmm pool, eager model": ("torch, eager model", "openmm pool, eager model"),
        "torch / openmm pool, compiled model": ("torch, compiled model", "openmm pool, compiled model"),
        "torch analytic / torch autograd gradient, eager model": (
            "torch, eager model", "torch, autograd gradient, eager model"
        ),
        "torch, compiled model / openmm pool, eager model": ("torch, compiled model", "openmm pool, eager model"),
    }  # fmt: skip
    return {
        "ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "ratios": {k: ratio_summary(times[a], times[b]) for k, (a, b) in pairs.items()},
    }


def energy_lines(e: dict) -> list[str]:
    return [
        "Energy-phase step (paper-size P⁴Inv BG; ML on 256 frames + KL on 256 generated samples, float32):",
        "",
        "| variant | step (ms) |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in e["ms"].items()],
        "",
        "| ratio | median | quartiles |",
        "|---|---|---|",
        *[f"| {k} | {r['median']:.3f} | {r['q1']:.3f}–{r['q3']:.3f} |" for k, r in e["ratios"].items()],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--block", type=int, default=5, help="consecutive steps per variant and round")
    parser.add_argument("--energy", action="store_true", help="also time the energy-phase step")
    parser.add_argument("--energy-only", action="store_true", help="time only the energy-phase step")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/bg_step"))
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    data = md_positions()
    t0 = time.perf_counter()
    if args.energy_only:
        result = {"energy": energy_phase(data, args.rounds, args.block), "wall_s": time.perf_counter() - t0}
        result["machine"] = machine()
        lines = [
            "# Boltzmann-generator energy-phase step: OpenMM pool against TorchEnergy",
            "",
            f"Command: `python -m benchmarks.bg.bg_step --energy-only --rounds {args.rounds} --block {args.block} "
            f"--out {args.out}` ({result['wall_s'] / 60:.1f} min). One torch thread; medians of per-round "
            "ratios (quartiles); ms are medians of per-step block means.",
            "",
            *energy_lines(result["energy"]),
        ]
        write_report(args.out, lines, result)
        return
    result = {"ml": ml_phase(data, args.rounds, args.block)}
    if args.energy:
        result["energy"] = energy_phase(data, max(4, args.rounds // 2), args.block)
    result["wall_s"] = time.perf_counter() - t0
    result["machine"] = machine()
    ml = result["ml"]
    lines = [
        "# Paper-size Boltzmann-generator step (25 blocks, batch 256, float32, one torch thread)",
        "",
        f"Command: `python -m benchmarks.bg.bg_step --rounds {args.rounds} --block {args.block}"
        f"{' --energy' if args.energy else ''}` ({result['wall_s'] / 60:.1f} min). Medians of per-round ratios "
        "(quartiles in brackets); ms are medians of per-step block means.",
        "",
        "| variant | ML step (ms) | first two steps (s, compilation included) |",
        "|---|---|---|",
    ]
    for name, ms in ml["ms"].items():
        first = ml["first_two_steps_s"].get(name)
        lines.append(f"| {name} | {ms:.1f} | {'' if first is None else f'{first:.1f}'} |")
    lines += ["", "| ratio | median | quartiles |", "|---|---|---|"]
    for name, r in ml["ratios"].items():
        lines.append(f"| {name} | {r['median']:.3f} | {r['q1']:.3f}–{r['q3']:.3f} |")
    if args.energy:
        lines += ["", *energy_lines(result["energy"])]
    write_report(args.out, lines, result)


if __name__ == "__main__":
    main()
