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


#: The layers, each importing only the ones before it (ARCHITECTURE.md's proposal with metrics and plots moved
#: below models: the model's validation calls the metric definitions and the one draw of samples).
LAYERS = ["_validation", "_io", "bijection", "p4", "flows", "systems", "simulation", "data", "metrics", "plots", "models",
          "callbacks", "cli", "experiments", "testing"]  # fmt: skip


def _imports(path):
    """``(module-level imports, all imports)`` of p4lightning modules in the file at ``path``."""
    import ast

    tree = ast.parse(path.read_text())
    top, every = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("p4lightning"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("p4lightning")]
        every.update(names)
        if node in tree.body:
            top.update(names)
    return top, every


def test_layers_import_only_the_layers_before_them_and_modules_form_no_cycle():
    from pathlib import Path

    root = Path(__file__).parents[1] / "p4lightning"
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    layer = {m: (m.split(".")[1] if m.count(".") else "") for m in modules}
    upward, graph = [], {}
    for mod, path in modules.items():
        top, every = _imports(path)
        for name in every:
            target = next((m for m in (name, name.rsplit(".", 1)[0]) if m in modules), None)
            if target is None or not layer[mod] or not layer[target] or layer[target] == layer[mod]:
                continue
            if LAYERS.index(layer[target]) > LAYERS.index(layer[mod]):
                upward.append(f"{mod} imports {target}")
        graph[mod] = {t for n in top for t in (n, n.rsplit(".", 1)[0]) if t in modules and t != mod}
    assert not upward, upward
    # no cycle among module-level imports (a package's __init__ importing its own modules is not one)
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in graph[m]:
            if m.startswith(t + ".") or t.startswith(m + "."):
                continue
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, m, t]))
            if t not in state:
                visit(t, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_the_md_command_and_simulation_load_neither_lightning_nor_matplotlib():
    out = run(
        "import sys\nimport p4lightning.cli.md, p4lightning.simulation\n"
        "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'matplotlib') if m in sys.modules))\n"
        "import p4lightning.cli.app\nfrom p4lightning.cli import main\nprint(callable(main), type(main).__name__)"
    )
    assert out.split("\n")[:2] == ["[]", "True function"]
