r"""Does the host-scalar path of ``p4lightning.p4.rank_one`` pay? (issue 13, item 18: keep it only at >= 5 %.)

On the CPU the rank-one nodes could form :math:`G = 1 + \mathbf{v}^\top\mathbf{Q}\mathbf{u}` and
:math:`\bar\ell / G` as Python floats instead of 0-d tensors (saving a few tiny tensor operations per layer
and pass). This times the paper-size P⁴Inv Boltzmann-generator ML step (25 blocks, 50 P⁴Inv layers of
dimension 60, batch 256, float32, eager, one torch thread; merges every 100 steps) and a single P⁴Inv(60) layer
step (forward + backward, batch 256) with the scalars on the host and on the device, in interleaved rounds;
each ratio is the median over rounds of the ratio of two blocks of the same round.

Run: ``python -m benchmarks.p4.host_scalars --rounds 10 --block 10 --out docs/benchmarks/host_scalars``
(needs a checkout that still has the host path: the ``host_scalars`` argument of ``rank_one_affine``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks._common import (
    forced_host_scalars,
    format_ratio,
    machine,
    make_bg_model,
    md_positions,
    ratio_summary,
    write_report,
)


def bg_step(data: torch.Tensor) -> Callable[[torch.Tensor], None]:
    """The paper-size P⁴Inv BG's eager ML step as trained (``make_bg_model``: fused Adam, merges every 100)."""
    return make_bg_model("p4inv", False, data)[1]


def layer_step() -> Callable[[torch.Tensor], None]:
    from p4lightning import P4Inv

    torch.manual_seed(0)
    layer = P4Inv(60, init="reverse", dtype=torch.float32)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-4)

    def step(x: torch.Tensor) -> None:
        y, ladj = layer(x)
        loss = 0.5 * y.square().sum(-1).mean() - ladj.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure(make: Callable[[], Callable[[torch.Tensor], None]], batches: list[torch.Tensor], rounds: int) -> dict:
    steps = {"host": make(), "device": make()}
    times: dict[str, list[float]] = {k: [] for k in steps}
    for name, step in steps.items():
        with forced_host_scalars(name == "host"):
            step(batches[0])
    for _ in range(rounds):
        for name, step in steps.items():
            with forced_host_scalars(name == "host"):
                t0 = time.perf_counter()
                for x in batches:
                    step(x)
                times[name].append((time.perf_counter() - t0) / len(batches))
    return {
        "ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "host / device": ratio_summary(times["host"], times["device"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--block", type=int, default=10, help="consecutive steps per variant and round")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/host_scalars"))
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    data = md_positions()
    g = torch.Generator().manual_seed(1)
    bg_batches = [data[torch.randint(0, len(data), (256,), generator=g)] for _ in range(args.block)]
    layer_batches = [torch.randn(256, 60, generator=g) for _ in range(10 * args.block)]
    result = {
        "bg": measure(lambda: bg_step(data), bg_batches, args.rounds),
        "layer": measure(layer_step, layer_batches, args.rounds),
        "machine": machine(),
    }
    lines = [
        "# Host scalars in the rank-one nodes: host floats vs 0-d device tensors (CPU, float32, one thread)",
        "",
        f"Command: `python -m benchmarks.p4.host_scalars --rounds {args.rounds} --block {args.block}`. Medians of "
        "per-round ratios (quartiles in brackets).",
        "",
        "| step | host (ms) | device (ms) | host / device |",
        "|---|---|---|---|",
    ]
    for key, label in (("bg", "paper-size P⁴Inv BG, ML step"), ("layer", "one P⁴Inv(60) layer, batch 256")):
        r = result[key]
        lines.append(f"| {label} | {r['ms']['host']:.3f} | {r['ms']['device']:.3f} | {format_ratio(r['host / device'])} |")
    write_report(args.out, lines, result)


if __name__ == "__main__":
    main()
