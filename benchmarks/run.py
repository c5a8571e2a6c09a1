"""Run the benchmarks listed in ``benchmarks/manifest.yaml``, list them, or write their index.

    python benchmarks/run.py                  # every entry that needs no GPU, in manifest order (make bench)
    python benchmarks/run.py --only NAME ...  # these entries (GPU ones too, where a CUDA device is)
    python benchmarks/run.py --list           # name, GPU?, minutes, exact command
    python benchmarks/run.py --dry-run        # the commands, not run
    python benchmarks/run.py --write-index    # rewrite the index table of docs/benchmarks/README.md

Every command runs from the repository root as ``python -m benchmarks.<topic>.<script> ARGS``.
"""

from __future__ import annotations

import argparse
import ast
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "benchmarks" / "manifest.yaml"
INDEX = ROOT / "docs" / "benchmarks" / "README.md"
BEGIN = "<!-- benchmark index: generated from benchmarks/manifest.yaml by `python benchmarks/run.py --write-index` -->"
END = "<!-- end of benchmark index -->"
FIELDS = {"script", "args", "outputs", "needs_gpu", "requires", "minutes", "what"}


@dataclass(frozen=True)
class Entry:
    """One result set: ``python -m <module> <args>`` writes ``outputs`` (paths relative to the root)."""

    name: str
    script: str
    args: str
    outputs: tuple[str, ...]
    minutes: float
    what: str
    needs_gpu: bool = False
    requires: tuple[str, ...] = field(default=())

    @property
    def module(self) -> str:
        return Path(self.script).with_suffix("").as_posix().replace("/", ".")

    @property
    def command(self) -> str:
        """The exact command, as documented and run (``python`` = the interpreter running this file)."""
        return f"python -m {self.module} {self.args}".strip()

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *shlex.split(self.args)]


def load(path: Path = MANIFEST) -> dict[str, Entry]:
    """The manifest's entries by name, in file order; unknown or missing fields raise naming the entry."""
    import yaml

    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of entry name -> fields; got {type(raw).__name__}")
    entries = {}
    for name, spec in raw.items():
        unknown = set(spec) - FIELDS
        missing = {"script", "args", "outputs", "minutes", "what"} - set(spec)
        if unknown or missing:
            raise ValueError(
                f"{path}: entry {name!r}: unknown fields {sorted(unknown)}, missing {sorted(missing)}"
            )
        entries[name] = Entry(
            name=name, script=spec["script"], args=spec["args"], outputs=tuple(spec["outputs"]),
            minutes=float(spec["minutes"]), what=spec["what"], needs_gpu=bool(spec.get("needs_gpu", False)),
            requires=tuple(spec.get("requires", ())),
        )  # fmt: skip
    return entries


def default_out(script: Path) -> str:
    """The ``default=Path("...")`` of the script's ``--out`` argument, read from its source."""
    for node in ast.walk(ast.parse(script.read_text())):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "add_argument"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value == "--out"
        ):
            for kw in node.keywords:
                if kw.arg == "default" and isinstance(kw.value, ast.Call) and kw.value.args:
                    return ast.literal_eval(kw.value.args[0])
    raise ValueError(f"{script}: no --out argument with a default Path(...)")


def written_outputs(entry: Entry) -> list[str]:
    """What the command writes, by the benchmarks' convention: ``--out X`` (or the script's default) is
    ``X.md`` + ``X.json`` (``write_report``), or ``X`` itself when it names a file with a suffix."""
    argv = shlex.split(entry.args)
    out = argv[argv.index("--out") + 1] if "--out" in argv else default_out(ROOT / entry.script)
    path = Path(out)
    return (
        [out] if path.suffix else [path.with_suffix(".md").as_posix(), path.with_suffix(".json").as_posix()]
    )


def index_markdown(entries: dict[str, Entry]) -> str:
    """The index table: one row per entry."""
    lines = [
        "| result | command | minutes | `make bench` | what |",
        "|---|---|---|---|---|",
    ]
    for e in entries.values():
        files = ", ".join(f"`{Path(o).relative_to('docs/benchmarks').as_posix()}`" for o in e.outputs)
        make = "no: needs a CUDA device" if e.needs_gpu else "yes"
        if e.requires:
            make += f" (installs {', '.join(e.requires)})"
        lines.append(f"| {files} | `{e.command}` | {e.minutes:g} | {make} | {e.what} |")
    return "\n".join(lines) + "\n"


def with_index(text: str, table: str) -> str:
    """``text`` with the part between the two markers replaced by ``table``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{INDEX}: expected the two marker lines once each, in order:\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run these entries (default: all CPU entries)"
    )
    parser.add_argument("--list", action="store_true", help="list the entries and their commands")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.add_argument(
        "--write-index", action="store_true", help=f"rewrite the index in {INDEX.relative_to(ROOT)}"
    )
    args = parser.parse_args()
    entries = load()
    if args.list:
        for e in entries.values():
            print(f"{e.name:28s} {'GPU' if e.needs_gpu else 'CPU'} {e.minutes:5g} min  {e.command}")
        return
    if args.write_index:
        INDEX.write_text(with_index(INDEX.read_text(), index_markdown(entries)))
        print(f"wrote the index of {INDEX.relative_to(ROOT)}")
        return
    unknown = set(args.only or ()) - set(entries)
    if unknown:
        parser.error(f"--only: unknown entries {sorted(unknown)}; known: {', '.join(entries)}")
    chosen = (
        [entries[n] for n in args.only] if args.only else [e for e in entries.values() if not e.needs_gpu]
    )
    for e in chosen:
        print(f"== {e.name}: {e.command}", flush=True)
        if args.dry_run:
            continue
        if e.requires:
            subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *e.requires], check=True
            )
        subprocess.run(e.argv(), cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
