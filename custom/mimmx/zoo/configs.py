"""A bundle's configs as the exported artefact needs them: JSON, pointing at ``scripts``, sample data by default.

``monai.bundle.load(..., workflow_type=...)`` reads ``configs/<train|inference>.json`` only (a YAML-only bundle
comes back as a bare state dict), and the zoo writes JSON indented by 4; so every YAML config becomes JSON. The
``mimmx`` references (``_target_: mimmx.networks.MIMMXNet``, ``$from mimmx.data import ...``) are renamed to the
vendored ``scripts`` package, and the inference input defaults to the bundle's own sample images, so that a
downloaded bundle predicts something before any data is at hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

from mimmx.errors import ConfigError
from mimmx.zoo.vendor import PACKAGE, VENDORED_PACKAGE

__all__ = ["SAMPLE_DIR", "load_config", "rename_references", "exported_configs", "write_json"]

SAMPLE_DIR = "sample_data"
_REFERENCE = re.compile(rf"(?<![\w.]){PACKAGE}(?=\.\w)")


def load_config(path: str | Path) -> dict:
    """One config file (YAML or JSON) as plain data, with a clear error naming it."""
    try:
        config = ConfigParser.load_config_file(str(path))
    except Exception as err:
        raise ConfigError(f"export: cannot read config {path}: {err}") from err
    if not isinstance(config, dict):
        raise ConfigError(f"export: config {path} must hold a mapping of ids, got {type(config).__name__}.")
    return config


def rename_references(config: Any) -> Any:
    """The config with every ``mimmx.<module>`` in a string value (or key) renamed to ``scripts.<module>``."""
    if isinstance(config, str):
        return _REFERENCE.sub(VENDORED_PACKAGE, config)
    if isinstance(config, Mapping):
        return {rename_references(k): rename_references(v) for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [rename_references(v) for v in config]
    return config


def _json_paths(config: Any, stems: set[str]) -> Any:
    """``configs/train.yaml`` in a value -> ``configs/train.json`` (an exported config reading another one)."""
    if isinstance(config, str):
        return re.sub(r"configs/(\w+)\.ya?ml\b", lambda m: f"configs/{m[1]}.json" if m[1] in stems else m[0], config)
    if isinstance(config, Mapping):
        return {k: _json_paths(v, stems) for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [_json_paths(v, stems) for v in config]
    return config


def exported_configs(configs_dir: str | Path, sample_glob: str) -> dict[str, dict]:
    """``{file stem: config}`` for every YAML/JSON config of a bundle (metadata excluded), renamed for export.

    ``sample_glob`` (relative to the bundle) becomes the inference config's default ``input_glob``.

    Raises:
        ConfigError: the bundle lacks ``train``, ``evaluate`` or ``inference``, or inference has no ``input_glob``.
    """
    folder = Path(configs_dir)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml", ".json") and p.stem != "metadata")
    configs = {p.stem: rename_references(load_config(p)) for p in files}
    configs = {stem: _json_paths(cfg, set(configs)) for stem, cfg in configs.items()}
    missing = {"train", "evaluate", "inference"} - configs.keys()
    if missing:
        raise ConfigError(f"export: {folder} lacks the config(s) {sorted(missing)} a shared bundle needs.")
    if "input_glob" not in configs["inference"]:
        raise ConfigError(f"export: {folder / 'inference.yaml'} has no `input_glob` id to point at the samples.")
    configs["inference"]["input_glob"] = f"$@bundle_root + '/{sample_glob}'"
    # the zoo's checks read an exported bundle from any working directory, without --bundle_root: the inference
    # config gets the factor list written in from the training config it would read it from (the one source)
    if isinstance(configs["inference"].get("factors"), str) and "factors" in configs["train"]:
        configs["inference"]["factors"] = configs["train"]["factors"]
    left = [stem for stem, cfg in configs.items() if _REFERENCE.search(json.dumps(cfg))]
    if left:
        raise ConfigError(f"export: {left} still reference {PACKAGE!r} after renaming.")
    return configs


def write_json(path: str | Path, data: Any) -> None:
    """JSON as the model zoo formats it (indent 4, trailing newline)."""
    Path(path).write_text(json.dumps(data, indent=4) + "\n")
