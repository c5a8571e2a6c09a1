"""``p4lightning fit|validate|test``: LightningCLI with one-line errors, atomic checkpoints and every subcommand
in its usage."""

from __future__ import annotations

import sys
import warnings
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from p4lightning.cli.common import PROG, fail, one_line

__all__ = ["DESCRIPTION", "SUBCOMMANDS", "USAGE", "P4LightningCLI", "run_lightning"]

SUBCOMMANDS = ("fit", "validate", "test", "sample", "evaluate")
USAGE = f"{PROG} [-h] {{{','.join(SUBCOMMANDS)}}} ..."
DESCRIPTION = (
    "Train and score P4 models and Boltzmann generators. Sub-commands: fit, validate, test (LightningCLI, from a "
    "config: 'p4lightning fit --config configs/bg/demo.yaml'); sample and evaluate (a Boltzmann-generator "
    "checkpoint: 'p4lightning sample --help', 'p4lightning evaluate --help')."
)


class _ArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with one-line errors: the message and where to find help, not a 50-line usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        print(f"{prog}: error: {one_line(message)} (options: {prog} --help)", file=sys.stderr)
        raise SystemExit(2)




class P4LightningCLI(LightningCLI):
    """``LightningCLI`` as ``p4lightning``: named so in usage, without ``predict`` (no model has a predict step),
    and with configuration and data errors — a bad value, a missing or corrupt file — as one line, exit status 2.
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        commands = LightningCLI.subcommands()
        commands.pop("predict")
        return commands

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError) as err:  # the constructors' input checks
            fail(self.subcommand, err)

    def _add_subcommands(self, parser: LightningArgumentParser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        # the usage names every subcommand, sample and evaluate (handled in main) included
        if parser._subcommands_action is not None:
            parser._subcommands_action.metavar = "{" + ",".join(SUBCOMMANDS) + "}"

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        from p4lightning.callbacks.checkpoint import use_atomic_checkpoints

        trainer = super().instantiate_trainer(**kwargs)
        use_atomic_checkpoints(trainer)  # a full disk or a kill never leaves a truncated checkpoint
        return trainer

    def _parse_ckpt_path(self) -> None:
        from p4lightning._io import load_checkpoint
        from p4lightning._validation import InputFileError

        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if isinstance(ckpt_path, str) and ckpt_path not in ("last", "best", "hpc", "registry"):
            try:  # a missing or garbage file named in one line, before Lightning reads it (with torch's advice)
                load_checkpoint(ckpt_path)
            except InputFileError as err:
                fail(subcommand, err)
        super()._parse_ckpt_path()

    def _run_subcommand(self, subcommand: str) -> None:
        from p4lightning._validation import ConfigurationError, InputFileError

        try:
            super()._run_subcommand(subcommand)
        except (InputFileError, FileNotFoundError, ConfigurationError) as err:  # found broken in setup()
            fail(subcommand, err)




def run_lightning(argv: list[str] | None) -> None:
    """Run ``fit``/``validate``/``test`` on ``argv`` (``None``: ``sys.argv[1:]``); a ``--config`` that
    ``extends:`` others is read with its bases (:mod:`p4lightning.cli.configs`)."""
    from p4lightning._validation import ConfigurationError, InputFileError
    from p4lightning.cli.configs import expand_config_args

    args = sys.argv[1:] if argv is None else argv
    try:
        args = expand_config_args(args)
    except (InputFileError, ConfigurationError) as err:
        fail(args[0] if args and not args[0].startswith("-") else None, err)
    with warnings.catch_warnings():
        # args are sys.argv's own, with extended configs expanded: not the mix of both Lightning warns about
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        P4LightningCLI(
            pl.LightningModule,
            pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            save_config_kwargs={"overwrite": True},
            parser_class=_ArgumentParser,
            parser_kwargs={"prog": PROG, "description": DESCRIPTION},
        )
