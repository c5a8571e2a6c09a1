r"""2D density estimation: P⁴Inv + Bent identity against RealNVP of about the same size (paper Sect. 4.2, Fig. 5).

For each density, both models are trained through ``Trainer.fit`` (P⁴Inv with ``P4MergeCallback``, N = 10,
N_force = 10, N_correct = 50, no penalty), evaluated on 20,000 held-out points, and sampled. Writes
``samples.png`` (rows: densities; columns: data, RealNVP, P⁴Inv), ``results.json`` and ``results.md`` to ``--out``.

The schedule is App. G's by default: Adam, ``--epochs`` 8 of ``--steps-per-epoch`` 20,000 steps, batch 200, lr
5e-3 halved after every epoch; the training set holds one epoch of points (``--n-train``, default steps per epoch
× 200), so an epoch is one pass over it. The P⁴Inv stack trains through regionally compiled flows
(``--compile-region`` layers per compiled region; ``docs/benchmarks/toy2d_step.md``).

Every run is a folder ``--runs/<density>_<flow>/`` holding ``last.ckpt`` (written every ``--checkpoint-every`` steps,
atomically, with the training time so far) and, once finished, ``result.json``. Running the command again resumes unfinished runs exactly
(model, Adam, learning-rate schedule, merge schedule and data order are in the checkpoint) and reuses finished
ones, so a study that outlasts its process is finished by repeating the command. Several processes may run it at once
(one core each): a run folder being trained by one is skipped by the others (``.lock``). ``--out`` is written from
the runs finished when a process ends (a density's row appears once both of its flows have finished).

Paper length: ``python -m p4lightning.experiments.toy2d --runs checkpoints/toy2d --out docs/toy2d/paper_length``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure  # no pyplot: the user's backend is never touched

from p4lightning._io import check_output_dir, folder_lock, save_figure, write_text
from p4lightning._validation import ConfigurationError, check_nonnegative_int, check_positive_int
from p4lightning.callbacks.checkpoint import FinalStepCheckpoint
from p4lightning.callbacks.merge import P4MergeCallback
from p4lightning.data.toy2d import TOY_DENSITIES, Toy2DDataModule, sample_toy
from p4lightning.models.density import DensityEstimator

__all__ = ["Schedule", "TrainClock", "main", "train_density"]

FLOWS = ("realnvp", "p4inv")


@dataclass(frozen=True)
class Schedule:
    """The training schedule of one run (App. G: 8 epochs of 20,000 steps, batch 200, lr 5e-3 halved per epoch)."""

    epochs: int = 8
    steps_per_epoch: int = 20_000
    n_train: int | None = None  # None: one epoch of points, steps_per_epoch × batch_size
    batch_size: int = 200
    lr: float = 5e-3

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def train_points(self) -> int:
        return self.n_train or self.steps_per_epoch * self.batch_size


class TrainClock(pl.Callback):
    """Training wall time that survives a resume: the seconds up to each checkpoint are saved in it (the callback's
    ``state_dict``), so a resumed run adds its own time to the checkpointed one, not the time lost after it.

    ``from_step`` is the step the clock started at: 0, unless the run resumed from a checkpoint that holds no clock
    state (then the seconds cover only the steps after it, and the result says so)."""

    def __init__(self) -> None:
        self.offset, self.start, self.from_step = 0.0, time.perf_counter(), 0
        self._loaded = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()
        if not self._loaded:
            self.from_step = trainer.global_step

    @property
    def seconds(self) -> float:
        return self.offset + time.perf_counter() - self.start

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds, "from_step": self.from_step}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.offset, self._loaded = float(state_dict["seconds"]), True
        self.from_step = int(state_dict.get("from_step", 0))


def _run_config(
    density: str, flow: str, schedule: Schedule, seed: int, n_blocks: int | None
) -> dict[str, object]:
    return {"density": density, "flow": flow, "seed": seed, "n_blocks": n_blocks, **schedule.__dict__}


def train_density(
    density: str,
    flow: str,
    schedule: Schedule,
    run_dir: Path,
    seed: int = 0,
    n_test: int = 20_000,
    compile_region: int = 0,
    checkpoint_every: int = 2_000,
    n_blocks: int | None = None,
    callbacks: Sequence[pl.Callback] = (),
) -> dict[str, object]:
    """Train (or resume, or reuse) the run in ``run_dir``; its result, with ``ckpt`` the final checkpoint.

    ``n_blocks``: the flow's blocks (``None``: App. G's 100 and 5); ``callbacks``: more callbacks for the trainer.
    A run stopped before its last step (a signal, an exception in a callback) raises ``RuntimeError`` after its
    last checkpoint; calling again with the same arguments resumes it exactly.
    """
    result_file = run_dir / "result.json"
    config = _run_config(density, flow, schedule, seed, n_blocks)
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        if result["config"] != config:
            raise ConfigurationError(
                f"{run_dir} holds a finished run with another configuration ({result['config']}); "
                f"this command asks for {config}: use another --runs folder"
            )
        return result
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    config_file = run_dir / "config.json"
    if ckpt.is_file():
        saved = json.loads(config_file.read_text()) if config_file.is_file() else None
        if saved != config:
            raise ConfigurationError(
                f"{ckpt} was written by a run configured {saved}; this command asks for {config}: "
                "use another --runs folder"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(config_file, json.dumps(config, indent=1) + "\n")
    pl.seed_everything(seed, verbose=False)
    data = Toy2DDataModule(
        density, n_train=schedule.train_points, n_test=n_test, batch_size=schedule.batch_size, seed=seed
    )
    model = DensityEstimator(
        flow=flow,
        n_blocks=n_blocks,
        lr=schedule.lr,
        lr_halving_steps=schedule.steps_per_epoch,
        compile_region=compile_region if flow == "p4inv" else 0,
    )
    clock = TrainClock()
    callbacks = [
        *callbacks,
        clock,
        FinalStepCheckpoint(
            dirpath=run_dir / "checkpoints", every_n_train_steps=checkpoint_every, save_top_k=0, save_last=True
        )
    ]
    if flow == "p4inv":
        callbacks.append(
            P4MergeCallback(every_n_steps=10, force_every_n_merges=10, correct_every_n_merges=50, seed=seed)
        )
    trainer = pl.Trainer(
        max_steps=schedule.steps,
        max_epochs=-1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt if ckpt.is_file() else None)
    seconds = clock.seconds
    if trainer.global_step < schedule.steps:  # interrupted (e.g. by a signal): resume with the same command
        raise RuntimeError(f"{run_dir}: stopped at step {trainer.global_step} of {schedule.steps}")
    test_ll = float(trainer.test(model, datamodule=data, verbose=False)[0]["test/log_likelihood"])
    result = {
        "density": density,
        "flow": flow,
        "steps": trainer.global_step,
        "test_log_likelihood": test_ll,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 1),
        "train_seconds_from_step": clock.from_step,
        "ckpt": str(ckpt),
        "config": config,
    }
    write_text(result_file, json.dumps(result, indent=1) + "\n")
    return result


def merge_record(ckpt: Path) -> dict[str, int]:
    """The P⁴ merge counts of a run (``P4MergeCallback``'s schedule state in ``ckpt``), summed over its layers:
    rounds, merges accepted, forced (outside the sanity bounds, merged on an N_force round), refused (out of bounds,
    non-finite or inaccurate: nothing merged) and the exact recomputations of A⁻¹ and log|det A| (N_correct)."""
    schedule = torch.load(ckpt, map_location="cpu", weights_only=False)["callbacks"]["P4MergeCallback"]["schedule"]
    totals = schedule["totals"]
    return {
        "rounds": int(schedule["rounds"]),
        "accepted": int(totals["accepted"]),
        "forced": int(totals["forced"]),
        "refused": int(sum(v for k, v in totals.items() if k not in ("accepted", "forced"))),
        "corrections": int(schedule["corrections"]),
    }


def model_samples(ckpt: Path, n: int, seed: int) -> np.ndarray:
    """``n`` samples ``(n, 2)`` of the model in ``ckpt``, drawn from a generator seeded ``seed``."""
    model = DensityEstimator.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    return model.distribution.sample(n, torch.Generator().manual_seed(seed))[0].numpy()


def plot_samples(
    samples: dict[tuple[str, str], np.ndarray],
    results: dict[tuple[str, str], dict[str, object]],
    densities: list[str],
) -> Figure:
    """Rows: densities; columns: held-out data, RealNVP's samples, P⁴Inv's samples (2-D histograms)."""
    fig = Figure(figsize=(9, 3 * len(densities)))
    axes = fig.subplots(len(densities), 3, squeeze=False)
    for row, density in zip(axes, densities, strict=True):
        panels = [("data", samples[(density, "data")], None)] + [
            (name, samples[(density, flow)], results[(density, flow)])
            for name, flow in (("RealNVP", "realnvp"), ("P4Inv", "p4inv"))
        ]
        for ax, (title, pts, run) in zip(row, panels, strict=True):
            ax.hist2d(pts[:, 0], pts[:, 1], bins=120, range=[[-4, 4], [-4, 4]], cmap="magma")
            label = title if run is None else f"{title}: test LL {run['test_log_likelihood']:.3f}"
            ax.set_title(f"{density} — {label}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def write_outputs(
    results: dict[tuple[str, str], dict[str, object]], densities: list[str], out: Path, command: str, seed: int
) -> list[str]:
    """``results.json`` (every finished run), and ``results.md`` + ``samples.png`` for the densities whose two
    runs have finished; returns those densities."""
    out.mkdir(parents=True, exist_ok=True)
    merges = {key: merge_record(Path(str(r["ckpt"]))) for key, r in results.items() if key[1] == "p4inv"}
    rows = [{**r, "merges": merges[key]} if key in merges else r for key, r in results.items()]
    write_text(out / "results.json", json.dumps(rows, indent=1) + "\n")
    complete = [d for d in densities if all((d, f) in results for f in FLOWS)]
    table = [
        f"Command: `{command}`",
        "",
        "| density | steps | RealNVP test LL (nats) | P⁴Inv test LL (nats) | parameters (RNVP / P⁴Inv) | "
        "train time (RNVP / P⁴Inv) | P⁴Inv merges: accepted / forced / refused, corrections |",
        "|---|---|---|---|---|---|---|",
    ]

    def minutes(r: dict[str, object]) -> str:
        from_step = int(r.get("train_seconds_from_step", 0))  # type: ignore[call-overload]
        counted = f" (steps {from_step:,}–{r['steps']:,} only)" if from_step else ""
        return f"{float(r['train_seconds']) / 60:.0f} min{counted}"  # type: ignore[arg-type]

    for d in densities:
        if d not in complete:
            table.append(f"| {d} | – | not finished | not finished | – | – | – |")
            continue
        r, p = results[(d, "realnvp")], results[(d, "p4inv")]
        m = merges[(d, "p4inv")]
        table.append(
            f"| {d} | {p['steps']:,} | {r['test_log_likelihood']:.4f} | {p['test_log_likelihood']:.4f} | "
            f"{r['parameters']} / {p['parameters']} | {minutes(r)} / {minutes(p)} | "
            f"{m['accepted']:,} / {m['forced']:,} / {m['refused']:,}, {m['corrections']:,} |"
        )
    write_text(out / "results.md", "\n".join(table) + "\n")
    if complete:
        samples: dict[tuple[str, str], np.ndarray] = {}
        for d in complete:
            samples[(d, "data")] = sample_toy(d, 20_000, seed + 1).numpy()  # the test set's points
            for f in FLOWS:
                samples[(d, f)] = model_samples(Path(str(results[(d, f)]["ckpt"])), 20_000, seed)
        save_figure(plot_samples(samples, results, complete), out / "samples.png", dpi=100)
    return complete


def main(argv: list[str] | None = None) -> dict[tuple[str, str], dict[str, object]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--densities", nargs="+", default=list(TOY_DENSITIES), choices=list(TOY_DENSITIES))
    parser.add_argument("--flows", nargs="+", default=list(FLOWS), choices=list(FLOWS))
    parser.add_argument("--epochs", type=int, default=8, help="epochs; lr halved after each (paper: 8)")
    parser.add_argument("--steps-per-epoch", type=int, default=20_000, help="paper: 20,000")
    parser.add_argument("--n-train", type=int, default=None, help="training points (default: one epoch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=20_000)
    parser.add_argument("--compile-region", type=int, default=20,
                        help="P⁴Inv: layers per compiled region (0: eager)")  # fmt: skip
    parser.add_argument("--checkpoint-every", type=int, default=2_000, help="steps between last.ckpt writes")
    parser.add_argument("--runs", type=Path, default=Path("runs/toy2d"), help="one folder per run (resumable)")
    parser.add_argument("--out", type=Path, default=Path("docs/toy2d/paper_length"))
    args = parser.parse_args(argv)
    try:
        schedule = Schedule(
            epochs=check_positive_int(args.epochs, "--epochs"),
            steps_per_epoch=check_positive_int(args.steps_per_epoch, "--steps-per-epoch"),
            n_train=None if args.n_train is None else check_positive_int(args.n_train, "--n-train"),
        )
        check_positive_int(args.n_test, "--n-test")
        check_nonnegative_int(args.compile_region, "--compile-region")
        check_positive_int(args.checkpoint_every, "--checkpoint-every")
        check_output_dir(args.out)
        check_output_dir(args.runs)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    torch.set_num_threads(1)
    results: dict[tuple[str, str], dict[str, object]] = {}
    for density in args.densities:
        for flow in args.flows:
            run_dir = args.runs / f"{density}_{flow}"
            with folder_lock(run_dir) as held:
                if not held:  # another process of this command is training it
                    print(f"{density:12s} {flow:8s} is being trained by another process: skipped", flush=True)
                    continue
                r = train_density(
                    density,
                    flow,
                    schedule,
                    run_dir,
                    seed=args.seed,
                    n_test=args.n_test,
                    compile_region=args.compile_region,
                    checkpoint_every=args.checkpoint_every,
                )
            results[(density, flow)] = r
            print(
                f"{density:12s} {flow:8s} test log-likelihood {r['test_log_likelihood']:.4f} "
                f"({r['parameters']} parameters, {r['steps']} steps, {r['train_seconds']:.0f} s)",
                flush=True,
            )
    command = "python -m p4lightning.experiments.toy2d " + " ".join(sys.argv[1:] if argv is None else argv)
    complete = write_outputs(results, args.densities, args.out, command.strip(), args.seed)
    print((args.out / "results.md").read_text())
    print(f"wrote {args.out}/results.json, results.md" + (", samples.png" if complete else ""))
    return results


if __name__ == "__main__":
    main()
