"""Each bundle's configs/gpu_profile.yaml: it merges over train.yaml, builds the network at the profile's input size,
and its batch size fits a 16 GB card by scripts/gpu_memory.py's estimate (checked against what autograd saves for
the backward pass)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
spec = importlib.util.spec_from_file_location("gpu_memory", ROOT / "scripts" / "gpu_memory.py")
gpu_memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_memory)
import bundle_timing  # noqa: E402

PROFILES = {"cxr": ("densenet121", [224, 224]), "mri": ("resnet18", [96, 96, 96])}


@pytest.mark.parametrize("name", ["cxr", "mri"])
def test_profile_builds_the_network_and_fits_16_gb(name):
    backbone, size = PROFILES[name]
    parser = bundle_timing.bundle_parser(name, extra_files=["gpu_profile.yaml"])
    assert parser.get_parsed_content("network_def#backbone") == backbone
    assert parser.get_parsed_content("image_size" if name == "cxr" else "spatial_size") == size
    assert parser.get_parsed_content("train#trainer#amp") is True
    assert parser.get_parsed_content("loss_terms")  # the method's terms are train.yaml's, untouched
    estimate = gpu_memory.profile_estimate(name)
    assert estimate["batch_size"] >= (32 if name == "cxr" else 4)
    assert 2.0 < estimate["estimated_gib"] < 16 * 1000**3 / 1024**3
    assert estimate["largest_batch_within_16gb"] >= estimate["batch_size"]


def test_cxr_profile_forward_pass_at_224():
    parser = bundle_timing.bundle_parser("cxr", extra_files=["gpu_profile.yaml"])
    network = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        logits = network(torch.rand(2, 1, 224, 224))
    assert logits.shape == (2, 2)


def test_activation_count_matches_what_autograd_keeps_for_backward():
    """The estimate's activation bytes per image against the tensors a training-mode forward saves for its
    backward (counted once per storage, parameters left out), within 20%. Resident-memory differences between
    batch sizes were tried first and swing with the allocator; the saved tensors are exact."""
    parser = bundle_timing.bundle_parser("cxr", {"image_size": [96, 96]}, extra_files=["gpu_profile.yaml"])
    network = parser.get_parsed_content("network_def")
    estimate = gpu_memory.activation_bytes(network.eval(), torch.zeros(1, 1, 96, 96))

    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    network.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        network(torch.rand(1, 1, 96, 96), features=True)
    weights = {p.untyped_storage().data_ptr() for p in network.parameters()}
    measured = sum(n for ptr, n in saved.items() if ptr not in weights)
    assert 0.8 * measured < estimate < 1.2 * measured
