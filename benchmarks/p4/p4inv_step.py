r"""Training-step cost of P⁴Inv against the usual ways to train a square linear layer, as ratios.

One training step = forward + log-det + loss + backward + Adam step, batch 256, float32, one thread,
with the input not requiring grad (the first layer) and requiring grad (a layer inside a deep flow).

* ``nn.Linear``: dense weight, no log-det (the baseline every ratio is taken against);
* ``dense+slogdet``: dense weight, ``torch.linalg.slogdet`` each step (what an invertible dense layer costs);
* ``LU (Glow)``: :math:`\mathbf{W} = \mathbf{P}\mathbf{L}(\mathbf{U} + \operatorname{diag}\mathbf{s})`,
  log-det :math:`\sum\ln|s_i|` (Kingma & Dhariwal 2018);
* ``orthogonal``: ``torch.nn.utils.parametrizations.orthogonal`` (log-det 0);
* ``P4Inv``: the step itself, plus the merge (every 100 steps) and the inverse correction (every 50 merges)
  amortised: ``step + merge / 100 + correction / 5000``;
* ``P4Inv inverse``: the same layer trained through its inverse (Sherman–Morrison) pass, as a flow's
  likelihood is evaluated (no target; reported for context).

The two methods the targets compare are timed a second time *compiled*: each step's forward, log-det and
loss as one ``torch.compile``-d function (``fullgraph=True``, default backend; backward from AOTAutograd,
Adam eager), against the equally compiled ``nn.Linear`` step.

Also: P⁴Inv's inverse pass against its forward pass (no grad; eager and compiled), and the merge and
correction costs.
Each method runs blocks of consecutive steps (caches warm, as in training: one untimed step first, then
~20 ms of ``nn.Linear`` steps and never fewer than ``MIN_BLOCK``); blocks are interleaved round-robin in
one process. Each ratio is the median over rounds of (method's block) / (nn.Linear's block of the same
round): pairing blocks that ran back to back cancels the host's slow speed drifts (a ratio of two whole-phase
medians moves with them). A block is never a single cold step: at n ≥ 1024 a lone step would start with A and
A⁻¹ evicted from cache by the other methods, a situation training never has.

Run: ``python -m benchmarks.p4.p4inv_step --out docs/benchmarks/p4inv_step``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrizations

from benchmarks._common import BATCH, PlainLinear, make_step, paired_ratio
from p4lightning import P4Inv

MERGE_EVERY = 100
CORRECT_EVERY_MERGES = 50
#: Fewest timed steps per block for nn.Linear and P4Inv (the two the targets compare).
MIN_BLOCK = 4
#: The two methods the targets compare, timed in a phase of their own.
TARGET_PAIR = ("nn.Linear", "P4Inv")


class DenseSlogdet(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(n) + 0.01 * torch.randn(n, n))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.weight.T + self.bias, torch.linalg.slogdet(self.weight)[1].expand(x.shape[:-1])


class LULinear(nn.Module):
    """Glow's LU-decomposed invertible linear layer."""

    def __init__(self, n: int) -> None:
        super().__init__()
        w, _ = torch.linalg.qr(torch.randn(n, n))
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.argmax(dim=1))
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(n, n), -1))
        self.register_buffer("eye", torch.eye(n))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        weight = (lower @ upper)[self.perm]
        return x @ weight.T + self.bias, self.log_s.sum().expand(x.shape[:-1])


