"""One call from a bundle config to a data-list JSON: cohort table -> items -> splits -> file.

    prepare_datalist(dataset_dir, datalist_file, cohort, target, factors, splits, seed)

The result is cached by a fingerprint of every input that shapes it (the table's content, the
reader options, factors, split sizes, rho, prevalence, seed and this module's format version),
so a training run reuses the data list of the previous run unless something changed.

A new cohort format is one entry in :data:`FORMATS`: a reader called as
``reader(csv_path, target=<column>, factors=<FactorSpec list>, **format_kwargs)`` returning
``(items, report)``, where the format kwargs are the remaining keys of ``target`` (for example
``uncertain``, ``blank``) and of ``cohort`` (for example ``views``, ``frontal_only``), plus
``image_root`` when the cohort sets one. Items carry "image" relative to the image root, and the
report must give that root as ``report["image_root"]``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mimmx.config import as_bool, as_optional
from mimmx.data.chexpert import read_chexpert
from mimmx.data.cohort import read_cohort
from mimmx.data.datalist import read_datalist, write_datalist
from mimmx.data.splits import build_splits, format_report
from mimmx.data.synthetic_cxr import generate_cxr_cohort
from mimmx.data.synthetic_mri import generate_mri_cohort
from mimmx.errors import ConfigError, DataError, MimmxError
from mimmx.factors import FactorSpec, parse_factors
from mimmx.io_utils import sha256_file

__all__ = ["prepare_datalist", "synthetic_generator", "FORMATS", "GENERATORS", "DATALIST_VERSION", "fingerprint"]

logger = logging.getLogger("mimmx.data")

DATALIST_VERSION = 2  # bump when the reader or split algorithm changes what a config produces

FORMATS: dict[str, Callable[..., tuple[list[dict], dict]]] = {"chexpert": read_chexpert, "cohort": read_cohort}
# the value of cohort#synthetic#generator (and of ``mimmx generate KIND``) -> the function that writes the cohort
GENERATORS: dict[str, Callable[..., str]] = {"cxr": generate_cxr_cohort, "mri": generate_mri_cohort}

_COHORT_KEYS = ("format", "csv", "image_root", "synthetic")
_TARGET_INFO_KEYS = ("column", "name", "class_names")  # not reader options
_SPLIT_KEYS = ("sizes", "rho", "prevalence", "train_rho")


def prepare_datalist(
    dataset_dir: str | os.PathLike,
    datalist_file: str | os.PathLike,
    cohort: Mapping,
    target: Mapping,
    factors: Sequence[Mapping | FactorSpec],
    splits: Mapping,
    seed: int = 0,
    overwrite: bool = False,
    default_dataset_dir: str | os.PathLike | None = None,
) -> str:
    """Build (or reuse) the data list and return its path.

    Relative paths (``datalist_file``, ``cohort.csv``, ``cohort.image_root``) are relative to
    ``dataset_dir``. A missing table is generated first when ``cohort.synthetic`` names a
    generator of :data:`GENERATORS`, and only into the bundle's own ``default_dataset_dir``: a
    folder the user pointed at (a mistyped ``--dataset_dir``) never silently fills with synthetic
    images; ``cohort.synthetic.into_dataset_dir: true`` asks for that by name. The file is rebuilt
    when ``overwrite`` is true or its stored fingerprint differs from the one of these inputs.
    """
    dataset_dir = Path(dataset_dir)
    cohort = {k: as_optional(v, f"cohort#{k}") for k, v in cohort.items()} if isinstance(cohort, Mapping) else cohort
    out = _under(dataset_dir, datalist_file)
    reader, csv_path, image_root, reader_kwargs = _parse_cohort(dataset_dir, cohort, target)
    specs = parse_factors(factors)
    split_args = _parse_splits(splits)
    csv_path = _ensure_table(csv_path, dataset_dir, cohort.get("synthetic"), seed, default_dataset_dir)

    fp = fingerprint(
        {
            "version": DATALIST_VERSION,
            "format": cohort["format"],
            "csv": str(csv_path.resolve()),
            "csv_sha256": sha256_file(csv_path),
            "image_root": None if image_root is None else str(image_root),
            "target": dict(target),
            "reader_kwargs": reader_kwargs,
            "factors": [_spec_fingerprint(s) for s in specs],
            "splits": split_args,
            "seed": seed,
        }
    )
    if not overwrite and _stored_fingerprint(out) == fp:
        logger.info("reusing data list %s (inputs unchanged, fingerprint %s)", out, fp[:12])
        return str(out)

    logger.info("building data list %s from %s", out, csv_path)
    if image_root is not None:
        reader_kwargs = {**reader_kwargs, "image_root": image_root}
    items, reader_report = reader(csv_path, target=target["column"], factors=specs, **reader_kwargs)
    result = build_splits(items, [s.key for s in specs], seed=seed, **split_args)
    logger.info("splits of %s:\n%s", out, format_report(result.report))
    root = Path(reader_report["image_root"]).resolve()
    _warn_path_like_fields(result.splits, root)
    metadata = {
        "fingerprint": fp,
        "version": DATALIST_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "image_root": str(root),
        "image_root_relative": os.path.relpath(root, out.resolve().parent),
        "cohort": {"format": cohort["format"], "csv": str(csv_path.resolve())},
        "target": dict(target),
        "factors": [_spec_metadata(s) for s in specs],
        "seed": seed,
        "reader_report": reader_report,
        "split_report": result.report,
    }
    write_datalist(out, result.splits, metadata)
    return str(out)


def fingerprint(inputs: Mapping[str, Any]) -> str:
    """sha256 of the inputs as canonical JSON (sorted keys), so equal configs give equal fingerprints."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _under(base: Path, path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


