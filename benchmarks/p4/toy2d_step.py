"""The 2-D density step of the paper's Fig. 5 flow (100 blocks of P⁴Inv(2)–Bent–P⁴Inv(2)–Bent⁻¹: 400 layers of
2-vectors), eager against ``torch.compile``, with the merge rounds (N = 10, N_force 10, N_correct 50) amortised.

A step: ``−mean ln q(x)`` of a batch of 200 points (flow inverse → standard normal), backward, Adam. Per round:
``--block`` eager steps, then ``--block`` compiled steps (interleaved rounds: same-run ratios on a shared machine).
The arithmetic of a step is ~10⁵ flops (400 layers × 200 points × a few dozen flops each, ×3 for backward):
microseconds; everything above that is per-operation overhead — kernel dispatch, autograd nodes, Python — which
is what compiling removes. The report projects the paper's 160,000 steps per density (8 epochs × 20,000) from the
median step and the merge cost.

Run: ``python -m benchmarks.p4.toy2d_step --out docs/benchmarks/toy2d_step``
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks._common import format_ratio, machine, ratio_summary, write_report

PAPER_STEPS = 8 * 20_000


def _make(compiled: bool, seed: int) -> tuple[torch.nn.Module, object, object]:
    from p4lightning.flows.sequential import StandardNormal
    from p4lightning.models.density import p4inv_bent_flow

    torch.manual_seed(seed)
    flow, prior = p4inv_bent_flow(100), StandardNormal(2)

    def nll(x: torch.Tensor) -> torch.Tensor:
        z, ladj = flow.inverse(x)
        return -(prior.log_prob(z) + ladj).mean()

    return flow, torch.compile(nll) if compiled else nll, torch.optim.Adam(flow.parameters(), lr=5e-3)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--block", type=int, default=20, help="steps per variant and round")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/toy2d_step"))
    args = parser.parse_args(argv)
    from p4lightning.p4.schedule import MergeSchedule

    torch.set_num_threads(1)
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    variants = {"eager": _make(False, 0), "compiled": _make(True, 0)}
    start = time.perf_counter()
    for _, fn, _ in variants.values():  # warm-up (and the compilation)
        fn(x).backward()
    compile_s = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (_flow, fn, opt) in variants.items():
            t0 = time.perf_counter()
            for _ in range(args.block):
                loss = fn(x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            times[name].append((time.perf_counter() - t0) / args.block)
    # a merge round over the 200 P⁴Inv layers (what P4MergeCallback does every N = 10 steps)
    flow, _, opt = variants["eager"]
    schedule = MergeSchedule(every_n_steps=1, force_every_n_merges=10, correct_every_n_merges=50)
    merge_s = []
    for step in range(1, 11):
        t0 = time.perf_counter()
        schedule.step(flow, step, opt)
        merge_s.append(time.perf_counter() - t0)
    merge = statistics.median(merge_s)
    med = {name: statistics.median(t) for name, t in times.items()}
    ratio = ratio_summary(times["compiled"], times["eager"])
    per_step = {name: med[name] + merge / 10 for name in med}
    result = {"machine": machine(), "rounds": args.rounds, "block": args.block, "step_s": times,
              "median_step_s": med, "merge_round_s": merge, "compile_s": compile_s, "compiled_over_eager": ratio,
              "paper_steps": PAPER_STEPS,
              "paper_hours_per_density": {n: per_step[n] * PAPER_STEPS / 3600 for n in per_step}}  # fmt: skip
    lines = [
        "# The Fig. 5 P⁴Inv flow's training step: eager vs compiled",
        "",
        f"Command: `python -m benchmarks.p4.toy2d_step --rounds {args.rounds} --block {args.block} --out {args.out}`  ",
        f"Machine: {machine()}; batch 200, 100 blocks (200 P⁴Inv(2) layers), Adam.",
        "",
        "| | eager | compiled |",
        "|---|---|---|",
        f"| median step (ms) | {1e3 * med['eager']:.1f} | {1e3 * med['compiled']:.1f} |",
        f"| compiled / eager, per round (median, quartiles) | | {format_ratio(ratio)} |",
        f"| merge round over 200 layers (ms; every 10 steps) | {1e3 * merge:.1f} | {1e3 * merge:.1f} |",
        f"| paper length, 160,000 steps (h per density and flow) | {result['paper_hours_per_density']['eager']:.2f} "
        f"| {result['paper_hours_per_density']['compiled']:.2f} |",
        "",
        f"Compilation (once per process): {compile_s:.0f} s. The floor: the step's arithmetic is ~10⁵ flops, "
        "microseconds; the measured milliseconds are per-operation overhead.",
    ]
    write_report(args.out, lines, result)
    return result


if __name__ == "__main__":
    main()
