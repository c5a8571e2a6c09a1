"""Prose that cannot go stale: every config and checkpoint the docs, docstrings, configs and Makefile name exists, and
names of removed options, classes and paths appear nowhere but in the record that explains their removal.

When an option, class or shipped file is removed or renamed, add it to REMOVED (with what replaced it): from then on
a docstring or page that still names it fails here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

#: removed or renamed name -> what replaced it (the message a failure prints)
REMOVED = {
    "p4_float64_bookkeeping": "bookkeeping_dtype",
    "_TorchEnergy": "TorchEnergy (close() is part of it)",
    "lr and energy_lr must be": "check_positive per argument",
    "needs flow='spline'": "AngleSquash: RealNVP takes circular torsions too",
    "the OpenMM energy": "TorchEnergy is the default energy op (OpenMMEnergy the reference)",
    "until 2026-": "history goes to git, not into docstrings",
    "Run of 2026-": "history goes to git: a result's command and machine, not its date",
    "as at issue": "'Adam for-loop': name a variant by what it is, not by when it was measured",
    "as at the issue": "'Adam for-loop': name a variant by what it is, not by when it was measured",
    "p4lightning.cli.main": "p4lightning.cli.app (the p4lightning command; p4lightning.cli.main is its function)",
    "host_scalars": "G is always a 0-d tensor (the host-float path measured 0.93x, quartiles crossing 1.0)",
    "_differentiable_backward": "higher_order=True: the map from plain operations",
    "EpochSeededSampler, MDTrajectoryDataModule": "p4lightning.data.sampler",
    "p4lightning.data.md": "p4lightning.simulation (MD) and p4lightning.cli.md (the p4lightning-md command)",
    "data/md.py": "p4lightning/simulation/ (MD) and p4lightning/cli/md.py (the p4lightning-md command)",
    "systems.langevin": "p4lightning.simulation.langevin",
    "systems/langevin": "p4lightning/simulation/langevin.py",
}
#: files that may name a removed thing: the record of the change
RECORD = {"checkpoints/README.md", "tests/test_prose.py"}


def _texts():
    globs = ["README.md", "Makefile", "docs/**/*.md", "p4lightning/**/*.py", "benchmarks/**/*.py", "configs/**/*.yaml",
             "checkpoints/README.md", "data/README.md", "tests/**/*.py", "mkdocs.yml"]  # fmt: skip
    for pattern in globs:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file() and "site" not in path.relative_to(ROOT).parts[:1]:
                yield path.relative_to(ROOT).as_posix(), path.read_text(errors="replace")


def test_every_named_config_and_checkpoint_exists():
    named = re.compile(r"(?<![\w/.-])((?:configs|checkpoints)/[\w/.-]+\.(?:yaml|ckpt))")
    missing = sorted({(m.group(1), where) for where, text in _texts() for m in named.finditer(text)
                      if "..." not in m.group(1) and not (ROOT / m.group(1)).exists()})  # fmt: skip
    assert not missing, f"named but not in the repository: {missing}"


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_removed_names_are_not_named_outside_the_record(name):
    # the name, not the start of a longer one: p4lightning.data.md is gone, p4lightning.data.md_datamodule is not
    named = re.compile(re.escape(name) + (r"(?!\w)" if name[-1:].isalnum() or name.endswith("_") else ""))
    where = [path for path, text in _texts() if named.search(text) and path not in RECORD]
    assert not where, f"{name!r} was replaced by {REMOVED[name]}, but is still named in {where}"
