"""Write the API reference, ``doc/api.md``, from the docstrings of skvqgnn's public API.

Usage::

    python doc/build_api.py --out doc/api.md     # or: python doc/build_api.py > doc/api.md
    python doc/build_api.py --check              # list undocumented names and parameters

The public API is ``skvqgnn.__all__``, the ``__all__`` of the public modules, and the classes
a user extends: backbones (``skvqgnn.layers``), convolution kinds (``skvqgnn.convolutions``) and
attention scores (``skvqgnn.attention``). Each class and function is rendered with its signature
and its numpydoc docstring; the sections "Parameters", "Returns", "Attributes", "Raises" and the
like become lists, "Examples" a code block. A class also gets its public methods and properties
(those it defines itself; an override without a docstring of its own is documented on the base
class). Module-level values (the scorers, ``__version__``) are documented by a ``#:`` comment on
the line above their assignment.

``tests/test_docs.py`` fails when ``doc/api.md`` differs from what this script writes, and when
``problems()`` finds a public name without documentation or a parameter missing from its
"Parameters" section.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: (module, names to document: ``None`` for the module's ``__all__``), in page order.
MODULES: list[tuple[str, list[str] | None]] = [
    ("skvqgnn", None),
    ("skvqgnn.graph", None),
    ("skvqgnn.datasets", None),
    ("skvqgnn.model_selection", None),
    ("skvqgnn.preprocessing", None),
    ("skvqgnn.metrics", None),
    ("skvqgnn.persistence", None),
    (
        "skvqgnn.layers",
        ["Backbone", "GCN", "SAGE", "GIN", "GAT", "Transformer", "GCNII", "LinearCombination"],
    ),
    (
        "skvqgnn.convolutions",
        [
            "Convolution",
            "Identity",
            "Initial",
            "Fixed",
            "Attention",
            "MaskedAttention",
            "GlobalAttention",
        ],
    ),
    ("skvqgnn.attention", ["AttentionConvolution", "GATAttention", "DotProductAttention"]),
    ("skvqgnn.training", ["ProgressBar"]),
    ("skvqgnn.inference", None),
    ("skvqgnn.distributed", None),
    ("skvqgnn.shards", None),
]

#: Numpydoc sections whose entries are ``name : type`` lines with indented descriptions.
LIST_SECTIONS = (
    "Parameters",
    "Other Parameters",
    "Returns",
    "Yields",
    "Attributes",
    "Raises",
    "Warns",
    "See Also",
)
SECTIONS = (*LIST_SECTIONS, "Notes", "References", "Examples")
_WIDTH = 88  # signatures longer than this are written one parameter per line


# -- collecting the public API ---------------------------------------------------------------------
def public_api() -> list[tuple[str, list[tuple[str, Any]]]]:
    """The documented objects: per module, its ``(name, object)`` pairs, in page order."""
    out = []
    for module_name, names in MODULES:
        module = importlib.import_module(module_name)
        names = list(module.__all__) if names is None else names
        out.append((module_name, [(name, getattr(module, name)) for name in names]))
    return out


def members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties that ``cls`` defines itself (inherited ones are documented
    on their own class; an override without a docstring of its own keeps the base's)."""
    out = []
    for name, value in vars(cls).items():
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__  # documented like a method
        if name.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
            continue
        overrides = any(name in vars(base) for base in cls.__mro__[1:])
        if overrides and not _own_doc(value):
            continue
        out.append((name, value))
    return out


def _own_doc(value: Any) -> str:
    target = value.fget if isinstance(value, property) else value
    return inspect.cleandoc(target.__doc__ or "")


def _defines_constructor(cls: type) -> bool:
    """Whether ``cls`` or a package base defines the constructor (not ``object``, ``nn.Module``)."""
    for base in cls.__mro__:
        if "__init__" in vars(base) or "__new__" in vars(base):
            return base.__module__.startswith("skvqgnn")
    return False


def parameters(obj: Any) -> list[inspect.Parameter]:
    """The parameters a user passes: ``self`` and ``cls`` left out; none for a class whose
    constructor comes from outside the package."""
    if inspect.isclass(obj) and not _defines_constructor(obj):
        return []
    params = list(inspect.signature(obj).parameters.values())
    if not inspect.isclass(obj) and params and params[0].name in ("self", "cls"):
        params = params[1:]
    return params


