r"""How close P⁴Inv's training step is to the cheapest eager-PyTorch step of the same math, and where it goes.

Three steps of the same shape as ``p4inv_step.py`` (forward + log-det + loss + backward + Adam, batch 256,
float32, one thread, input needing no grad), timed in interleaved blocks in one process:

* ``nn.Linear``: the baseline;
* ``P4Inv``: the library layer (``check_inputs=False``);
* ``minimal``: the same map and log-det as one bare ``torch.autograd.Function`` — no validation, no dtype or
  shape handling, no parametrisation switch, G as a Python float — i.e. a floor for an eager step of this
  math with three parameter tensors (u, v, b);
* ``minimal, (u, v) packed``: the same with u and v in one ``(2, n)`` parameter (one Adam tensor fewer);
* ``no rank-one arithmetic``: the same batch product with the same bias, parameters (u, v, b), loss shape
  and Adam, as one autograd node that does *none* of the rank-one work (u and v get zero gradients, the
  log-det is a constant) — a lower bound for any eager step with these three parameters. ``minimal`` minus
  this is what the rank-one arithmetic itself (x·v, the two passes over A⁻¹ for G and its gradient, the
  backward's matrix-vector products) costs here.

Then a phase breakdown of one step (forward, loss, ``zero_grad``, backward, Adam) for ``nn.Linear`` and
``P4Inv``, each phase's median over consecutive steps; and what the two passes over A⁻¹ that
:math:`G = 1 + \mathbf{v}^\top\mathbf{A}^{-1}\mathbf{u}` and its gradient need (:math:`\mathbf{A}^{-1}\mathbf{u}`,
:math:`\mathbf{A}^{-\top}\mathbf{v}`) cost on top of the forward's batch product, done four ways.

Run: ``python -m benchmarks.p4.p4inv_floor --out docs/benchmarks/p4inv_floor``
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks._common import BATCH, PlainLinear, make_step, paired_ratio
from p4lightning import P4Inv


class _Minimal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, u, v, b, a, q, ld):  # noqa: ANN001, ANN205
        xv = torch.mv(x, v)
        y = torch.addr(b, xv, u).addmm_(x, a.T)
        qu = torch.mv(q, u)
        qtv = torch.mv(q.T, v)
        g = 1.0 + float(torch.dot(v, qu))
        ctx.g = g
        ctx.save_for_backward(x, u, v, xv, qu, qtv)
        return y, torch.full((x.shape[0],), float(ld) + math.log(abs(g)))

    @staticmethod
    def backward(ctx: Any, gy, gl):  # noqa: ANN001, ANN205
        x, u, v, xv, qu, qtv = ctx.saved_tensors
        c = float(gl.sum()) / ctx.g
        gyu = torch.mv(gy, u)
        gu = torch.mv(gy.T, xv).add_(qtv, alpha=c)
        gv = torch.mv(x.T, gyu).add_(qu, alpha=c)
        return None, gu, gv, gy.sum(0), None, None, None


class _MinimalPacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, uv, b, a, q, ld):  # noqa: ANN001, ANN205
        u, v = uv.unbind()
        y, ladj = _Minimal.forward(ctx, x, u, v, b, a, q, ld)
        return y, ladj

    @staticmethod
    def backward(ctx: Any, gy, gl):  # noqa: ANN001, ANN205
        _, gu, gv, gb, *_ = _Minimal.backward(ctx, gy, gl)
        return None, torch.stack((gu, gv)), gb, None, None, None


class _NoRankOne(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x, u, v, b, a):  # noqa: ANN001, ANN205
        ctx.shapes = (u.shape, v.shape)
        return torch.addmm(b, x, a.T), torch.full((x.shape[0],), 0.5)

    @staticmethod
    def backward(ctx: Any, gy, gl):  # noqa: ANN001, ANN205
        (u_shape, v_shape) = ctx.shapes
        return None, gy.new_zeros(u_shape), gy.new_zeros(v_shape), gy.sum(0), None


class NoRankOne(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("a", torch.eye(n))
        self.u = nn.Parameter(torch.zeros(n))
        self.v = nn.Parameter(torch.randn(n))
        self.b = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _NoRankOne.apply(x, self.u, self.v, self.b, self.a)


class Minimal(nn.Module):
    def __init__(self, n: int, packed: bool = False) -> None:
        super().__init__()
        self.packed = packed
        self.register_buffer("a", torch.eye(n))
        self.register_buffer("q", torch.eye(n))
        self.register_buffer("ld", torch.zeros(()))
        if packed:
            self.uv = nn.Parameter(torch.stack((torch.zeros(n), torch.randn(n))))
        else:
            self.u = nn.Parameter(torch.zeros(n))
            self.v = nn.Parameter(torch.randn(n))
        self.b = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.packed:
            return _MinimalPacked.apply(x, self.uv, self.b, self.a, self.q, self.ld)
        return _Minimal.apply(x, self.u, self.v, self.b, self.a, self.q, self.ld)


FACTORIES: dict[str, Callable[[int], nn.Module]] = {
    "nn.Linear": PlainLinear,
    "P4Inv": lambda n: P4Inv(n, check_inputs=False),
    "minimal": Minimal,
    "minimal, (u, v) packed": lambda n: Minimal(n, packed=True),
    "no rank-one arithmetic": NoRankOne,
}
PHASES = ("forward", "loss", "zero_grad", "backward", "Adam")


def interleaved(steps: dict[str, Callable[[], None]], rounds: int, block: int) -> dict[str, list[float]]:
    """Seconds per step, one sample per round of back-to-back blocks."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            fn()  # untimed: this method's tensors back into cache
            t = time.perf_counter()
            for _ in range(block):
                fn()
            samples[name].append((time.perf_counter() - t) / block)
    return samples


