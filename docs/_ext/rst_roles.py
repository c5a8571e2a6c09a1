"""A Griffe extension that turns the reST flavour of p4lightning's docstrings into Markdown for mkdocstrings.

The docstrings are Google style (``Args:``, ``Returns:``, ...) with reST inline markup, so that they read well in
``help()`` and in a terminal. Before mkdocstrings renders them, every docstring of the package is rewritten:

* ``:math:`x``` -> ``$x$`` and ``.. math::`` blocks -> ``$$ ... $$`` (rendered by pymdownx.arithmatex + MathJax);
* ``:class:`` / ``:func:`` / ``:meth:`` / ``:attr:`` / ``:data:`` / ``:mod:`` / ``:exc:`` / ``:obj:`` roles ->
  a cross-reference to the object's page when the name resolves inside the package (a leading ``~`` shows the
  last component only), else inline code;
* ``a, b: text`` in ``Args:`` -> one item per name; ``Example:`` -> ``Examples:`` (griffe's doctest section);
* ``#:`` comments above an attribute (Sphinx autodoc's convention) -> its docstring;
* ``:sup:`x``` -> ``<sup>x</sup>``; a paragraph ending in ``::`` followed by an indented literal block -> a
  fenced code block. ``double-backtick`` literals are already Markdown code spans and stay as they are.

Loaded from ``mkdocs.yml`` (``plugins: mkdocstrings: handlers: python: options: extensions``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from griffe import Alias, Attribute, Docstring, Extension, GriffeLoader, Module, Object

_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)$")
_ROLE = re.compile(r":(?P<role>math|sup|sub|class|func|meth|attr|data|mod|exc|obj):`(?P<body>[^`]+)`", re.S)
_LITERAL_INTRO = re.compile(r"^(?P<head>.*?)[ \t]?::[ \t]*$")
_EXAMPLE_TITLE = re.compile(r"^(?P<indent>[ \t]*)Example:[ \t]*$", re.M)
_PARAM_SECTION = re.compile(r"^(?P<indent>[ \t]*)(?:Args|Arguments|Params|Parameters):[ \t]*$")
_MULTI_NAME_ITEM = re.compile(r"^(?P<indent>[ \t]*)(?P<names>\w+(?:[ \t]*,[ \t]*\w+)+):(?P<desc>[ \t].*)$")


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index one past the last line of the indented block that starts at ``start`` (blank lines inside kept)."""
    end = start
    i = start
    while i < len(lines):
        if lines[i].strip():
            if _indent_of(lines[i]) <= indent:
                break
            end = i + 1
        i += 1
    return end