def _parse_cohort(dataset_dir: Path, cohort: Mapping, target: Mapping):
    """(reader, csv path, image root or None, reader kwargs), checked against the reader's signature."""
    if not isinstance(cohort, Mapping):
        raise ConfigError(f"cohort: expected a mapping with keys {list(_COHORT_KEYS)}, got {cohort!r}.")
    if not isinstance(target, Mapping) or not target.get("column"):
        raise ConfigError(f"target: expected a mapping with at least 'column' (the target column), got {target!r}.")
    fmt = cohort.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"cohort#format: expected one of {sorted(FORMATS)}, got {fmt!r}.")
    if not cohort.get("csv"):
        raise ConfigError("cohort#csv: the path of the cohort table is required.")
    reader = FORMATS[fmt]
    cohort_kwargs = {k: v for k, v in cohort.items() if k not in _COHORT_KEYS}
    target_kwargs = {k: v for k, v in target.items() if k not in _TARGET_INFO_KEYS}
    both = sorted(set(cohort_kwargs) & set(target_kwargs))
    if both:
        raise ConfigError(f"cohort and target both set {both}; set each option once.")
    kwargs = {**cohort_kwargs, **target_kwargs}
    params = inspect.signature(reader).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        allowed = [p for p in params if p not in ("csv_path", "target", "factors", "image_root")]
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise ConfigError(
                f"cohort/target: option(s) {unknown} are not understood by the {fmt!r} reader; it takes {allowed}."
            )
    image_root = cohort.get("image_root")
    image_root = None if image_root is None else _under(dataset_dir, image_root).resolve()
    return reader, _under(dataset_dir, cohort["csv"]), image_root, kwargs


def _parse_splits(splits: Mapping) -> dict:
    if not isinstance(splits, Mapping):
        raise ConfigError(f"splits: expected a mapping with keys {list(_SPLIT_KEYS)}, got {splits!r}.")
    unknown = sorted(set(splits) - set(_SPLIT_KEYS))
    if unknown or "sizes" not in splits or "rho" not in splits:
        raise ConfigError(
            f"splits: needs 'sizes' and 'rho' (optional 'prevalence', 'train_rho'); unknown keys {unknown}."
        )
    out = {"sizes": dict(splits["sizes"]) if isinstance(splits["sizes"], Mapping) else splits["sizes"]}
    out["rho"] = dict(splits["rho"]) if isinstance(splits["rho"], Mapping) else splits["rho"]
    out["prevalence"] = splits.get("prevalence", 0.5)
    train_rho = splits.get("train_rho")
    if train_rho is not None:
        out["train_rho"] = dict(train_rho) if isinstance(train_rho, Mapping) else train_rho
    return out


