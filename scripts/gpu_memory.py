"""Training memory of each bundle's GPU profile (configs/gpu_profile.yaml), estimated on a CPU.

    python scripts/gpu_memory.py          # prints the estimates as JSON

Method: one forward pass of the profile's network at batch 1 and the profile's input size, with hooks on every leaf
module recording its input and output tensors; each distinct tensor (by storage, so in-place results and shared
inputs count once) is what autograd keeps for the backward pass in the worst case. That per-image count, in float32
bytes even under amp (float16 would halve most of it), times the batch size, plus weights, gradients and Adam's two
moments (4 x parameters x 4 bytes) and 1.5 GiB for the CUDA context and cuDNN workspaces, is the estimate. It is an
upper-side estimate of a GPU run's peak; the tests check it stays below 16 GB.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bundle_timing as bt  # noqa: E402
from measurement_context import BUNDLES  # noqa: E402

GIB = 1024**3
CUDA_OVERHEAD_GIB = 1.5
CARD_GIB = 16 * 1000**3 / GIB  # a "16 GB" card, in GiB
METHOD = (
    "distinct input/output tensors of every leaf module in one forward pass at batch 1 (float32 bytes, even under "
    "amp) x batch size + 4 x parameters x 4 bytes (weights, gradients, Adam moments) + 1.5 GiB CUDA context "
    "(scripts/gpu_memory.py)"
)


def activation_bytes(network, example) -> int:
    """Bytes of the distinct tensors entering or leaving any leaf module during one forward pass of ``example``."""
    import torch

    seen: dict[tuple[int, int], torch.Tensor] = {}  # held until the end, so no storage is freed and reused

    def record(_module, inputs, output) -> None:
        for t in [*inputs, *(output if isinstance(output, (tuple, list)) else [output])]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                seen[(t.untyped_storage().data_ptr(), t.storage_offset())] = t

    leaves = [m for m in network.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.no_grad():
            network(example, features=True)
    finally:
        for h in handles:
            h.remove()
    return sum(t.numel() * 4 for t in seen.values())


def profile_estimate(bundle: str) -> dict:
    """The GPU profile of ``bundle`` ("cxr" or "mri"): its sizes and the estimated training memory in GiB."""
    import torch

    parser = bt.bundle_parser(bundle, extra_files=["gpu_profile.yaml"])
    size = parser.get_parsed_content("image_size" if bundle == "cxr" else "spatial_size")
    batch = int(parser.get_parsed_content("batch_size"))
    network = parser.get_parsed_content("network_def").eval()
    params = sum(p.numel() for p in network.parameters())
    per_image = activation_bytes(network, torch.zeros(1, 1, *size))
    total = per_image * batch + 16 * params + CUDA_OVERHEAD_GIB * GIB
    return {
        "backbone": parser.get_parsed_content("network_def#backbone"),
        "input_size": list(size),
        "batch_size": batch,
        "amp": bool(parser.get_parsed_content("train#trainer#amp")),
        "num_workers": int(parser.get_parsed_content("num_workers")),
        "parameters": params,
        "activation_mib_per_image": per_image / 2**20,
        "estimated_gib": total / GIB,
        "largest_batch_within_16gb": int((CARD_GIB * GIB - 16 * params - CUDA_OVERHEAD_GIB * GIB) // per_image),
        "method": METHOD,
    }


def profile_estimates() -> dict:
    """Both bundles' profile estimates."""
    return {bundle: profile_estimate(bundle) for bundle in BUNDLES}


if __name__ == "__main__":
    print(json.dumps(profile_estimates(), indent=2))