def phase_times(module: nn.Module, x: torch.Tensor, steps: int) -> dict[str, float]:
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    samples: dict[str, list[float]] = {p: [] for p in PHASES}
    for i in range(steps):
        t0 = time.perf_counter()
        y, ladj = module(x)
        t1 = time.perf_counter()
        loss = 0.5 * y.square().sum(-1).mean() - ladj.mean()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        if i >= steps // 4:  # warm
            for name, a, b in zip(PHASES, (t0, t1, t2, t3, t4), (t1, t2, t3, t4, t5), strict=True):
                samples[name].append(b - a)
    return {p: statistics.median(v) for p, v in samples.items()}


def inverse_passes(n: int, rounds: int) -> dict[str, float]:
    """Extra seconds of A⁻¹u and A⁻ᵀv over the batch product ``x Aᵀ`` alone (medians of per-round paired
    differences), the products made: by two ``mv`` calls right after the batch product (as in the layer);
    by the same two calls with nothing in between (A⁻¹ left in cache by the previous round's pair); row
    block by row block, both products per block while it is in L2; and by ``torch.compile`` (inductor)."""
    x, a, q = torch.randn(BATCH, n), torch.randn(n, n), torch.randn(n, n)
    u, v = torch.randn(n), torch.randn(n)
    rows = max(1, (256 * 1024) // (4 * n))  # 256 KiB blocks

    def two() -> None:
        torch.mv(q, u)
        torch.mv(q.T, v)

    def blocked() -> None:
        r, w = torch.empty(n), torch.zeros(n)
        for i in range(0, n, rows):
            block = q[i : i + rows]
            torch.mv(block, u, out=r[i : i + rows])
            w.addmv_(block.T, v[i : i + rows])

    compiled = torch.compile(lambda q, u, v: (q @ u, q.T @ v), fullgraph=True)
    compiled(q, u, v)
    fns: dict[str, Callable[[], None]] = {
        "batch product alone": lambda: torch.mm(x, a.T),
        "+ two mv": lambda: (torch.mm(x, a.T), two()),
        "+ blocked": lambda: (torch.mm(x, a.T), blocked()),
        "+ compiled": lambda: (torch.mm(x, a.T), compiled(q, u, v)),
        "two mv alone, A⁻¹ in cache": two,
    }
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            t = time.perf_counter()
            fn()
            fn()
            samples[name].append((time.perf_counter() - t) / 2)
    base = samples["batch product alone"]
    out = {"batch product alone": statistics.median(base)}
    for name in list(fns)[1:4]:
        out[name] = statistics.median(t - b for t, b in zip(samples[name], base, strict=True))
    out["two mv alone, A⁻¹ in cache"] = statistics.median(samples["two mv alone, A⁻¹ in cache"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/p4inv_floor"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(BATCH, args.n)
    steps = {name: make_step(factory(args.n), x) for name, factory in FACTORIES.items()}
    samples = interleaved(steps, args.rounds, args.block)
    medians = {name: statistics.median(v) for name, v in samples.items()}
    paired = {name: paired_ratio(samples, name) for name in samples}
    phases = {name: phase_times(FACTORIES[name](args.n), x, 400) for name in ("nn.Linear", "P4Inv")}
    passes = inverse_passes(args.n, max(10, args.rounds // 2))
    command = f"python -m benchmarks.p4.p4inv_floor --n {args.n} --rounds {args.rounds} --block {args.block}"
    lines = [
        "# P⁴Inv's step against the cheapest eager step of the same math",
        "",
        f"Command: `{command}`  ",
        f"torch {torch.__version__}, {platform.machine()}, 1 thread, n = {args.n}, batch {BATCH}, float32, "
        "Adam, input needing no grad; blocks interleaved round-robin, ratio = median over rounds of the ratio "
        "to the `nn.Linear` block of the same round (quartiles in brackets). "
        "No merge amortisation here (see `p4inv_step.md`).",
        "",
        "| step | ms (median) | / nn.Linear (quartiles) |",
        "|---|---|---|",
        *(
            f"| {name} | {medians[name] * 1e3:.3f} | {med:.3f} ({q1:.3f}–{q3:.3f}) |"
            for name, (med, q1, q3) in paired.items()
        ),
        "",
        "Phases of one step (ms, medians of 300 consecutive steps each, not interleaved):",
        "",
        "| step | " + " | ".join(PHASES) + " | sum |",
        "|---|" + "---|" * (len(PHASES) + 1),
        *(
            f"| {name} | "
            + " | ".join(f"{p[k] * 1e3:.3f}" for k in PHASES)
            + f" | {sum(p.values()) * 1e3:.3f} |"
            for name, p in phases.items()
        ),
        "",
        f"The two passes over A⁻¹ (n = {args.n}; µs, medians of per-round paired differences to the batch "
        f"product `x Aᵀ` alone, which took {passes['batch product alone'] * 1e3:.3f} ms):",
        "",
        "| A⁻¹u and A⁻ᵀv made by | extra µs |",
        "|---|---|",
        *(f"| {name} | {t * 1e6:.0f} |" for name, t in passes.items() if name != "batch product alone"),
        "",
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "command": command,
                "samples_s": samples,
                "paired_ratio": paired,
                "phases_s": phases,
                "inverse_passes_s": passes,
            },
            indent=1,
        )
    )
    print(text)


if __name__ == "__main__":
    main()
