"""Import boundary: the core needs torch only, and nothing changes a user's matplotlib backend."""

import subprocess
import sys

HEAVY = ("pytorch_lightning", "lightning", "matplotlib", "torchmetrics", "openmm", "mdtraj")


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stdout


def test_core_imports_load_torch_only():
    out = run(
        "import sys\nimport p4lightning, p4lightning.p4\nfrom p4lightning import P4Inv, MergeSchedule\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_lightning_names_load_lazily_and_plots_keep_the_backend():
    out = run(
        "import matplotlib\nmatplotlib.use('svg')\nimport p4lightning\n"
        "from p4lightning import P4MergeCallback\nimport p4lightning.plots.molecules, p4lightning.plots.linear\n"
        "import p4lightning.callbacks, p4lightning.experiments.toy2d\n"
        "print(P4MergeCallback.__name__, matplotlib.get_backend())"
    )
    assert out.strip() == "P4MergeCallback svg"
