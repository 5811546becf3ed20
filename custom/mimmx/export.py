"""TorchScript export that cannot silently ship random weights.

MONAI's ``ckpt_export`` copies a checkpoint into the configured network with ``copy_model_state``, which skips every
key whose name or shape does not match: a factor list in ``inference.yaml`` that differs from training exports an
untrained head and passes. :func:`export_torchscript` first loads the same file into the same network strictly
(:func:`mimmx.checkpoints.load_strict`, after the SHA-256 check), then lets MONAI write the TorchScript file with the
bundle metadata (plus the model's SHA-256) embedded, and finally checks that the exported module computes what the
strictly loaded network computes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mimmx.checkpoints import load_strict, load_weights, verify_hash
from mimmx.errors import CheckpointError, ConfigError

__all__ = ["export_torchscript"]

logger = logging.getLogger("mimmx")


def export_torchscript(
    bundle_root: str | os.PathLike,
    filepath: str | os.PathLike | None = None,
    ckpt_file: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    meta_file: str | os.PathLike | None = None,
    net_id: str = "network_def",
    **override: Any,
) -> str:
    """Export ``models/model.pt`` of a bundle to TorchScript (``models/model.ts``); returns the file's path.

    Raises CheckpointError naming the file and the missing, unexpected or mis-shaped keys when the weights do not fit
    the network the inference config builds, and when the exported module's output differs from it.
    """
    from monai.bundle import ConfigParser, ckpt_export

    root = Path(bundle_root)
    config_file = Path(config_file or root / "configs" / "inference.yaml")
    meta_file = Path(meta_file or root / "configs" / "metadata.json")
    ckpt_file = Path(ckpt_file or root / "models" / "model.pt")
    filepath = Path(filepath or root / "models" / "model.ts")
    for path, what in ((config_file, "inference config"), (meta_file, "metadata")):
        if not path.is_file():
            raise ConfigError(f"export: {path} not found ({what} of the bundle {root}).")

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser.update({"bundle_root": str(root), **override})
    network = parser.get_parsed_content(net_id).cpu().eval()
    load_strict(network, load_weights(ckpt_file), str(ckpt_file))
    digest = verify_hash(ckpt_file)

    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["model_sha256"] = digest  # the weights the TorchScript file was made from
    with tempfile.TemporaryDirectory() as tmp:
        stamped = Path(tmp) / "metadata.json"
        stamped.write_text(json.dumps(meta, indent=4), encoding="utf-8")
        ckpt_export(
            net_id=net_id,
            filepath=str(filepath),
            ckpt_file=str(ckpt_file),
            meta_file=str(stamped),
            config_file=str(config_file),
            bundle_root=str(root),
            **override,
        )
    _check_same_output(network, filepath, meta)
    logger.info("exported %s (weights %s, SHA-256 %s)", filepath, ckpt_file, digest)
    return str(filepath)


def _check_same_output(network: torch.nn.Module, filepath: Path, meta: dict) -> None:
    """The exported module must compute what the strictly loaded network computes on the same input."""
    shape = meta.get("network_data_format", {}).get("inputs", {}).get("image", {}).get("spatial_shape")
    channels = meta.get("network_data_format", {}).get("inputs", {}).get("image", {}).get("num_channels", 1)
    if not shape or not all(isinstance(s, int) for s in shape):
        return
    x = torch.rand(1, int(channels), *shape, generator=torch.Generator().manual_seed(0))
    scripted = torch.jit.load(str(filepath), map_location="cpu")
    with torch.no_grad():
        expected, got = network(x), scripted(x)
    if not torch.allclose(expected, got, atol=1e-5, rtol=1e-4):
        filepath.unlink(missing_ok=True)
        raise CheckpointError(
            f"{filepath}: the exported module's output differs from the checkpoint's network "
            f"(max difference {float((expected - got).abs().max()):.3g}); the export was removed."
        )
