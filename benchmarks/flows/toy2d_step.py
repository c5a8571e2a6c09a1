"""Training step of the paper's 2-D P⁴Inv flow (App. G: 100 blocks of P⁴Inv → Bent → P⁴Inv → Bent⁻¹, 400 layers
on batches of 200 points in 2-D): eager against regionally compiled, and Adam's three implementations.

Each variant is :class:`p4lightning.models.DensityEstimator`'s training step — ``-ln q`` of a batch through the
flow's inverse, backward, Adam step — with the optimizer built as named; ``regions k``: the flow trained through
:class:`p4lightning.flows.regions.CompiledRegions` of ``k`` layers (``compile_region=k``). Variants are timed in
interleaved rounds (same-round ratios against the eager step with Adam's per-tensor loop, the default before).
The merge round (200 P⁴Inv layers, every N = 10 steps in App. G) is timed on its own. RealNVP (App. G's 1,220
parameters, eager, fused Adam) for scale.

Run: ``python -m benchmarks.flows.toy2d_step --out docs/benchmarks/toy2d_step``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks._common import format_ratio, machine, ratio_summary, write_report

ADAM = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def make_step(flow: str, compile_region: int, adam: str, x: torch.Tensor) -> Callable[[], None]:
    from p4lightning.models.density import DensityEstimator

    torch.manual_seed(0)
    model = DensityEstimator(flow=flow, compile_region=compile_region)
    opt = torch.optim.Adam(model.parameters(), lr=1e-6, **ADAM[adam])  # tiny lr: the model stays put

    def step() -> None:
        loss = model.training_step((x,), 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step.model = model  # type: ignore[attr-defined]
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=20, help="steps per variant per round")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/toy2d_step"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from p4lightning.data.toy2d import sample_toy
    from p4lightning.p4.schedule import MergeSchedule

    x = sample_toy("8gaussians", 200, seed=0)
    variants = {
        "eager, Adam for-loop": ("p4inv", 0, "for-loop"),
        "eager, Adam foreach": ("p4inv", 0, "foreach"),
        "eager, Adam fused": ("p4inv", 0, "fused"),
        "regions 4, Adam fused": ("p4inv", 4, "fused"),
        "regions 20, Adam fused": ("p4inv", 20, "fused"),
        "RealNVP eager, Adam fused": ("realnvp", 0, "fused"),
    }
    steps, compile_seconds = {}, {}
    for name, spec in variants.items():
        steps[name] = make_step(*spec, x)
        start = time.perf_counter()
        steps[name]()  # compiles the regions (forward and backward) on the first call
        steps[name]()
        compile_seconds[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in steps.items():
            start = time.perf_counter()
            for _ in range(args.block):
                fn()
            times[name].append((time.perf_counter() - start) / args.block)
    base = "eager, Adam for-loop"
    ratios = {k: ratio_summary(times[k], times[base]) for k in variants if k != base}
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}

    model = steps["eager, Adam fused"].model  # type: ignore[attr-defined]
    schedule = MergeSchedule(every_n_steps=1, force_every_n_merges=10, correct_every_n_merges=50, seed=0)
    merge_times = []
    for i in range(1, 2 * args.rounds + 1):
        start = time.perf_counter()
        schedule.step(model, i)
        merge_times.append(time.perf_counter() - start)
    merge_ms = sorted(merge_times)[len(merge_times) // 2] * 1e3
    fastest = min((k for k in variants if k.startswith("regions")), key=med.get)
    lines = [
        "# The 2-D P⁴Inv flow's training step (App. G): eager vs regionally compiled",
        "",
        f"Command: `python -m benchmarks.flows.toy2d_step --rounds {args.rounds} --block {args.block} --out {args.out}`",
        f"Machine: {machine()}; one torch thread, float32, batch 200, 400 layers (P⁴Inv) / 20 layers (RealNVP).",
        "",
        "| variant | step (ms, median) | ratio to eager + Adam for-loop, median (quartiles) | first two steps (s, incl. compile) |",
        "|---|---|---|---|",
        *[
            f"| {k} | {med[k]:.1f} | {format_ratio(ratios[k]) if k in ratios else '1'} | {compile_seconds[k]:.1f} |"
            for k in variants
        ],
        "",
        f"A merge round of the 200 P⁴Inv layers (incl. the forced and corrected rounds among {2 * args.rounds}): "
        f"{merge_ms:.1f} ms median, i.e. {merge_ms / 10:.1f} ms per step at N = 10.",
        "",
        f"Paper length (160,000 steps) at the fastest P⁴Inv variant ({fastest}) plus merges: "
        f"{160_000 * (med[fastest] + merge_ms / 10) / 1e3 / 60:.0f} min per density, before Lightning's own per-step "
        f"work; eagerly with Adam's for-loop {160_000 * (med[base] + merge_ms / 10) / 1e3 / 60:.0f} min.",
    ]
    write_report(args.out, lines, {"args": vars(args) | {"out": str(args.out)}, "median_ms": med,
                                   "ratios": ratios, "first_steps_seconds": compile_seconds,
                                   "merge_round_ms": merge_ms, "machine": machine()})  # fmt: skip


if __name__ == "__main__":
    main()
