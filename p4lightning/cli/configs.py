r"""Configs composed from bases: a YAML config names the configs it builds on with a top-level ``extends:``.

``configs/bg/spline_mask_ml.yaml`` holds only what differs from ``spline_p4inv_ml.yaml``, which holds only what
differs from ``spline_base.yaml``, and so on down to ``base.yaml``. ``p4lightning fit --config FILE`` reads the
chain as if every base had been given first as its own ``--config`` (LightningCLI merges several config files:
mappings key by key, lists such as ``trainer.callbacks`` replaced as a whole), so a command names one file and
``--print_config`` shows the merged result. ``extends`` is a path, or a list of paths, relative to the file that
names it; a chain that returns to a file is refused.

:func:`compose_config` gives the merged mapping for scripts that derive run configs from a file
(``experiments.mixing_study``, ``experiments.merge_policy``); the CLI itself leaves the merging to LightningCLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from p4lightning._validation import ConfigurationError, InputFileError

__all__ = ["EXTENDS", "compose_config", "config_chain", "expand_config_args", "merge_configs"]

#: The top-level key naming a config's bases.
EXTENDS = "extends"


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputFileError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputFileError(f"config {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputFileError(f"config {path} must be a mapping at the top level; got {type(data).__name__}")
    return data


def config_chain(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """``[(file, its mapping without extends), ...]``, bases first, ``path`` last (a base named twice is read
    once, at its first place)."""
    path = Path(path)
    key = path.resolve()
    if key in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, key))
        raise ConfigurationError(f"config {path} extends itself: {chain}")
    data = _read(path)
    bases = data.pop(EXTENDS, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigurationError(f"config {path}: {EXTENDS} must be a path or a list of paths; got {bases!r}")
    chain: list[tuple[Path, dict[str, Any]]] = []
    for base in bases:
        for item in config_chain(path.parent / base, (*_seen, key)):
            if all(item[0].resolve() != done.resolve() for done, _ in chain):
                chain.append(item)
    chain.append((path, data))
    return chain


def merge_configs(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` on ``base``: mappings merged key by key (recursively), anything else (lists included) replaced,
    as LightningCLI merges two ``--config`` files. Neither argument is changed."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = value
    return out


def compose_config(path: str | Path) -> dict[str, Any]:
    """The merged mapping of ``path`` and its bases (what ``p4lightning fit --config path`` is configured with)."""
    merged: dict[str, Any] = {}
    for _, data in config_chain(path):
        merged = merge_configs(merged, data)
    return merged


def expand_config_args(args: Sequence[str]) -> list[str]:
    """Command-line arguments with every ``--config FILE`` (or ``-c FILE``) whose file extends others replaced by one ``--config``
    per file of its chain, bases first, each as its YAML text without ``extends`` (LightningCLI takes a config
    string where it takes a config path)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        path = Path(value)
        if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file() or EXTENDS not in _read(path):
            out += ["--config", value]
            continue
        for _, data in config_chain(path):
            out += ["--config", yaml.safe_dump(data, sort_keys=False)]
    return out