def value_comment(module_name: str, name: str) -> str:
    """The ``#:`` comment lines right above ``name = ...`` in the module's source."""
    lines = inspect.getsource(importlib.import_module(module_name)).splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"{re.escape(name)}\s*(:[^=]*)?=", line):
            comment = []
            j = i - 1
            while j >= 0 and lines[j].startswith("#:"):
                comment.insert(0, lines[j][2:].strip())
                j -= 1
            return " ".join(comment)
    return ""


# -- parsing numpydoc ------------------------------------------------------------------------------
def split_sections(doc: str) -> tuple[str, dict[str, list[str]]]:
    """(text before the first section, {section title: its lines})."""
    lines = doc.splitlines()
    head: list[str] = []
    sections: dict[str, list[str]] = {}
    current = head
    i = 0
    while i < len(lines):
        line = lines[i]
        underline = lines[i + 1].strip() if i + 1 < len(lines) else ""
        title = line.strip()
        if title in SECTIONS and underline and set(underline) == {"-"}:
            current = sections.setdefault(title, [])
            i += 2
            continue
        current.append(line)
        i += 1
    return "\n".join(head).strip(), sections


def entries(lines: list[str]) -> list[tuple[str, list[str]]]:
    """The entries of a list section: (header line, description lines, dedented)."""
    out: list[tuple[str, list[str]]] = []
    for line in lines:
        if line and not line[0].isspace():
            out.append((line.strip(), []))
        elif out:
            out[-1][1].append(line.strip())
    return out


def documented_names(doc: str, section: str = "Parameters") -> set[str]:
    """The names listed in a section (``a, b : int`` lists ``a`` and ``b``)."""
    names: set[str] = set()
    for header, _ in entries(split_sections(doc)[1].get(section, [])):
        listed = header.split(" : ")[0] if " : " in header else header
        names.update(n.strip().lstrip("*") for n in listed.split(","))
    return names


# -- rendering -------------------------------------------------------------------------------------
_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|obj|exc):`~?([^`]+)`")


def inline(text: str) -> str:
    """reST inline markup as Markdown: ````code```` and ``:func:`name``` become `code`."""
    return _ROLE.sub(r"`\1`", text).replace("``", "`")


def signature(name: str, obj: Any) -> str:
    """``name(a, b=1, *, c=2)`` without annotations; one parameter per line when long."""
    params = [p.replace(annotation=inspect.Parameter.empty) for p in parameters(obj)]
    parts: list[str] = []
    star = False
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        if p.kind is p.VAR_POSITIONAL:
            star = True
        parts.append(str(p))
    one_line = f"{name}({', '.join(parts)})"
    if len(one_line) <= _WIDTH:
        return one_line
    body = "".join(f"    {part},\n" for part in parts)
    return f"{name}(\n{body})"


def render_doc(doc: str) -> list[str]:
    """A numpydoc docstring as Markdown lines; section titles as bold paragraphs."""
    head, sections = split_sections(doc)
    out = [inline(head), ""] if head else []
    for title in SECTIONS:
        if title not in sections:
            continue
        out += [f"**{title}**", ""]
        body = sections[title]
        if title == "Examples":
            code = inspect.cleandoc("\n".join(body))
            out += ["```pycon", code, "```", ""]
        elif title in LIST_SECTIONS:
            for header, description in entries(body):
                text = inline(" ".join(line for line in description if line)).strip()
                # a backslash ends the line (CommonMark hard line break): description below
                out.append(f"* {_entry_header(header, title)}" + ("\\" if text else ""))
                if text:
                    out.append(f"  {text}")
            out.append("")
        else:
            out += [inline(inspect.cleandoc("\n".join(body))), ""]
    return out


def _entry_header(header: str, title: str) -> str:
    """``name : type`` as `name` : type; a bare type (Returns) as text, a bare name as code."""
    if " : " in header:
        name, kind = header.split(" : ", 1)
        return f"`{name.strip()}` : {inline(kind.strip())}"
    if title == "See Also" and ":" in header:
        name, text = header.split(":", 1)
        return f"`{name.strip()}`: {inline(text.strip())}"
    if title in ("Returns", "Yields"):
        return inline(header)
    return f"`{header}`"


