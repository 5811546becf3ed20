"""The bundle's own copy of the code its configs reach, generated from the one ``mimmx`` package.

A model-zoo bundle must run with only the packages its metadata lists, and the zoo puts the bundle folder on
``sys.path`` and imports custom code as ``scripts.<module>``. So the export copies the ``mimmx`` modules that the
configs reach (transitively) to ``<bundle>/scripts/`` and renames the package in their imports and in dotted module
strings (``"mimmx.data.synthetic_cxr:..."``), token by token: comments, docstrings and layout stay as they are. The
repository keeps a single implementation; the copy is an artefact.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterable
from pathlib import Path

from mimmx.errors import ConfigError

__all__ = ["PACKAGE", "VENDORED_PACKAGE", "module_closure", "rename_package", "vendor_modules"]

PACKAGE = "mimmx"
VENDORED_PACKAGE = "scripts"


def _is_module_path(value: str, package: str = PACKAGE) -> bool:
    """``mimmx.data.x`` or ``mimmx.data.x:attr``: a dotted path into the package, not prose."""
    return re.fullmatch(rf"{package}(\.\w+)+(:\w+)?", value) is not None


def _module_file(root: Path, module: str) -> Path | None:
    """The file of ``mimmx.a.b`` under the package folder ``root`` (a module or a package's ``__init__``)."""
    parts = module.split(".")[1:]
    candidate = root.joinpath(*parts)
    if candidate.with_suffix(".py").is_file():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    return None


def _referenced_modules(source: str, current: str, is_package: bool) -> set[str]:
    """Every ``mimmx`` module a source file imports (at any depth) or names in a dotted string."""
    found: set[str] = set()
    base = current if is_package else current.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the current package
                anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                module = f"{anchor}.{node.module}" if node.module else anchor
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)  # ``from pkg import submodule``
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _is_module_path(node.value):
            found.add(node.value.split(":")[0])
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def module_closure(package_root: str | Path, entry_modules: Iterable[str]) -> dict[str, Path]:
    """``{module: file}`` for the entry modules, every ``mimmx`` module they reach, and each parent's ``__init__``.

    An entry may name an attribute (``mimmx.networks.MIMMXNet``): the longest prefix that is a module counts.
    """
    root = Path(package_root)
    todo = [PACKAGE, *entry_modules]
    closure: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        path = _module_file(root, name)
        while path is None and "." in name:
            name = name.rpartition(".")[0]
            path = _module_file(root, name)
        if path is None or name in closure:
            continue
        closure[name] = path
        todo.append(name.rpartition(".")[0] or PACKAGE)
        todo.extend(_referenced_modules(path.read_text(), name, path.name == "__init__.py") - closure.keys())
    return closure


def rename_package(source: str, old: str = PACKAGE, new: str = VENDORED_PACKAGE) -> str:
    """Source with the package ``old`` renamed to ``new`` in names and in strings that are dotted module paths.

    Only NAME tokens equal to ``old`` that are not an attribute (``x.mimmx``) change, and string literals whose
    value is a dotted path into it (``old.x``, ``old.x:attr``): ``getLogger("mimmx.data")`` becomes
    ``getLogger("scripts.data")``, and the word in prose stays.
    """
    edits: list[tuple[int, int, int, str]] = []
    previous = None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.string == old and not (previous and previous.string == "."):
            edits.append((tok.start[0], tok.start[1], tok.end[1], new))
        elif tok.type == tokenize.STRING and tok.start[0] == tok.end[0]:
            try:
                value = ast.literal_eval(tok.string)
            except (ValueError, SyntaxError):  # f-strings and the like
                value = None
            if isinstance(value, str) and _is_module_path(value, old):
                at = tok.string.index(old)
                edits.append((tok.start[0], tok.start[1] + at, tok.start[1] + at + len(old), new))
        if tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = tok
    lines = source.splitlines(keepends=True)
    for row, start, end, text in sorted(edits, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + text + line[end:]
    return "".join(lines)


def vendor_modules(package_root: str | Path, modules: dict[str, Path], out_dir: str | Path) -> list[Path]:
    """Write the renamed copies of ``modules`` under ``out_dir`` (the bundle's ``scripts/``); returns the files.

    Raises:
        ConfigError: a copied file still imports ``mimmx`` after renaming (it would fail without the package).
    """
    root, out = Path(package_root), Path(out_dir)
    written = []
    for name, path in sorted(modules.items()):
        target = out / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = rename_package(path.read_text())
        left = _referenced_modules(text, name.replace(PACKAGE, VENDORED_PACKAGE, 1), path.name == "__init__.py")
        if left:
            raise ConfigError(f"export: {path} still references {sorted(left)} after renaming the package.")
        target.write_text(text)
        written.append(target)
    return written