class Orthogonal(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.linear = parametrizations.orthogonal(nn.Linear(n, n))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x.new_zeros(x.shape[:-1])


class P4InvInverse(nn.Module):
    """P⁴Inv trained through its inverse pass (how a flow's likelihood x -> z is usually evaluated)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.layer = P4Inv(n, check_inputs=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer.inverse(x)


FACTORIES: dict[str, Callable[[int], nn.Module]] = {
    "nn.Linear": PlainLinear,
    "dense+slogdet": DenseSlogdet,
    "LU (Glow)": LULinear,
    "orthogonal": Orthogonal,
    "P4Inv": lambda n: P4Inv(n, check_inputs=False),
    "P4Inv inverse": P4InvInverse,
}
#: Methods whose step gets the amortised merge and correction added.
P4_METHODS = ("P4Inv", "P4Inv inverse")


def compiled_steps(names: tuple[str, ...], n: int, x: torch.Tensor) -> dict[str, Callable[[], None]]:
    """Compiled steps of fresh modules, compiled and warmed up here. Dynamo's cache is reset first: every
    step compiles the same ``objective`` code, and past ``torch._dynamo.config.cache_size_limit`` entries it
    would silently run eager."""
    torch._dynamo.reset()
    steps = {name: make_step(FACTORIES[name](n), x, compiled=True) for name in names}
    for fn in steps.values():
        fn()
        fn()
    return steps


def median_time(fn: Callable[[], None], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_samples(
    steps: dict[str, Callable[[], None]],
    budget_s: float,
    max_rounds: int,
    reference: str = "nn.Linear",
    full_blocks: tuple[str, ...] = (*TARGET_PAIR, *P4_METHODS),
) -> dict[str, list[float]]:
    """Seconds per step of each method, one sample per round: blocks of consecutive steps interleaved
    round-robin, so the blocks of one round ran within a fraction of a second of each other."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    t = time.perf_counter()
    steps[reference]()
    block = max(MIN_BLOCK, int(0.02 / (time.perf_counter() - t)))  # ~20 ms of the reference's steps
    start = time.perf_counter()
    rounds = 0
    while rounds < 3 or (time.perf_counter() - start < budget_s and rounds < max_rounds):
        for name, fn in steps.items():
            reps = block if name in full_blocks else max(1, block // 8)
            fn()  # untimed: brings this method's tensors back into cache after the other methods ran
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            samples[name].append((time.perf_counter() - t) / reps)
        rounds += 1
    return samples


def _phase_record(prefix: str, samples: dict[str, list[float]]) -> dict[str, object]:
    """One timing phase as stored in the JSON: medians, round count and raw samples, keys ``prefix``-ed."""
    return {
        f"{prefix}median_s": {name: statistics.median(v) for name, v in samples.items()},
        f"{prefix}rounds": len(samples["nn.Linear"]),
        f"{prefix}samples_s": samples,
    }


def _inverse_over_forward(
    forward: Callable[[torch.Tensor], object], inverse: Callable[[torch.Tensor], object], x: torch.Tensor
) -> tuple[float, float]:
    """``(forward seconds, inverse / forward)`` without grad: alternating blocks, the ratio paired per round
    (one untimed call of each first, which also compiles a compiled pair)."""
    with torch.no_grad():
        forward(x)
        inverse(x)
        passes = interleaved_samples(
            {"forward": lambda: forward(x), "inverse": lambda: inverse(x)},
            2.0,
            200,
            reference="forward",
            full_blocks=("forward", "inverse"),
        )
    return statistics.median(passes["forward"]), paired_ratio(passes, "inverse", reference="forward")[0]


def bench_size(n: int, budget_s: float, max_rounds: int) -> dict[str, object]:
    torch.manual_seed(0)
    result: dict[str, object] = {"n": n}
    for requires_grad in (False, True):
        x = torch.randn(BATCH, n, requires_grad=requires_grad)
        steps = {name: make_step(factory(n), x) for name, factory in FACTORIES.items()}
        for fn in steps.values():  # warm-up
            fn()
        # Phase 1, the targets: nn.Linear and P4Inv alone. Phase 2, context: all methods. Interleaved
        # with the O(n^3) methods, whose temporaries sweep the caches, P4Inv's step measures 5-25 % slower
        # at n >= 1024 even after a warm-up step; training never interleaves those, so the targets use
        # phase 1 (both phases are reported).
        pair = interleaved_samples({name: steps[name] for name in TARGET_PAIR}, budget_s / 3, max_rounds)
        # Phase 3: the target pair again, each step's forward + loss compiled (see make_step).
        compiled = interleaved_samples(compiled_steps(TARGET_PAIR, n, x), budget_s / 3, max_rounds)
        every = interleaved_samples(steps, budget_s / 3, max_rounds)
        result[f"grad_input={requires_grad}"] = {
            **_phase_record("", every),
            **_phase_record("pair_", pair),
            **_phase_record("compiled_", compiled),
        }

    layer = P4Inv(n, check_inputs=False)
    with torch.no_grad():
        layer.u.normal_(std=0.1 / n**0.5)
    x = torch.randn(BATCH, n)
    reps = max(5, min(200, int(2e8 / (BATCH * n * n))))
    t_fwd, inverse_over_forward = _inverse_over_forward(layer.forward, layer.inverse, x)
    t_inv = t_fwd * inverse_over_forward
    torch._dynamo.reset()
    _, inverse_over_forward_compiled = _inverse_over_forward(
        torch.compile(layer.forward, fullgraph=True), torch.compile(layer.inverse, fullgraph=True), x
    )

    def merge() -> None:
        with torch.no_grad():
            layer.u.normal_(std=0.1 / n**0.5)
        layer.merge(force=True)

    t_merge = median_time(merge, max(3, reps // 4))
    t_correct = median_time(lambda: layer.correct_inverse(), 3)
    result["p4inv_ops_s"] = {"forward": t_fwd, "inverse": t_inv, "merge": t_merge, "correction": t_correct}
    result["inverse_over_forward_compiled"] = inverse_over_forward_compiled
    return result


def amortised_s(result: dict[str, object]) -> float:
    """Merge every MERGE_EVERY steps and correction every CORRECT_EVERY_MERGES merges, per step."""
    ops = result["p4inv_ops_s"]
    return ops["merge"] / MERGE_EVERY + ops["correction"] / (MERGE_EVERY * CORRECT_EVERY_MERGES)


def ratios(result: dict[str, object]) -> dict[str, dict[str, float]]:
    """Per-round paired ratios to nn.Linear (medians); P⁴Inv methods with the amortised merge added."""
    amortised = amortised_s(result)
    out = {}
    for key in ("grad_input=False", "grad_input=True"):
        every = result[key]["samples_s"]
        out[key] = {
            name: paired_ratio(every, name, amortised if name in P4_METHODS else 0.0)[0] for name in every
        }
        out[key]["P4Inv (target phase)"] = paired_ratio(result[key]["pair_samples_s"], "P4Inv", amortised)[0]
        out[key]["P4Inv (compiled)"] = paired_ratio(result[key]["compiled_samples_s"], "P4Inv", amortised)[0]
    return out


def quartiles(result: dict[str, object], key: str, phase: str = "pair_samples_s") -> str:
    _, q1, q3 = paired_ratio(result[key][phase], "P4Inv", amortised_s(result))
    return f"{q1:.2f}–{q3:.2f}"


def write_markdown(results: list[dict[str, object]], out: Path, command: str) -> str:
    lines = [
        "# P⁴Inv training-step benchmark",
        "",
        f"Command: `{command}`  ",
        f"torch {torch.__version__}, {platform.machine()}, 1 thread, batch {BATCH}, float32, Adam. "
        "Blocks of consecutive steps interleaved round-robin; each ratio is the median over rounds of the ratio to the `nn.Linear` block **of the same round** (the ms column is nn.Linear's median). P⁴Inv includes the merge "
        f"every {MERGE_EVERY} steps and the correction every {CORRECT_EVERY_MERGES} merges, amortised. "
        "*Target phase*: nn.Linear and P4Inv interleaved with each other only (a third of the budget); "
        "*compiled*: the same pair with each step's forward, log-det and loss as one `torch.compile`-d function "
        "(`fullgraph=True`, inductor; backward from AOTAutograd; Adam eager), ratio to the compiled nn.Linear "
        "step (a third); the other columns come from the phase interleaving all methods, eager, where the O(n³) "
        "methods' temporaries sweep the caches between P4Inv's blocks.",
        "",
    ]
    for key, title in (
        ("grad_input=False", "input does not require grad"),
        ("grad_input=True", "input requires grad"),
    ):
        lines += [f"## Training step, {title} (time / nn.Linear time)", ""]
        lines += [
            "| n | nn.Linear (ms) | "
            + " | ".join(FACTORIES)
            + " | **P4Inv, target phase** (quartiles) | **P4Inv, compiled** (quartiles) "
            + "| rounds (all / target / compiled) |",
            "|---|---|" + "---|" * (len(FACTORIES) + 3),
        ]
        for r in results:
            rat = ratios(r)[key]
            base_ms = r[key]["median_s"]["nn.Linear"] * 1e3
            lines.append(
                f"| {r['n']} | {base_ms:.3f} | "
                + " | ".join(f"{rat[name]:.2f}" for name in FACTORIES)
                + f" | **{rat['P4Inv (target phase)']:.2f}** ({quartiles(r, key)}) "
                + f"| **{rat['P4Inv (compiled)']:.2f}** ({quartiles(r, key, 'compiled_samples_s')}) "
                + f"| {r[key]['rounds']} / {r[key]['pair_rounds']} / {r[key]['compiled_rounds']} |"
            )
        lines.append("")
    lines += [
        "## P⁴Inv operations",
        "",
        "| n | forward (ms, no grad) | inverse / forward | inverse / forward, compiled | merge (ms) "
        "| merge / step | correction (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ops = r["p4inv_ops_s"]
        step = r["grad_input=False"]["median_s"]["P4Inv"]
        lines.append(
            f"| {r['n']} | {ops['forward'] * 1e3:.3f} | {ops['inverse'] / ops['forward']:.2f} | "
            f"{r['inverse_over_forward_compiled']:.2f} | "
            f"{ops['merge'] * 1e3:.3f} | {ops['merge'] / step:.2f} | {ops['correction'] * 1e3:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds of timing rounds per size and input mode"
    )
    parser.add_argument("--max-rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks/p4inv_step"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = (
        "python -m benchmarks.p4.p4inv_step --sizes "
        + " ".join(map(str, args.sizes))
        + f" --budget {args.budget:g}"
    )
    results = []
    for n in args.sizes:
        results.append(bench_size(n, args.budget, args.max_rounds))
        print(
            f"n={n}: "
            + json.dumps({k: {m: round(v, 2) for m, v in r.items()} for k, r in ratios(results[-1]).items()}),
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "results": results}, indent=1))
    print(write_markdown(results, args.out, command))


if __name__ == "__main__":
    main()
