"""The two bundles' configs stay in step: they may differ only in the modality-specific ids listed here.

Each config is flattened to MONAI config ids (``a#b#c``; lists compared whole); an id whose value differs between
the bundles, or that only one bundle has, must be listed below (itself or an ancestor) with the reason. A change made
to one bundle only fails here until it is made to the other too, or listed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
NAMES = ("mimmx_cxr", "mimmx_mri")

IMAGE_GEOMETRY = "2D image size vs 3D voxel spacing and volume size"
INPUT_CHECKS = {
    "dicom_modalities": "the DICOM Modality each bundle accepts (CR/DX radiographs, MR)",
    "field_of_view": "the plausible extent of a brain volume (3D only)",
    "max_obliquity": "how far a volume may tilt off the anatomical axes (3D only)",
    "spacing_range": "the plausible voxel spacing of a brain MRI (3D only)",
}
ALLOWED: dict[str, dict[str, str]] = {
    "train": {
        "cohort": "the cohort's own table format, columns and synthetic generator",
        "target": "the task and how its labels are coded",
        "factors": "the spurious factors of the modality",
        "protocols": "the factors each protocol names",
        "class_names": "the task's classes",
        "splits#sizes": "the embedded cohort's size",
        "batch_size": "3D volumes take smaller batches",
        "image_size": IMAGE_GEOMETRY,
        "spatial_size": IMAGE_GEOMETRY,
        "pixdim": IMAGE_GEOMETRY,
        "network_def#spatial_dims": "2D vs 3D",
        "preprocessing_transforms": "loading, orienting and resampling differ by modality",
        "augmentation_transforms": "which augmentations are safe depends on the modality's factors",
        **INPUT_CHECKS,
    },
    "evaluate": {},
    "inference": {
        "class_names": "the task's classes",
        **INPUT_CHECKS,
        "image_size": IMAGE_GEOMETRY,
        "spatial_size": IMAGE_GEOMETRY,
        "pixdim": IMAGE_GEOMETRY,
        "network_def#spatial_dims": "2D vs 3D",
        "preprocessing#transforms": "loading, orienting and resampling differ by modality",
        "input_glob": "the demo images' file names",
        "dataloader#batch_size": "3D volumes take smaller batches",
    },
    "multi_gpu_train": {},
    "strong_augmentation": {
        "shift_pixels": "the shift in pixels of a 64x64 radiograph vs voxels of a 32^3 volume",
        "shift_voxels": "the shift in pixels of a 64x64 radiograph vs voxels of a 32^3 volume",
        "erase_size": "a 16x16 patch vs an 8^3 block",
        "strong_augmentation_transforms": "the image size each crop returns to (image_size vs spatial_size)",
    },
}


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}#{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def _configs(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    cxr, mri = (_flatten(yaml.safe_load((BUNDLES / b / "configs" / f"{name}.yaml").read_text())) for b in NAMES)
    return cxr, mri


def _allowed(config_id: str, allowed: dict[str, str]) -> bool:
    return any(config_id == a or config_id.startswith(f"{a}#") for a in allowed)


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_bundle_configs_differ_only_in_modality_specific_ids(name):
    cxr, mri = _configs(name)
    absent = "<absent>"
    differing = sorted(k for k in cxr.keys() | mri.keys() if cxr.get(k, absent) != mri.get(k, absent))
    unexpected = {k: (cxr.get(k, absent), mri.get(k, absent)) for k in differing if not _allowed(k, ALLOWED[name])}
    assert not unexpected, (
        f"configs/{name}.yaml differs between the bundles in ids that are not modality-specific (cxr, mri): "
        f"{unexpected}. Make the same change in both bundles, or list the id in ALLOWED['{name}'] with the reason."
    )


def test_allowed_ids_still_differ():
    """A listed id that no longer differs is stale; the list must not grow into a blanket exemption."""
    for name, allowed in ALLOWED.items():
        cxr, mri = _configs(name)
        for config_id in allowed:
            keys = [k for k in cxr.keys() | mri.keys() if _allowed(k, {config_id: ""})]
            assert any(cxr.get(k) != mri.get(k) for k in keys), f"ALLOWED['{name}']['{config_id}'] no longer differs"
