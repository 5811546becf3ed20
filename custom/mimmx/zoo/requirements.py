"""The packages an exported bundle needs, with the versions installed where it was trained.

The model zoo installs ``monai_version``, ``pytorch_version``, ``numpy_version`` and every key of
``required_packages_version`` and ``optional_packages_version``, and nothing else. So the lists are derived, not
written by hand: the third-party imports of the vendored code (found by parsing it), the imports and ``_target_``
roots of the configs, and the optional backends MONAI components named in the configs load at run time (a reader
per image format, TensorBoard for its handler), which no import statement shows.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mimmx.errors import ConfigError

__all__ = ["OWN_KEYS", "RUNTIME_BACKENDS", "config_modules", "package_versions", "code_modules"]

# pinned by the metadata's own keys, not by the package lists
OWN_KEYS = {"monai": "monai_version", "torch": "pytorch_version", "numpy": "numpy_version"}
# MONAI components (last part of ``_target_``) -> modules they import lazily, only when they run
RUNTIME_BACKENDS: dict[str, tuple[str, ...]] = {
    "CheckedLoadImaged": ("PIL", "nibabel", "itk", "pydicom"),  # PILReader, NibabelReader, ITKReader, PydicomReader
    "LoadImaged": ("PIL", "nibabel", "itk", "pydicom"),
    "TensorBoardStatsHandler": ("tensorboard",),
    "ProgressBar": ("tqdm",),
}
# what the bundle's documented commands need beside the configs: ``python -m monai.bundle`` runs on fire
ALWAYS_REQUIRED = ("fire",)
# only for tools around the bundle: ``verify_metadata`` validates with jsonschema, ``download_large_files`` reads
# large_files.yml with PyYAML
OPTIONAL = ("jsonschema", "yaml")
# imported by the shipped code only for a feature the user turns on (``--tracking mlflow``): optional, and listed
# only when installed here
OPTIONAL_FEATURES = ("mlflow",)


def _walk_strings(config: Any) -> Iterable[str]:
    if isinstance(config, str):
        yield config
    elif isinstance(config, Mapping):
        for value in config.values():
            yield from _walk_strings(value)
    elif isinstance(config, list | tuple):
        for value in config:
            yield from _walk_strings(value)


def config_modules(configs: Iterable[Any]) -> tuple[set[str], set[str]]:
    """``(modules, components)`` a config reaches: modules from ``$import x`` / ``$from x import y`` and dotted
    ``_target_`` paths; components are the last part of every ``_target_`` (``Compose``, ``CheckedLoadImaged``), to
    look up :data:`RUNTIME_BACKENDS` by."""
    modules: set[str] = set()
    targets: set[str] = set()
    for config in configs:
        for text in _walk_strings(config):
            if re.match(r"\$\s*(import|from)\s", text):
                node = ast.parse(text[1:].strip()).body[0]
                modules.update(a.name for a in node.names) if isinstance(node, ast.Import) else modules.add(node.module)
        targets.update(_targets(config))
    modules.update(t for t in targets if "." in t)
    return modules, {t.rpartition(".")[2] for t in targets}


def _targets(config: Any) -> set[str]:
    if isinstance(config, Mapping):
        own = {str(config["_target_"])} if "_target_" in config else set()
        return own.union(*(_targets(v) for v in config.values()))
    if isinstance(config, list | tuple):
        return set().union(*(_targets(v) for v in config))
    return set()


def code_modules(files: Iterable[str | Path]) -> set[str]:
    """Top-level modules every Python file imports, at any depth (function-level imports count too)."""
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return found


def _distribution(module: str) -> str | None:
    """The installed distribution that provides the top-level ``module`` (``sklearn`` -> ``scikit-learn``)."""
    try:
        metadata.version(module)
        return module.lower()
    except metadata.PackageNotFoundError:
        pass
    names = sorted({d.lower() for d in metadata.packages_distributions().get(module, [])})
    return names[0] if len(names) == 1 else None


def package_versions(
    modules: Iterable[str], components: Iterable[str] = (), skip: Iterable[str] = ()
) -> dict[str, Any]:
    """Metadata package keys for the modules and MONAI components a bundle reaches (stdlib and ``skip`` dropped).

    Returns ``{"monai_version": ..., "pytorch_version": ..., "numpy_version": ..., "required_packages_version":
    {...}, "optional_packages_version": {...}}`` with the versions installed in this environment.

    Raises:
        ConfigError: a reached module is not installed, so its version (and the bundle's) cannot be pinned.
    """
    roots = {m.split(".")[0] for m in modules if m}
    for component in components:
        roots.update(RUNTIME_BACKENDS.get(component, ()))
    roots.update(ALWAYS_REQUIRED)
    roots -= set(sys.stdlib_module_names) | set(skip) | set(OPTIONAL_FEATURES)
    required: dict[str, str] = {}
    result: dict[str, Any] = {}
    for root in sorted(roots):
        dist = _distribution(root)
        if dist is None:
            raise ConfigError(f"export: the bundle imports {root!r}, which is not installed here; install it first.")
        version = metadata.version(dist).split("+")[0]  # 2.13.0+cpu: the local label is no index version
        if root in OWN_KEYS:
            result[OWN_KEYS[root]] = version
        else:
            required[dist] = version
    for key, root in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy")):
        result.setdefault(key, metadata.version(root).split("+")[0])
    result["required_packages_version"] = dict(sorted(required.items()))
    result["optional_packages_version"] = {
        d: metadata.version(d).split("+")[0]
        for d in (_distribution(m) for m in OPTIONAL + OPTIONAL_FEATURES)
        if d and d not in required
    }
    return result