def _rewrite_blocks(text: str) -> str:
    """``.. math::`` directives -> ``$$`` blocks; ``::`` literal blocks -> fenced code blocks."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if match := _MATH_BLOCK.match(line):
            pad, base = match["indent"], _indent_of(line)
            end = _block_end(lines, i + 1, base)
            body = [match["first"]] if match["first"].strip() else []
            body_lines = lines[i + 1 : end]
            inner = min((_indent_of(b) for b in body_lines if b.strip()), default=0)
            body += [b[inner:] if b.strip() else "" for b in body_lines]
            while body and not body[-1].strip():
                body.pop()
            if out and out[-1].strip():
                out.append("")
            out += [f"{pad}$$", *(f"{pad}{b}" if b else "" for b in body), f"{pad}$$"]
            if end < len(lines) and lines[end].strip():
                out.append("")
            i = end
            continue
        match = _LITERAL_INTRO.match(line)
        if match and i + 2 < len(lines) and not lines[i + 1].strip():
            base = _indent_of(line)
            end = _block_end(lines, i + 2, base)
            if end > i + 2:
                pad = line[:base]
                head = match["head"]
                if head.strip():
                    out.append(head + ":")
                    out.append("")
                block = lines[i + 2 : end]
                inner = min(_indent_of(b) for b in block if b.strip())
                out += [f"{pad}```", *(f"{pad}{b[inner:]}" if b.strip() else "" for b in block), f"{pad}```"]
                i = end
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _split_multi_name_params(text: str) -> str:
    """``a, b: description`` in an ``Args:`` section -> one item per name (Google style has one name an item)."""
    lines = text.split("\n")
    out: list[str] = []
    section_indent: int | None = None  # of the current Args: title
    item_indent: int | None = None  # of its items (the first line below the title)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() and section_indent is not None:
            if _indent_of(line) <= section_indent:
                section_indent = item_indent = None
            elif item_indent is None:
                item_indent = _indent_of(line)
        if match := _PARAM_SECTION.match(line):
            section_indent, item_indent = _indent_of(line), None
        elif (
            item_indent is not None
            and _indent_of(line) == item_indent
            and (match := _MULTI_NAME_ITEM.match(line))
        ):
            end = _block_end(lines, i + 1, _indent_of(line))
            for name in re.split(r"[ \t]*,[ \t]*", match["names"]):
                out += [f"{match['indent']}{name}:{match['desc']}", *lines[i + 1 : end]]
            i = end
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _resolver(obj: Object, loader: GriffeLoader) -> Callable[[str], str | None]:
    """A function giving the canonical path of a name as seen from ``obj``'s scope, or None outside the package."""
    package = obj.package.name

    def resolve(name: str) -> str | None:
        head, _, tail = name.partition(".")
        if head == package:
            path = name
        else:
            try:
                path = obj.resolve(head) + (f".{tail}" if tail else "")
            except Exception:  # griffe raises several error types for unknown names
                return None
        try:
            target = loader.modules_collection.get_member(path)
        except Exception:  # not a member of the loaded packages
            return None
        if isinstance(target, Alias):
            try:
                target = target.final_target
            except Exception:  # an alias to outside the package (torch, Lightning)
                return None
        return target.path if target.path.split(".")[0] == package else None

    return resolve


def _rewrite_roles(text: str, resolve: Callable[[str], str | None]) -> str:
    def role(match: re.Match[str]) -> str:
        kind, body = match["role"], match["body"]
        if kind == "math":
            return "$" + " ".join(body.split()) + "$"
        if kind in ("sup", "sub"):
            return f"<{kind}>{body}</{kind}>"
        short = body.startswith("~")
        name = body.lstrip("~.")
        shown = name.rsplit(".", 1)[-1] if short else name
        if kind in ("func", "meth"):
            shown += "()"
        path = resolve(name)
        if path is None:
            return f"`{shown}`"
        # an optional autoref: a link where the object is rendered, plain code (no warning) where it is not
        return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

    return _ROLE.sub(role, text)


def rst_to_markdown(text: str, resolve: Callable[[str], str | None] = lambda _name: None) -> str:
    """The Markdown of one reST-flavoured Google-style docstring (roles resolved with ``resolve``)."""
    text = _EXAMPLE_TITLE.sub(r"\g<indent>Examples:", text)  # griffe's section name (else an admonition)
    return _rewrite_roles(_split_multi_name_params(_rewrite_blocks(text)), resolve)


def _comment_docstring(attr: Attribute, loader: GriffeLoader) -> Docstring | None:
    """The ``#:`` comment lines right above an attribute's assignment (Sphinx autodoc's convention) as its docstring."""
    lines = attr.module.lines if attr.lineno else None  # the whole file
    if not lines:
        return None
    comment: list[str] = []
    i = attr.lineno - 2  # the line above, 0-based
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        comment.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    if not comment:
        return None
    return Docstring(
        "\n".join(comment), lineno=i + 2, endlineno=attr.lineno - 1, parent=attr,
        parser=loader.docstring_parser, parser_options=loader.docstring_options,
    )  # fmt: skip


def _walk(obj: Object) -> Iterator[Object]:
    yield obj
    for member in obj.members.values():
        if not isinstance(member, Alias):
            yield from _walk(member)


class RstRoles(Extension):
    """Rewrite every docstring of a loaded package once its whole tree is known (so names resolve)."""

    def on_package(self, *, pkg: Module, loader: GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is None and isinstance(obj, Attribute):
                obj.docstring = _comment_docstring(obj, loader)
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value, _resolver(obj, loader))