def _ensure_table(
    csv_path: Path, dataset_dir: Path, synthetic: Mapping | None, seed: int, default_dir: str | os.PathLike | None
) -> Path:
    """The cohort table, generated first by the configured synthetic generator when it is missing and the folder is
    the bundle's own data folder (or ``synthetic.into_dataset_dir`` asks for it)."""
    if csv_path.is_file():
        return csv_path
    if not synthetic:
        raise DataError(
            f"{csv_path}: cohort table not found (and cohort#synthetic is not set). "
            "Point --dataset_dir at the folder holding the table, or cohort#csv at the table itself."
        )
    if not isinstance(synthetic, Mapping):
        raise ConfigError(f"cohort#synthetic: expected a mapping with 'generator' or null, got {synthetic!r}.")
    asked = as_bool(synthetic.get("into_dataset_dir", False), "cohort#synthetic#into_dataset_dir")
    own = default_dir is None or dataset_dir.resolve() == Path(default_dir).resolve()
    if not (own or asked):
        where = "does not exist" if not dataset_dir.exists() else "exists but has no such table"
        raise DataError(
            f"dataset_dir {str(dataset_dir)!r} {where}: cohort table {csv_path} not found. Check --dataset_dir "
            f"(and --cohort#csv). A synthetic cohort is only generated into the bundle's own data folder "
            f"({default_dir}); to generate one into this folder on purpose, pass "
            "--cohort#synthetic#into_dataset_dir true, or run 'mimmx generate' first."
        )
    generator = synthetic_generator(synthetic.get("generator"), "cohort#synthetic#generator")
    kwargs = {k: v for k, v in synthetic.items() if k not in ("generator", "into_dataset_dir")}
    logger.warning(
        "cohort table %s not found: generating a SYNTHETIC cohort (%r) into %s; this run trains on synthetic data.",
        csv_path,
        synthetic["generator"],
        dataset_dir,
    )
    dataset_dir.mkdir(parents=True, exist_ok=True)
    written = generator(**{"out_dir": str(dataset_dir), "seed": seed, **kwargs})
    if not csv_path.is_file():
        raise DataError(
            f"{csv_path}: still missing after the synthetic generator {synthetic['generator']!r} ran "
            f"(it wrote {written!r}); set cohort#csv to the table it writes."
        )
    return csv_path


def synthetic_generator(name: Any, config_id: str) -> Callable[..., str]:
    """The synthetic cohort generator called ``name`` (``cxr``, ``mri``); ``config_id`` names the setting in the
    error for any other value."""
    if not isinstance(name, str) or name not in GENERATORS:
        raise ConfigError(f"{config_id}: expected one of {sorted(GENERATORS)}, got {name!r}.")
    return GENERATORS[name]


def _stored_fingerprint(path: Path) -> str | None:
    """Fingerprint of an existing data list, or None when there is none or it is unreadable."""
    if not path.is_file():
        return None
    try:
        return read_datalist(path).get("metadata", {}).get("fingerprint")
    except MimmxError as e:
        logger.warning("%s is not a valid data list (%s); rebuilding it.", path, e)
        return None


def _spec_fingerprint(spec: FactorSpec) -> dict:
    """What of a factor shapes the data list (its loss weight does not)."""
    return {
        "name": spec.name,
        "key": spec.key,
        "column": spec.column,
        "classes": spec.values.classes,
        "bins": spec.values.bins,
        "class_names": list(spec.class_names),
        "valid_range": spec.valid_range,
    }


def _spec_metadata(spec: FactorSpec) -> dict:
    return {
        "name": spec.name,
        "key": spec.key,
        "column": spec.column,
        "kind": spec.kind,
        "num_classes": spec.num_classes,
        "class_names": list(spec.class_names),
    }


def _warn_path_like_fields(splits: Mapping[str, list[dict]], root: Path) -> None:
    """load_decathlon_datalist joins base_dir to every string value that then names an existing path."""
    for items in splits.values():
        for item in items[:100]:
            for key, value in item.items():
                if key != "image" and isinstance(value, str) and (root / value).exists():
                    logger.warning(
                        "item field %r = %r also names a path under %s: load_decathlon_datalist will turn it into "
                        "that path. Keep images in a subfolder of image_root to avoid this.",
                        key,
                        value,
                        root,
                    )
                    return
