"""The benchmark manifest is the one source: every script exists, every output is what its command writes,
the index in docs/benchmarks/README.md is the generated one, and `make bench` runs the manifest."""

import shlex
from pathlib import Path

import pytest

from benchmarks import run

ROOT = Path(__file__).parents[1]
ENTRIES = run.load()


def test_manifest_lists_every_benchmark_script_and_every_script_exists():
    scripts = {e.script for e in ENTRIES.values()}
    for script in scripts:
        assert (ROOT / script).is_file(), script
    on_disk = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "benchmarks").glob("*/*.py")
        if p.name != "__init__.py" and not p.name.startswith("_")
    }
    assert on_disk == scripts  # no script left out of the manifest
    assert not [p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name not in {"__init__.py", "_common.py", "run.py"}]


@pytest.mark.parametrize("name", list(ENTRIES))
def test_each_entry_lists_exactly_what_its_command_writes(name):
    entry = ENTRIES[name]
    assert list(entry.outputs) == run.written_outputs(entry)
    assert all(o.startswith("docs/benchmarks/") for o in entry.outputs)
    assert entry.command == f"python -m {entry.module} {entry.args}"
    assert entry.argv()[1:] == ["-m", entry.module, *shlex.split(entry.args)]


def test_outputs_are_unique_and_the_gpu_entries_are_flagged():
    outputs = [o for e in ENTRIES.values() for o in e.outputs]
    assert len(outputs) == len(set(outputs))
    assert {n for n, e in ENTRIES.items() if e.needs_gpu} == {"spline_step_gpu", "torch_energy_gpu", "torch_energy_gpu_fit"}


def test_committed_index_is_the_generated_one():
    text = run.INDEX.read_text()
    assert run.with_index(text, run.index_markdown(ENTRIES)) == text, (
        "docs/benchmarks/README.md is out of date: python benchmarks/run.py --write-index"
    )


def test_make_bench_runs_the_manifest():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    assert recipe == ["\t$(PY) benchmarks/run.py"]  # nothing but the runner: the manifest is the one list


def test_run_refuses_unknown_names_and_bad_markers(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["run.py", "--only", "no_such_benchmark"])
    with pytest.raises(SystemExit):
        run.main()
    assert "unknown entries ['no_such_benchmark']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="marker"):
        run.with_index("no markers here", "| table |\n")
