"""The documentation site: every tutorial runs as written, and the site builds with ``mkdocs build --strict``
with the API reference's docstrings rendered (math, cross-references, doctest examples)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))
ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"}


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def test_every_tutorial_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    assert len(TUTORIALS) >= 4
    for page in TUTORIALS:
        assert f"tutorials/{page.name}" in config, f"{page.name} is not in mkdocs.yml's nav"


@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(page, tmp_path):
    """All Python blocks of the page, in order, as one fresh script run from the repository root."""
    blocks = _python_blocks(page)
    assert blocks, f"{page.name} has no python blocks"
    script = tmp_path / f"{page.stem}.py"
    script.write_text("\n\n".join(blocks))
    out = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV
    )
    assert out.returncode == 0, out.stderr[-3000:]


def _rst_roles():
    spec = importlib.util.spec_from_file_location("rst_roles", ROOT / "docs" / "_ext" / "rst_roles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rest_docstrings_become_markdown():
    convert = _rst_roles().rst_to_markdown
    resolve = {"P4Inv": "p4lightning.p4.inv.P4Inv"}.get
    text = (
        "With :math:`G = 1\n    + v` and :class:`~p4lightning.p4.inv.P4Inv`, :class:`ValueError`, ``x``:\n\n"
        ".. math::\n    a = b\n\n    c = d\n\nRun::\n\n    p4lightning fit\n\n"
        "Args:\n    a, b: the inputs\n        (two lines).\n\nExample:\n    >>> 1\n    1"
    )
    md = convert(text, lambda name: resolve(name.rsplit(".", 1)[-1]))
    assert "$G = 1 + v$" in md
    assert '<autoref identifier="p4lightning.p4.inv.P4Inv" optional><code>P4Inv</code></autoref>' in md
    assert "`ValueError`" in md and "``x``" in md
    assert "$$\na = b\n\nc = d\n$$" in md
    assert "Run:\n\n```\np4lightning fit\n```" in md
    assert "    a: the inputs\n        (two lines).\n    b: the inputs\n        (two lines)." in md
    assert "Examples:\n    >>> 1" in md


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("site")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-5000:]
    assert "WARNING" not in out.stderr, out.stderr[-5000:]
    return out_dir


def test_site_has_the_pages(site):
    for page in (
        "index.html",
        "results/index.html",  # docs/README.md, the index of the results
        "metrics/index.html",
        "bg_demo/index.html",
        "benchmarks/drift/index.html",
        *(f"tutorials/{p.stem}/index.html" for p in TUTORIALS),
        *(f"api/{p.stem}/index.html" for p in (ROOT / "docs" / "api").glob("*.md")),
        "javascripts/mathjax/tex-chtml-full.js",  # MathJax ships with the site: pages render offline
    ):
        assert (site / page).is_file(), page
    assert not (site / "_ext").exists() and not (site / "README").exists()


def test_api_pages_render_the_docstrings(site):
    p4 = (site / "api" / "p4" / "index.html").read_text()
    assert "Forward, inverse, log-det and merge cost" in p4  # p4lightning.p4.inv's docstring
    assert r'<span class="arithmatex">\(\mathbf{y} = \tilde{\mathbf{A}}\mathbf{x} + \mathbf{b}\)</span>' in p4
    assert '<div class="arithmatex">\\[\n\\tilde{\\mathbf{A}}^{-1} = ' in p4  # a `.. math::` block
    assert 'href="#p4lightning.p4.inv.P4Inv.correct_inverse"' in p4  # :meth:`P4Inv.correct_inverse`
    assert '<span class="gp">&gt;&gt;&gt; </span>' in p4  # the doctest examples, as highlighted code
    for page in (site / "api").glob("*/index.html"):
        html = page.read_text()
        leftover = re.findall(r":(?:math|class|func|meth|attr|data|mod|sup):`|\.\. math::", html)
        assert not leftover, f"{page.parent.name}: reST left in the page: {leftover[:3]}"
