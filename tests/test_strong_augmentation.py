"""configs/strong_augmentation.yaml: the benchmark's strong_aug regime, merged over train.yaml in both bundles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, RandCoarseDropoutd, RandSpatialCropd, SpatialPadd

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SHAPES = {"mimmx_cxr": (1, 64, 64), "mimmx_mri": (1, 32, 32, 32)}


def _parser(bundle: str, strong: bool) -> ConfigParser:
    configs = BUNDLES / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.yaml")] + ([str(configs / "strong_augmentation.yaml")] if strong else []))
    parser["bundle_root"] = str(BUNDLES / bundle)
    return parser


@pytest.mark.parametrize("bundle", sorted(SHAPES))
def test_the_training_pipeline_gains_shift_and_erasing_only_when_merged(bundle: str) -> None:
    default = _parser(bundle, strong=False).get_parsed_content("train#preprocessing").transforms
    merged = _parser(bundle, strong=True).get_parsed_content("train#preprocessing").transforms
    added = (SpatialPadd, RandSpatialCropd, RandCoarseDropoutd)
    assert not any(isinstance(t, added) for t in default)
    assert [type(t) for t in merged if isinstance(t, added)] == list(added)
    # the light intensity augmentation is kept as it is
    assert [type(t).__name__ for t in merged if not isinstance(t, added)] == [type(t).__name__ for t in default]


@pytest.mark.parametrize("bundle", sorted(SHAPES))
def test_images_keep_their_size_move_by_at_most_the_shift_and_are_erased_on_about_half(bundle: str) -> None:
    parser = _parser(bundle, strong=True)
    shift = parser.get_parsed_content("shift_pixels" if bundle == "mimmx_cxr" else "shift_voxels")
    transform = Compose(parser.get_parsed_content("strong_augmentation_transforms"))
    transform.set_random_state(seed=0)
    shape = SHAPES[bundle]
    centre = tuple(s // 2 for s in shape[1:])
    offsets, erased = set(), 0
    for _ in range(200):
        image = torch.zeros(shape)
        image[(0, *centre)] = 1.0
        out = transform({"image": image})["image"]
        assert tuple(out.shape) == shape
        peak = torch.nonzero(torch.as_tensor(out)[0] == 1.0)
        if len(peak) == 1:  # not erased by the patch
            offsets.add(tuple(int(p - c) for p, c in zip(peak[0], centre)))
        erased += int(bool((torch.as_tensor(out) != 0).sum() > 1))  # the erased patch holds random intensities
    assert offsets and all(abs(d) <= shift for off in offsets for d in off)
    assert len(offsets) > 10  # the shift does vary
    assert 60 <= erased <= 140  # prob 0.5 of 200
