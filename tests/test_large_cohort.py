"""configs/large_cohort.yaml: training through MONAI's PersistentDataset, the preprocessed images on disk instead
of in memory, end to end at smoke-test size for both bundles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run
from monai.data import CacheDataset, PersistentDataset

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


def _files(name: str) -> list[str]:
    root = BUNDLES / f"mimmx_{name}" / "configs"
    return [str(root / "train.yaml"), str(root / "large_cohort.yaml")]


def _small(name: str) -> dict:
    return ConfigParser.load_config_file(str(BUNDLES / f"mimmx_{name}" / "configs" / "smoke_test.yaml"))


@pytest.mark.parametrize("name", ["cxr", "mri"])
def test_training_reads_images_from_a_disk_cache(name, tmp_path):
    run("training", bundle_root=str(tmp_path), config_file=_files(name), **_small(name))
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "heads.causal.weight" in state
    cache = tmp_path / "eval" / "persistent_cache"
    sizes = _small(name)["splits#sizes"]
    train_files = list((cache / "train").glob("*.pt"))
    val_files = list((cache / "val").glob("*.pt"))
    # one cached item per image of the split (the deterministic preprocessing; augmentation runs every epoch)
    assert len(train_files) == sizes["train"] and len(val_files) == sizes["val"]
    item = torch.load(train_files[0], map_location="cpu", weights_only=False)
    expected = _small(name)["image_size" if name == "cxr" else "spatial_size"]
    assert tuple(item["image"].shape[1:]) == tuple(expected)


@pytest.mark.parametrize("name", ["cxr", "mri"])
def test_the_overlay_swaps_the_cached_datasets_only(name, tmp_path):
    parser = ConfigParser()
    parser.read_config(_files(name))
    parser["bundle_root"] = str(tmp_path)
    for key in ("train#dataset", "validate#dataset"):
        assert parser[key]["_target_"] == "PersistentDataset"
        assert parser[key]["cache_dir"].startswith("$@persistent_cache_dir")
    assert parser.get_parsed_content("persistent_cache_dir") == str(tmp_path / "eval" / "persistent_cache")
    assert parser.get_parsed_content("images_in_memory") is False
    plain = ConfigParser()
    plain.read_config(_files(name)[0])
    assert "CacheDataset" in plain["train#dataset"]["_target_"] and plain["images_in_memory"] is True
    assert issubclass(PersistentDataset, torch.utils.data.Dataset) and not issubclass(PersistentDataset, CacheDataset)
