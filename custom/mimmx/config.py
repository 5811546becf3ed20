"""Config and command-line values as the code means them: booleans and null from what a shell can pass.

``python -m monai.bundle run ... --cohort#check_files false`` hands the config the *string* ``'false'`` (truthy),
and ``--cohort#synthetic null`` the string ``'null'``: only ``False`` and ``None`` are parsed by fire. Every place
that reads a boolean or optional value from a config goes through :func:`as_bool` / :func:`as_optional`, which
accept the spellings a person types and name the config id for anything else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mimmx.errors import ConfigError

__all__ = ["as_bool", "as_optional", "coerce_cli_value", "config_value"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none", "~", ""}


def as_bool(value: Any, config_id: str) -> bool:
    """``True``/``False`` from a bool, 0/1 or one of true/false/yes/no/on/off (any case); ConfigError otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"{config_id}: expected true or false, got {value!r}.")


def as_optional(value: Any, config_id: str = "") -> Any:
    """None for None or a string spelling null (null, none, ~, empty); the value itself otherwise."""
    if isinstance(value, str) and value.strip().lower() in _NULL:
        return None
    return value


def coerce_cli_value(value: Any) -> Any:
    """A command-line override as YAML would read it: 'false' -> False, 'null' -> None; anything else unchanged."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE - {"1"} or text in _FALSE - {"0"}:
            return text in _TRUE
        if text in _NULL - {""}:
            return None
    return value


def config_value(config_file: str | os.PathLike, config_id: str) -> Any:
    """The parsed value of ``config_id`` in another bundle config, so two configs share one source.

    The inference config reads the training config's ``factors`` this way: a hand-kept copy drifts, and weights
    trained for one factor list do not fit a network built for another.
    """
    from monai.bundle import ConfigParser

    path = Path(config_file)
    if not path.is_file():
        raise ConfigError(
            f"train_config: {path} not found; the inference config reads {config_id!r} from the training config. "
            "Pass --bundle_root of the bundle, or --train_config with the train.yaml the model was trained with."
        )
    parser = ConfigParser()
    parser.read_config(str(path))
    if config_id not in parser:
        raise ConfigError(f"{path}: has no config id {config_id!r}.")
    return parser.get_parsed_content(config_id, instantiate=False, eval_expr=False)
