"""The bare install matches the import boundary: the wheel's only unconditional requirements are torch and numpy,
and in a fresh virtual environment holding nothing else (torch and numpy linked in, no Lightning, OpenMM, mdtraj,
matplotlib or zuko) the P⁴ core trains: P4Inv and MergeSchedule in a plain loop."""

import email
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import numpy
import torch

ROOT = Path(__file__).parents[1]

SCRIPT = """
import importlib.util, torch
from p4lightning import P4Inv
from p4lightning.p4 import MergeSchedule
for name in ("pytorch_lightning", "lightning_fabric", "openmm", "mdtraj", "matplotlib", "zuko"):
    assert importlib.util.find_spec(name) is None, name + " is installed: the venv is not bare"
torch.manual_seed(0)
layer = P4Inv(4, init="reverse", bias=True)
target = torch.randn(4, 4, dtype=torch.float64) + 4 * torch.eye(4, dtype=torch.float64)
layer = layer.double()
schedule = MergeSchedule(every_n_steps=5)
opt = torch.optim.SGD(layer.parameters(), lr=1e-2)
for step in range(1, 41):
    x = torch.randn(32, 4, dtype=torch.float64)
    loss = ((layer(x)[0] - x @ target.T) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    schedule.step(layer, step, opt)
x = torch.randn(8, 4, dtype=torch.float64)
y, ladj = layer(x)
assert torch.allclose(layer.inverse(y)[0], x, atol=1e-10)
print("merges", schedule.rounds, "loss", float(loss))
"""


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = email.message_from_bytes(zf.read(meta))
    return message.get_all("Requires-Dist") or []


def test_the_bare_package_needs_torch_and_numpy_and_its_core_runs_alone(tmp_path):
    import shutil

    src = tmp_path / "src"  # a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    shutil.copytree(ROOT / "p4lightning", src / "p4lightning", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("p4lightning-*.whl")
    unconditional = sorted(r.split(">")[0].split("=")[0].strip() for r in _requirements(wheel) if "extra ==" not in r)
    assert unconditional == ["numpy", "torch"]
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    # torch and numpy (with torch's own runtime imports) from this environment, by a path entry to a folder of links:
    # installing them from the registry would take minutes
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    source = Path(torch.__file__).parents[1]
    for name in ("torch", "torchgen", "functorch", "numpy", "numpy.libs", "typing_extensions.py", "sympy", "mpmath",
                 "filelock", "fsspec", "jinja2", "markupsafe", "networkx"):  # fmt: skip
        if (source / name).exists():
            (shelf / name).symlink_to(source / name)
    for dist in source.glob("*.dist-info"):  # torch's and numpy's records (what `pip list` shows)
        if dist.name.lower().startswith(("torch-", "numpy-")):
            (shelf / dist.name).symlink_to(dist)
    (site / "shelf.pth").write_text(str(shelf) + "\n")
    assert Path(numpy.__file__).parents[1] == source
    # --no-deps: its requirements are the two checked above, both on the shelf (resolving torch's own, e.g. a newer
    # setuptools than a fresh venv's, is pip's business, not this package's)
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    ran = subprocess.run([str(python), "-c", SCRIPT], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("merges 8 ")