def render_object(module_name: str, name: str, obj: Any, seen: dict[int, str]) -> list[str]:
    """The Markdown of one public name (a class with its members, a function or a value)."""
    qualified = f"{module_name}.{name}"
    if id(obj) in seen and (inspect.isclass(obj) or inspect.isfunction(obj)):
        first = seen[id(obj)]
        return [f"### `{qualified}`", "", f"The same object as [`{first}`](#{_anchor(first)}).", ""]
    if inspect.isclass(obj) or inspect.isfunction(obj):
        seen[id(obj)] = qualified
    out = [f"### `{qualified}`", ""]
    if inspect.isclass(obj):
        out += ["```python", f"class {signature(qualified, obj)}", "```", ""]
        out += render_doc(inspect.getdoc(obj) or "")
        for member_name, member in members(obj):
            out += render_member(obj.__name__, member_name, member)
    elif inspect.isfunction(obj):
        out += ["```python", signature(qualified, obj), "```", ""]
        out += render_doc(inspect.getdoc(obj) or "")
    else:
        out += [inline(value_comment(module_name, name)), ""]
    return out


def render_member(class_name: str, name: str, member: Any) -> list[str]:
    """A method (signature and docstring) or a property (its docstring)."""
    if isinstance(member, property):
        return [f"#### `{class_name}.{name}` (property)", "", *render_doc(_own_doc(member))]
    doc = inspect.getdoc(member) or ""
    return [
        f"#### `{class_name}.{name}`",
        "",
        "```python",
        signature(name, member),
        "```",
        "",
        *render_doc(doc),
    ]


def _anchor(qualified: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces
    as ``-``."""
    return re.sub(r"[^\w\- ]", "", qualified.lower()).replace(" ", "-")


def render() -> str:
    """The whole page."""
    api = public_api()
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python doc/build_api.py --out doc/api.md`; "
        "`tests/test_docs.py` fails when this page is out of date. Estimators also have "
        "scikit-learn's `get_params` and `set_params`.",
        "",
    ]
    for module_name, objects in api:
        out.append(
            f"* [`{module_name}`](#{_anchor('module ' + module_name)}): "
            + ", ".join(f"[`{name}`](#{_anchor(f'{module_name}.{name}')})" for name, _ in objects)
        )
    out.append("")
    seen: dict[int, str] = {}
    for module_name, objects in api:
        module = importlib.import_module(module_name)
        summary = inline((inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " "))
        out += [f"## Module `{module_name}`", "", summary, ""]
        for name, obj in objects:
            out += render_object(module_name, name, obj, seen)
    text = "\n".join(out)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip() + "\n"


# -- checking --------------------------------------------------------------------------------------
def _documented() -> Iterator[tuple[str, Any]]:
    """Every documented callable or property of the API, with its qualified name."""
    seen: set[int] = set()
    for module_name, objects in public_api():
        for name, obj in objects:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            qualified = f"{module_name}.{name}"
            yield qualified, obj
            if inspect.isclass(obj):
                for member_name, member in members(obj):
                    yield f"{qualified}.{member_name}", member


def problems() -> list[str]:
    """Public names without documentation and parameters missing from "Parameters"."""
    found = []
    for qualified, obj in _documented():
        module_name, _, name = qualified.rpartition(".")
        if not (inspect.isclass(obj) or inspect.isfunction(obj) or isinstance(obj, property)):
            if not value_comment(module_name, name):
                found.append(f"{qualified}: no '#:' comment above its assignment")
            continue
        doc = _own_doc(obj) if isinstance(obj, property) else inspect.getdoc(obj) or ""
        if not doc:
            found.append(f"{qualified}: no docstring")
            continue
        if isinstance(obj, property):
            continue
        listed = documented_names(doc)
        for p in parameters(obj):
            label = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name
            if p.name not in listed:
                found.append(f"{qualified}: parameter {label!r} not in its Parameters section")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the page here (default: standard output)")
    parser.add_argument("--check", action="store_true", help="list documentation problems")
    args = parser.parse_args(argv)
    if args.check:
        found = problems()
        print("\n".join(found) or "no problems")
        return 1 if found else 0
    text = render()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
