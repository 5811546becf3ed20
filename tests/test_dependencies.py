"""Test-only packages stay out of the runtime install and out of the bundles' package lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
TEST_ONLY = ("SimpleITK",)  # tests/test_loaders_3d.py writes .mha files with it; MONAI reads them through itk


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_test_only_packages_are_dev_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _names(project["dependencies"])
    dev = _names(project["optional-dependencies"]["dev"])
    for name in TEST_ONLY:
        assert name.lower() not in runtime, f"{name} is a runtime dependency in pyproject.toml"
        assert name.lower() in dev, f"{name} missing from the dev extra in pyproject.toml"


def test_bundle_metadata_does_not_require_test_only_packages() -> None:
    for metadata in sorted((ROOT / "bundles").glob("*/configs/metadata.json")):
        meta = json.loads(metadata.read_text())
        listed = {
            k.lower() for key in ("required_packages_version", "optional_packages_version") for k in meta.get(key, {})
        }
        for name in TEST_ONLY:
            assert name.lower() not in listed, f"{metadata}: lists the test-only package {name}"
