"""The ``p4lightning`` console script: dispatch to LightningCLI (``fit``/``validate``/``test``) or to ``sample`` /
``evaluate``."""

from __future__ import annotations

import os
import sys

from p4lightning.cli.common import PROG, UsageError, quiet
from p4lightning.cli.evaluate import evaluate_main
from p4lightning.cli.lightning import SUBCOMMANDS, USAGE, run_lightning
from p4lightning.cli.sample import sample_main

__all__ = ["main"]


def _ensure_single_openmp_thread() -> None:
    """Re-execute this process with ``OMP_NUM_THREADS=1`` unless the caller chose a thread count.

    torch's OpenMP threads and the OpenMM workers share the cores. Measured (``docs/benchmarks/thread_policy.md``): one
    torch thread is as fast as the default two for the Boltzmann generator's small operations and cannot spin
    against busy workers, while ``OMP_WAIT_POLICY=PASSIVE`` made every step 2× slower (thread wake-ups). OpenMP
    reads the variable when torch loads, which has already happened here, so this needs a fresh process.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "p4lightning.cli", *sys.argv[1:]])



def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``p4lightning`` console script (``argv=None``) or of an in-process call (tests)."""
    if argv is None:  # the console script: one OpenMP thread first; explicit calls are left as they are
        _ensure_single_openmp_thread()
    args = sys.argv[1:] if argv is None else argv
    quiet()
    if not args or not (args[0] in SUBCOMMANDS or args[0].startswith("-")):
        choices = f"(choose from {', '.join(SUBCOMMANDS)}; {PROG} --help)"
        if not args:
            print(f"usage: {USAGE}\n{PROG}: error: a subcommand is required {choices}", file=sys.stderr)
        else:
            print(f"{PROG}: error: invalid choice: {args[0]!r} {choices}", file=sys.stderr)
        raise SystemExit(2)
    commands = {"sample": sample_main, "evaluate": evaluate_main}
    if args and args[0] in commands:
        try:
            commands[args[0]](args[1:])
        except UsageError as err:
            print(f"p4lightning {args[0]}: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as err:  # a full disk, a folder removed under us: the outputs are left as they were
            if os.environ.get("P4LIGHTNING_DEBUG"):
                raise
            print(f"p4lightning {args[0]}: error: {err} (--out is left as it was)", file=sys.stderr)
            raise SystemExit(1) from None
        return
    run_lightning(argv)  # None: LightningCLI reads sys.argv itself
